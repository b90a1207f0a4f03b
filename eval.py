"""Evaluate: `python eval.py ckpt_path=<run>/checkpoints/best.ckpt [data.source=disk data.path=<dir>]`."""

import os

import hydra
from omegaconf import DictConfig

os.environ.setdefault("ATTNLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))
import attnlab.cli


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    attnlab.cli.evaluate(cfg)


if __name__ == "__main__":
    main()
