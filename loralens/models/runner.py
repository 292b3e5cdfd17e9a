"""The encoder runner: runs the ORIGINAL transformers modules of a `WhisperEncoder` in our own loop, with named
hook points (TransformerLens names) and interventions given as arguments.

The loop is `WhisperEncoder.forward` / `WhisperEncoderLayer.forward` of transformers 5.x step by step (same modules,
same order, same dropout calls), so with a 30-s window and no padding mask it gives transformers' outputs bit for bit.
Two differences by design:
- windows shorter than 30 s are accepted (positional embeddings sliced to the window), which stock
  `WhisperEncoder.forward` rejects;
- with `mask_padding=True` and `mel_lengths` given, padded key frames are masked in self-attention and the
  padded mel frames are zeroed before each convolution (as their zero padding does for a clip run alone), so a
  clip's encoding does not depend on what it is batched with. Whisper itself was trained attending to its 30-s padding;
  the paper's setting is the `full` window with `mask_padding=False`.

Hook points of layer l: `blocks.{l}.hook_resid_pre`, `.hook_attn_out`, `.hook_resid_mid`, `.hook_mlp_out`,
`.hook_resid_post`; `ln_final.hook_out`; for every peft LoRA module `blocks.{l}.attn.{q,k,v,out}_proj.hook_lora_a`
(`[batch, frames, r]`, the A output after the adapter's dropout) and `.hook_lora_b` (`[batch, frames, d_out]`,
the B output times peft's scaling, i.e. exactly what is added to the base projection); `fc1`/`fc2` adapters are
`blocks.{l}.mlp.fc1.hook_lora_a` etc. See docs/runner.md.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from loralens.errors import ConfigError
from loralens.models.lora import ADAPTER, MODULE_HOOK_PREFIX, _unwrap, lora_modules, refuse_lora_variants

RESID_PRE = "hook_resid_pre"
ATTN_OUT = "hook_attn_out"
RESID_MID = "hook_resid_mid"
MLP_OUT = "hook_mlp_out"
RESID_POST = "hook_resid_post"
BLOCK_HOOKS: tuple[str, ...] = (RESID_PRE, ATTN_OUT, RESID_MID, MLP_OUT, RESID_POST)
LN_FINAL = "ln_final.hook_out"
LORA_A = "hook_lora_a"
LORA_B = "hook_lora_b"

_MODULE_ORDER = {prefix: i for i, prefix in enumerate(MODULE_HOOK_PREFIX.values())}
_PREFIX_RE = re.compile(r"^blocks\.(\d+)\.(attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.(?:fc1|fc2))$")
_NAME_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")

Edit = Callable[[Tensor], Tensor]


def _prefix_key(prefix: str) -> tuple[int, int]:
    m = _PREFIX_RE.match(prefix)
    if m is None:
        raise ConfigError(
            f"{prefix!r} is not an adapted-module prefix",
            hint="expected blocks.{l}.attn.{q_proj|k_proj|v_proj|out_proj} or blocks.{l}.mlp.{fc1|fc2}",
        )
    return int(m.group(1)), _MODULE_ORDER[m.group(2)]


def hook_names(n_layers: int, adapted_modules: Iterable[str] = ()) -> list[str]:
    """Every valid hook-point name of an encoder with `n_layers` layers whose LoRA-adapted modules have the hook
    prefixes `adapted_modules` (e.g. `blocks.3.attn.v_proj`, the keys of `lora_modules(encoder)`), in run order."""
    by_layer: dict[int, list[str]] = {}
    for prefix in sorted(set(adapted_modules), key=_prefix_key):
        layer = _prefix_key(prefix)[0]
        if layer >= n_layers:
            raise ConfigError(f"adapted module {prefix!r} is beyond the encoder's {n_layers} layers")
        by_layer.setdefault(layer, []).append(prefix)
    names: list[str] = []
    for l in range(n_layers):
        names.append(f"blocks.{l}.{RESID_PRE}")
        attn = [p for p in by_layer.get(l, []) if ".attn." in p]
        mlp = [p for p in by_layer.get(l, []) if ".mlp." in p]
        for p in attn:
            names += [f"{p}.{LORA_A}", f"{p}.{LORA_B}"]
        names += [f"blocks.{l}.{ATTN_OUT}", f"blocks.{l}.{RESID_MID}"]
        for p in mlp:
            names += [f"{p}.{LORA_A}", f"{p}.{LORA_B}"]
        names += [f"blocks.{l}.{MLP_OUT}", f"blocks.{l}.{RESID_POST}"]
    names.append(LN_FINAL)
    return names


def hook_layer(name: str) -> int | None:
    """Layer index of a hook-point name (`blocks.3.hook_resid_post` -> 3); None for `ln_final.hook_out`."""
    m = _NAME_RE.match(name)
    return int(m.group(1)) if m else None


def _describe_valid(valid: list[str], n_layers: int) -> str:
    lora = sorted({n.rsplit(".", 1)[0] for n in valid if n.endswith((LORA_A, LORA_B))}, key=_prefix_key)
    text = f"blocks.{{0..{n_layers - 1}}}.{{{','.join(BLOCK_HOOKS)}}}, {LN_FINAL}"
    if lora:
        text += f", and {{{LORA_A},{LORA_B}}} of the adapted modules {lora}"
    else:
        text += " (no LoRA adapters, so no hook_lora_a/hook_lora_b points)"
    return text


def check_hook_names(names: Iterable[str], valid: list[str], n_layers: int, what: str = "hook point") -> None:
    """Raise ConfigError naming every unknown name, close matches and the valid names."""
    valid_set = set(valid)
    unknown = [n for n in names if n not in valid_set]
    if unknown:
        close = {n: difflib.get_close_matches(n, valid, n=2) for n in unknown}
        hints = "; ".join(f"{n!r}: did you mean {c}?" for n, c in close.items() if c)
        raise ConfigError(
            f"unknown {what} name(s) {unknown}" + (f" ({hints})" if hints else ""),
            hint=f"valid names: {_describe_valid(valid, n_layers)}",
        )


@dataclass
class RunnerOutput:
    """What a run returns.

    last_hidden_state: `[batch, frames, d_model]`, after the final layer norm for a full run, resid_post of layer
        `stop_after` otherwise (normed only with `final_norm=True`).
    hidden_states: as transformers' `output_hidden_states`: resid_pre of each layer run, then `last_hidden_state`
        (so for a full run: embeddings, outputs of layers 0..L-2, final-normed output of layer L-1; L + 1 tensors).
    captured: hook name -> tensor (the value after any edit at that point, i.e. what the rest of the network sees;
        live tensors: with grad enabled they carry their graph, and `grad_capture` ones get `.grad` on backward).
    lengths: valid encoder frames per clip, `[batch]` int64 (= frames when no `mel_lengths` were given).
    """

    last_hidden_state: Tensor
    hidden_states: list[Tensor]
    captured: dict[str, Tensor] = field(default_factory=dict)
    lengths: Tensor | None = None


def encoder_lengths(mel_lengths: Tensor) -> Tensor:
    """Valid encoder frames from valid mel frames: `(mel_lengths + 1) // 2` (conv2 has stride 2, padding 1)."""
    return (mel_lengths + 1) // 2


def padding_mask(lengths: Tensor, frames: int, dtype: torch.dtype) -> Tensor:
    """Additive key mask `[batch, 1, 1, frames]`: 0 on valid frames, the dtype's minimum on padded ones."""
    positions = torch.arange(frames, device=lengths.device)
    padded = positions[None, :] >= lengths[:, None]
    mask = torch.zeros(padded.shape, dtype=dtype, device=lengths.device)
    mask = mask.masked_fill(padded, torch.finfo(dtype).min)
    return mask[:, None, None, :]


