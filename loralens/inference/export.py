"""`export_fold`: one fold of a run as a transformers `WhisperForAudioClassification` folder.

The folder (`out`) holds:
- `config.json` + `model.safetensors`: the encoder with the LoRA adapter merged into its weights (peft's
  `merge_and_unload`; the fine-tuned encoder for `full`, the base encoder for `frozen`) and the head, with
  `id2label` / `label2id`; `preprocessor_config.json`: the Whisper feature extractor the run used;
- `README.md`: a model card (corpus, folds, metrics, recipe, licences, the measured agreement with loralens);
- `peft_adapter/`: the unmerged adapter in peft's format (`adapter_config.json`, `adapter_model.safetensors`) and
  the head (`head.safetensors`), for those who want the adapter itself (method `lora` only);
- `loralens_export.json`: what was exported and measured.

transformers' `WhisperForAudioClassification` averages every frame of a 30-s window, padding included; loralens
averages only the frames that saw audio (and runs `trim` windows when the run was trained so). The plain export is
therefore a close, not an exact, copy: `measure_agreement` counts how often `pipeline("audio-classification")`
gives the label of `loralens predict`. With `exact=True` the folder also holds `modeling_loralens_whisper.py`
(`loralens/inference/hf_modeling.py`), registered in `config.json`'s `auto_map`: loaded with
`trust_remote_code=True`, it pools as loralens does and reproduces its probabilities; loaded without, it is the
plain model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from loralens.errors import ConfigError, LoralensError, RunFolderError, WeightsError
from loralens.inference.fold_model import FoldModel, RunModels, load_run_models
from loralens.inference.predict import InputClip, predict
from loralens.io import atomic_write_json, atomic_write_text, read_json
from loralens.models.classifier import EmotionClassifier, whisper_encoder
from loralens.training.config import TrainConfig
from loralens.training.run_folder import RunFolder
from loralens.training.trained import fold_classifier

REMOTE_CODE_FILE = "modeling_loralens_whisper.py"
REMOTE_CLASS = "LoralensWhisperForAudioClassification"
EXPORT_JSON = "loralens_export.json"
ADAPTER_DIR = "peft_adapter"
LOW_AGREEMENT = 0.95  # below this share of equal labels, the card and the command recommend the exact export

# Licence of the audio each corpus parser reads (for the model card; check the terms of your copy).
CORPUS_LICENCES = {
    "ravdess": "CC BY-NC-SA 4.0 (Livingstone & Russo 2018, PLoS ONE 13(5): e0196391): non-commercial, share alike",
    "crema-d": "Open Database License (ODbL) 1.0 (Cao et al. 2014)",
    "emodb": "distributed for research by TU Berlin (Burkhardt et al. 2005); check the terms of your copy",
    "tess": "CC BY-NC-ND 4.0 (Dupuis & Pichora-Fuller 2010, University of Toronto)",
    "iemocap": "USC SAIL licence agreement (research only, no redistribution)",
}
EMBEDDED_WEIGHTS_LICENCE = "MIT (OpenAI Whisper, Copyright (c) 2022 OpenAI)"


def _merged_encoder(clf: EmotionClassifier) -> torch.nn.Module:
    """The classifier's encoder with its LoRA adapter merged into the base weights (a plain `WhisperEncoder`)."""
    if clf.peft_model is None:
        return clf.encoder
    return whisper_encoder(clf.peft_model.merge_and_unload())


def needs_exact(cfg: TrainConfig) -> bool:
    """Whether only the exact export reproduces a head of configuration `cfg`: transformers' head neither normalises
    each hidden state (`head.layer_norm`) nor z-scores them before the weighted sum."""
    return cfg.head.layer_norm or (cfg.head.standardize and cfg.head.weighted_layer_sum)


