"""`loralens data ...`: corpus summaries, checksum verification, downloads."""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """Emotion corpora: summary, verify, download."""
