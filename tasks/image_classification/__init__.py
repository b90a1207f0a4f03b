"""Image classification with attention pooling (digits offline default, any HF image-classification set)."""
