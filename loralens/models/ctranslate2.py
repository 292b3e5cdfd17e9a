"""CTranslate2 / faster-whisper `model.bin` reader (also split into `model.bin.part1`, `.part2`, ...).

Layout of a binary of version 4 to 6 (little-endian, what `ctranslate2.specs.ModelSpec._serialize` writes):
u32 binary version, string spec name, u32 spec revision, u32 variable count, then per variable
string name, u8 rank, rank x u32 dims, u8 dtype id, u32 byte count and the data; then u32 alias count
and per alias string alias, string target. A string is a u16 length followed by that many bytes,
the last one NUL.

The Whisper variables map onto Hugging Face `WhisperForConditionalGeneration` names; fused projections are
split (self-attention `linear_0` = rows [q; k; v], cross-attention `linear_1` = rows [k; v]) and the
k biases, which CTranslate2 stores as zeros, are dropped (HF's k_proj has none; a constant key bias cancels
in the softmax anyway). int8/int16 weights with a `weight_scale` are dequantised.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loralens.errors import WeightsError

SPEC_NAME = "WhisperSpec"
SUPPORTED_VERSIONS = (4, 5, 6)
MODEL_FILE = "model.bin"

# Type ids of CTranslate2's DataType enum, in order; bfloat16 is read as raw uint16 bits.
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}

_HINT_REDOWNLOAD = "the file looks damaged or incomplete: download or copy it again"


@dataclass(frozen=True)
class Ct2Variable:
    """One variable of a model.bin: its shape, CTranslate2 dtype name and where its bytes lie in the buffer."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Ct2Index:
    """The parsed header of a model.bin: spec, version, variables (aliases resolved to their targets)."""

    label: str
    version: int
    spec: str
    revision: int
    variables: dict[str, Ct2Variable]
    aliases: dict[str, str]


# ---------------------------------------------------------------------------------------------------------------
# Finding the files


