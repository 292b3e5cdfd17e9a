"""`predict`: classify audio files with a trained run, one fold or the ensemble of its folds.

Inputs are audio files, folders (searched recursively for audio files) and manifests (CSV or JSONL with a `path`
column, optionally `id` and `label`). Each clip is decoded, checked and resampled to 16 kHz as in training
(`loralens.data.audio`), cut into consecutive windows of the model's 30 s (the last, shorter window kept unless it
is under `MIN_SECONDS`, when a longer clip has one), and each window gets the Whisper log-mel features training used
(`compute_features`), batched as the run was trained (`full` or `trim` windows, the same padding mask).

How probabilities are combined:
- over folds (`ensemble`): the mean of the folds' class probabilities (softmax of each fold's logits), per window;
- over the windows of a long clip: the mean of the window probabilities weighted by each window's length in
  samples, so every second of audio counts the same.
The label is the class of highest combined probability.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from loralens.data.audio import MAX_SECONDS, MIN_SECONDS, BadFile, decode_checked, is_audio_file, resample
from loralens.data.batching import FeatureItem, collate
from loralens.data.features import FeatureSettings, compute_features
from loralens.errors import AudioError, ConfigError, CorpusError
from loralens.inference.fold_model import RunModels, join_run_models, load_run_models
from loralens.io import atomic_write_json, atomic_write_text

OnBad = Literal["stop", "skip"]
FULL_FRAMES = 3000
MANIFEST_SUFFIXES = (".csv", ".jsonl")
COMBINE = ("fold probabilities averaged (ensemble); window probabilities averaged weighted by window length in "
           "samples")


@dataclass(frozen=True)
class InputClip:
    """One clip to classify: a display id, the audio file, and its true label and speaker when a manifest gives
    them (the speaker matters to a head that normalises per speaker, `head.speaker_norm`)."""

    id: str
    path: Path
    true_label: str | None = None
    speaker: str | None = None


@dataclass
class ClipPrediction:
    """The prediction for one clip.

    duration_s: seconds of audio (before any windowing). windows: how many windows of at most 30 s it was
    classified over. label: the predicted class. probabilities: class -> probability (sums to 1), in class order.
    """

    id: str
    path: str
    duration_s: float
    windows: int
    label: str
    probabilities: dict[str, float]
    true_label: str | None = None


@dataclass
class Predictions:
    """What `predict` returns: the predictions of the good clips and the bad files that were skipped."""

    run_dir: str
    folds: list[int]
    labels: list[str]
    window: str
    clips: list[ClipPrediction] = field(default_factory=list)
    bad_files: list[BadFile] = field(default_factory=list)
    joined_runs: list[str] = field(default_factory=list)  # other runs in the ensemble (`folds` has theirs too)

    @property
    def ensemble(self) -> bool:
        return len(self.folds) > 1

    def to_dict(self) -> dict:
        return {"run": self.run_dir, "joined_runs": self.joined_runs, "folds": self.folds, "ensemble": self.ensemble,
                "labels": self.labels,
                "window": self.window, "combine": COMBINE,
                "predictions": [asdict(c) for c in self.clips],
                "bad_files": [asdict(b) for b in self.bad_files]}

    def accuracy(self) -> float | None:
        """Fraction of clips with a true label whose prediction equals it (None when no clip has one)."""
        known = [c for c in self.clips if c.true_label is not None]
        return None if not known else sum(c.label == c.true_label for c in known) / len(known)

    def to_csv(self) -> str:
        """One row per clip: id, path, duration_s, windows, label, prob_<class> for every class
        (+ true_label when any clip has one)."""
        with_truth = any(c.true_label is not None for c in self.clips)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "path", "duration_s", "windows", "label", *[f"prob_{lab}" for lab in self.labels],
                    *(["true_label"] if with_truth else [])])
        for c in self.clips:
            w.writerow([c.id, c.path, f"{c.duration_s:.3f}", c.windows, c.label,
                        *[f"{c.probabilities[lab]:.6f}" for lab in self.labels],
                        *([c.true_label or ""] if with_truth else [])])
        return buf.getvalue()

    def write(self, path: str | os.PathLike[str], as_json: bool = False) -> None:
        """Write CSV (default) or JSON atomically."""
        if as_json:
            atomic_write_json(path, self.to_dict())
        else:
            atomic_write_text(path, self.to_csv())


# ------------------------------------------------------------------------------------------------ inputs
def _read_manifest(path: Path) -> list[InputClip]:
    """Rows of a CSV/JSONL manifest: `path` (relative to the manifest's folder), optional `id`, `label`,
    `speaker`."""
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "path" not in [h.strip() for h in reader.fieldnames or []]:
                raise CorpusError(f"{path} line 1: no 'path' column", "a manifest to predict on needs a path column "
                                  "(optional: id, label)")
            for row in reader:
                clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                if any(clean.values()):
                    rows.append((reader.line_num, clean))
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path} line {n}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise CorpusError(f"{path} line {n}: expected a JSON object per line")
                rows.append((n, {k: "" if v is None else str(v).strip() for k, v in obj.items()}))
    out = []
    for n, row in rows:
        if not row.get("path"):
            raise CorpusError(f"{path} line {n}: empty 'path'", "every row needs the audio file's path")
        audio = Path(row["path"]).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        clip_id = row.get("id") or Path(os.path.relpath(audio, path.parent)).with_suffix("").as_posix()
        out.append(InputClip(clip_id, audio, row.get("label") or None, row.get("speaker") or None))
    return out


def collect_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[InputClip]:
    """The clips named by `inputs`, in order: an audio file (id = its name without extension); a folder (its audio
    files, recursively, sorted; id = the path relative to the folder without extension); a `.csv` / `.jsonl`
    manifest. A path that does not exist is kept as a clip, so that it is reported as a bad file."""
    clips: list[InputClip] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if is_audio_file(f) and not any(
                part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise CorpusError(f"{p}: no audio files (.wav, .flac, .ogg) in this folder",
                                  "pass audio files, folders holding them, or a manifest")
            clips += [InputClip(f.relative_to(p).with_suffix("").as_posix(), f) for f in files]
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            clips += _read_manifest(p)
        else:
            clips.append(InputClip(p.stem, p))
    if not clips:
        raise ConfigError("nothing to predict on", "pass audio files, folders or a manifest")
    return clips


# ------------------------------------------------------------------------------------------------ speakers
def speaker_norm_models(models: RunModels) -> bool:
    """Whether the run's heads z-score each clip with its speaker's statistics (`head.speaker_norm`)."""
    return any(fm.classifier.head.speaker_norm for fm in models.folds)


def _speakers_of(clips: Sequence[InputClip], default: str | None) -> dict[str, str]:
    """clip id -> speaker (the clip's own, else `default`); names the clips that have neither."""
    missing = [c.id for c in clips if c.speaker is None and default is None]
    if missing:
        raise ConfigError(
            f"this run's head normalises each clip with its speaker's statistics (head.speaker_norm), and "
            f"{len(missing)} clip(s) have no speaker, e.g. {missing[0]!r}",
            "give a manifest with a `speaker` column, or --speaker NAME when every input is one speaker's "
            "(a speaker needs several clips: docs/results.md 6f)")
    return {c.id: c.speaker if c.speaker is not None else default for c in clips}


@torch.inference_mode()
def set_speaker_statistics(models: RunModels, items: Sequence[FeatureItem], speaker_of: dict[str, str],
                           batch_size: int, device: torch.device) -> None:
    """Give every fold model of `models` the statistics of the speakers of `items` (window ids -> speaker in
    `speaker_of`): the per-layer pooled outputs of the frozen encoder (the adapter switched off), as training
    computed them, averaged per speaker over their windows. Fold models of one base model and depth share the frozen
    outputs, so each depth is run once."""
    from loralens.models.speaker_stats import SpeakerStatistics
    from loralens.training.frozen_cache import pool_layers

    by_depth: dict[int, SpeakerStatistics] = {}
    for fm in models.folds:
        clf = fm.classifier
        if clf.method == "full":
            raise ConfigError(f"{models.run_dir}: speaker statistics of a fully fine-tuned run need the base "
                              "encoder, which predict does not load", "use a lora or frozen run")
        depth = clf.runner.n_layers
        if depth not in by_depth:
            pooled: dict[str, torch.Tensor] = {}
            off = clf.peft_model.disable_adapter() if clf.peft_model is not None else contextlib.nullcontext()
            with off:
                for idx in _length_batches(models, items, batch_size):
                    batch = collate([items[i] for i in idx], window=models.window).to(device)
                    for i, v in zip(idx, pool_layers(clf, batch.features, batch.mel_lengths).float().cpu()):
                        pooled[items[i].id] = v
            by_depth[depth] = SpeakerStatistics.from_pooled(pooled, speaker_of)
        clf.speaker_statistics = by_depth[depth]


# ------------------------------------------------------------------------------------------------ windows
def split_windows(audio: np.ndarray, window_samples: int, min_samples: int) -> list[np.ndarray]:
    """Consecutive windows of `window_samples` samples covering `audio` `[samples]`; the last may be shorter and is
    dropped when it has fewer than `min_samples` samples and is not the only window."""
    n = int(audio.shape[0])
    starts = list(range(0, max(n, 1), window_samples))
    if len(starts) > 1 and n - starts[-1] < min_samples:
        starts.pop()
    return [audio[s : s + window_samples] for s in starts]


def combine_windows(probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Probabilities `[windows, classes]` -> `[classes]`: the mean weighted by `weights` (samples per window)."""
    w = np.asarray(weights, dtype=np.float64)
    return (np.asarray(probs, dtype=np.float64) * w[:, None]).sum(axis=0) / w.sum()


def _length_batches(models: RunModels, items: Sequence[FeatureItem], batch_size: int) -> Iterator[list[int]]:
    """Indices of `items` in batches of windows sorted by length; one window a batch for a `trim` run without a
    padding mask (see `window_probabilities`)."""
    if models.window == "trim" and not models.mask_padding:
        batch_size = 1
    order = sorted(range(len(items)), key=lambda i: items[i].features.n_frames)
    for s in range(0, len(order), batch_size):
        yield order[s : s + batch_size]


@torch.inference_mode()
def window_probabilities(models: RunModels, items: Sequence[FeatureItem], batch_size: int,
                         device: torch.device) -> np.ndarray:
    """Class probabilities `[len(items), classes]` (float64) of feature windows, the mean over the fold models.

    Windows are batched by length as the run was trained (`models.window`); a `trim` run without a padding mask
    sees each window alone, since there a clip's encoding would depend on the other clips of its batch. With a
    padding mask, a trimmed batch gets two masked mel frames more than its longest window, so that every window's
    frames past its audio are zeroed (as the runner does for all but the longest clip of a batch) and a window's
    probabilities do not depend on the batch it is in.
    """
    out = np.zeros((len(items), len(models.labels)), dtype=np.float64)
    for idx in _length_batches(models, items, batch_size):
        batch = collate([items[i] for i in idx], window=models.window)
        if models.window == "trim" and models.mask_padding and batch.features.shape[-1] + 2 <= FULL_FRAMES:
            # two masked frames more, so that every clip, the longest too, is a clip shorter than its batch: its
            # frames past the audio are then zeroed as in `hf_modeling`, whatever the batch (see the module doc)
            batch.features = torch.nn.functional.pad(batch.features, (0, 2))
        batch = batch.to(device)
        total = None
        for fm in models.folds:
            fm.classifier.select_clips(batch.ids)
            p = torch.softmax(fm.classifier(batch.features, batch.mel_lengths).double(), dim=-1)
            total = p if total is None else total + p
        out[idx] = (total / len(models.folds)).cpu().numpy()
    return out


def predict(
    run_dir: str | os.PathLike[str] | RunModels,
    inputs: Iterable[str | os.PathLike[str]] | Sequence[InputClip],
    *,
    fold: int | None = None,
    on_bad_audio: OnBad = "stop",
    batch_size: int = 8,
    device: str | torch.device | None = None,
    max_seconds: float = MAX_SECONDS,
    progress: Callable[[Iterable], Iterable] | None = None,
    on_bad: Callable[[BadFile], None] | None = None,
    join: Sequence[str | os.PathLike[str]] = (),
    speaker: str | None = None,
) -> Predictions:
    """Classify the clips of `inputs` (files, folders, manifests; see `collect_inputs`) with run `run_dir`.

    fold: one fold's model; None = the ensemble of every complete fold (mean of their probabilities).
    join: further runs of the same recipe (e.g. other seeds) whose models (fold `fold`, or every complete fold) join
    the ensemble: the mean is then over every run's fold models (`join_run_models` checks that they classify alike).
    on_bad_audio: "stop" raises the first `AudioError` (naming the file); "skip" leaves the file out, records it in
    `Predictions.bad_files` (and calls `on_bad`) and goes on. max_seconds: longer files are bad files.
    progress: optionally wraps the iteration over clips (e.g. tqdm). device: None / "auto" = CUDA when available.
    speaker: the speaker of clips whose input names none. A run whose head normalises per speaker
    (`head.speaker_norm`) needs every clip's speaker and several clips of each: all clips are read first, each
    speaker's statistics are computed over their clips (the frozen encoder's, as in training), then classified.
    """
    from loralens.analysis.loading import resolve_device
    from loralens.models.loading import load_feature_extractor

    if on_bad_audio not in ("stop", "skip"):
        raise ConfigError(f"on_bad_audio={on_bad_audio!r}", "use 'stop' or 'skip'")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be at least 1")
    dev = resolve_device(device)
    models = run_dir if isinstance(run_dir, RunModels) else load_run_models(run_dir, fold)
    if join:
        models = join_run_models([models, *(load_run_models(r, fold) for r in join)])
    models.to(dev)
    extractor = load_feature_extractor(models.config.model)
    settings = FeatureSettings.from_extractor(extractor)
    clips = list(inputs)
    clips = clips if clips and all(isinstance(c, InputClip) for c in clips) else collect_inputs(clips)
    result = Predictions(str(models.run_dir), [f.fold for f in models.folds], list(models.labels), models.window,
                         joined_runs=[str(r) for r in models.joined])
    min_samples = int(round(MIN_SECONDS * settings.sampling_rate))

    pending: list[tuple[InputClip, float, list[FeatureItem], list[int]]] = []
    per_speaker = speaker_norm_models(models)
    speaker_of = _speakers_of(clips, speaker) if per_speaker else {}

    def flush() -> None:
        items = [it for _, _, its, _ in pending for it in its]
        if items and per_speaker:
            set_speaker_statistics(models, items, {it.id: speaker_of[c.id] for c, _, its, _ in pending for it in its},
                                   batch_size, dev)
        if items:
            probs = window_probabilities(models, items, batch_size, dev)
            start = 0
            for clip, duration, its, weights in pending:
                p = combine_windows(probs[start : start + len(its)], weights)
                start += len(its)
                result.clips.append(ClipPrediction(
                    clip.id, str(clip.path), round(duration, 4), len(its), models.labels[int(np.argmax(p))],
                    {lab: float(v) for lab, v in zip(models.labels, p)}, clip.true_label))
        pending.clear()

    for clip in progress(clips) if progress is not None else clips:
        try:
            mono, sr = decode_checked(clip.path, max_seconds=max_seconds)
        except AudioError as e:
            if on_bad_audio == "stop":
                raise AudioError(e.path, f"{e.reason} (clip {clip.id})",
                                 e.hint or "skip bad files with --on-bad-audio skip") from None
            bad = BadFile(clip.id, e.path, e.reason, e.hint)
            result.bad_files.append(bad)
            if on_bad is not None:
                on_bad(bad)
            continue
        audio = resample(mono, sr, settings.sampling_rate)
        windows = split_windows(audio, settings.max_samples, min_samples)
        items = [FeatureItem(f"{clip.id}#{i}", compute_features(w, settings, extractor, where=str(clip.path)))
                 for i, w in enumerate(windows)]
        pending.append((clip, mono.shape[0] / sr, items, [len(w) for w in windows]))
        if not per_speaker and sum(len(p[2]) for p in pending) >= 4 * batch_size:
            flush()  # a speaker-normalising run needs every clip of a speaker first: one flush at the end
    flush()
    return result


__all__ = ["COMBINE", "ClipPrediction", "InputClip", "Predictions", "collect_inputs", "combine_windows", "predict",
           "split_windows", "window_probabilities"]
