"""Attention analysis of a trained checkpoint: per-head statistics, rollout, massive values and their ablation.

    python scripts/analyze_attention.py ckpt_path=logs/vqa/<run>/checkpoints/best.ckpt \\
        [data.<key>=<value> ...] [--out DIR] [--lambda 5] [--batches 4] [--seeds 5] [--split test]

Arguments:
    ckpt_path=<file>     an attnlab checkpoint (key=value, as for eval.py); required.
    data.<key>=<value>   data overrides, values parsed as YAML (e.g. data.batch_size=32,
                         data.data_dir=/scratch/data); the model and vocabularies come from the checkpoint.
    --out DIR            output directory (default: <run dir>/analysis).
    --lambda L           massive-value threshold: |norm| > L x the head's mean norm (Jin et al. 2025: 5).
    --batches N          batches of the split to analyse (0: all of them).
    --seeds S            random-dimension ablations, reported as mean ± sd over S seeds.
    --split test|val     which split's loader to read.

It restores the model with `attnlab.checkpoints.restore_from_checkpoint`, runs the batches once
plainly (the metric before), once under `capture_attention(qkv=True)` (every `MultiHeadAttention`
call's weights, and q / k after RoPE / v), and then once per ablation with
`attnlab.attention.capture.edit_qkv`: the flagged (massive) dims of q and k mean-replaced over the
sequence in every layer, and as many random unflagged dims per head (several seeds). Metrics are
the task head's own (`build_metrics` + `update_metrics`) over the same batches.

Writes into the output directory:
    report.md       tables per layer and head (entropy, mean attention distance, sink share), massive
                    values per layer (Q/K/V counts, largest norm ratio, RoPE bands), the ablation
    analysis.json   every number of the report
    entropy.png, distance.png, sink_share.png   layer x head heatmaps
    norms.png       the (H, Dh) norm matrices of Q, K, V per layer, massive entries boxed
    rollout.png     attention rollout through the backbone: mean share each input token contributes
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from attnlab.analysis import (
    DEFAULT_LAMBDA,
    DimensionNorms,
    HeadStatsAccumulator,
    attention_rollout,
    flag_massive,
    infer_key_mask,
    mean_replace_editor,
    norm_ratio,
    plot_layer_head_matrix,
    plot_norm_matrices,
    plot_token_map,
    random_dims_like,
    rope_band_counts,
    rope_dimension_info,
)
from attnlab.attention import MultiHeadAttention, attention_layers, capture_attention
from attnlab.attention.capture import edit_qkv
from attnlab.checkpoints import restore_from_checkpoint

BACKBONE_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.attn$")
MAX_PREFIX = 8  # leading non-grid tokens (CLS, registers) accepted before an image grid


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Path, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="ckpt_path=<file> and data.<key>=<value> pairs")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <run dir>/analysis)")
    parser.add_argument("--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA, help="massive-value threshold")
    parser.add_argument("--batches", type=int, default=4, help="batches to analyse (0: all)")
    parser.add_argument("--seeds", type=int, default=5, help="random-dimension ablation seeds")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    args = parser.parse_args(argv)
    ckpt_path, data = None, {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"'{item}' is not key=value; pass ckpt_path=<file> and data.<key>=<value>")
        if key == "ckpt_path":
            ckpt_path = Path(value)
        elif key.startswith("data."):
            data[key] = yaml.safe_load(value)
        else:
            parser.error(f"unknown key '{key}'; this script takes ckpt_path= and data.<key>= overrides")
    if ckpt_path is None:
        parser.error("ckpt_path=<run dir>/checkpoints/best.ckpt is required")
    if args.lam <= 0:
        parser.error(f"--lambda ({args.lam}) must be > 0; the paper uses 5")
    if args.batches < 0 or args.seeds < 1:
        parser.error("--batches must be >= 0 (0: all) and --seeds >= 1")
    return args, ckpt_path, data


def batch_size(batch: dict[str, Any]) -> int:
    return next((int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0), 1)


@torch.no_grad()
def task_metrics(model: torch.nn.Module, task: str, batches: list[dict[str, Any]]) -> dict[str, float]:
    """The head's own metrics over the batches."""
    head = model.heads[task]
    metrics = head.build_metrics()
    for batch in batches:
        head.update_metrics(metrics, model(batch, task), batch)
    return {name: float(value) for name, value in metrics.compute().items()}


