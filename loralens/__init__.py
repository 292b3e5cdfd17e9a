"""loralens: fine-tune Whisper's encoder for speech emotion recognition with LoRA, then open it up."""

__version__ = "0.7.0"
