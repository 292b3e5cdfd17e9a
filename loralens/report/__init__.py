"""The self-contained HTML report, read back from a run folder (figures are drawn by `loralens.plots`)."""
