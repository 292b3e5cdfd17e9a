"""Corpus preparation, the one path: the configured corpus loaded, screened for bad audio (once per folder, the list
kept in a `bad_files.json`), and its folds made or read back. `loralens train` (`crossval.prepare`, into a training
run folder) and `loralens run`'s data stage (`pipeline.prepare_data`, into `<out>/data/` and `<out>/folds.json`)
both go through these functions; they differ only in where the lists live.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loralens.data.clips import Corpus
from loralens.errors import ConfigError, RunFolderError
from loralens.io import read_json
from loralens.training.config import TrainConfig


def load_configured_corpus(cfg: TrainConfig, warn: Callable[[str], None] | None = None) -> Corpus:
    """The corpus of `cfg` (name, root, label set and map, unknown-label policy, parser options). `warn` receives
    the parser's warnings. Raises ConfigError when no corpus root is configured."""
    from loralens.data.corpora import load_corpus

    if cfg.corpus_root is None:
        raise ConfigError("corpus_root is not set",
                          "pass --corpus-root (the folder of the corpus) or set it in the config")
    return load_corpus(cfg.corpus, cfg.corpus_root, cfg.label_set, label_map=cfg.label_map,
                       on_unknown_label=cfg.on_unknown_label, warn=warn, options=cfg.corpus_options)


def screen_corpus(corpus: Corpus, cfg: TrainConfig, bad_files: Path, *, write: bool,
                  progress: bool = False) -> tuple[Corpus, list[dict]]:
    """`corpus` without the clips that fail the bad-audio checks (policy `cfg.on_bad_audio`), and those clips
    (`{"id", "path", "reason", ...}`). The screen runs once per folder: when `bad_files` exists its list is reused
    (no audio decoded); else every clip is decoded and, when `write`, the list is written to `bad_files`.
    progress: a progress bar over the clips while screening. Raises RunFolderError when `bad_files` lists clips
    but the policy is `stop` (the folder was screened under `skip`)."""
    from loralens.data.audio import screen_clips

    if bad_files.exists():
        bad = read_json(bad_files).get("files", [])
        drop = {b["id"] for b in bad}
        if drop and cfg.on_bad_audio == "stop":
            raise RunFolderError(f"{bad_files}: lists bad files but on_bad_audio is 'stop'",
                                 "use the run's setting (skip) or a new run folder")
        clips = [c for c in corpus.clips if c.id not in drop]
    else:
        from tqdm.auto import tqdm

        show = (lambda it: tqdm(it, desc="checking audio", unit="clip", disable=not write)) if progress else None
        clips, found = screen_clips(corpus.clips, cfg.on_bad_audio, bad_list_path=bad_files if write else None,
                                    progress=show)
        bad = [b.__dict__ if hasattr(b, "__dict__") else b for b in found]
    return Corpus(corpus.name, corpus.root, corpus.labels, clips), bad


def run_folds(corpus: Corpus, cfg: TrainConfig, saved: Path) -> tuple[list, str, str]:
    """The folds of a run: read back from `saved` when that file exists (their classes must be the corpus's,
    in the same order), else made from `cfg.folds_file` or the scheme `cfg.folds`. Returns (folds, scheme, a
    description of the scheme for the plan). Made folds are not written here: the caller saves them to `saved`."""
    from loralens.data.folds import describe_scheme, load_folds, read_folds_file, resolve_folds

    if saved.exists():
        doc = read_folds_file(saved)
        if doc.get("labels") and list(doc["labels"]) != list(corpus.labels):
            # e.g. a manifest run made when `all` sorted classes by name: class indices must not change on resume
            raise RunFolderError(f"{saved}: made with classes {', '.join(doc['labels'])}, the corpus now gives "
                                 f"{', '.join(corpus.labels)}",
                                 f"resume with --label-set {','.join(doc['labels'])}, or use a new --run-dir")
        scheme = str(doc.get("scheme", "file"))
        return load_folds(saved, corpus), scheme, f"{scheme} (from {saved})"
    spec = cfg.folds_file if cfg.folds_file is not None else cfg.folds
    folds, scheme = resolve_folds(spec, corpus, k=cfg.folds_k, n_val_speakers=cfg.validation_speakers, seed=cfg.seed)
    if cfg.folds_file is not None:
        return folds, scheme, f"{scheme} (from {cfg.folds_file})"
    return folds, scheme, describe_scheme(corpus, cfg.folds, k=cfg.folds_k)
