"""Numerics: known-answer-tested statistics and estimators, independent of models, data and analyses.

Below `data`, `models` and `plots` (it imports only `loralens.errors`), so the classification head, training,
the analyses and the report all share one implementation of each quantity:

- `inputs`: `AnalysisInputError`, the error of every routine here on bad arrays (torch-free).
- `arrays`: `ArrayLike`, `as_f64` (float64 torch tensors with shape and finiteness checks).
- `masking`: valid-frame masks, `valid_frames`, the one `masked_mean` (padding never enters, NaN included).
- `uar`: the one UAR kernel (mean recall over the classes present), full-sample and on bootstrap resamples.
- `bootstrap`: resampling, the one percentile band (`percentile_band`), bootstrap and jackknife CIs.
- `curves`: the results-JSON form of per-layer curves and points with their bands (`curve`, `mean_curve`,
  `uar_curve`, `bootstrap_uar`, `paired_uar_gap`, ...).
- `streaming`, `cka`, `spectra`, `weight_space`, `probes`, `divergence`: streamed moments, CKA estimators and
  accumulators, singular spectra, LoRA weight geometry, linear probes, KL / top-1 agreement.
- `cka_bands`: coverage of the CKA bands in a simulation with known population CKA
  (`python -m loralens.numerics.cka_bands`).

`inputs`, `uar`, `bootstrap` and `curves` import numpy only (no torch): the torch-free report may use them.
"""
