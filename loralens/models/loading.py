"""One entry point for Whisper weights in every common format.

`source` may be:
- an embedded default name (`tiny.en`, `base`; see `registry.EMBEDDED`),
- a local Hugging Face folder (config.json + model.safetensors / sharded safetensors / pytorch_model.bin)
  or a Hugging Face hub id (`openai/whisper-small`; downloaded with huggingface_hub),
- an openai-whisper `.pt` checkpoint,
- a CTranslate2 / faster-whisper folder, `model.bin`, or `model.bin.part1`, `.part2`, ... (concatenated in order).

Each format is a (detector, reader) row of `FORMATS`; a reader returns (WhisperConfig, HF state dict). The
state dict is checked key by key and shape by shape against the model the config describes before anything is
built, so a bad file never yields a partial model. Special-token ids, suppress lists and the generation config
come from the source's own files (HF generation_config.json, CTranslate2 config.json, tokenizer.json), with
OpenAI's fixed layout of special tokens as the fallback for a bare `.pt`.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loralens.errors import WeightsError
from loralens.models import ctranslate2 as ct2
from loralens.models import openai_pt, registry

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Source:
    """A resolved source: its format, the weight file(s), and the folder holding its side files."""

    label: str
    format: str
    path: Path
    parts: tuple[Path, ...]
    folder: Path


# ---------------------------------------------------------------------------------------------------------------
# Special tokens, config, generation config


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of Whisper's special tokens and the language tokens (`{"<|en|>": id, ...}`)."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    startoflm: int
    startofprev: int
    nospeech: int
    notimestamps: int
    languages: dict[str, int]
    multilingual: bool


def _token_ids(folder: Path | None) -> dict[str, int] | None:
    """Special and language tokens -> id, from tokenizer.json's added tokens or a CTranslate2 vocabulary file."""
    if folder is None:
        return None
    path = folder / "tokenizer.json"
    try:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
        path = folder / "vocabulary.json"
        if path.is_file():
            tokens = json.loads(path.read_text(encoding="utf-8"))
        elif (folder / "vocabulary.txt").is_file():
            path = folder / "vocabulary.txt"
            tokens = path.read_text(encoding="utf-8").split("\n")
        else:
            return None
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: not valid JSON ({e})", "copy the file again") from None
    return {t: i for i, t in enumerate(tokens) if t.startswith("<|") and t.endswith("|>")}


def special_tokens(vocab_size: int, token_ids: dict[str, int] | None = None) -> SpecialTokens:
    """Special-token ids from `token_ids` (token -> id, see `_token_ids`), else from OpenAI's fixed layout.

    OpenAI's layout: English-only models (51864 tokens) put <|endoftext|> at 50256, multilingual ones at 50257;
    then <|startoftranscript|>, one token per language (99, or 100 from large-v3 on), translate, transcribe,
    startoflm, startofprev, nospeech, notimestamps and 1501 timestamps.
    """
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    multilingual = vocab_size >= 51865
    if token_ids is not None and "<|startoftranscript|>" in token_ids:
        added = token_ids

        def tid(*names: str) -> int:
            for n in names:
                if n in added:
                    return added[n]
            raise WeightsError(f"the tokenizer has no {names[0]} token", "use the tokenizer.json of this model")

        sot, translate = tid("<|startoftranscript|>"), tid("<|translate|>")
        # The language tokens are those between <|startoftranscript|> and <|translate|> (Hebrew is <|iw|> in some).
        langs = {t: i for t, i in sorted(added.items(), key=lambda kv: kv[1]) if sot < i < translate}
        return SpecialTokens(
            eot=tid("<|endoftext|>"), sot=sot, translate=translate,
            transcribe=tid("<|transcribe|>"), startoflm=tid("<|startoflm|>"), startofprev=tid("<|startofprev|>"),
            nospeech=tid("<|nospeech|>", "<|nocaptions|>"), notimestamps=tid("<|notimestamps|>"),
            languages=langs, multilingual=multilingual,
        )
    eot = 50256 + int(multilingual)
    n_langs = vocab_size - 51765 - int(multilingual)
    if not 0 < n_langs <= len(LANGUAGES):
        raise WeightsError(f"vocabulary of {vocab_size} tokens does not fit Whisper's special-token layout",
                           "put the model's tokenizer.json next to the checkpoint")
    sot = eot + 1
    langs = {f"<|{code}|>": sot + 1 + k for k, code in enumerate(list(LANGUAGES)[:n_langs])}
    base = sot + 1 + n_langs
    return SpecialTokens(eot, sot, base, base + 1, base + 2, base + 3, base + 4, base + 5, langs, multilingual)