Point = Callable[[str, Tensor], Tensor]
LoraTap = tuple[str, nn.Module]  # (hook prefix, peft LoraLayer)


@dataclass
class RunPlan:
    """One call of the runner, resolved from its arguments and checked before anything runs.

    first, last: the layers run (inclusive); skip: layers whose output is their input; final_norm: whether the
        final layer norm runs (`ln_final.hook_out`).
    resid: with `start_at`, the residual `[batch, frames, d_model]` layer `first` starts from; None: the run embeds
        the features.
    mel_lengths: valid mel frames `[batch]` int64 on the input's device, or None (all valid); lengths: valid encoder
        frames `[batch]` int64; frames: encoder frames of the window.
    mask: additive key mask `[batch, 1, 1, frames]` of self-attention, or None (nothing padded, or masking off).
    capture: names whose values are returned (`grad_capture` ones included); grad: names whose gradient is
        retained; edits: name -> function replacing the value.
    lora_taps: layer -> the LoRA modules of that layer whose `hook_lora_a` / `hook_lora_b` points are wanted.
    checkpointing: recompute each layer in backward (gradient checkpointing with grad enabled).
    """

    first: int
    last: int
    skip: frozenset[int]
    final_norm: bool
    resid: Tensor | None
    mel_lengths: Tensor | None
    lengths: Tensor
    frames: int
    mask: Tensor | None
    capture: frozenset[str]
    grad: frozenset[str]
    edits: dict[str, Edit]
    lora_taps: dict[int, list[LoraTap]]
    checkpointing: bool

    @property
    def layers(self) -> range:
        """The layers the run passes through, skipped ones included."""
        return range(self.first, self.last + 1)

    @property
    def wanted(self) -> frozenset[str]:
        """Points whose value is read (captured or edited)."""
        return self.capture | frozenset(self.edits)

    @property
    def rewire(self) -> frozenset[str]:
        """Points whose value must flow on into the network (edited, or with a retained gradient)."""
        return self.grad | frozenset(self.edits)