def _plain_head_state(head: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The head's weights under transformers' names; a z-scoring head (`standardize`) on one hidden state has its
    statistics folded into the projector, which is affine: W (x - m) / s + b = (W / s) x + (b - (W / s) m); one
    that z-scores each hidden state before the weighted sum keeps them (`input_mean`, `input_std`, buffers of the
    exact export's class)."""
    if getattr(head, "standardize", False) and head.use_weighted_layer_sum:
        return dict(head.state_dict())
    state = {k: v for k, v in head.state_dict().items() if k not in ("input_mean", "input_std")}
    if getattr(head, "standardize", False):
        w = state["projector.weight"].double() / head.input_std.double()[None, :]
        state["projector.weight"] = w.to(state["projector.weight"].dtype)
        state["projector.bias"] = (state["projector.bias"].double() - w @ head.input_mean.double()).to(
            state["projector.bias"].dtype)
    return state


def build_hf_model(models: RunModels, fold: FoldModel, *, exact: bool = False) -> torch.nn.Module:
    """A transformers `WhisperForAudioClassification` holding fold `fold`'s merged encoder and head, with the
    run's labels as `id2label` / `label2id`; `exact` adds the loralens pooling fields and `auto_map`."""
    from transformers import WhisperForAudioClassification

    from loralens.inference.hf_modeling import LoralensWhisperForAudioClassification
    from loralens.models.loading import load_config

    cfg = models.config
    if cfg.head.speaker_norm:
        raise ConfigError(
            f"{models.run_dir}: the head z-scores each clip with its speaker's statistics (head.speaker_norm), "
            "which a model that sees one clip at a time cannot do",
            "classify with loralens predict, which takes each clip's speaker (a manifest `speaker` column or "
            "--speaker); or train with head.speaker_norm: false for a Hugging Face export",
        )
    if needs_exact(cfg) and not exact:
        raise ConfigError(
            f"{models.run_dir}: the head normalises or z-scores each hidden state before the weighted sum "
            "(head.layer_norm, head.standardize), which transformers' WhisperForAudioClassification does not do",
            "export with --exact (loralens' pooling through trust_remote_code=True), or use loralens predict",
        )
    config = load_config(cfg.model)
    k = fold.classifier.hidden_state  # the fold's own (a run with hidden_state auto chooses per fold)
    # transformers' head reads the last (final-normed) hidden state or a softmax-weighted sum of all of them; a
    # head on hidden state k < L is exported as the full-depth encoder with one-hot weights (every logit -inf but
    # the k-th: softmax gives exactly 1 and 0s), the layers above k taken from the base model
    one_hot = k is not None and k < config.encoder_layers
    config.num_labels = len(models.labels)
    config.id2label = dict(enumerate(models.labels))
    config.label2id = {lab: i for i, lab in enumerate(models.labels)}
    config.classifier_proj_size = cfg.head.projector_dim
    config.use_weighted_layer_sum = cfg.head.weighted_layer_sum or one_hot
    config.loralens_window = cfg.window
    config.loralens_mask_padding = models.mask_padding
    config.loralens_normalize_layers = cfg.head.layer_norm
    config.loralens_standardize = bool(cfg.head.standardize and cfg.head.weighted_layer_sum)
    if exact:
        config.auto_map = {"AutoModelForAudioClassification": f"{Path(REMOTE_CODE_FILE).stem}.{REMOTE_CLASS}"}
    # the exact export's own class, so that the merge check runs its pooling (e.g. the per-layer LayerNorm)
    hf = (LoralensWhisperForAudioClassification if exact else WhisperForAudioClassification)(config).eval()
    encoder = _merged_encoder(fold.classifier)
    if one_hot:
        from loralens.models.loading import load_whisper

        hf.encoder.load_state_dict(whisper_encoder(load_whisper(cfg.model)).state_dict(), strict=True)
        missing, unexpected = hf.encoder.load_state_dict(encoder.state_dict(), strict=False)
        above = [m for m in missing if not (m.startswith("layer_norm.") or int(m.split(".")[1]) >= k)]
        if unexpected or above:
            raise WeightsError(f"the encoder cut at hidden state {k} does not fit the base model's "
                               f"(unexpected {unexpected}, missing {above})")
        with torch.no_grad():
            hf.layer_weights.fill_(float("-inf"))
            hf.layer_weights[k] = 0.0
    else:
        hf.encoder.load_state_dict(encoder.state_dict(), strict=True)
    head = _plain_head_state(fold.classifier.head)
    missing, unexpected = hf.load_state_dict(head, strict=False)
    if unexpected or any(k in missing for k in head):
        raise WeightsError(f"the head weights {sorted(head)} do not fit WhisperForAudioClassification "
                           f"(unexpected {unexpected})")
    return hf.requires_grad_(False)


def _check_merge(unmerged: EmotionClassifier, hf: torch.nn.Module, n_mels: int) -> float:
    """Max |logit difference| between the unmerged classifier and the exported model on one 30-s window, both
    averaging every frame (transformers' pooling; loralens does this when given no lengths)."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, n_mels, 3000, generator=g) * 0.5
    with torch.inference_mode():
        a = unmerged(feats, None, mask_padding=False)
        b = hf(input_features=feats).logits
    return float((a - b).abs().max())


def measure_agreement(export_dir: str | os.PathLike[str], models: RunModels, clips: Sequence[InputClip], *,
                      trust_remote_code: bool = False, progress: Callable[[Iterable], Iterable] | None = None,
                      device: str | None = "cpu") -> dict:
    """Classify `clips` with `loralens predict` (the run's fold, unmerged) and with
    `transformers.pipeline("audio-classification", model=export_dir)` on the same decoded 16-kHz audio.

    Returns {"clips", "agreement" (fraction of equal labels), "max_abs_prob_diff", "mean_abs_prob_diff" (over
    every clip and class), "loralens_accuracy", "pipeline_accuracy" (against the clips' true labels, when known),
    "trust_remote_code"}.
    """
    from transformers import pipeline

    from loralens.data.audio import load_audio

    ours = predict(models, clips, on_bad_audio="stop", device=device)
    pipe = pipeline("audio-classification", model=str(export_dir), top_k=None, trust_remote_code=trust_remote_code,
                    device=-1 if device in (None, "cpu") else device)
    labels = list(models.labels)
    agree, diffs = 0, []
    theirs_correct, known = 0, 0
    for clip, pred in zip(progress(clips) if progress else clips, ours.clips):
        out = pipe({"raw": load_audio(clip.path), "sampling_rate": 16000})
        probs = {d["label"]: d["score"] for d in out}
        theirs = max(probs, key=probs.get)
        agree += theirs == pred.label
        diffs.append([abs(probs[lab] - pred.probabilities[lab]) for lab in labels])
        if clip.true_label is not None:
            known += 1
            theirs_correct += theirs == clip.true_label
    d = np.asarray(diffs)
    return {"clips": len(clips), "agreement": agree / len(clips), "max_abs_prob_diff": float(d.max()),
            "mean_abs_prob_diff": float(d.mean()), "loralens_accuracy": ours.accuracy(),
            "pipeline_accuracy": theirs_correct / known if known else None, "trust_remote_code": trust_remote_code}


def fold_test_clips(models: RunModels, fold: int, limit: int | None = None,
                    corpus_root: str | os.PathLike[str] | None = None) -> list[InputClip]:
    """The test clips of fold `fold` (from the run's folds.json and its corpus), at most `limit`, in id order.
    corpus_root: where the corpus is now (default: the run's `corpus_root`, relative to the working directory)."""
    from loralens.training.corpus_prep import load_configured_corpus

    cfg = models.config if corpus_root is None else models.config.model_copy(update={"corpus_root": Path(corpus_root)})
    run = RunFolder(models.run_dir)
    folds = read_json(run.folds).get("folds") if run.folds.exists() else None
    if not isinstance(folds, list) or fold >= len(folds):
        raise RunFolderError(f"{run.folds}: no fold {fold}", "export a fold of a complete run")
    ids = sorted(folds[fold].get("test", []))
    by_id = load_configured_corpus(cfg).by_id()
    clips = [InputClip(i, by_id[i].path, by_id[i].label) for i in ids if i in by_id]
    return clips[:limit] if limit is not None else clips


def _pm(m: dict | None) -> str:
    if not m or m.get("mean") is None:
        return "–"
    return f"{100 * m['mean']:.2f}" + (f" ± {100 * m['std']:.2f}" if m.get("std") is not None else "") + " %"


def _num(x: float) -> str:
    return f"{x:.4f}" if x >= 1e-3 or x == 0 else f"{x:.1e}"


def _weights_licence(model: str) -> str:
    from loralens.models.registry import EMBEDDED

    return EMBEDDED_WEIGHTS_LICENCE if model in EMBEDDED else f"that of the base model `{model}`"


def model_card(models: RunModels, fold: FoldModel, export: dict) -> str:
    """The README.md of an exported folder (Hugging Face model card with YAML metadata)."""
    cfg: TrainConfig = models.config
    m = fold.metrics
    summary_path = RunFolder(models.run_dir).summary_json
    summary = read_json(summary_path) if summary_path.exists() else None
    corpus_licence = CORPUS_LICENCES.get(cfg.corpus.lower().replace("_", "-"), "the licence of your data")
    licence_tag = "mit" if "MIT" in _weights_licence(cfg.model) else "other"
    ex = export.get("agreement")
    exact = export.get("exact")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: audio-classification", f"license: {licence_tag}",
        "tags: [whisper, speech-emotion-recognition, loralens" + (", lora]" if cfg.method == "lora" else "]"), "---",
        "", f"# Speech emotion classifier: Whisper `{cfg.model}` encoder, {cfg.method}, {cfg.corpus} fold {fold.fold}",
        "", f"Exported by loralens from the run `{os.path.abspath(models.run_dir)}`, fold {fold.fold} "
        f"({m.get('name')}). Classes "
        f"(`id2label`): {', '.join(f'{i} {lab}' for i, lab in enumerate(models.labels))}.", "",
        "## Use", "", "```python", "from transformers import pipeline", "",
        'clf = pipeline("audio-classification", model="PATH/TO/THIS/FOLDER", top_k=None'
        + (", trust_remote_code=True" if exact else "") + ")",
        'clf({"raw": audio_16k_mono_float32, "sampling_rate": 16000})   # or a file path (needs ffmpeg)', "```", "",
        "Or with loralens, on the run folder: `loralens predict RUN clips/ --fold "
        f"{fold.fold} --out predictions.csv`.", "",
        "## How this model differs from the loralens model", "",
        "transformers' `WhisperForAudioClassification` classifies the first 30 s of a clip in a 30-s window and "
        "averages every frame of that window, padding included. loralens averages only the frames that saw audio"
        + (" and ran this model on trimmed windows (the clip's own length)" if cfg.window == "trim" else "")
        + ", and classifies longer clips over consecutive 30-s windows.",
    ]
    if not exact and (cfg.window == "trim" or (ex and ex["agreement"] < LOW_AGREEMENT)):
        lines += ["", "**Prefer the exact export for this model**: "
                  + ("it was trained on trimmed windows and never saw 30 s of padding, "
                     if cfg.window == "trim" else "")
                  + "transformers' pooling changes its predictions (figures below). `loralens export --exact` writes "
                  "a folder that, loaded with `trust_remote_code=True`, pools as loralens does."]
    if exact:
        lines += ["", "This folder also holds `modeling_loralens_whisper.py`: loaded with `trust_remote_code=True` "
                  "it pools as loralens does (from the feature extractor's attention mask) and reproduces "
                  "loralens' probabilities; without it transformers loads the plain model."]
    if ex:
        lines += ["", f"Measured on {ex['clips']} test clips of fold {fold.fold} (the same decoded 16-kHz audio "
                  f"given to both; pipeline {'with' if ex['trust_remote_code'] else 'without'} "
                  "`trust_remote_code`):", "",
                  "| | value |", "|---|---:|",
                  f"| same label as `loralens predict` | {100 * ex['agreement']:.1f} % |",
                  f"| max abs. probability difference | {_num(ex['max_abs_prob_diff'])} |",
                  f"| mean abs. probability difference | {_num(ex['mean_abs_prob_diff'])} |"]
        if ex.get("loralens_accuracy") is not None:
            lines += [f"| accuracy, loralens | {100 * ex['loralens_accuracy']:.1f} % |",
                      f"| accuracy, pipeline | {100 * ex['pipeline_accuracy']:.1f} % |"]
    else:
        lines += ["", "The agreement with `loralens predict` was not measured for this export."]
    test = m.get("test", {})
    lines += ["", "## Training data and folds", "",
              f"- corpus: {cfg.corpus}" + (f", label set {cfg.label_set}" if cfg.label_set else "")
              + f"; {sum(m.get('sizes', {}).values())} clips in this fold "
              f"(train {m.get('sizes', {}).get('train')}, validation {m.get('sizes', {}).get('validation')}, "
              f"test {m.get('sizes', {}).get('test')})",
              f"- speaker-independent folds ({summary.get('scheme') if summary else cfg.folds}); test speakers of this "
              f"fold: {', '.join(m.get('speakers', {}).get('test', []))}",
              "- model selection on the validation split only (speakers taken from the training speakers)", "",
              "## Metrics", "",
              "| | UAR | WAR | macro-F1 |", "|---|---:|---:|---:|",
              f"| this fold (test) | {100 * test.get('uar', float('nan')):.2f} % | "
              f"{100 * test.get('war', float('nan')):.2f} % "
              f"| {100 * test.get('macro_f1', float('nan')):.2f} % |"]
    if summary and summary.get("mean_std"):
        ms = summary["mean_std"]
        lines.append(f"| mean ± std over {ms['uar'].get('n')} fold(s) | {_pm(ms['uar'])} | {_pm(ms['war'])} | "
                     f"{_pm(ms['macro_f1'])} |")
    lora = (f"LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha:g}, dropout={cfg.lora.dropout:g} on "
            f"{', '.join(cfg.lora.target_modules)} (layers "
            f"{'all' if cfg.lora.layers is None else list(cfg.lora.layers)}), "
            "merged into the weights" if cfg.method == "lora" else
            {"full": "every encoder weight fine-tuned", "frozen": "encoder frozen (head only)"}[cfg.method])
    lines += ["", "## Recipe", "",
              f"- base model `{cfg.model}`; {lora}",
              f"- head: masked mean pooling, projector {cfg.head.projector_dim}, linear classifier"
              + (", learned weighted sum of all hidden states" if cfg.head.weighted_layer_sum else ""),
              f"- window `{cfg.window}`, padding mask {'on' if models.mask_padding else 'off'}; batch "
              f"{cfg.batch_size}, "
              + (f"{cfg.epochs} epochs (the last kept)" if cfg.select_on == "last" else
                 f"{cfg.epochs} epochs max (selected epoch {m.get('selected_epoch', 0) + 1} on validation "
                 f"{cfg.select_on})") + f", lr head {cfg.lr_head:g}, "
              f"lr {'adapters' if cfg.method == 'lora' else 'encoder'} {cfg.lr_encoder:g}, {cfg.schedule} schedule, "
              f"seed {cfg.seed}; config hash `{m.get('config_hash')}`"]
    if cfg.method == "lora":
        lines += ["", f"The unmerged adapter is in `{ADAPTER_DIR}/` (peft format, for a `WhisperEncoder`), with the "
                  "head's weights in `head.safetensors`."]
    lines += ["", "## Licences", "",
              f"- weights: {_weights_licence(cfg.model)}; the fine-tuned weights derive from them",
              f"- training data: {corpus_licence}", ""]
    return "\n".join(lines)


def export_fold(run_dir: str | os.PathLike[str], fold: int, out_dir: str | os.PathLike[str], *,
                exact: bool | None = None,
                measure: bool = True, measure_clips: int | None = None,
                corpus_root: str | os.PathLike[str] | None = None,
                progress: Callable[[Iterable], Iterable] | None = None,
                echo: Callable[[str], None] = lambda s: None) -> dict:
    """Export fold `fold` of run `run_dir` into `out_dir` (created; must be absent or empty); see the module doc.

    measure: classify the fold's test clips (at most `measure_clips`) with loralens and with the exported folder
    through transformers' pipeline, and record the agreement in the card (skipped with a note when the corpus is
    not readable here; `corpus_root` says where the corpus is when it moved). exact: write the exact export (None:
    when the head needs it, `needs_exact`; False for such a head raises ConfigError). Returns
    `loralens_export.json`'s content.
    """
    from loralens.models.loading import load_feature_extractor, load_whisper

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty folder", "pass a new folder to --out")
    models = load_run_models(run_dir, fold)
    fm = models.folds[0]
    if exact is None:
        exact = needs_exact(models.config)
    # the merge changes the encoder in place: merge a second copy, keep the loaded one for the checks
    encoder = whisper_encoder(load_whisper(models.config.model))
    to_merge = FoldModel(fold, fold_classifier(run_dir, fold, models.config, encoder, len(models.labels)), fm.metrics)
    hf = build_hf_model(models, to_merge, exact=exact)
    extractor = load_feature_extractor(models.config.model)
    diff = _check_merge(fm.classifier, hf, int(extractor.feature_size))
    if diff > 1e-3:
        raise WeightsError(f"the merged model differs from the adapter model by {diff:.2e} in logits",
                           "report this with the peft and transformers versions")
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    if exact:
        extractor.return_attention_mask = True
        shutil.copyfile(Path(__file__).with_name("hf_modeling.py"), out / REMOTE_CODE_FILE)
    extractor.save_pretrained(out)
    folder = RunFolder(run_dir).fold(fold)
    if models.config.method == "lora":
        shutil.copytree(folder.adapter, out / ADAPTER_DIR)
        shutil.copyfile(folder.head, out / ADAPTER_DIR / "head.safetensors")
    info: dict = {"run": os.path.abspath(run_dir), "fold": fold, "labels": list(models.labels),
                  "method": models.config.method,
                  "model": models.config.model, "window": models.config.window, "mask_padding": models.mask_padding,
                  "exact": exact, "merge_check_max_abs_logit_diff": diff, "agreement": None}
    if measure:
        try:
            clips = fold_test_clips(models, fold, measure_clips, corpus_root)
        except (LoralensError, OSError) as e:  # the export stands without the measurement; the card says so
            echo(f"agreement not measured: the fold's test clips are not readable here ({str(e).splitlines()[0]}); "
                 "pass the corpus folder with --corpus-root")
            clips = []
        if clips:
            echo(f"measuring agreement with transformers' pipeline on {len(clips)} test clips ...")
            info["agreement"] = measure_agreement(out, models, clips, trust_remote_code=exact, progress=progress)
    ag = info["agreement"]
    if not exact and (models.config.window == "trim" or (ag is not None and ag["agreement"] < LOW_AGREEMENT)):
        echo("warning: transformers' pipeline pools the whole 30-s window"
             + (f" and agrees with loralens on {100 * ag['agreement']:.1f} % of the test clips" if ag else "")
             + (" (this run was trained on trim windows)" if models.config.window == "trim" else "")
             + "; export with --exact for loralens' own pooling (trust_remote_code=True)")
    atomic_write_text(out / "README.md", model_card(models, fm, info))
    atomic_write_json(out / EXPORT_JSON, info)
    return info


__all__ = ["ADAPTER_DIR", "CORPUS_LICENCES", "EXPORT_JSON", "REMOTE_CODE_FILE", "build_hf_model", "export_fold",
           "fold_test_clips", "measure_agreement", "model_card", "needs_exact"]
