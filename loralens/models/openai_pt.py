"""openai-whisper `.pt` checkpoints: a dict {"dims": {...}, "model_state_dict": {...}} in OpenAI's naming.

Read with `torch.load(..., weights_only=True)` (no code runs from the file). The key mapping is a table of
name templates used in both directions, so a model can also be written back in OpenAI's format
(`save_openai_pt`), which makes a round trip testable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from loralens.errors import WeightsError

# (OpenAI template, Hugging Face template). {side} = encoder|decoder, {i} = layer, {p} = weight|bias.
_PAIRS: list[tuple[str, str]] = [
    ("encoder.conv{n}.{p}", "model.encoder.conv{n}.{p}"),
    ("{side}.positional_embedding", "model.{side}.embed_positions.weight"),
    ("encoder.ln_post.{p}", "model.encoder.layer_norm.{p}"),
    ("decoder.ln.{p}", "model.decoder.layer_norm.{p}"),
    ("decoder.token_embedding.weight", "model.decoder.embed_tokens.weight"),
    ("{side}.blocks.{i}.attn.query.{p}", "model.{side}.layers.{i}.self_attn.q_proj.{p}"),
    ("{side}.blocks.{i}.attn.key.weight", "model.{side}.layers.{i}.self_attn.k_proj.weight"),
    ("{side}.blocks.{i}.attn.value.{p}", "model.{side}.layers.{i}.self_attn.v_proj.{p}"),
    ("{side}.blocks.{i}.attn.out.{p}", "model.{side}.layers.{i}.self_attn.out_proj.{p}"),
    ("{side}.blocks.{i}.attn_ln.{p}", "model.{side}.layers.{i}.self_attn_layer_norm.{p}"),
    ("decoder.blocks.{i}.cross_attn.query.{p}", "model.decoder.layers.{i}.encoder_attn.q_proj.{p}"),
    ("decoder.blocks.{i}.cross_attn.key.weight", "model.decoder.layers.{i}.encoder_attn.k_proj.weight"),
    ("decoder.blocks.{i}.cross_attn.value.{p}", "model.decoder.layers.{i}.encoder_attn.v_proj.{p}"),
    ("decoder.blocks.{i}.cross_attn.out.{p}", "model.decoder.layers.{i}.encoder_attn.out_proj.{p}"),
    ("decoder.blocks.{i}.cross_attn_ln.{p}", "model.decoder.layers.{i}.encoder_attn_layer_norm.{p}"),
    ("{side}.blocks.{i}.mlp.0.{p}", "model.{side}.layers.{i}.fc1.{p}"),
    ("{side}.blocks.{i}.mlp.2.{p}", "model.{side}.layers.{i}.fc2.{p}"),
    ("{side}.blocks.{i}.mlp_ln.{p}", "model.{side}.layers.{i}.final_layer_norm.{p}"),
]
_FIELDS = {"side": r"(?P<side>encoder|decoder)", "i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "n": r"(?P<n>[12])"}
DIMS_KEYS = (
    "n_mels", "n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
    "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer",
)


def _compile(template: str) -> re.Pattern[str]:
    out = re.escape(template)
    for field, rx in _FIELDS.items():
        out = out.replace(re.escape("{" + field + "}"), rx)
    return re.compile(out)


_TO_HF = [(_compile(o), h) for o, h in _PAIRS]
_TO_OPENAI = [(_compile(h), o) for o, h in _PAIRS]


def _rename(key: str, table: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in table:
        m = pattern.fullmatch(key)
        if m:
            return template.format(**m.groupdict())
    return None


def openai_to_hf_name(key: str) -> str | None:
    """The HF name of OpenAI state-dict key `key`, None if it is not a Whisper key."""
    return _rename(key, _TO_HF)


def hf_to_openai_name(key: str) -> str | None:
    """The OpenAI name of HF key `key` (`proj_out.weight`, tied to the embeddings, has none)."""
    return _rename(key, _TO_OPENAI)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal encoder position embedding, `[length, channels]` (sin half then cos half)."""
    log_timescale_increment = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def is_openai_pt(path: Path) -> bool:
    """True if `path` is a file ending in .pt or .pth (the content is checked when read)."""
    return path.is_file() and path.suffix in (".pt", ".pth")


def _load(path: Path, mmap: bool) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many types (pickle, zip, runtime) for a file it cannot read
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})",
                           "give an openai-whisper .pt checkpoint") from None
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise WeightsError(f"{path}: not an openai-whisper checkpoint (expected keys 'dims', 'model_state_dict'; "
                           f"found {keys})", "give a .pt file saved by openai-whisper")
    dims = ckpt["dims"]
    missing = [k for k in DIMS_KEYS if k not in dims]
    if missing:
        raise WeightsError(f"{path}: 'dims' lacks {missing}", "give a .pt file saved by openai-whisper")
    return {k: int(dims[k]) for k in DIMS_KEYS}, ckpt["model_state_dict"]


