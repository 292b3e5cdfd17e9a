"""The exact export's model class, copied into an exported folder as `modeling_loralens_whisper.py` and loaded by
transformers with `trust_remote_code=True`. It imports only torch and transformers (never loralens).

transformers' `WhisperForAudioClassification` runs every clip in a 30-s window and averages the projected frames
of the whole window, padding included. loralens classifies a clip the way it was trained: `window: full` without a
padding mask runs the 30-s window but averages only the frames that saw audio; `trim` (or any padding mask) runs
the clip's own frames, the window cut after the last mel frame of audio (rounded up to an even count), frames past
the audio zeroed as the padding mask does. This class does the same, clip by clip, from the feature extractor's
`attention_mask` (the exported `preprocessor_config.json` asks for it), so `pipeline("audio-classification",
model=DIR, trust_remote_code=True)` gives loralens' probabilities.

Config fields read: `loralens_window` ("full" | "trim"), `loralens_mask_padding` (bool), `use_weighted_layer_sum`,
`loralens_normalize_layers` (bool: LayerNorm without parameters of each layer's pooled vector before the weighted
sum, loralens' `head.layer_norm`), `loralens_standardize` (bool: with the weighted sum, each hidden state's pooled
vector is first z-scored with the training clips' statistics, buffers `input_mean` / `input_std` `[layers + 1,
d_model]` saved with the weights; loralens' `head.standardize`).
"""

from __future__ import annotations

import inspect

import torch
from torch.nn import functional as F
from transformers import WhisperForAudioClassification
from transformers.modeling_outputs import SequenceClassifierOutput


class LoralensWhisperForAudioClassification(WhisperForAudioClassification):
    """`WhisperForAudioClassification` whose forward pools the valid frames of each clip, as loralens does."""

    def __init__(self, config):
        super().__init__(config)
        if getattr(config, "loralens_standardize", False) and config.use_weighted_layer_sum:
            shape = (config.encoder_layers + 1, config.d_model)
            self.register_buffer("input_mean", torch.zeros(shape))
            self.register_buffer("input_std", torch.ones(shape))

    def _hidden_states(self, features: torch.Tensor, n_mel: int, zero_padding: bool) -> list[torch.Tensor]:
        """Embeddings, the outputs of layers 0..L-2 and the final-normed output of the last layer, `[1, frames, d]`
        each, for one clip's features `[1, n_mels, T]` with `n_mel` valid mel frames."""
        enc = self.encoder
        x = features.to(enc.conv1.weight.dtype)
        valid = None
        if zero_padding and n_mel < x.shape[-1]:
            valid = (torch.arange(x.shape[-1], device=x.device) < n_mel)[None, None, :]
            x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        x = F.gelu(enc.conv1(x))
        if valid is not None:
            x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        h = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        h = h + enc.embed_positions.weight[: h.shape[1]]
        states = []
        for layer in enc.layers:
            states.append(h)
            # transformers 4.x layers take (hidden, attention_mask, layer_head_mask) and return a tuple; 5.x a tensor
            if "layer_head_mask" in inspect.signature(layer.forward).parameters:
                out = layer(h, None, layer_head_mask=None)
            else:
                out = layer(h, None)
            h = out[0] if isinstance(out, tuple) else out
        states.append(enc.layer_norm(h))
        return states

    def forward(self, input_features=None, attention_mask=None, labels=None, **kwargs):
        cfg = self.config
        window = getattr(cfg, "loralens_window", "full")
        mask_padding = bool(getattr(cfg, "loralens_mask_padding", False))
        batch, _, frames = input_features.shape
        if attention_mask is not None:
            mask = attention_mask.reshape(batch, -1)
            valid = mask.sum(-1).long()
            if mask.shape[-1] > frames:
                # a mask over samples (the extractor returns one when its config asks for it but the call does not):
                # valid mel frames = ceil(samples / hop_length), the extractor's own rescaling
                hop = mask.shape[-1] // frames
                valid = (valid + hop - 1) // hop
            mel = valid.clamp(1, frames)
        else:
            mel = torch.full((batch,), frames, dtype=torch.long)
        pooled = []
        for b in range(batch):
            n = int(mel[b])
            if window == "full" and not mask_padding:
                states = self._hidden_states(input_features[b : b + 1], n, zero_padding=False)
            else:
                t = min(frames, n + n % 2)
                states = self._hidden_states(input_features[b : b + 1, :, :t], n, zero_padding=mask_padding)
            length = (n + 1) // 2
            if cfg.use_weighted_layer_sum:
                per_layer = torch.stack([s[0, :length].mean(dim=0) for s in states])
                if getattr(cfg, "loralens_standardize", False):
                    per_layer = (per_layer - self.input_mean.to(per_layer.dtype)) / self.input_std.to(per_layer.dtype)
                if getattr(cfg, "loralens_normalize_layers", False):
                    per_layer = F.layer_norm(per_layer, (per_layer.shape[-1],))
                weights = torch.softmax(self.layer_weights, dim=-1)
                pooled.append((per_layer * weights[:, None]).sum(dim=0))
            else:
                pooled.append(states[-1][0, :length].mean(dim=0))
        logits = self.classifier(self.projector(torch.stack(pooled)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, cfg.num_labels), labels.view(-1).to(logits.device))
        return SequenceClassifierOutput(loss=loss, logits=logits)
