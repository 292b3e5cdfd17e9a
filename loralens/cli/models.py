"""`loralens models ...`: list the available weights, convert any source to a Hugging Face folder."""

from __future__ import annotations

import click


@click.group()
def models() -> None:
    """Whisper weights: embedded defaults, Hugging Face, openai-whisper .pt, CTranslate2."""