def dims_to_config_fields(dims: dict[str, int], ffn: tuple[int, int] | None = None) -> dict[str, int]:
    """WhisperConfig architecture fields from OpenAI `dims` (ffn = (encoder, decoder) widths, default 4 x d_model)."""
    if dims["n_audio_state"] != dims["n_text_state"]:
        raise WeightsError(f"encoder width {dims['n_audio_state']} != decoder width {dims['n_text_state']}",
                           "Hugging Face Whisper needs one d_model")
    enc_ffn, dec_ffn = ffn or (4 * dims["n_audio_state"], 4 * dims["n_text_state"])
    return dict(
        num_mel_bins=dims["n_mels"],
        d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"],
        decoder_layers=dims["n_text_layer"],
        encoder_attention_heads=dims["n_audio_head"],
        decoder_attention_heads=dims["n_text_head"],
        encoder_ffn_dim=enc_ffn,
        decoder_ffn_dim=dec_ffn,
        vocab_size=dims["n_vocab"],
        max_source_positions=dims["n_audio_ctx"],
        max_target_positions=dims["n_text_ctx"],
    )


def read_openai_pt_dims(path: str | Path) -> dict[str, int]:
    """The architecture fields of an openai-whisper checkpoint (memory-mapped; nothing converted)."""
    path = Path(path)
    dims, sd = _load(path, mmap=True)
    return dims_to_config_fields(dims, _ffn_widths(sd, path))


def _ffn_widths(sd: dict[str, torch.Tensor], path: Path) -> tuple[int, int]:
    try:
        return sd["encoder.blocks.0.mlp.0.weight"].shape[0], sd["decoder.blocks.0.mlp.0.weight"].shape[0]
    except KeyError as e:
        raise WeightsError(f"{path}: key {e.args[0]} missing; not an openai-whisper checkpoint") from None


def read_openai_pt(path: str | Path) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Read an openai-whisper `.pt` into HF names, float32 tensors.

    Returns (architecture fields for WhisperConfig, state dict including the tied `proj_out.weight`).
    A missing `encoder.positional_embedding` is recomputed (it is the fixed sinusoid). Raises WeightsError
    naming the file and key for an unknown key; missing keys and shapes are checked by the loader.
    """
    path = Path(path)
    dims, sd = _load(path, mmap=False)
    fields = dims_to_config_fields(dims, _ffn_widths(sd, path))
    state: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in ("decoder.mask", "alignment_heads"):  # non-persistent buffers some exports keep
            continue
        name = openai_to_hf_name(key)
        if name is None:
            raise WeightsError(f"{path}: unknown key {key!r} for an openai-whisper checkpoint",
                               "give a .pt file saved by openai-whisper (keys like encoder.blocks.0.attn.query.weight)")
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor")
        state[name] = value.float()
    if "model.encoder.embed_positions.weight" not in state:
        state["model.encoder.embed_positions.weight"] = sinusoids(fields["max_source_positions"], fields["d_model"])
    if "model.decoder.embed_tokens.weight" in state:
        state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return fields, state


def to_openai_checkpoint(model: Any, dtype: torch.dtype = torch.float16) -> dict[str, Any]:
    """A `WhisperForConditionalGeneration` as an openai-whisper checkpoint dict {"dims", "model_state_dict"}."""
    c = model.config
    dims = dict(
        n_mels=c.num_mel_bins, n_vocab=c.vocab_size, n_audio_ctx=c.max_source_positions, n_audio_state=c.d_model,
        n_audio_head=c.encoder_attention_heads, n_audio_layer=c.encoder_layers, n_text_ctx=c.max_target_positions,
        n_text_state=c.d_model, n_text_head=c.decoder_attention_heads, n_text_layer=c.decoder_layers,
    )
    sd = {}
    for key, value in model.state_dict().items():
        if key == "proj_out.weight":
            continue
        name = hf_to_openai_name(key)
        if name is None:
            raise WeightsError(f"HF key {key!r} has no openai-whisper name",
                               "only plain Whisper models can be exported")
        sd[name] = value.detach().to(dtype).contiguous().clone()
    return {"dims": dims, "model_state_dict": sd}


def save_openai_pt(model: Any, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write `model` as an openai-whisper `.pt` at `path` (atomically). Returns the path."""
    from loralens.io import atomic_write_with

    path = Path(path)
    ckpt = to_openai_checkpoint(model, dtype)
    atomic_write_with(path, lambda tmp: torch.save(ckpt, tmp))
    return path