def model_parts(path: str | Path) -> list[Path]:
    """The files that make up the model at `path`, in order.

    `path` is a CTranslate2 folder, a `model.bin`, or any `model.bin.partK` (then every part in its folder).
    Raises WeightsError if nothing is found or a part in the sequence 1..N is missing.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.name == MODEL_FILE:
        return [path]
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return [path / MODEL_FILE]
    numbers = {}
    for p in folder.glob(f"{MODEL_FILE}.part*"):
        m = re.fullmatch(re.escape(MODEL_FILE) + r"\.part(\d+)", p.name)
        if m:
            numbers[int(m.group(1))] = p
    if not numbers:
        raise WeightsError(f"{path}: no {MODEL_FILE} or {MODEL_FILE}.part1, .part2, ... found",
                           "point to a CTranslate2 (faster-whisper) model folder")
    check_part_sequence(sorted(numbers), folder)
    return [numbers[k] for k in sorted(numbers)]


def check_part_sequence(numbers: Sequence[int], where: Path | str) -> None:
    """Raise WeightsError unless `numbers` is exactly 1..N."""
    expected = list(range(1, len(numbers) + 1))
    if list(numbers) != expected:
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        raise WeightsError(
            f"{where}: {MODEL_FILE} part(s) {', '.join(f'part{k}' for k in missing)} missing "
            f"(found {', '.join(f'part{k}' for k in numbers)})",
            "all parts model.bin.part1 .. partN must be present; copy the missing ones",
        )


def is_ctranslate2(path: Path) -> bool:
    """True if `path` is a model.bin / model.bin.partK or a folder holding one."""
    if path.is_file():
        return path.name == MODEL_FILE or re.fullmatch(re.escape(MODEL_FILE) + r"\.part\d+", path.name) is not None
    return path.is_dir() and (
        (path / MODEL_FILE).is_file() or any(path.glob(f"{MODEL_FILE}.part*"))
    )


def _load_buffer(parts: Sequence[Path]) -> np.ndarray:
    # One file: memory-map it. Several: read them one after the other into a single buffer.
    for p in parts:
        if not p.is_file():
            raise WeightsError(f"{p}: model file not found", "check the path; all parts must be present")
    if len(parts) == 1:
        if parts[0].stat().st_size == 0:
            raise WeightsError(f"{parts[0]}: file is empty", _HINT_REDOWNLOAD)
        return np.memmap(parts[0], dtype=np.uint8, mode="r")
    sizes = [p.stat().st_size for p in parts]
    buf = np.empty(sum(sizes), dtype=np.uint8)
    pos = 0
    for p, size in zip(parts, sizes):
        with open(p, "rb") as f:
            n = f.readinto(memoryview(buf)[pos : pos + size])
        if n != size:
            raise WeightsError(f"{p}: read {n} of {size} bytes", _HINT_REDOWNLOAD)
        pos += size
    return buf


# ---------------------------------------------------------------------------------------------------------------
# Parsing


class _Reader:
    """Sequential little-endian reader over a byte buffer, with errors naming the file."""

    def __init__(self, buf: np.ndarray, label: str) -> None:
        self.mv = memoryview(buf).cast("B")
        self.size = len(self.mv)
        self.pos = 0
        self.label = label

    def _need(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise WeightsError(
                f"{self.label}: file ends early while reading {what} "
                f"(needs {n} bytes at offset {self.pos}, {self.size} in total): truncated, or a part missing",
                _HINT_REDOWNLOAD,
            )

    def unpack(self, fmt: str, what: str) -> tuple:
        n = struct.calcsize("<" + fmt)
        self._need(n, what)
        out = struct.unpack_from("<" + fmt, self.mv, self.pos)
        self.pos += n
        return out

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        self._need(n, what)
        raw = bytes(self.mv[self.pos : self.pos + n])
        self.pos += n
        if n == 0 or raw[-1] != 0:
            raise WeightsError(f"{self.label}: malformed string for {what} at offset {self.pos - n}", _HINT_REDOWNLOAD)
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(f"{self.label}: {what} is not UTF-8 at offset {self.pos - n}",
                               _HINT_REDOWNLOAD) from None


def parse_index(buf: np.ndarray, label: str) -> Ct2Index:
    """Parse the header and variable table of a model.bin held in `buf` (data is not copied).

    Raises WeightsError for another format, an unsupported version, a truncated buffer or trailing bytes.
    """
    r = _Reader(buf, label)
    if r.size < 4:
        raise WeightsError(f"{label}: {r.size} bytes, too short to be a CTranslate2 model", _HINT_REDOWNLOAD)
    (version,) = r.unpack("I", "the binary version")
    if version not in SUPPORTED_VERSIONS:
        raise WeightsError(
            f"{label}: not a CTranslate2 model of a supported version (binary version field reads {version}, "
            f"supported {SUPPORTED_VERSIONS}); a part may be in the wrong order",
            "give a CTranslate2 Whisper model (model.bin, or model.bin.part1..N in order)",
        )
    spec = r.string("the spec name")
    (revision,) = r.unpack("I", "the spec revision")
    if spec != SPEC_NAME:
        raise WeightsError(f"{label}: CTranslate2 model of spec {spec!r}, not {SPEC_NAME!r}",
                           "give a Whisper model converted by CTranslate2 / faster-whisper")
    (count,) = r.unpack("I", "the variable count")
    variables: dict[str, Ct2Variable] = {}
    for i in range(count):
        name = r.string(f"the name of variable {i}")
        (rank,) = r.unpack("B", f"the rank of {name}")
        if rank > 4:
            raise WeightsError(f"{label}: variable {name} has rank {rank}; the file is corrupt", _HINT_REDOWNLOAD)
        dims = r.unpack(f"{rank}I", f"the shape of {name}") if rank else ()
        dtype_id, nbytes = r.unpack("BI", f"the dtype of {name}")
        if dtype_id not in _DTYPES:
            raise WeightsError(f"{label}: variable {name} has unknown dtype id {dtype_id}", _HINT_REDOWNLOAD)
        dtype_name, np_dtype = _DTYPES[dtype_id]
        expected = int(np.prod(dims, dtype=np.int64)) * np_dtype.itemsize
        if nbytes != expected:
            raise WeightsError(
                f"{label}: variable {name} of shape {tuple(dims)} {dtype_name} should have {expected} bytes, "
                f"header says {nbytes}",
                _HINT_REDOWNLOAD,
            )
        r._need(nbytes, f"the data of {name}")
        variables[name] = Ct2Variable(name, tuple(int(d) for d in dims), dtype_name, r.pos, nbytes)
        r.pos += nbytes
    (n_alias,) = r.unpack("I", "the alias count")
    aliases: dict[str, str] = {}
    for _ in range(n_alias):
        alias = r.string("an alias name")
        target = r.string(f"the target of alias {alias}")
        aliases[alias] = target
    if r.pos != r.size:
        raise WeightsError(
            f"{label}: {r.size - r.pos} unread bytes after the last alias (offset {r.pos} of {r.size}); "
            "parts concatenated in the wrong order or a foreign file appended",
            _HINT_REDOWNLOAD,
        )
    for alias, target in aliases.items():
        if target not in variables:
            raise WeightsError(f"{label}: alias {alias} points to unknown variable {target}", _HINT_REDOWNLOAD)
        variables[alias] = variables[target]
    return Ct2Index(label, version, spec, revision, variables, aliases)


_NP_DTYPE = {name: np_dtype for name, np_dtype in _DTYPES.values()}


def _array(buf: np.ndarray, var: Ct2Variable) -> np.ndarray:
    np_dtype = _NP_DTYPE[var.dtype]
    return np.frombuffer(buf, dtype=np_dtype, count=int(np.prod(var.shape, dtype=np.int64)), offset=var.offset).reshape(
        var.shape
    )


def raw_arrays(index: Ct2Index, buf: np.ndarray) -> dict[str, np.ndarray]:
    """Every stored (non-alias) variable as a numpy array view in its stored dtype (bfloat16 as uint16 bits)."""
    return {n: _array(buf, v) for n, v in index.variables.items() if n not in index.aliases}


def _tensor(buf: np.ndarray, var: Ct2Variable) -> torch.Tensor:
    arr = _array(buf, var)
    if var.dtype == "bfloat16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16).float()
    return torch.from_numpy(arr.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# CTranslate2 names -> Hugging Face names

# Scalar settings of the spec and the value this reader supports (None: any value; it only feeds the config).
_SCALARS: dict[str, int | None] = {
    "encoder/num_heads": None,
    "decoder/num_heads": None,
    "decoder/activation": 3,  # GELU
    "decoder/pre_norm": 1,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": 0,
    "decoder/scale_alibi": 0,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    "decoder/alignment_heads": None,
    "decoder/alignment_layer": None,
    "encoder/pre_norm": 1,
    "encoder/activation": 3,
}

_Rule = tuple[str, Callable[[re.Match], list[str]]]

_LINEAR = r"(weight|bias)"
_NORM = {"gamma": "weight", "beta": "bias"}


def _hf_layer(m: re.Match) -> str:
    return f"model.{m['side']}.layers.{m['i']}"


# Each rule: a regex over the CTranslate2 name, and the HF names of the row blocks it splits into
# ("" for a block that is dropped: the zero k bias).
_RULES: list[_Rule] = [
    (r"encoder/conv(?P<n>[12])/(?P<p>weight|bias)", lambda m: [f"model.encoder.conv{m['n']}.{m['p']}"]),
    (r"(?P<side>encoder|decoder)/position_encodings/encodings",
     lambda m: [f"model.{m['side']}.embed_positions.weight"]),
    (r"(?P<side>encoder|decoder)/layer_norm/(?P<p>gamma|beta)",
     lambda m: [f"model.{m['side']}.layer_norm.{_NORM[m['p']]}"]),
    (r"decoder/embeddings/weight", lambda m: ["model.decoder.embed_tokens.weight"]),
    (r"decoder/projection/weight", lambda m: ["proj_out.weight"]),
    (
        r"(?P<side>encoder|decoder)/layer_(?P<i>\d+)/self_attention/layer_norm/(?P<p>gamma|beta)",
        lambda m: [f"{_hf_layer(m)}.self_attn_layer_norm.{_NORM[m['p']]}"],
    ),
    (
        r"(?P<side>encoder|decoder)/layer_(?P<i>\d+)/self_attention/linear_0/(?P<p>weight|bias)",
        lambda m: [
            f"{_hf_layer(m)}.self_attn.q_proj.{m['p']}",
            f"{_hf_layer(m)}.self_attn.k_proj.weight" if m["p"] == "weight" else "",
            f"{_hf_layer(m)}.self_attn.v_proj.{m['p']}",
        ],
    ),
    (
        r"(?P<side>encoder|decoder)/layer_(?P<i>\d+)/self_attention/linear_1/(?P<p>weight|bias)",
        lambda m: [f"{_hf_layer(m)}.self_attn.out_proj.{m['p']}"],
    ),
    (
        r"(?P<side>decoder)/layer_(?P<i>\d+)/attention/layer_norm/(?P<p>gamma|beta)",
        lambda m: [f"{_hf_layer(m)}.encoder_attn_layer_norm.{_NORM[m['p']]}"],
    ),
    (
        r"(?P<side>decoder)/layer_(?P<i>\d+)/attention/linear_0/(?P<p>weight|bias)",
        lambda m: [f"{_hf_layer(m)}.encoder_attn.q_proj.{m['p']}"],
    ),
    (
        r"(?P<side>decoder)/layer_(?P<i>\d+)/attention/linear_1/(?P<p>weight|bias)",
        lambda m: [
            f"{_hf_layer(m)}.encoder_attn.k_proj.weight" if m["p"] == "weight" else "",
            f"{_hf_layer(m)}.encoder_attn.v_proj.{m['p']}",
        ],
    ),
    (
        r"(?P<side>decoder)/layer_(?P<i>\d+)/attention/linear_2/(?P<p>weight|bias)",
        lambda m: [f"{_hf_layer(m)}.encoder_attn.out_proj.{m['p']}"],
    ),
    (
        r"(?P<side>encoder|decoder)/layer_(?P<i>\d+)/ffn/layer_norm/(?P<p>gamma|beta)",
        lambda m: [f"{_hf_layer(m)}.final_layer_norm.{_NORM[m['p']]}"],
    ),
    (
        r"(?P<side>encoder|decoder)/layer_(?P<i>\d+)/ffn/linear_(?P<k>[01])/(?P<p>weight|bias)",
        lambda m: [f"{_hf_layer(m)}.fc{int(m['k']) + 1}.{m['p']}"],
    ),
]
_COMPILED = [(re.compile(pattern), fn) for pattern, fn in _RULES]


def hf_names(ct2_name: str) -> list[str] | None:
    """The HF names of the row blocks of CTranslate2 variable `ct2_name` ("" = dropped block), None if unknown."""
    for pattern, fn in _COMPILED:
        m = pattern.fullmatch(ct2_name)
        if m:
            return fn(m)
    return None


def _scalar(buf: np.ndarray, var: Ct2Variable) -> int:
    return int(_array(buf, var).reshape(-1)[0])


def index_to_config_dims(index: Ct2Index, buf: np.ndarray) -> dict[str, int]:
    """WhisperConfig architecture fields derived from the variable shapes and the num_heads scalars."""
    v = index.variables
    label = index.label

    def shape(name: str) -> tuple[int, ...]:
        if name not in v:
            raise WeightsError(f"{label}: variable {name} missing; not a complete Whisper model", _HINT_REDOWNLOAD)
        return v[name].shape

    def count_layers(side: str) -> int:
        ids = {int(m.group(1)) for n in v for m in [re.match(rf"{side}/layer_(\d+)/", n)] if m}
        if ids != set(range(len(ids))) or not ids:
            raise WeightsError(f"{label}: {side} layers {sorted(ids)} are not 0..N-1", _HINT_REDOWNLOAD)
        return len(ids)

    conv1 = shape("encoder/conv1/weight")
    if len(conv1) != 3:
        raise WeightsError(f"{label}: encoder/conv1/weight has shape {conv1}, expected [d_model, n_mels, 3]")
    for name in ("encoder/num_heads", "decoder/num_heads"):
        shape(name)
    return dict(
        num_mel_bins=conv1[1],
        d_model=conv1[0],
        encoder_layers=count_layers("encoder"),
        decoder_layers=count_layers("decoder"),
        encoder_attention_heads=_scalar(buf, v["encoder/num_heads"]),
        decoder_attention_heads=_scalar(buf, v["decoder/num_heads"]),
        encoder_ffn_dim=shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=shape("decoder/layer_0/ffn/linear_0/weight")[0],
        vocab_size=shape("decoder/embeddings/weight")[0],
        max_source_positions=shape("encoder/position_encodings/encodings")[0],
        max_target_positions=shape("decoder/position_encodings/encodings")[0],
    )


def read_index(parts: Sequence[Path]) -> tuple[Ct2Index, np.ndarray]:
    """Load (memory-map or concatenate) the parts and parse the header. Returns the index and the byte buffer."""
    parts = [Path(p) for p in parts]
    label = str(parts[0]) if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} more parts)"
    buf = _load_buffer(parts)
    return parse_index(buf, label), buf


def read_ctranslate2_dims(source: str | Path | Sequence[Path]) -> dict[str, int]:
    """The architecture fields (see `index_to_config_dims`) of a CTranslate2 Whisper model, without converting it."""
    parts = model_parts(source) if isinstance(source, (str, Path)) else list(source)
    index, buf = read_index(parts)
    return index_to_config_dims(index, buf)


def read_ctranslate2(source: str | Path | Sequence[Path]) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Read a CTranslate2 Whisper model into HF `WhisperForConditionalGeneration` names, float32 tensors.

    `source` is a folder, `model.bin`, a `model.bin.partK`, or the list of parts in order.
    Returns (architecture fields for WhisperConfig, state dict including the tied `proj_out.weight`).
    Raises WeightsError naming file and variable for an unknown variable, a setting this reader does not
    support, a shape that does not fit, a truncated file, a missing part or trailing bytes.
    """
    parts = model_parts(source) if isinstance(source, (str, Path)) else list(source)
    index, buf = read_index(parts)
    dims = index_to_config_dims(index, buf)
    label = index.label
    state: dict[str, torch.Tensor] = {}
    scales = {n for n in index.variables if n.endswith("_scale")}
    for name, var in index.variables.items():
        if name in scales:
            continue
        if name in _SCALARS:
            expected = _SCALARS[name]
            if expected is not None and _scalar(buf, var) != expected:
                raise WeightsError(
                    f"{label}: variable {name} = {_scalar(buf, var)}, this reader supports only {expected}",
                    "this is not a standard Whisper model",
                )
            continue
        targets = hf_names(name)
        if targets is None:
            raise WeightsError(f"{label}: unknown variable {name} for a Whisper model",
                               "this is not a standard CTranslate2 Whisper model")
        tensor = _tensor(buf, var)
        scale_name = f"{var.name}_scale"  # an alias shares its target's scale
        if scale_name in index.variables:
            scale = _tensor(buf, index.variables[scale_name])
            # CTranslate2 quantises per output row (int8) or with one scalar (int16): value = stored / scale.
            tensor = tensor / scale.reshape(-1, *([1] * (tensor.dim() - 1)))
        elif var.dtype in ("int8", "int16", "int32"):
            raise WeightsError(f"{label}: integer variable {name} has no {scale_name}", _HINT_REDOWNLOAD)
        if tensor.shape[0] % len(targets):
            raise WeightsError(
                f"{label}: variable {name} has {tensor.shape[0]} rows, not divisible into {len(targets)} blocks",
                _HINT_REDOWNLOAD,
            )
        for target, block in zip(targets, tensor.chunk(len(targets), dim=0)):
            if target:
                state[target] = block.contiguous()
    for scale_name in scales:
        if scale_name[: -len("_scale")] not in index.variables:
            raise WeightsError(f"{label}: unknown variable {scale_name} for a Whisper model")
    embeddings = state["model.decoder.embed_tokens.weight"]  # present: index_to_config_dims checked it
    if "proj_out.weight" in state and not torch.equal(state["proj_out.weight"], embeddings):
        raise WeightsError(f"{label}: decoder/projection/weight differs from the token embeddings",
                           "Whisper ties them; this model is not a standard Whisper")
    state["proj_out.weight"] = embeddings
    return dims, state


def read_alignment_heads(config_json: dict) -> list[list[int]] | None:
    """The alignment heads of a CTranslate2 config.json, as [[layer, head], ...], or None."""
    heads = config_json.get("alignment_heads")
    return [list(map(int, h)) for h in heads] if heads else None