class HookPoints:
    """The hook points of one run: every value passes `points(name, tensor)`, which applies the edit at that point,
    makes the value keep its gradient when asked, captures it (the first value reaching the point) and returns what
    the rest of the network sees."""

    def __init__(self, plan: RunPlan) -> None:
        self.edits = plan.edits
        self.grad = plan.grad
        self.capture = plan.capture
        self.captured: dict[str, Tensor] = {}

    def __call__(self, name: str, t: Tensor) -> Tensor:
        fn = self.edits.get(name)
        if fn is not None:
            new = fn(t)
            if not isinstance(new, Tensor) or new.shape != t.shape:
                got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                raise ConfigError(f"edit of {name!r} returned {got}, expected a tensor of shape {tuple(t.shape)}")
            t = new
        if name in self.grad:
            if t.requires_grad:
                t.retain_grad()
            else:
                t = t.detach().requires_grad_(True)
        if name in self.capture and name not in self.captured:
            self.captured[name] = t
        return t


class EncoderRunner:
    """Runs a transformers `WhisperEncoder` (possibly with peft LoRA layers injected) with hook points.

    A plain callable, not an `nn.Module`: the encoder stays the only parameter container (no duplicate state-dict
    entries when the runner is held by a module that also holds the encoder). `mask_padding` is the default of
    the per-call option of the same name.
    """

    def __init__(self, encoder: nn.Module, *, mask_padding: bool = True) -> None:
        encoder = _unwrap(encoder)
        for attr in ("conv1", "conv2", "embed_positions", "layers", "layer_norm"):
            if not hasattr(encoder, attr):
                raise ConfigError(
                    f"{type(encoder).__name__} is not a Whisper encoder (no {attr!r})",
                    hint="pass model.model.encoder of a WhisperForConditionalGeneration",
                )
        self.encoder = encoder
        self.mask_padding = mask_padding

    @property
    def n_layers(self) -> int:
        return len(self.encoder.layers)

    @property
    def d_model(self) -> int:
        return self.encoder.embed_positions.weight.shape[-1]

    def lora_modules(self) -> dict[str, nn.Module]:
        return lora_modules(self.encoder)

    @property
    def hook_names(self) -> list[str]:
        """Valid hook-point names of this encoder (LoRA points included once adapters are injected)."""
        return hook_names(self.n_layers, lora_modules(self.encoder))

    def embed(self, features: Tensor, mel_lengths: Tensor | None = None) -> Tensor:
        """conv1 + GELU, conv2 + GELU, positional embeddings of the window, dropout: `[batch, frames, d_model]`.

        With `mel_lengths`, mel frames beyond each clip's length are zeroed before conv1 and conv1's outputs there
        before conv2, which is what the convolutions' own zero padding does at the end of a clip run alone: the
        valid frames then do not depend on the batch's padding (its value or length).
        """
        enc = self.encoder
        x = features.to(dtype=enc.conv1.weight.dtype)
        valid = None
        if mel_lengths is not None:
            valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < mel_lengths[:, None])[:, None, :]
            x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        x = F.gelu(enc.conv1(x))
        if valid is not None:
            x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        x = F.gelu(enc.conv2(x))
        x = x.permute(0, 2, 1)
        frames = x.shape[1]
        if frames > enc.embed_positions.num_embeddings:
            raise ConfigError(
                f"{features.shape[-1]} mel frames give {frames} encoder frames, more than the "
                f"{enc.embed_positions.num_embeddings} positions of the encoder",
                hint="cut the features to at most 30 s (3000 mel frames)",
            )
        h = x + enc.embed_positions.weight[:frames]
        return F.dropout(h, p=enc.dropout, training=enc.training)

    def __call__(
        self,
        features: Tensor | None,
        mel_lengths: Tensor | None = None,
        *,
        capture: Iterable[str] = (),
        grad_capture: Iterable[str] = (),
        edits: Mapping[str, Edit] | None = None,
        skip_layers: Iterable[int] = (),
        stop_after: int | None = None,
        start_at: tuple[int, Tensor] | None = None,
        final_norm: bool | None = None,
        mask_padding: bool | None = None,
        gradient_checkpointing: bool = False,
    ) -> RunnerOutput:
        """Run the encoder.

        features: log-mel `[batch, n_mels, mel_frames]` (may be None with `start_at`).
        mel_lengths: valid mel frames per clip `[batch]`; None = all frames valid.
        capture: hook names whose values to return in `captured`.
        grad_capture: hook names to capture with gradients retained (`.grad` filled by `loss.backward()`); a point
            that does not require grad (frozen weights, plain input) becomes a leaf that does.
        edits: hook name -> function of the tensor returning its replacement (same shape), applied before capture.
        skip_layers: layers whose output is their input (resid_post = resid_pre; their inner points do not exist).
        stop_after: last layer to run; `last_hidden_state` is its resid_post (no final norm unless `final_norm`).
        start_at: `(k, resid)`: start at layer k from `resid` = its resid_pre `[batch, frames, d_model]`.
        final_norm: apply the final layer norm (default: True for a run to the last layer, False with stop_after).
        mask_padding: mask padded key frames in self-attention and zero padded frames at the convolutions (default:
            the runner's `mask_padding`); only has an effect when `mel_lengths` leave some frames padded.
        gradient_checkpointing: recompute each layer in backward (non-reentrant checkpoint) to save memory.
        """
        plan = self.plan(features, mel_lengths, capture=capture, grad_capture=grad_capture, edits=edits,
                         skip_layers=skip_layers, stop_after=stop_after, start_at=start_at, final_norm=final_norm,
                         mask_padding=mask_padding, gradient_checkpointing=gradient_checkpointing)
        return self.run(plan, features)

    # ------------------------------------------------------------------------------------------ the run plan
    def plan(
        self,
        features: Tensor | None,
        mel_lengths: Tensor | None = None,
        *,
        capture: Iterable[str] = (),
        grad_capture: Iterable[str] = (),
        edits: Mapping[str, Edit] | None = None,
        skip_layers: Iterable[int] = (),
        stop_after: int | None = None,
        start_at: tuple[int, Tensor] | None = None,
        final_norm: bool | None = None,
        mask_padding: bool | None = None,
        gradient_checkpointing: bool = False,
    ) -> RunPlan:
        """The `RunPlan` of a call with these arguments (those of `__call__`), every argument checked; nothing
        runs. Raises ConfigError on the first problem found."""
        capture = list(dict.fromkeys(capture))
        grad_names = list(dict.fromkeys(grad_capture))
        edits = dict(edits or {})
        lora = lora_modules(self.encoder)
        self._check_points(capture, grad_names, edits, lora, gradient_checkpointing)
        first, last, skip, final_norm = self._layer_range(start_at, stop_after, skip_layers, final_norm)
        _check_computed([*capture, *grad_names, *edits], first, last, skip, final_norm)
        resid, batch, mel_frames, frames, device = self._input_shape(features, start_at)
        mel_lengths, lengths = _lengths(mel_lengths, batch, mel_frames, frames, device)
        use_mask = self.mask_padding if mask_padding is None else mask_padding
        mask = self._attention_mask(lengths, frames) if use_mask and mel_lengths is not None else None
        capture_set = frozenset(capture) | frozenset(grad_names)
        return RunPlan(
            first=first, last=last, skip=frozenset(skip), final_norm=final_norm, resid=resid, mel_lengths=mel_lengths,
            lengths=lengths, frames=frames, mask=mask, capture=capture_set, grad=frozenset(grad_names), edits=edits,
            lora_taps=_lora_taps(lora, capture_set | frozenset(edits)),
            checkpointing=gradient_checkpointing and torch.is_grad_enabled(),
        )

    def _check_points(self, capture: list[str], grad_names: list[str], edits: dict[str, Edit],
                      lora: Mapping[str, nn.Module], gradient_checkpointing: bool) -> None:
        """Hook names exist, edits are functions, grad_capture can work."""
        n_layers = self.n_layers
        valid = hook_names(n_layers, lora)
        check_hook_names(capture, valid, n_layers, "capture")
        check_hook_names(grad_names, valid, n_layers, "grad_capture")
        check_hook_names(edits, valid, n_layers, "edit")
        for name, fn in edits.items():
            if not callable(fn):
                raise ConfigError(f"edit for {name!r} is {type(fn).__name__}, not a function of the tensor")
        if grad_names and not torch.is_grad_enabled():
            raise ConfigError("grad_capture needs gradients enabled", hint="do not run it under torch.no_grad()")
        if grad_names and gradient_checkpointing:
            raise ConfigError(
                "grad_capture cannot be combined with gradient_checkpointing",
                hint="run analyses with gradient_checkpointing=False",
            )

    def _layer_range(self, start_at: tuple[int, Tensor] | None, stop_after: int | None, skip_layers: Iterable[int],
                     final_norm: bool | None) -> tuple[int, int, set[int], bool]:
        """(first layer, last layer, skipped layers, final_norm) of the run, checked against the encoder."""
        n_layers = self.n_layers
        first = 0
        if start_at is not None:
            first = start_at[0]
            if not 0 <= first < n_layers:
                raise ConfigError(f"start_at layer {first} not in 0..{n_layers - 1}")
        last = n_layers - 1 if stop_after is None else stop_after
        if not first <= last < n_layers:
            raise ConfigError(f"stop_after={stop_after} must be in {first}..{n_layers - 1}")
        skip = {int(l) for l in skip_layers}
        bad_skip = [l for l in skip if not 0 <= l < n_layers]
        if bad_skip:
            raise ConfigError(f"skip_layers {sorted(bad_skip)} not in 0..{n_layers - 1}")
        if final_norm is None:
            final_norm = stop_after is None
        return first, last, skip, final_norm

    def _input_shape(self, features: Tensor | None, start_at: tuple[int, Tensor] | None
                     ) -> tuple[Tensor | None, int, int, int, torch.device]:
        """(start residual or None, batch, mel frames, encoder frames, device) of the run's input, checked."""
        if start_at is not None:
            resid = start_at[1]
            if resid.dim() != 3 or resid.shape[-1] != self.d_model:
                raise ConfigError(f"start_at residual has shape {tuple(resid.shape)}, expected [batch, frames, "
                                  f"{self.d_model}]")
            return resid, resid.shape[0], 2 * resid.shape[1], resid.shape[1], resid.device
        if features is None or features.dim() != 3:
            shape = None if features is None else tuple(features.shape)
            raise ConfigError(f"features of shape {shape}: expected [batch, n_mels, mel_frames]")
        in_channels = self.encoder.conv1.in_channels
        if features.shape[1] != in_channels:
            raise ConfigError(
                f"features have {features.shape[1]} mel bins, the encoder expects {in_channels}",
                hint="extract features with this model's feature extractor (80 or 128 mel bins)",
            )
        mel_frames = features.shape[-1]
        return None, features.shape[0], mel_frames, (mel_frames + 1) // 2, features.device

    def _attention_mask(self, lengths: Tensor, frames: int) -> Tensor | None:
        """The additive key mask when some frame is padded (None when none is), after checking that the
        encoder's attention implementation takes one."""
        if not bool((lengths < frames).any()):
            return None
        enc = self.encoder
        impl = getattr(enc.config, "_attn_implementation", "eager")
        if impl not in ("eager", "sdpa"):
            raise ConfigError(
                f"padding masks need eager or sdpa attention, the encoder uses {impl!r}",
                hint="load the model with attn_implementation='sdpa' or run with mask_padding=False",
            )
        return padding_mask(lengths, frames, enc.conv1.weight.dtype)

    # ------------------------------------------------------------------------------------------ the run
    def run(self, plan: RunPlan, features: Tensor | None = None) -> RunnerOutput:
        """Run a plan of `plan(...)`: embed `features` (or start from `plan.resid`), the layers, the final norm."""
        enc = self.encoder
        points = HookPoints(plan)
        h = plan.resid
        if h is None:
            h = self.embed(features, plan.mel_lengths if plan.mask is not None else None)
        hidden_states: list[Tensor] = []
        for l in plan.layers:
            h = points(f"blocks.{l}.{RESID_PRE}", h)
            hidden_states.append(h)
            if not self._dropped(l, plan):
                if plan.checkpointing:
                    h = checkpoint(self._run_layer, l, h, plan, points, use_reentrant=False)
                else:
                    h = self._run_layer(l, h, plan, points)
            h = points(f"blocks.{l}.{RESID_POST}", h)
        if plan.final_norm:
            h = points(LN_FINAL, enc.layer_norm(h))
        hidden_states.append(h)
        missing = [n for n in plan.capture if n not in points.captured]
        if missing:
            raise ConfigError(f"hook point(s) {sorted(missing)} were not reached in this run")
        return RunnerOutput(last_hidden_state=h, hidden_states=hidden_states, captured=points.captured,
                            lengths=plan.lengths)

    def _dropped(self, l: int, plan: RunPlan) -> bool:
        """Whether layer l passes its input on: skipped, or dropped by transformers' layerdrop in training (one
        `torch.rand` draw per layer that is not skipped, as `WhisperEncoder.forward`)."""
        enc = self.encoder
        if l in plan.skip:
            return True
        if enc.training and getattr(enc, "layerdrop", 0.0) > 0.0:
            return bool(torch.rand([]) < enc.layerdrop)
        return False

    def _run_layer(self, l: int, h: Tensor, plan: RunPlan, points: HookPoints) -> Tensor:
        """Layer l with its LoRA taps installed for the duration (again when a checkpoint recomputes it)."""
        with lora_taps(plan.lora_taps.get(l, []), points, plan.wanted, plan.rewire):
            return layer_step(self.encoder.layers[l], l, h, plan.mask, points)


