"""Using a trained run: classify new audio (`predict`) and export a fold to the transformers format (`export`)."""
