"""The capture mechanism, streamed statistics, one module per analysis, verdicts."""