def layer_step(layer: nn.Module, l: int, h: Tensor, mask: Tensor | None, point: Point) -> Tensor:
    """`WhisperEncoderLayer.forward` of layer `l` step by step (same modules, order and dropout calls), its values
    passed through the hook points `point`: `[batch, frames, d_model]` -> the same (before `hook_resid_post`)."""
    residual = h
    x = layer.self_attn_layer_norm(h)
    x, _ = layer.self_attn(hidden_states=x, attention_mask=mask)
    x = F.dropout(x, p=layer.dropout, training=layer.training)
    x = point(f"blocks.{l}.{ATTN_OUT}", x)
    h = point(f"blocks.{l}.{RESID_MID}", residual + x)
    residual = h
    x = layer.final_layer_norm(h)
    x = layer.activation_fn(layer.fc1(x))
    x = F.dropout(x, p=layer.activation_dropout, training=layer.training)
    x = layer.fc2(x)
    x = F.dropout(x, p=layer.dropout, training=layer.training)
    x = point(f"blocks.{l}.{MLP_OUT}", x)
    h = residual + x
    if h.dtype == torch.float16:
        clamp = torch.finfo(h.dtype).max - 1000
        h = torch.clamp(h, min=-clamp, max=clamp)
    return h


def _check_computed(names: Iterable[str], first: int, last: int, skip: set[int], final_norm: bool) -> None:
    """Every named point is computed by a run of layers first..last skipping `skip` (skipped layers have only
    resid_pre / resid_post; `ln_final.hook_out` needs the final norm)."""

    def computed(name: str) -> bool:
        if name == LN_FINAL:
            return final_norm
        layer = hook_layer(name)
        if not first <= layer <= last:
            return False
        return layer not in skip or name.endswith((RESID_PRE, RESID_POST))

    absent = [n for n in names if not computed(n)]
    if absent:
        raise ConfigError(
            f"hook point(s) {sorted(set(absent))} are not computed in this run "
            f"(layers {first}..{last}, skipped {sorted(skip)}, final_norm={final_norm})",
            hint="capture/edit only points of layers that run; skipped layers have only resid_pre/resid_post",
        )


