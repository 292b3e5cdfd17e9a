"""Convert Whisper weights from any supported source into a standard Hugging Face folder.

The folder holds config.json, generation_config.json, model.safetensors, preprocessor_config.json and, where
the source has a tokenizer, the tokenizer files; `WhisperForConditionalGeneration.from_pretrained(folder)` loads
it with no missing or unexpected keys. It is written into a temporary sibling folder and renamed into place,
so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from loralens.errors import WeightsError
from loralens.models.loading import load_feature_extractor, load_tokenizer, load_whisper, resolve


def convert(
    source: str | Path, out_dir: str | Path, overwrite: bool = False, dtype: torch.dtype = torch.float32
) -> Path:
    """Write `source` (embedded name, hub id, HF folder, .pt, CTranslate2 folder / model.bin) as an HF folder.

    `dtype` is the dtype stored in model.safetensors. Raises WeightsError if `out_dir` exists and is not empty
    (unless `overwrite`), or for any problem with the source. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise WeightsError(f"{out_dir}: already exists", "choose another folder or pass overwrite (--overwrite)")
    src = resolve(source)
    model = load_whisper(source, dtype=dtype)
    extractor = load_feature_extractor(source)
    has_tokenizer = (src.folder / "tokenizer.json").is_file() or (src.folder / "vocab.json").is_file()
    tokenizer = load_tokenizer(source) if has_tokenizer else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
        model.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir
