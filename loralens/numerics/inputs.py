"""The error numerics raise on bad input arrays (torch-free, so the torch-free statistics can raise it)."""

from __future__ import annotations

from loralens.errors import LoralensError


class AnalysisInputError(LoralensError):
    """Arrays given to a numerics or analysis routine have the wrong shape, size or values."""