def _lengths(mel_lengths: Tensor | None, batch: int, mel_frames: int, frames: int, device: torch.device
             ) -> tuple[Tensor | None, Tensor]:
    """(mel_lengths as int64 on `device` or None, valid encoder frames `[batch]`), checked against the window."""
    if mel_lengths is None:
        return None, torch.full((batch,), frames, dtype=torch.long, device=device)
    mel_lengths = torch.as_tensor(mel_lengths, device=device).long()
    if mel_lengths.shape != (batch,):
        raise ConfigError(f"mel_lengths has shape {tuple(mel_lengths.shape)}, expected [{batch}]")
    if (mel_lengths < 1).any() or (mel_lengths > mel_frames).any():
        raise ConfigError(f"mel_lengths {mel_lengths.tolist()} outside 1..{mel_frames} (the window's mel frames)")
    return mel_lengths, torch.clamp(encoder_lengths(mel_lengths), max=frames)


# ------------------------------------------------------------------------------------------------ LoRA taps
def _lora_taps(lora: Mapping[str, nn.Module], wanted: frozenset[str]) -> dict[int, list[LoraTap]]:
    """Layer -> the LoRA modules whose `hook_lora_a` / `hook_lora_b` points are in `wanted`; each must be a plain,
    active, unmerged peft LoRA adapter (its taps read `lora_A` / `lora_B` and undo peft's scaling)."""
    taps: dict[int, list[LoraTap]] = {}
    for prefix, module in lora.items():
        if f"{prefix}.{LORA_A}" in wanted or f"{prefix}.{LORA_B}" in wanted:
            if module.merged or module.disable_adapters or ADAPTER not in module.lora_A:
                raise ConfigError(
                    f"{prefix}: adapter is merged or disabled, its hook_lora_a/b points do not run",
                    hint="unmerge / enable the adapter before capturing its points",
                )
            refuse_lora_variants({prefix: module}, "the runner's hook_lora_a/b points")
            taps.setdefault(hook_layer(prefix), []).append((prefix, module))
    return taps


