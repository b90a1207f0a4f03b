"""Shared fixtures: compose the real Hydra configs, shrunk for CPU tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ATTNLAB_ROOT", str(ROOT))
import attnlab.config  # noqa: F401  (registers resolvers)

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "trainer.enable_progress_bar=false"]
# Tiny builder parameters per task for the tests that run every task (tests/cli/test_every_task.py).
# A new task adds its entry here; a test fails until it does.
TINY_TASK = {
    "image_classification": ["task=image_classification"],
    "vqa": ["task=vqa", "data.train_images=24", "data.validation_images=4", "data.test_images=4", "data.batch_size=4"],
    "translation": ["task=translation", "data.train_size=300", "data.validation_size=8", "data.test_size=8",
                    "data.batch_size=8", "data.max_tokens=null", "data.max_target_len=32",
                    "model.tasks.translation.head.vocab_size=300", "model.tasks.translation.head.label_smoothing=0",
                    "backbone.depth=2", "model.optimizer.lr=0.003"],
    "qa": ["task=qa", "data.size=60", "data.test_size=6", "data.batch_size=8", "data.eval_batch_size=8",
           "data.max_tokens=null", "data.max_validation_items=null", "data.vocab_size=300", "backbone.depth=2",
           "model.optimizer.lr=0.003"],
    # cross-entropy only: Dice over the few pixels of a tiny batch's rare classes needs more than debug=overfit's
    # 50 steps to fall under 10 % (tests/tasks/test_segmentation.py trains with CE + Dice)
    "segmentation": ["task=segmentation", "data.train_size=24", "data.validation_size=4", "data.test_size=4",
                     "data.batch_size=4", "data.eval_batch_size=4", "model.tasks.segmentation.head.dice_weight=0",
                     "model.optimizer.lr=0.01"],
    "summarization": ["task=summarization", "data.train_size=60", "data.validation_size=4", "data.test_size=4",
                      "data.batch_size=4", "data.max_tokens=null", "data.max_source_len=96", "data.max_target_len=24",
                      "model.tasks.summarization.head.vocab_size=300",
                      "model.tasks.summarization.head.label_smoothing=0", "backbone.depth=2", "model.optimizer.lr=0.003"],
    # CTC leaves its all-blank plateau late: debug=overfit's 50 steps need a small batch and a constant lr
    "asr": ["task=asr", "data.train_size=24", "data.validation_size=6", "data.test_size=6", "data.batch_size=4",
            "data.eval_batch_size=8", "backbone.depth=2", "backbone.dim=64", "model.optimizer.lr=0.01",
            "model.scheduler=null"],
    "video": ["task=video", "data.train_size=20", "data.validation_size=10", "data.test_size=10", "data.batch_size=4",
              "data.eval_batch_size=10", "backbone.depth=2", "model.optimizer.lr=0.003"],
}
# Model variants that build different parameters (each must leave none unused, so DDP works).
TASK_VARIANTS = {
    "image_classification": [[], ["backbone=timm", "backbone.model_name=resnet18", "backbone.image_size=32"]],
    "vqa": [["task.fusion=cross"], ["task.fusion=joint"], ["task.fusion=concat"],
            ["model.tasks.vqa.route.fusion_depth=2", "model.tasks.vqa.route.text_depth=1"],
            ["model.tasks.vqa.route.bidirectional=false"]],
    # the Bahdanau baselines swap in other backbone / decoder presets: their overrides must come after the
    # TINY_TASK ones, which shrink the transformer presets
    "translation": [[], ["experiment=translation_bahdanau", "backbone.dim=64"],
                    ["experiment=translation_bahdanau", "backbone.dim=64", "decoder.score=general"]],
    "summarization": [[], ["experiment=summarization_bahdanau", "backbone.dim=64"]],
    "segmentation": [[], ["model.tasks.segmentation.head.gates=false"], ["experiment=segmentation_timm"],
                     ["experiment=segmentation_timm", "model.tasks.segmentation.head.gates=false"]],
    "qa": [[], ["model.tasks.qa.head.interaction=bidaf"], ["attention=sliding_window", "attention.window=16"],
           ["backbone.pos_encoding=none"], ["model.tasks.qa.route=null"]],
    "asr": [[], ["backbone=conformer", "backbone.dim=32", "backbone.ffn_dim=64", "backbone.depth=2"],
            ["model.tasks.asr.head.decoding=beam"]],
    "video": [["task.st_attention=divided"], ["task.st_attention=joint"], ["task.st_attention=space_only"]],
}
# Trainer-level tests run on the fastest task unless they name one (train.py's default is vqa).
FOUNDATION_TASK = "task=image_classification"


def with_task(args: list[str] | tuple[str, ...]) -> list[str]:
    """`args` plus task=image_classification unless they choose a task themselves (appended: flags such
    as `-m` must stay in front of the overrides)."""
    return list(args) if any(a.lstrip("+~").startswith("task=") for a in args) else [*args, FOUNDATION_TASK]


def compose_config(name: str, overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    """Compose conf/<name>.yaml like the CLI does, with the run writing under `output_dir`."""
    if name == "train":
        overrides = with_task(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        cfg.paths.data_dir = str(data_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def train_tiny_checkpoint(task: str, out: Path, data_dir: Path, *extra: str, batches: int = 2) -> Path:
    """Train `task`'s tiny config for `batches` steps (debug=limit, one epoch, no test) into `out`;
    returns its last checkpoint (for eval.py / predict.py tests)."""
    from attnlab import cli

    cfg = compose_config("train", [*QUIET, *TINY_TASK[task], *extra, "debug=limit", "trainer.max_epochs=1",
                                   f"trainer.limit_train_batches={batches}", "test=false"], out, data_dir)
    cli.train(cfg)
    return out / "checkpoints" / "last.ckpt"


def pytest_collection_modifyitems(config, items):
    """Without espeak-ng (a Debian package) the speech task cannot build its data: the every-task tests of
    asr are skipped (tests/tasks/test_asr*.py mark their own),
    with the install command as the reason (CI's .ci/run installs it, so they run there)."""
    if shutil.which("espeak-ng") is not None:
        return
    skip = pytest.mark.skip(reason="espeak-ng is not installed (apt-get install espeak-ng): the asr task cannot build its data")
    for item in items:
        if re.search(r"[\[\-]asr[\]\-]", item.nodeid):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One dataset cache for the whole session (builders write once)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def train_cfg(tmp_path, data_dir):
    """Factory: train config with overrides, quiet, writing into tmp_path/run."""

    def make(*overrides: str, run: str = "run", quiet: bool = True) -> DictConfig:
        return compose_config("train", [*(QUIET if quiet else []), *overrides], tmp_path / run, data_dir)

    return make


@pytest.fixture
def eval_cfg(tmp_path, data_dir):
    def make(*overrides: str, run: str = "eval") -> DictConfig:
        return compose_config("eval", [*overrides], tmp_path / run, data_dir)

    return make


def run_script(script: str, *args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run train.py / eval.py as a user would; returns the completed process (output captured)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    if script == "train.py":
        args = tuple(with_task(args))
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
