"""Image segmentation with attention gates (Attention U-Net): cluttered digits offline default, any HF semantic-segmentation set."""