@contextmanager
def lora_taps(taps: Iterable[LoraTap], point: Point, wanted: frozenset[str], rewire: frozenset[str]
              ) -> Iterator[None]:
    """Forward hooks on peft's `lora_A` / `lora_B` of the modules `taps` while the block runs, removed after."""
    handles = [hd for prefix, module in taps for hd in _lora_hooks(prefix, module, point, wanted, rewire)]
    try:
        yield
    finally:
        for hd in handles:
            hd.remove()


def _lora_hooks(prefix: str, module: nn.Module, point: Point, wanted: frozenset[str], rewire: frozenset[str]
                ) -> list:
    """Forward hooks on peft's lora_A / lora_B of one LoRA module, routing their outputs through `point`
    (`rewire`: names whose value must flow on, because they are edited or their gradient is retained)."""
    name_a, name_b = f"{prefix}.{LORA_A}", f"{prefix}.{LORA_B}"
    scaling = module.scaling[ADAPTER]
    handles = []
    if name_a in wanted:

        def hook_a(_mod: nn.Module, _inp: tuple, out: Tensor) -> Tensor:
            return point(name_a, out)

        handles.append(module.lora_A[ADAPTER].register_forward_hook(hook_a))
    if name_b in wanted:

        def hook_b(_mod: nn.Module, _inp: tuple, out: Tensor) -> Tensor | None:
            scaled = out * scaling
            new = point(name_b, scaled)
            if name_b not in rewire:
                return None  # capture only: leave peft's computation untouched
            # peft multiplies by `scaling` again; routing through `new` keeps edits and retained grads in the graph
            # (plain LoRA only: `_lora_taps` refuses peft's LoRA variants, DoRA and others)
            return new / scaling

        handles.append(module.lora_B[ADAPTER].register_forward_hook(hook_b))
    return handles
