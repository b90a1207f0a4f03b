"""Validation (and training) curves of several runs side by side, from their metrics.csv: one PNG.

    python scripts/plot_runs.py logs/vqa/<run>:cross logs/vqa/<run2>:concat --out runs.png
    python scripts/plot_runs.py logs/image_classification/multirun/<time> --x steps   # every job of a sweep
    python scripts/plot_runs.py <runs> --metrics val/vqa/acc_relational train/vqa/loss --x minutes

One panel per metric, one line per run. ``--x minutes`` uses ``time/fit_minutes`` (logged at each
validation by the ElapsedTime callback); training rows get the minutes interpolated between the
validations around them. Default metrics: each run's monitored metric (``task.monitor`` in its
config.yaml) and its training loss. Also prints a markdown table of the validation points.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import yaml

TIME = "time/fit_minutes"


def expand(spec: str) -> list[tuple[str, Path]]:
    """'dir[:label]' -> (label, run dir) pairs; a sweep directory expands to its jobs' run dirs."""
    path, _, label = spec.partition(":")
    root = Path(path)
    if (root / "metrics.csv").exists():
        return [(label or root.name, root)]
    jobs = sorted(p.parent for p in root.glob("*/metrics.csv"))
    if not jobs:
        raise SystemExit(f"plot_runs.py: error: {root} has no metrics.csv (nor do its subdirectories)")
    return [(f"{label or root.name}/{job.name}", job) for job in jobs]


def read_metrics(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """metric -> [(step, value)] from the run's metrics.csv (rows of resumed runs included)."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(run_dir / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, []).append((float(row["step"]), float(value)))
    return series


def default_metrics(run_dir: Path) -> list[str]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    task = config.get("task", {})
    return [m for m in (task.get("monitor"), f"train/{task.get('name')}/loss") if m and task.get("name")]


def to_minutes(steps: np.ndarray, clock: list[tuple[float, float]]) -> np.ndarray:
    """Steps -> training minutes, interpolated between the validation points (step, minutes)."""
    known = np.array(sorted(clock))
    return np.interp(steps, np.concatenate([[0.0], known[:, 0]]), np.concatenate([[0.0], known[:, 1]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directory (or sweep directory), optionally :label")
    parser.add_argument("--metrics", nargs="+", help="metrics to plot (default: monitored metric + training loss)")
    parser.add_argument("--x", choices=("steps", "minutes"), default="minutes")
    parser.add_argument("--out", type=Path, default=Path("runs.png"))
    args = parser.parse_args()

    runs = [pair for spec in args.runs for pair in expand(spec)]
    data = {label: read_metrics(run_dir) for label, run_dir in runs}
    metrics = args.metrics or list(dict.fromkeys(m for _, run_dir in runs for m in default_metrics(run_dir)))
    if not metrics:
        raise SystemExit("plot_runs.py: error: no config.yaml to read the monitored metric from; pass --metrics")
    missing = [(label, m) for label, series in data.items() for m in metrics if m not in series]
    if len(missing) == len(data) * len(metrics):
        raise SystemExit(f"plot_runs.py: error: none of the runs logged {metrics}")
    if args.x == "minutes" and any(TIME not in series for series in data.values()):
        raise SystemExit(f"plot_runs.py: error: a run has no '{TIME}' column (ElapsedTime callback off); use --x steps")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for label, series in data.items():
            if metric not in series:
                continue
            points = np.array(series[metric])  # (n, 2): step, value
            x = to_minutes(points[:, 0], series[TIME]) if args.x == "minutes" else points[:, 0]
            axis.plot(x, points[:, 1], label=label, marker="." if metric.startswith("val/") else None, linewidth=1.2)
        axis.set_title(metric, fontsize=10)
        axis.set_xlabel("training wall-clock (minutes)" if args.x == "minutes" else "optimizer steps")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)

    validation = [m for m in metrics if not m.startswith("train/")]
    for label, series in data.items():
        print(f"\n{label}\n\n| step | minutes | " + " | ".join(validation) + " |")
        print("|---:|---:|" + "---:|" * len(validation))
        minutes = dict(series.get(TIME, []))
        for step in sorted({s for m in validation for s, _ in series.get(m, [])}):
            cells = " | ".join(f"{dict(series.get(m, [])).get(step, float('nan')):.4f}" for m in validation)
            print(f"| {int(step)} | {minutes.get(step, float('nan')):.1f} | {cells} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
