"""Train: `python train.py task=<name> [overrides]` (see README)."""

import os

import hydra
from omegaconf import DictConfig

os.environ.setdefault("ATTNLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))
import attnlab.cli


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return attnlab.cli.train(cfg)


if __name__ == "__main__":
    main()
