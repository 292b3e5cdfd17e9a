"""The fit/evaluate loop, metrics, checkpoints and resume, the cross-validation driver."""
