"""Accuracy-versus-time curves from runs' metrics.csv: a PNG plot and a markdown table.

Each validation row carries ``time/fit_minutes`` (the ElapsedTime callback), so the x axis is the
wall-clock the run actually took.

    python scripts/plot_curves.py logs/vqa/<run>:cross logs/vqa/<run2>:concat \
        --metrics val/vqa/acc_relational val/vqa/acc_nonrelational --out tasks/vqa/curves.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

TIME = "time/fit_minutes"


def validation_rows(run_dir: Path, metrics: list[str]) -> list[dict[str, float]]:
    """Rows of metrics.csv that hold the validation metrics, merged with their step's time."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    merged: dict[str, dict[str, float]] = {}
    for row in rows:
        values = {k: float(v) for k, v in row.items() if v not in ("", None) and (k in metrics or k in (TIME, "epoch"))}
        if values:
            merged.setdefault(row["step"], {"step": float(row["step"])}).update(values)
    return [r for r in merged.values() if all(m in r for m in metrics) and TIME in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directory, optionally :label")
    parser.add_argument("--metrics", nargs="+", required=True)
    parser.add_argument("--out", type=Path, help="PNG to write")
    args = parser.parse_args()

    curves = {}
    for spec in args.runs:
        path, _, label = spec.partition(":")
        curves[label or Path(path).name] = validation_rows(Path(path), args.metrics)

    for label, rows in curves.items():
        print(f"\n{label}\n")
        print("| minutes | epoch | " + " | ".join(args.metrics) + " |")
        print("|---:|---:|" + "---:|" * len(args.metrics))
        for row in rows:
            cells = " | ".join(f"{100 * row[m]:.1f}" for m in args.metrics)
            print(f"| {row[TIME]:.1f} | {int(row.get('epoch', -1))} | {cells} |")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4))
        for label, rows in curves.items():
            for metric in args.metrics:
                axis.plot([r[TIME] for r in rows], [100 * r[metric] for r in rows], label=f"{label}: {metric}")
        axis.set_xlabel("training wall-clock (minutes)")
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        figure.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out, dpi=120)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
