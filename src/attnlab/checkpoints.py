"""Reading attnlab checkpoints with errors that name the file and the fix, and rebuilding a run from one.

`restore_from_checkpoint` is what `eval.py` (and a notebook) uses: the model and the datamodule come
back from the checkpoint alone, from the run configuration stored in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

TASK_ENTRY_POINTS = "attnlab.tasks"  # installed task plugins register here (pyproject.toml)


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


def installed_tasks() -> dict[str, str]:
    """Task plugins installed in this environment: name -> module (entry-point group ``attnlab.tasks``)."""
    return {ep.name: ep.value for ep in entry_points(group=TASK_ENTRY_POINTS)}


def build_model(model_cfg: DictConfig, run_config: dict[str, Any] | None) -> L.LightningModule:
    """Instantiate the module; the run config is passed afterwards so Hydra does not instantiate it."""
    build = instantiate(model_cfg, _partial_=True, _convert_="all")
    return build(run_config=run_config)


def restore_from_checkpoint(
    ckpt_path: str | Path,
    *,
    data_overrides: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
    expected_task: str | None = None,
) -> tuple[L.LightningModule, L.LightningDataModule, DictConfig]:
    """Rebuild (model with the checkpoint's weights, datamodule with its stored state, run config).

    Args:
        ckpt_path: an attnlab checkpoint (``<run>/checkpoints/best.ckpt`` or ``last.ckpt``).
        data_overrides: ``data.*`` keys replacing the stored ones, e.g. ``{"data.source": "disk",
            "data.path": "/my/set"}`` to read another dataset with the model's vocabularies.
        data_dir: where builder datasets are cached on this machine (default: the stored one).
        expected_task: raise unless the checkpoint was trained for this task.
    """
    checkpoint = load_checkpoint(ckpt_path)
    if expected_task is not None:
        check_checkpoint_task(checkpoint, ckpt_path, expected_task)
    run_cfg = OmegaConf.create(checkpoint["hyper_parameters"]["run_config"])
    with open_dict(run_cfg):
        for key, value in (data_overrides or {}).items():
            if not key.startswith("data."):
                raise ValueError(f"data_overrides key '{key}' must start with 'data.'")
            OmegaConf.update(run_cfg, key, value, merge=False)
        if data_dir is not None:
            run_cfg.data.data_dir = str(data_dir)
        backbone = run_cfg.model.backbone
        if "pretrained" in backbone:  # the weights come from the checkpoint, never the hub
            backbone.pretrained, backbone.pretrained_file = False, None
    L.seed_everything(run_cfg.seed, workers=True, verbose=False)
    try:
        datamodule = instantiate(run_cfg.data)
        model = build_model(run_cfg.model, OmegaConf.to_container(run_cfg))
    except InstantiationException as err:
        if isinstance(err.__cause__, ImportError):  # Hydra could not import a `_target_` of the stored config
            raise ModuleNotFoundError(
                f"checkpoint {ckpt_path} needs the task code of '{checkpoint_task(checkpoint)}', which cannot be "
                f"imported here ({str(err).splitlines()[0]}); installed task plugins: {installed_tasks() or 'none'}. "
                "Install the project (pip install -e <attnlab checkout>) or the plugin that provides the task."
            ) from err
        raise
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {ckpt_path} does not fit the model rebuilt from its own config: {str(err).splitlines()[0]}"
        ) from err
    datamodule_state = checkpoint.get(type(datamodule).__qualname__)
    if datamodule_state:  # e.g. the vocabularies the model was trained with
        datamodule.load_state_dict(datamodule_state)
    return model, datamodule, run_cfg
