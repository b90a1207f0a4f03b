"""OmegaConf resolvers and config helpers shared by the entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


def resume_or_new_run_dir(ckpt_path: str | None, train: bool | str, new_dir: str) -> str:
    """Run directory of a run: the checkpoint's own run when resuming training from <run>/checkpoints/*.ckpt.

    Testing a checkpoint without training (``train=false``) never writes into the run it came from:
    it gets `new_dir`, so the original run's results.json and config.yaml stay as they were.
    """
    resuming = str(train).lower() not in ("false", "0", "no")
    if ckpt_path and resuming:
        ckpt = Path(ckpt_path)
        if ckpt.parent.name == "checkpoints":
            return str(ckpt.parent.parent)
    return new_dir


def adapter_positions(backbone_encoding: str | None, default: str) -> str:
    """``${adapter_positions:${backbone.pos_encoding},sinusoidal}``: the adapter's absolute positions:
    `default` when the backbone adds none itself (``none``), else ``none`` (rope, alibi, relative,
    sinusoidal... in the backbone: positions are not added twice)."""
    return default if backbone_encoding in (None, "none") else "none"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", resume_or_new_run_dir, use_cache=True)
    if not OmegaConf.has_resolver("adapter_positions"):
        OmegaConf.register_new_resolver("adapter_positions", adapter_positions)
    if not OmegaConf.has_resolver("ne"):  # ${ne:${task.st_attention},space_only} -> bool
        OmegaConf.register_new_resolver("ne", lambda left, right: left != right)
    if not OmegaConf.has_resolver("add"):
        OmegaConf.register_new_resolver("add", lambda *values: sum(values))


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config as plain Python, without Hydra's own node."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return OmegaConf.to_container(cfg, resolve=True)


register_resolvers()
