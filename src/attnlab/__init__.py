"""attnlab: shared attention backbones + task heads, trained with Lightning and configured with Hydra."""

__version__ = "0.1.0"
