"""Whisper weights in every format, the encoder runner with named hook points, the head and LoRA setup."""
