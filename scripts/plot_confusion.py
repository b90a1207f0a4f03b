"""Confusion matrix of a classification run from its predictions.jsonl (eval.py or the test stage).

    python scripts/plot_confusion.py <run>/predictions.jsonl --out tasks/video/confusion.png \
        --names move_left move_right move_up move_down rotate_cw rotate_ccw zoom_in zoom_out fade_in fade_out

Rows are true classes, columns predicted ones; cells hold the share of the row (counts in the title's
total), so a model that cannot tell a class from its time reversal shows 2 x 2 blocks on the diagonal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="predictions.jsonl with `prediction` and `target` per record")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--names", nargs="*", default=None, help="class names in id order")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    records = [json.loads(line) for line in args.predictions.read_text().splitlines() if line.strip()]
    scored = [r for r in records if "target" in r]
    if not scored:
        raise SystemExit(f"{args.predictions} has no records with a target; run eval.py on a labelled split")
    truth = np.array([r["target"] for r in scored])
    predicted = np.array([r["prediction"] for r in scored])
    classes = len(args.names) if args.names else int(max(truth.max(), predicted.max())) + 1
    names = args.names or [str(c) for c in range(classes)]
    counts = confusion_matrix(truth, predicted, labels=list(range(classes)))
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    accuracy = float((truth == predicted).mean())
    figure = Figure(figsize=(1.0 + 0.62 * classes, 0.8 + 0.55 * classes), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    for (row, col), share in np.ndenumerate(shares):
        if counts[row, col]:
            ax.text(col, row, f"{share:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if share > 0.5 else "black")
    ax.set_xticks(range(classes), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(classes), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(args.title or f"{args.predictions.parent.name}: accuracy {accuracy:.3f} over {len(scored)}", fontsize=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"accuracy {accuracy:.4f} over {len(scored)} predictions; wrote {args.out}")


if __name__ == "__main__":
    main()
