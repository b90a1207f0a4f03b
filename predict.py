"""Predict: `python predict.py ckpt_path=<run>/checkpoints/best.ckpt input=<file|dir|text|dataset> [viz=true]`."""

import os
import sys

import hydra
from omegaconf import DictConfig

os.environ.setdefault("ATTNLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))
import attnlab.cli


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        attnlab.cli.predict(cfg)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:  # bad input: one line, no traceback
        print(f"predict.py: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
