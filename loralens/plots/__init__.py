"""Figures: the base drawing layer below training, analysis and report (matplotlib `Figure` objects, no pyplot)."""
