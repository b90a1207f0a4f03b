"""Logger factories that need more than a `_target_` (W&B offline detection and run resumption)."""

from __future__ import annotations

import hashlib
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_api_key_configured() -> bool:
    """True when `WANDB_API_KEY` is set or `wandb login` stored a key in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(
    *,
    save_dir: str,
    project: str = "attnlab",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    log_model: bool = False,
) -> WandbLogger:
    """A WandbLogger that is offline when no API key is configured (``offline: null``).

    The run id is derived from the run directory, so resuming into the same directory
    (``ckpt_path=<run>/checkpoints/last.ckpt``) continues the same W&B run.
    """
    offline = not wandb_api_key_configured() if offline is None else offline
    run_id = hashlib.sha1(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        name=name,
        group=group,
        tags=list(tags or []),
        offline=offline,
        log_model=False if offline else log_model,
        id=run_id,
        resume="allow",
    )
