"""The fit/evaluate loop, metrics, checkpoints and resume, the cross-validation driver.

Python API: `train(config) -> summary` (see `loralens.training.crossval.train`), `TrainConfig`, `load_config`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "load_config", "make_config", "train"]


def __getattr__(name: str) -> Any:
    # lazy: importing the package must not import the loop (and torch) for the CLI's --help
    if name == "train":
        from loralens.training.crossval import train

        return train
    if name in ("TrainConfig", "load_config", "make_config"):
        from loralens.training import config

        return getattr(config, name)
    raise AttributeError(f"module 'loralens.training' has no attribute {name!r}")