def image_grid(adapter: torch.nn.Module) -> tuple[tuple[int, int], tuple[float, float]] | None:
    """((gh, gw), (ph, pw) pixels) of the adapter's image tokens, or None for non-image adapters."""
    if hasattr(adapter, "grid_size") and hasattr(adapter, "patch_size"):  # ImagePatchEmbed
        return tuple(adapter.grid_size), tuple(float(p) for p in adapter.patch_size)
    tokenizer = getattr(adapter, "image", None)  # VQA's ConvSceneTokenizer: a square grid over the image
    if tokenizer is not None and isinstance(getattr(tokenizer, "grid", None), int):
        side = tokenizer.grid
        return (side, side), (tokenizer.image_size / side, tokenizer.image_size / side)
    return None


def call_order(model: torch.nn.Module, task: str, batch: dict[str, Any], layers: dict[str, MultiHeadAttention]) -> list[str]:
    """Layer names in the order a forward calls them (never-called layers last)."""
    order: list[str] = []
    hooks = [
        layer.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name) if name not in order else None)
        for name, layer in layers.items()
    ]
    try:
        with torch.no_grad():
            model(batch, task)
    finally:
        for hook in hooks:
            hook.remove()
    return order + [name for name in layers if name not in order]


@torch.no_grad()
def capture_statistics(
    model: torch.nn.Module, task: str, batches: list[dict[str, Any]], layers: dict[str, MultiHeadAttention],
    grid: tuple[tuple[int, int], tuple[float, float]] | None,
) -> dict[str, Any]:
    """One pass under capture_attention(qkv=True): head statistics, Q/K/V norms, rollout."""
    heads = {name: HeadStatsAccumulator() for name in layers}
    norms = {name: {kind: DimensionNorms() for kind in "qkv"} for name in layers}
    shapes: dict[str, tuple[int, int]] = {}
    blocks = sorted((int(m.group(1)), name) for name in layers if (m := BACKBONE_BLOCK.match(name)))
    rollout_sum, rollout_count = None, 0
    with capture_attention(model, qkv=True) as captured:
        for batch in batches:
            model(batch, task)
            block_records = [captured[name] for _, name in blocks]
            if blocks and all(len(r) == 1 for r in block_records):  # one backbone call: roll it out
                weights = [r[0].weights for r in block_records]
                if all(w.shape == weights[0].shape and w.shape[-1] == w.shape[-2] for w in weights):
                    valid = infer_key_mask(weights[0]).double()  # (B, N)
                    rollout = attention_rollout(weights).double()  # (B, N, N)
                    per_token = (rollout * valid[:, :, None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # (B, N)
                    rollout_sum = per_token.sum(0) if rollout_sum is None else rollout_sum + per_token.sum(0)
                    rollout_count += per_token.shape[0]
            for name, records in captured.items():
                cross = layers[name].cross
                for record in records:
                    weights = record.weights  # (B, H, Tq, Tk)
                    _, _, q_len, k_len = weights.shape
                    shapes[name] = (q_len, k_len)
                    key_mask = infer_key_mask(weights)  # (B, Tk)
                    self_attention = not cross and q_len == k_len
                    query_mask = key_mask if self_attention else None
                    options: dict[str, Any] = {"distance": self_attention}
                    if self_attention and grid is not None and 0 <= k_len - math.prod(grid[0]) <= MAX_PREFIX:
                        options |= {"grid": grid[0], "patch_size": grid[1], "num_prefix": k_len - math.prod(grid[0])}
                    heads[name].update(weights, key_mask, query_mask, **options)
                    norms[name]["q"].update(record.q, query_mask)
                    norms[name]["k"].update(record.k, key_mask)
                    norms[name]["v"].update(record.v, key_mask)
                records.clear()  # keep one batch in memory at a time
    called = [name for name in layers if heads[name].num_heads is not None]
    return {
        "heads": {name: heads[name].compute() for name in called},
        "norms": {name: {kind: acc.compute() for kind, acc in norms[name].items()} for name in called},
        "shapes": shapes,
        "rollout": None if rollout_sum is None else (rollout_sum / rollout_count).numpy(),
    }


def ablations(
    model: torch.nn.Module, task: str, batches: list[dict[str, Any]], flags: dict[str, dict[str, torch.Tensor]],
    seeds: int,
) -> dict[str, Any]:
    """Metrics with the flagged q/k dims mean-replaced, and with as many random dims (per seed)."""
    flagged = {name: f for name, f in flags.items() if bool(f["q"].any() or f["k"].any())}
    count = sum(int(f["q"].sum() + f["k"].sum()) for f in flagged.values())
    if not flagged:
        return {"num_dims": 0, "massive": None, "random": []}
    editors = {name: mean_replace_editor(q_dims=f["q"], k_dims=f["k"]) for name, f in flagged.items()}
    with edit_qkv(model, editors):
        massive = task_metrics(model, task, batches)
    random_runs = []
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        editors = {
            name: mean_replace_editor(
                q_dims=random_dims_like(f["q"], generator=generator), k_dims=random_dims_like(f["k"], generator=generator)
            )
            for name, f in flagged.items()
        }
        with edit_qkv(model, editors):
            random_runs.append(task_metrics(model, task, batches))
    return {"num_dims": count, "massive": massive, "random": random_runs}


def stack_heads(rows: list[np.ndarray]) -> np.ndarray:
    """(L, max H) from per-layer (H,) arrays; layers with fewer heads are padded with NaN (blank cells)."""
    out = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_report(out: Path, info: dict[str, Any], result: dict[str, Any]) -> None:
    lines = [
        f"# Attention analysis: {info['task']}",
        "",
        f"- checkpoint: `{info['ckpt_path']}`",
        f"- command: `{info['command']}`",
        (f"- data: split `{info['split']}`, {info['batches']} batches, {info['samples']} samples; "
        f"λ = {info['lambda']}; random ablation seeds: {info['seeds']}"),
        f"- generated {info['date']} with torch {info['torch']} on {info['machine']} ({info['seconds']:.0f} s)",
        "",
        "## Task metrics (the head's own, over these batches)",
        "",
        "| metric | value |",
        "| --- | ---: |",
        *[f"| {k} | {fmt(v, 4)} |" for k, v in result["baseline"].items()],
        "",
        "## Heads",
        "",
        ("Entropy in nats over valid keys (max: uniform over the same keys); mean attention distance in "
        "the unit given (px between patch centres on an image grid, tokens in 1-D, – for cross-attention); "
        "peak share: mean largest weight per query; sink key: the key index most often attended most "
        "(share of queries), with the mean weight all queries put on it."),
        "",
        "| layer | Tq x Tk | head | entropy | max | distance | peak share | sink key (freq) | sink share |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, stats in result["heads"].items():
        q_len, k_len = result["shapes"][name]
        unit = f" {stats['distance_unit']}" if stats["distance_unit"] else ""
        for h in range(len(stats["entropy"])):
            lines.append(
                f"| {name} | {q_len} x {k_len} | {h} | {fmt(stats['entropy'][h])} | {fmt(stats['max_entropy'][h])} | "
                f"{fmt(stats['distance'][h], 2)}{unit if not math.isnan(stats['distance'][h]) else ''} | "
                f"{fmt(stats['peak_share'][h])} | {stats['sink_key'][h]} ({fmt(stats['sink_frequency'][h], 2)}) | "
                f"{fmt(stats['sink_share'][h])} |"
            )
    lines += [
        "",
        f"## Massive values (λ = {info['lambda']})",
        "",
        ("Per layer, the (H, Dh) matrix of L2 norms over the sequence (mean over sequences) of Q, K (after "
        "RoPE) and V; flagged: entries above λ x their head's mean. Max ratio: the largest entry over its "
        "head's mean. RoPE bands split each axis's rotate-half pairs in thirds (high = fastest rotation)."),
        "",
        "| layer | RoPE | Q flagged | K flagged | V flagged | Q max ratio | K max ratio | V max ratio | Q bands h/m/l | K bands h/m/l |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, m in result["massive"].items():
        bands = {k: "/".join(str(m["bands"][k][b]) for b in ("high", "mid", "low")) if m["bands"] else "–" for k in "qk"}
        lines.append(
            f"| {name} | {m['rope'] or '–'} | {m['count']['q']} | {m['count']['k']} | {m['count']['v']} | "
            f"{fmt(m['max_ratio']['q'], 2)} | {fmt(m['max_ratio']['k'], 2)} | {fmt(m['max_ratio']['v'], 2)} | "
            f"{bands['q']} | {bands['k']} |"
        )
    flagged_rows = [
        f"- `{name}` {kind.upper()}: " + ", ".join(
            f"h{e['head']} d{e['dim']} (x{e['ratio']:.1f}"
            + (f"; pair {e['pair']}, axis {e['axis']}, {e['frequency']:.2g} rad/token, {e['band']}" if "band" in e else "")
            + ")"
            for e in m["flagged"][kind]
        )
        for name, m in result["massive"].items()
        for kind in "qkv"
        if m["flagged"][kind]
    ]
    lines += ["", *(flagged_rows or ["No entry passes the threshold in any layer."])]
    abl = result["ablation"]
    lines += ["", "## Ablation: flagged Q/K dims mean-replaced over the sequence", ""]
    if abl["num_dims"] == 0:
        lines.append("Nothing is flagged, so the ablation is the identity: every metric stays at its value above.")
    else:
        lines += [
            f"{abl['num_dims']} (head, dim) entries of Q and K in {len(abl['layers'])} layers replaced by their mean "
            + (f"({abl['num_noop']} of them in a one-token Q or K, which is its own mean: no change there) "
               if abl["num_noop"] else "")
            + f"over the sequence; random: as many unflagged dims per head, {len(abl['random'])} seeds (mean ± sd).",
            "",
            "| metric | before | massive dims replaced | random dims replaced |",
            "| --- | ---: | ---: | ---: |",
        ]
        for key, before in result["baseline"].items():
            values = np.array([run[key] for run in abl["random"]], dtype=float)
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            lines.append(f"| {key} | {fmt(before, 4)} | {fmt(abl['massive'][key], 4)} | {fmt(values.mean(), 4)} ± {fmt(sd, 4)} |")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in result["plots"]]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return to_json(value.tolist())
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    args, ckpt_path, data_overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    model, datamodule, run_cfg = restore_from_checkpoint(ckpt_path, data_overrides=data_overrides)
    model.eval()
    task = run_cfg.task.name
    out = args.out or ckpt_path.resolve().parent.parent / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    datamodule.prepare_data()
    datamodule.setup("test" if args.split == "test" else "validate")
    loader = datamodule.test_dataloader() if args.split == "test" else datamodule.val_dataloader()
    batches = list(islice(loader, args.batches or None))
    if not batches:
        raise ValueError(f"the {args.split} split yields no batches; check the data.* overrides")
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"the {task} model has no MultiHeadAttention layer to analyse")
    order = call_order(model, task, batches[0], layers)
    layers = {name: layers[name] for name in order}
    grid = image_grid(model.adapters[task])
    print(f"{task}: {len(batches)} batches, {len(layers)} attention layers; metrics before ...", flush=True)
    baseline = task_metrics(model, task, batches)
    captured = capture_statistics(model, task, batches, layers, grid)
    positions = getattr(model.backbone, "positions", None) if model.backbone is not None else None

    massive, flags, norms_np, flags_np = {}, {}, {}, {}
    for name, kinds in captured["norms"].items():
        layer = layers[name]
        rope = rope_dimension_info(positions, layer.head_dim) if name.startswith("backbone.") and not layer.cross else None
        layer_flags = {kind: flag_massive(norms, args.lam) for kind, norms in kinds.items()}
        ratios = {kind: norm_ratio(norms) for kind, norms in kinds.items()}
        entries = {
            kind: [
                {"head": int(h), "dim": int(d), "ratio": float(ratios[kind][h, d]),
                 **({"axis": rope[d].axis, "pair": rope[d].pair, "frequency": rope[d].frequency,
                     "wavelength": rope[d].wavelength, "band": rope[d].band} if rope and kind != "v" else {})}
                for h, d in layer_flags[kind].nonzero().tolist()
            ]
            for kind in "qkv"
        }
        massive[name] = {
            "rope": type(positions).__name__ if rope else None,
            "count": {kind: int(f.sum()) for kind, f in layer_flags.items()},
            "max_ratio": {kind: float(r.max()) for kind, r in ratios.items()},
            "bands": {kind: rope_band_counts(layer_flags[kind], rope) for kind in "qk"} if rope else None,
            "flagged": entries,
        }
        flags[name] = layer_flags
        norms_np[name] = {kind: n.numpy() for kind, n in kinds.items()}
        flags_np[name] = {kind: f.numpy() for kind, f in layer_flags.items()}
    print(f"metrics before: {baseline}; ablations ...", flush=True)
    ablation = ablations(model, task, batches, flags, args.seeds)
    ablation["layers"] = sorted(name for name, f in flags.items() if bool(f["q"].any() or f["k"].any()))
    # a one-token sequence is its own mean: those entries are flagged but the replacement leaves them as they are
    ablation["num_noop"] = sum(
        int(flags[name][kind].sum()) for name in ablation["layers"] for kind, length in zip("qk", captured["shapes"][name])
        if length == 1
    )

    heads = {name: vars(stats) for name, stats in captured["heads"].items()}
    names = list(heads)
    plots = [
        plot_layer_head_matrix(stack_heads([heads[n]["entropy"] for n in names]), layers=names,
                               title="attention entropy (nats)", path=out / "entropy.png"),
        plot_layer_head_matrix(stack_heads([heads[n]["sink_share"] for n in names]), layers=names,
                               title="sink share (mean weight on the most common top key)", path=out / "sink_share.png"),
    ]
    measured = [n for n in names if heads[n]["distance_unit"]]
    if measured:
        units = sorted({heads[n]["distance_unit"] for n in measured})
        plots.append(plot_layer_head_matrix(stack_heads([heads[n]["distance"] for n in measured]), layers=measured,
                                            title=f"mean attention distance ({'/'.join(units)})", fmt=".1f",
                                            path=out / "distance.png"))
    plots.append(plot_norm_matrices(norms_np, flags_np, title=f"Q/K/V norms over the sequence; boxed: > {args.lam} x head mean",
                                    path=out / "norms.png"))
    if captured["rollout"] is not None:
        rollout = captured["rollout"]
        prefix = len(rollout) - math.prod(grid[0]) if grid else 0
        plots.append(plot_token_map(rollout, title="rollout: mean share per input token", path=out / "rollout.png",
                                    grid=grid[0] if grid and 0 <= prefix <= MAX_PREFIX else None, num_prefix=max(prefix, 0)))

    info = {
        "task": task, "ckpt_path": str(ckpt_path), "split": args.split, "batches": len(batches),
        "samples": sum(batch_size(b) for b in batches), "lambda": args.lam, "seeds": args.seeds,
        "command": " ".join(["python scripts/analyze_attention.py", *(list(sys.argv[1:]) if argv is None else list(argv))]),
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "seconds": time.perf_counter() - start,
    }
    result = {"baseline": baseline, "heads": heads, "shapes": captured["shapes"], "massive": massive,
              "ablation": ablation, "rollout": captured["rollout"], "plots": plots}
    write_report(out, info, result)
    (out / "analysis.json").write_text(json.dumps(to_json({"info": info, **result}), indent=1) + "\n")
    print(f"wrote {out / 'report.md'}, analysis.json and {len(plots)} PNGs in {info['seconds']:.1f} s")
    return {"out": out, "info": info, **result}


if __name__ == "__main__":
    main()