def _ct2_side_config(folder: Path) -> dict:
    # A CTranslate2 config.json (suppress_ids, lang_ids, alignment_heads); an HF one has "model_type".
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: not valid JSON ({e})", "copy the model's config.json again") from None
    return {} if "model_type" in data else data


def build_config(fields: dict[str, int], folder: Path | None) -> Any:
    """A `WhisperConfig` from architecture `fields` plus token ids and suppress lists from the side files in
    `folder`."""
    from transformers import WhisperConfig

    side = _ct2_side_config(folder) if folder else {}
    tok = special_tokens(fields["vocab_size"], _token_ids(folder))
    suppress = side.get("suppress_ids") or [
        tok.sot, tok.translate, tok.transcribe, tok.startoflm, tok.startofprev, tok.nospeech
    ]
    begin = side.get("suppress_ids_begin") or [220, tok.eot]
    return WhisperConfig(
        **fields,
        pad_token_id=tok.eot,
        bos_token_id=tok.eot,
        eos_token_id=tok.eot,
        decoder_start_token_id=tok.sot,
        suppress_tokens=list(suppress),
        begin_suppress_tokens=list(begin),
        activation_function="gelu",
    )


def build_generation_config(config: Any, folder: Path | None) -> Any:
    """A `GenerationConfig` for greedy transcription: start/end tokens, suppress lists, no-timestamps and,
    for multilingual models, the language and task tokens (`generate(..., language="en", task="transcribe")`)."""
    from transformers import GenerationConfig

    side = _ct2_side_config(folder) if folder else {}
    tok = special_tokens(config.vocab_size, _token_ids(folder))
    heads = ct2.read_alignment_heads(side) or [
        [layer, head]
        for layer in range(config.decoder_layers // 2, config.decoder_layers)
        for head in range(config.decoder_attention_heads)
    ]
    kw: dict[str, Any] = dict(
        decoder_start_token_id=tok.sot,
        bos_token_id=tok.eot,
        eos_token_id=tok.eot,
        pad_token_id=tok.eot,
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or [220, tok.eot]),
        no_timestamps_token_id=tok.notimestamps,
        prev_sot_token_id=tok.startofprev,
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        is_multilingual=tok.multilingual,
        return_timestamps=False,
        alignment_heads=heads,
    )
    if tok.multilingual:
        kw["lang_to_id"] = dict(tok.languages)
        kw["task_to_id"] = {"transcribe": tok.transcribe, "translate": tok.translate}
        # Detect the language and transcribe (OpenAI's default); `generate(language=...)` fixes the language.
        kw["task"] = "transcribe"
    return GenerationConfig(**kw)


# ---------------------------------------------------------------------------------------------------------------
# Formats: (detector, reader) rows


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any((path / f).is_file() for f in HF_WEIGHT_FILES)


def _hf_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "model.safetensors.index.json").is_file():
        index = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))
        files = [folder / f for f in sorted(set(index["weight_map"].values()))]
    else:
        files = []
    state: dict[str, torch.Tensor] = {}
    try:
        for f in files:
            state.update(load_file(f))
        if not files:
            state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, SafetensorError, pickle.UnpicklingError) as e:
        raise WeightsError(f"{folder}: cannot read the weights ({type(e).__name__}: {e})",
                           "the file looks damaged: download or copy it again") from None
    # A bare WhisperModel checkpoint has no "model." prefix and no output projection.
    state = {(k if k.startswith(("model.", "proj_out.")) else f"model.{k}"): v.float() for k, v in state.items()}
    if "proj_out.weight" not in state and "model.decoder.embed_tokens.weight" in state:
        state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def _hf_config(src: Source) -> Any:
    from transformers import WhisperConfig

    try:
        config = WhisperConfig.from_pretrained(src.path)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{src.path}: config.json is not a Whisper config ({e})") from None
    if config.model_type != "whisper":
        raise WeightsError(f"{src.path}: config.json describes a {config.model_type!r} model, not Whisper")
    return config


