"""Reading attnlab checkpoints with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint written by attnlab on CPU; check it carries its run config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint ckpt_path={path} does not exist; point it at <run dir>/checkpoints/last.ckpt or best.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for damaged files
        raise ValueError(
            f"checkpoint {path} is unreadable or corrupt ({type(err).__name__}: {err}); "
            "use another checkpoint of the run (last.ckpt / best.ckpt) or retrain"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"checkpoint {path} is not a Lightning checkpoint (no 'state_dict')")
    if not (checkpoint.get("hyper_parameters") or {}).get("run_config"):
        raise ValueError(
            f"checkpoint {path} carries no attnlab run config (hyper_parameters.run_config); "
            "it was not written by attnlab's train.py"
        )
    return checkpoint


def checkpoint_task(checkpoint: dict[str, Any]) -> str:
    return checkpoint["hyper_parameters"]["run_config"]["task"]["name"]


def check_checkpoint_task(checkpoint: dict[str, Any], path: str | Path, task: str) -> None:
    """Raise when the checkpoint was trained for another task than `task`."""
    trained_for = checkpoint_task(checkpoint)
    if trained_for != task:
        raise ValueError(
            f"checkpoint {path} was trained for task '{trained_for}', not '{task}'; "
            f"pass task={trained_for} or a checkpoint of a '{task}' run"
        )
