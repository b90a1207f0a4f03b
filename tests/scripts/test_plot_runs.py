"""scripts/plot_runs.py: curves of several runs (and of a sweep's jobs) side by side in one PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image
from tests.conftest import ROOT

HEADER = "epoch,step,time/fit_minutes,train/vqa/loss,val/vqa/acc\n"


def _run(folder: Path, final_acc: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("task:\n  name: vqa\n  monitor: val/vqa/acc\n")
    rows = [f"0,{s},,{2.0 / (s + 1)}," for s in range(0, 40, 10)]
    rows += [f"0,39,1.5,,{final_acc / 2}", f"1,79,3.0,,{final_acc}"]
    (folder / "metrics.csv").write_text(HEADER + "\n".join(rows) + "\n")
    return folder


def test_two_runs_and_a_sweep_in_one_png(tmp_path):
    cross, concat = _run(tmp_path / "cross", 0.9), _run(tmp_path / "concat", 0.6)
    _run(tmp_path / "sweep" / "0", 0.5), _run(tmp_path / "sweep" / "1", 0.7)
    out = tmp_path / "runs.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_runs.py"), f"{cross}:cross", f"{concat}:concat",
         str(tmp_path / "sweep"), "--x", "minutes", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| 79 | 3.0 | 0.9000 |" in done.stdout and "sweep/1" in done.stdout
    with Image.open(out) as picture:
        assert picture.size == (1200, 456)  # two panels: val/vqa/acc and train/vqa/loss


def test_minutes_need_the_elapsed_time_column(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,val/vqa/acc\n0,9,0.5\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_runs.py"), str(run), "--metrics", "val/vqa/acc"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1 and "use --x steps" in done.stderr
