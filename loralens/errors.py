"""Errors shown to users: each says what was wrong, with which file or value, and what to do."""

from __future__ import annotations


class LoralensError(Exception):
    """Base class of every error loralens raises on bad input. The CLI prints these without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class WeightsError(LoralensError):
    """A model checkpoint is missing, truncated, of an unknown format or does not match Whisper."""


class MissingExtraError(LoralensError):
    """An optional dependency (a pip extra) is not installed."""


class AudioError(LoralensError):
    """An audio file cannot be used: unreadable, empty, non-finite, silent, too short or too long."""

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}", hint)


class CorpusError(LoralensError):
    """A corpus folder or manifest does not have the expected layout or content."""


class FoldError(LoralensError):
    """Folds are inconsistent: a speaker leak, an unknown clip id, an empty split."""


class ConfigError(LoralensError):
    """A configuration file or option is invalid."""


class RunFolderError(LoralensError):
    """A run folder is missing a file a stage needs, or holds results of another configuration."""
