"""The analysis catalogue: one entry per analysis, in suite order, with what the suite, the aggregation over folds
and the report need to know about it (title, description, what its uncertainty is, which curves sum it up over
folds). Torch-free, so the report reads it without importing torch.

Adding an analysis = its module (`run`, `plot`, `reading`, `register(Analysis(...))`) + its test + one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisEntry:
    """One analysis as the rest of loralens knows it.

    name: the registry name and result folder; module: `loralens.analysis.<name>` unless given; title and
    description: the report's heading and one-line summary; ci_note: what the bands and intervals are;
    curves_axis, key_curves: the curves shown aggregated over folds (path in the result, row label) and what
    their columns index (none: not aggregated in the report); bootstrap: whether it draws bootstrap resamples.
    needs_frozen / needs_train: uses the frozen baseline / the training split; needs_lora: only applies to a
    LoRA-adapted model; needs_grad: runs with autograd enabled. `suite.register` takes these from here.
    """

    name: str
    title: str
    description: str
    ci_note: str
    curves_axis: str | None = None
    key_curves: tuple[tuple[tuple[str, ...], str], ...] = ()
    bootstrap: bool = True
    needs_frozen: bool = False
    needs_train: bool = False
    needs_lora: bool = False
    needs_grad: bool = False
    module: str = ""

    @property
    def needs(self) -> dict[str, bool]:
        return {"needs_frozen": self.needs_frozen, "needs_train": self.needs_train, "needs_lora": self.needs_lora,
                "needs_grad": self.needs_grad}

    @property
    def module_name(self) -> str:
        return self.module or f"loralens.analysis.{self.name}"


CATALOGUE: tuple[AnalysisEntry, ...] = (
    AnalysisEntry(
        name="layer_contribution",
        title="Layer contributions",
        description=(
            "Relative norm of each block's attention and MLP update against the residual stream it is added to "
            "(||update|| / ||resid_pre||) and their cosine with it, for the adapted and the frozen model."
        ),
        ci_note=(
            "Bands are percentile-bootstrap intervals over test clips (per-clip means over valid frames; the same"
            " resamples for every layer)."
        ),
        curves_axis="layer",
        key_curves=((("difference", "total_rel"), "difference (adapted − frozen), total_rel"),),
    ),
    AnalysisEntry(
        name="logit_lens",
        title="Logit lens",
        description=(
            "The classification head applied to every layer's residual stream: KL divergence from the final "
            "prediction (nats), top-1 agreement with it and UAR against the labels, per layer; a tuned lens too."
        ),
        ci_note=(
            "Bands are percentile-bootstrap intervals over test clips; the last layer's lens logits equal the "
            "model's output exactly (last_layer_max_abs_logit_diff must be 0)."
        ),
        curves_axis="layer",
        key_curves=((("adapted", "agreement"), "adapted, agreement with final"), (("adapted", "uar"), "adapted, UAR")),
    ),
    AnalysisEntry(
        name="erasure",
        title="Layer erasure",
        description=(
            "Change of UAR, loss and confidence when one layer's update is removed, and when layers 0..k-1 are."
        ),
        ci_note=("Bands are percentile-bootstrap intervals over test clips (the same resamples for every layer)."),
        curves_axis="erased layer",
        key_curves=((("single", "delta_uar"), "single layer erased, Δ UAR"),),
    ),
    AnalysisEntry(
        name="probing",
        title="Linear probes",
        description=(
            "UAR of linear probes for emotion and accuracy of probes for speaker identity on every hidden state, "
            "adapted and frozen."
        ),
        ci_note=(
            "Emotion-probe UAR is scored on the fold's test clips (speakers unseen by the probe) with a "
            "percentile-bootstrap interval over those clips; the speaker probe is scored out of fold within the "
            "training speakers (within-speaker folds: not speaker independent by design; chance = 1 / speakers)."
        ),
        curves_axis="hidden state (0 = embeddings)",
        key_curves=(
            (("emotion", "adapted", "uar"), "emotion probe, adapted, UAR"),
            (("emotion", "frozen", "uar"), "emotion probe, frozen, UAR"),
        ),
        needs_frozen=True,
        needs_train=True,
    ),
    AnalysisEntry(
        name="similarity",
        title="Representation similarity",
        description=(
            "CKA (linear and RBF, biased and debiased) between the adapted (rows) and frozen (columns) hidden "
            "states, and the spectra of the pooled representations."
        ),
        ci_note=(
            "CKA matrices are full-sample estimates; the diagonal curves carry 95 % delete-a-group jackknife "
            "bands over test clips (no clip is ever paired with its own copy, unlike a bootstrap resample, which "
            "pulls kernel estimators up; diagonal_band in the result). Results written before this change carry "
            "percentile-bootstrap bands (n_boot_diagonal), biased upwards."
        ),
        curves_axis="hidden state (0 = embeddings)",
        key_curves=((("diagonal", "linear_debiased"), "diagonal linear CKA (debiased)"),),
        needs_frozen=True,
    ),
    AnalysisEntry(
        name="lora_internals",
        title="LoRA internals",
        description=(
            "Components needed for 90 % of the energy of the LoRA A and B outputs and gradients, and CKA between "
            "A and B in the forward and backward pass, for trained, initial and random adapters."
        ),
        ci_note=(
            "Energy counts and CKA values are point estimates on a class-balanced sample of test clips; read the "
            "trained adapter against the init and random controls, not against an interval."
        ),
        bootstrap=False,
        needs_lora=True,
        needs_grad=True,
    ),
    AnalysisEntry(
        name="weight_analysis",
        title="LoRA weight updates",
        description=(
            "Spectrum, stable rank, relative norm ||dW|| / ||W||, amplification factor and intruder dimensions of"
            " each adapted module's weight update."
        ),
        ci_note=("Weight statistics are exact properties of the saved adapter: no sampling, no interval."),
        bootstrap=False,
        needs_lora=True,
    ),
    AnalysisEntry(
        name="patching",
        title="Activation patching",
        description=(
            "Fraction of the source model's correct-class logit difference recovered when one layer's residual "
            "stream is patched from frozen into adapted and back, with UAR per layer."
        ),
        ci_note=("Bands are percentile-bootstrap intervals over test clips."),
        curves_axis="patched layer",
        key_curves=((("frozen_to_adapted", "recovered_logit_diff"), "frozen → adapted, recovered logit difference"),),
        needs_frozen=True,
    ),
)

#: Analysis names in suite order (the order the suite runs them and the report shows them).
ORDER: tuple[str, ...] = tuple(e.name for e in CATALOGUE)
BY_NAME: dict[str, AnalysisEntry] = {e.name: e for e in CATALOGUE}
