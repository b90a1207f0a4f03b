"""Video classification with spatio-temporal attention (moving digits offline default, UCF101-style video files)."""
