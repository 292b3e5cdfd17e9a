"""The classification head: optional learned layer weighting, masked mean pooling, projector, classifier.

Parameter names are those of transformers' `WhisperForAudioClassification` (`layer_weights`, `projector.weight`,
`projector.bias`, `classifier.weight`, `classifier.bias`), so head weights can be exchanged with it.
transformers projects every frame then averages all frames; we average the VALID frames then project, which is the
same function (the projector is affine) on a full window and ignores padding exactly otherwise. The pooling is
`loralens.numerics.masking.masked_mean` (each clip's valid slice averaged on its own: padding, NaN included, changes
nothing, bit for bit), without a summation order of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from loralens.errors import ConfigError
from loralens.numerics.masking import masked_mean


class ClassificationHead(nn.Module):
    """hidden states -> logits `[batch, n_classes]`.

    d_model: encoder width. n_classes: number of emotions. proj_size: projector width (transformers'
    `classifier_proj_size`, 256). use_weighted_layer_sum: learn softmax weights over all `n_hidden_states`
    hidden states (embeddings + each layer, as transformers / SUPERB), initialised uniform. normalize_layers: with
    the weighted sum, give each hidden state's pooled vector zero mean and unit variance over its `d_model` features
    (a LayerNorm without parameters) before weighting. Whisper's hidden states differ in offset and scale (only the
    last one has passed the encoder's final LayerNorm), and their unnormalised sum is a poor input for the projector;
    off by default, so that the head stays the function of transformers' `WhisperForAudioClassification`.
    standardize: z-score the pooled vector (each hidden state's, with the weighted sum) with fixed statistics of the
    training clips (`set_standardization`; buffers `input_mean`, `input_std`, saved with the head). A hidden state
    below the last is not normalised by the encoder, and a few of its dimensions dwarf the rest; z-scored, the
    same head reads it as well as a standardised linear probe does.
    speaker_norm: z-score with each clip's speaker's statistics instead (`loralens.models.speaker_stats`), given per
    batch by `set_clip_statistics` before each forward (`EmotionClassifier.select_clips` does it from clip ids); the
    buffers of `standardize` are then unused.
    """

    def __init__(
        self,
        d_model: int,
        n_classes: int,
        *,
        proj_size: int = 256,
        use_weighted_layer_sum: bool = False,
        n_hidden_states: int | None = None,
        normalize_layers: bool = False,
        standardize: bool = False,
        speaker_norm: bool = False,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"n_classes={n_classes}: a classifier needs at least 2 classes")
        if normalize_layers and not use_weighted_layer_sum:
            raise ConfigError(
                "normalize_layers applies to the weighted layer sum only",
                hint="set use_weighted_layer_sum=True, or drop normalize_layers (the last hidden state is already "
                "normalised by the encoder's final LayerNorm)",
            )
        self.use_weighted_layer_sum = use_weighted_layer_sum
        self.normalize_layers = normalize_layers
        if use_weighted_layer_sum:
            if not n_hidden_states or n_hidden_states < 1:
                raise ConfigError("use_weighted_layer_sum needs n_hidden_states (encoder layers + 1)")
            self.layer_weights = nn.Parameter(torch.ones(n_hidden_states) / n_hidden_states)
        self.standardize = standardize or speaker_norm
        self.speaker_norm = speaker_norm
        self._clip_statistics: tuple[Tensor, Tensor] | None = None
        if self.standardize:
            shape = (n_hidden_states, d_model) if use_weighted_layer_sum else (d_model,)
            self.register_buffer("input_mean", torch.zeros(shape))
            self.register_buffer("input_std", torch.ones(shape))
        self.projector = nn.Linear(d_model, proj_size)
        self.classifier = nn.Linear(proj_size, n_classes)

    @property
    def n_classes(self) -> int:
        return self.classifier.out_features

    def pool(self, hidden: Tensor | Sequence[Tensor], lengths: Tensor | None = None) -> Tensor:
        """Pooled encoder representation `[batch, d_model]` (before the projector).

        hidden: the last hidden state `[batch, frames, d_model]`, or, with `use_weighted_layer_sum`, the list of all
        hidden states (each `[batch, frames, d_model]`). Weighted sum and mean commute, so each layer is pooled
        first and the pooled vectors are weighted.
        """
        if self.use_weighted_layer_sum:
            if isinstance(hidden, Tensor) or len(hidden) != self.layer_weights.numel():
                got = "a single tensor" if isinstance(hidden, Tensor) else f"{len(hidden)} tensors"
                raise ConfigError(
                    f"weighted layer sum needs {self.layer_weights.numel()} hidden states, got {got}",
                    hint="pass RunnerOutput.hidden_states of a full run",
                )
            return self.combine_layers(torch.stack([masked_mean(h, lengths) for h in hidden], dim=1))
        if not isinstance(hidden, Tensor):
            hidden = hidden[-1]
        return self.combine_layers(masked_mean(hidden, lengths)[:, None])

    def combine_layers(self, pooled: Tensor) -> Tensor:
        """`[batch, n_hidden_states, d_model]` per-layer pooled vectors -> `[batch, d_model]`: the softmax-weighted
        sum (each vector z-scored with `standardize`, then normalised with `normalize_layers`), or the last layer's
        vector (z-scored with `standardize`) without the weighted sum."""
        if not self.use_weighted_layer_sum:
            return self._zscore(pooled[:, -1])
        return self.weighted_sum(self.layer_vectors(pooled))

    def _zscore(self, pooled: Tensor) -> Tensor:
        """`pooled` z-scored with the head's fixed statistics when `standardize`, else as it is."""
        if not self.standardize:
            return pooled
        if self.speaker_norm:
            mean, std = self._batch_statistics(pooled)
        else:
            mean, std = self.input_mean, self.input_std
        return (pooled - mean.to(pooled.dtype)) / std.to(pooled.dtype)

    def _batch_statistics(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """The clip statistics set for this batch, shaped like `pooled` (`[batch, n_hidden_states, d_model]` with
        the weighted sum, `[batch, d_model]` (the last hidden state's) without)."""
        if self._clip_statistics is None:
            raise ConfigError("this head z-scores with each clip's speaker's statistics (speaker_norm), and none "
                              "were set for this batch",
                              hint="call EmotionClassifier.select_clips(batch.ids) before running a batch")
        mean, std = self._clip_statistics
        if mean.shape[0] != pooled.shape[0]:
            raise ConfigError(f"speaker statistics were set for {mean.shape[0]} clips, the batch has "
                              f"{pooled.shape[0]}", hint="call select_clips(batch.ids) for every batch")
        if pooled.dim() == 2:
            mean, std = mean[:, -1], std[:, -1]
        return mean.to(pooled.device), std.to(pooled.device)

    def set_clip_statistics(self, mean: Tensor | None, std: Tensor | None = None) -> None:
        """With `speaker_norm`: the statistics `[batch, n_hidden_states, d_model]` (mean, std) of the clips of the
        next batches (each clip's speaker's); None clears them."""
        if not self.speaker_norm:
            raise ConfigError("set_clip_statistics on a head built without speaker_norm=True")
        self._clip_statistics = None if mean is None else (mean, std)

    def layer_vectors(self, pooled: Tensor) -> Tensor:
        """With the weighted layer sum: each hidden state's pooled vector as the weighting sees it, `[batch,
        n_hidden_states, d_model]` -> the same shape (z-scored with `standardize`, then normalised with
        `normalize_layers`)."""
        if not self.use_weighted_layer_sum:
            raise ConfigError("layer_vectors applies to a weighted-layer-sum head only")
        pooled = self._zscore(pooled)
        if self.normalize_layers:
            pooled = F.layer_norm(pooled, (pooled.shape[-1],))
        return pooled

    def weighted_sum(self, vectors: Tensor, upto: int | None = None) -> Tensor:
        """The softmax-weighted sum `[batch, d_model]` of `layer_vectors` output `[batch, n_hidden_states,
        d_model]`; with `upto`, of hidden states 0..upto-1 only (the others contribute nothing; the weights are
        those of the whole head, not renormalised), so that `upto = n_hidden_states` is the head's own input."""
        weights = torch.softmax(self.layer_weights, dim=-1)
        n = vectors.shape[1] if upto is None else upto
        return (vectors[:, :n] * weights[:n].view(1, -1, 1)).sum(dim=1)

    @torch.no_grad()
    def set_standardization(self, pooled: Tensor, eps: float = 1e-5) -> None:
        """Fix the z-scoring statistics from training clips' per-layer pooled vectors `[clips, n_hidden_states,
        d_model]` (those of the last hidden state without the weighted sum): mean and standard deviation (+ `eps`,
        so that a constant dimension stays finite) over the clips."""
        if not self.standardize:
            raise ConfigError("set_standardization on a head built without standardize=True")
        x = pooled.float() if self.use_weighted_layer_sum else pooled[:, -1].float()
        if x.shape[0] < 2 or x.shape[1:] != self.input_mean.shape:
            raise ConfigError(f"standardisation needs pooled vectors [clips >= 2, ...{tuple(self.input_mean.shape)}], "
                              f"got {tuple(pooled.shape)}")
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0) + eps)

    def forward(self, hidden: Tensor | Sequence[Tensor], lengths: Tensor | None = None) -> Tensor:
        """Logits `[batch, n_classes]` from hidden states (see `pool`) and valid lengths `[batch]` (frames)."""
        return self.classify(self.pool(hidden, lengths))

    def classify(self, pooled: Tensor) -> Tensor:
        """Logits from pooled representations `[batch, d_model]`."""
        return self.classifier(self.projector(pooled))