def _read_hf(src: Source) -> tuple[Any, dict[str, torch.Tensor]]:
    return _hf_config(src), _hf_state(src.path)


def _read_ct2(src: Source) -> tuple[Any, dict[str, torch.Tensor]]:
    fields, state = ct2.read_ctranslate2(src.parts)
    return build_config(fields, src.folder), state


def _ct2_config(src: Source) -> Any:
    return build_config(ct2.read_ctranslate2_dims(src.parts), src.folder)


def _read_pt(src: Source) -> tuple[Any, dict[str, torch.Tensor]]:
    fields, state = openai_pt.read_openai_pt(src.path)
    return build_config(fields, src.folder), state


def _pt_config(src: Source) -> Any:
    return build_config(openai_pt.read_openai_pt_dims(src.path), src.folder)


@dataclass(frozen=True)
class Format:
    """A weight format: how to recognise a path, read it (config, state dict), and read only its config."""

    name: str
    detect: Callable[[Path], bool]
    read: Callable[[Source], tuple[Any, dict[str, torch.Tensor]]]
    read_config: Callable[[Source], Any]


FORMATS: tuple[Format, ...] = (
    Format("huggingface", _is_hf_folder, _read_hf, _hf_config),
    Format("ctranslate2", ct2.is_ctranslate2, _read_ct2, _ct2_config),
    Format("openai-pt", openai_pt.is_openai_pt, _read_pt, _pt_config),
)
_BY_NAME = {f.name: f for f in FORMATS}


def _download_hub(repo_id: str) -> Path:
    # Only what loading needs: configs, tokenizer files and the weights, safetensors first. Variants such as
    # model.fp32-*.safetensors or flax / tf weights are left on the hub.
    try:
        from huggingface_hub import snapshot_download

        side = ["*.json", "*.txt"]
        folder = Path(snapshot_download(repo_id, allow_patterns=side + ["model.safetensors", "model-*.safetensors"]))
        if not any((folder / f).is_file() for f in HF_WEIGHT_FILES):
            folder = Path(snapshot_download(repo_id, allow_patterns=side + ["pytorch_model.bin"]))
        return folder
    except Exception as e:  # huggingface_hub raises many network / auth / not-found types
        raise WeightsError(f"{repo_id}: cannot download from the Hugging Face hub ({type(e).__name__}: {e})",
                           "check the id and the network, or give a local folder") from None


def resolve(source: str | Path) -> Source:
    """Find what `source` is (embedded name, local path, hub id) and its format. Raises WeightsError if unknown."""
    text = str(source)
    if not isinstance(source, Path) and text in registry.EMBEDDED:
        files = registry.embedded_files(text)
        return Source(text, "ctranslate2", files.parts[0], files.parts, files.folder)
    path = Path(source).expanduser()
    if not path.exists():
        if not isinstance(source, Path) and _HUB_ID.fullmatch(text):
            path = _download_hub(text)
        else:
            raise WeightsError(
                f"{text}: no such file or folder, and not an embedded model",
                f"give a path, a Hugging Face hub id, or one of: {', '.join(registry.EMBEDDED)}",
            )
    for fmt in FORMATS:
        if fmt.detect(path):
            folder = path if path.is_dir() else path.parent
            parts = tuple(ct2.model_parts(path)) if fmt.name == "ctranslate2" else (path,)
            return Source(text, fmt.name, path, parts, folder)
    raise WeightsError(
        f"{path}: not a recognised Whisper checkpoint",
        "give a Hugging Face folder (config.json + model.safetensors), an openai-whisper .pt, "
        "or a CTranslate2 folder / model.bin",
    )


