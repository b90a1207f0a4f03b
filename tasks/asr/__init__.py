"""Speech recognition with CTC on the shared encoder (espeak-ng speech offline default, LibriSpeech-style audio)."""
