"""Figures and the self-contained HTML report, read back from a run folder."""