# ---------------------------------------------------------------------------------------------------------------
# Public API


def check_state_dict(model: Any, state: dict[str, torch.Tensor], label: str) -> None:
    """Raise WeightsError unless `state` has exactly the keys of `model` with the same shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected "
                        f"({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''})")
    if wrong:
        problems.append(f"shape mismatch: {'; '.join(wrong[:4])}")
    if problems:
        raise WeightsError(f"{label}: weights do not fit the Whisper model they describe: {'; '.join(problems)}",
                           "the checkpoint is damaged or not a standard Whisper model")


def build_model(config: Any, state: dict[str, torch.Tensor], label: str, dtype: torch.dtype = torch.float32) -> Any:
    """A `WhisperForConditionalGeneration` in eval mode with `state` loaded (checked first; tied output projection)."""
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    check_state_dict(model, state, label)
    converted: dict[int, torch.Tensor] = {}
    typed = {}
    for k, v in state.items():
        if id(v) not in converted:  # keep tied tensors shared
            converted[id(v)] = v.to(dtype).contiguous()
        typed[k] = converted[id(v)]
    model.load_state_dict(typed, strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def load_whisper(source: str | Path, dtype: torch.dtype = torch.float32) -> Any:
    """Load Whisper weights from any supported source as a `WhisperForConditionalGeneration` on CPU, eval mode.

    `dtype` is the parameter dtype (float32 by default, `torch.bfloat16` where asked). The model's
    `generation_config` is set for greedy transcription. Raises WeightsError (MissingExtraError for an
    embedded model whose extra is not installed) naming the file and variable when anything does not fit.
    """
    src = resolve(source)
    config, state = _BY_NAME[src.format].read(src)
    model = build_model(config, state, src.label, dtype)
    from transformers import GenerationConfig

    if src.format == "huggingface" and (src.path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(src.path)
    elif src.format == "huggingface":
        try:
            model.generation_config = build_generation_config(config, src.folder)
        except WeightsError:  # a non-standard vocabulary: keep the ids of its own config.json
            model.generation_config = GenerationConfig.from_model_config(config)
    else:
        model.generation_config = build_generation_config(config, src.folder)
    return model


def load_config(source: str | Path) -> Any:
    """The `WhisperConfig` of `source` without loading its weights (a CTranslate2 header is parsed, a .pt mapped)."""
    src = resolve(source)
    return _BY_NAME[src.format].read_config(src)


def load_feature_extractor(source: str | Path) -> Any:
    """The `WhisperFeatureExtractor` of `source`: its preprocessor_config.json if it has one, else the standard
    16 kHz / 25 ms window / 10 ms hop / 30 s log-mel extractor with `feature_size` = the model's mel bins."""
    from transformers import WhisperFeatureExtractor

    src = resolve(source)
    if (src.folder / "preprocessor_config.json").is_file():
        return WhisperFeatureExtractor.from_pretrained(src.folder)
    n_mels = _BY_NAME[src.format].read_config(src).num_mel_bins
    return WhisperFeatureExtractor(feature_size=n_mels)


def load_tokenizer(source: str | Path) -> Any:
    """The `WhisperTokenizer` of `source`, from its tokenizer.json (or HF tokenizer files).

    Raises WeightsError when the source has no tokenizer (e.g. a bare .pt: put tokenizer.json next to it).
    """
    # The tokenizers-backed class: `WhisperTokenizer` itself in transformers 5, its Fast twin in 4.x.
    from transformers import WhisperTokenizerFast as WhisperTokenizer

    src = resolve(source)
    hf_files = ("tokenizer_config.json", "vocab.json")
    if src.format == "huggingface" and any((src.folder / f).is_file() for f in hf_files):
        return WhisperTokenizer.from_pretrained(src.folder)  # keeps the settings of tokenizer_config.json
    if (src.folder / "tokenizer.json").is_file():
        return WhisperTokenizer(tokenizer_file=str(src.folder / "tokenizer.json"))
    raise WeightsError(f"{src.label}: no tokenizer.json (or vocab.json) in {src.folder}",
                       "put the model's tokenizer.json next to its weights")
