"""Cost of spatio-temporal attention: joint vs divided (vs space_only) at T = 8 and T = 32 frames.

    python scripts/bench_video.py                               # default video task config, batch 8, CPU
    python scripts/bench_video.py --frames 8 16 32 --device cuda --json bench/video_cost_cuda.json

The model is the one `python train.py task=video` builds, with only ``task.st_attention`` and
``data.num_frames`` changed. Per variant: the median time of a training step (forward, loss, backward)
over ``--steps`` steps after a warm-up, the peak memory of one step (`attnlab.analysis.memory.peak_bytes`:
CPU allocator events from the profiler, or CUDA's peak allocation), and the attention FLOPs of one clip
counted from the shapes (QK^T and AV, 2 multiply-adds each: 4 * length^2 * D per sequence):

    joint       depth * 4 * (T' N)^2 D
    divided     depth * 4 * (N T'^2 + T' N^2) D
    space_only  depth * 4 * T' N^2 D

All variants run in one process, one after another, so the ratios are measured on the same machine state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import attnlab.config  # noqa: F401  (registers the config resolvers)
from attnlab.analysis.memory import peak_bytes
from attnlab.checkpoints import build_model

ROOT = Path(__file__).resolve().parents[1]


def video_model(mode: str, frames: int, extra: list[str]) -> tuple[torch.nn.Module, object]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["task=video", f"task.st_attention={mode}", f"data.num_frames={frames}", *extra])
    return build_model(cfg.model, {}), cfg


def attention_flops(mode: str, *, steps: int, patches: int, dim: int, depth: int) -> int:
    """Multiply-adds x 2 of QK^T and AV for one clip (see the module docstring)."""
    per_block = {"joint": (steps * patches) ** 2, "divided": patches * steps**2 + steps * patches**2,
                 "space_only": steps * patches**2}[mode]
    return depth * 4 * per_block * dim


def measure(mode: str, frames: int, args, device: torch.device) -> dict:
    model, cfg = video_model(mode, frames, args.override)
    model = model.to(device).train()
    adapter = model.adapters["video"]
    generator = torch.Generator().manual_seed(0)
    batch = {"video": torch.randn(args.batch, frames, cfg.data.in_chans, *adapter.image_size, generator=generator),
             "label": torch.randint(0, 10, (args.batch,), generator=generator)}
    batch = {k: v.to(device) for k, v in batch.items()}
    head = model.heads["video"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step() -> None:
        with autocast:
            loss = head.loss(model(batch, "video"), batch)
        loss.backward()

    def drop_grads() -> None:
        model.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up (kernel selection, allocator)
        step()
    times = []
    for _ in range(args.steps):
        drop_grads()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = peak_bytes(step, device, setup=drop_grads)
    flops = attention_flops(mode, steps=adapter.num_steps, patches=adapter.num_patches, dim=cfg.backbone.dim,
                            depth=cfg.backbone.depth)
    row = {"mode": mode, "frames": frames, "tokens": adapter.num_steps * adapter.num_patches,
           "step_s": statistics.median(times), "peak_mb": peak / 2**20, "attention_gflops_per_clip": flops / 1e9}
    print(f"{mode:10s} T={frames:3d} tokens={row['tokens']:5d}  step {row['step_s'] * 1000:8.1f} ms  "
          f"peak {row['peak_mb']:8.1f} MB  attention {row['attention_gflops_per_clip']:8.3f} GFLOP/clip", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--modes", nargs="+", default=["joint", "divided", "space_only"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (the task's default precision)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--override", nargs="*", default=[], help="more config overrides, e.g. backbone=small")
    parser.add_argument("--json", type=Path, default=Path("bench/video_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(mode, frames, args, device) for frames in args.frames for mode in args.modes]
    print()
    by = {(r["mode"], r["frames"]): r for r in rows}
    low, high = min(args.frames), max(args.frames)
    for mode in args.modes:
        a, b = by[(mode, low)], by[(mode, high)]
        print(f"{mode:10s} T {low} -> {high} (x{high / low:g} frames): step x{b['step_s'] / a['step_s']:.2f}, "
              f"peak memory x{b['peak_mb'] / a['peak_mb']:.2f}, attention FLOPs "
              f"x{b['attention_gflops_per_clip'] / a['attention_gflops_per_clip']:.2f}")
    if "joint" in args.modes and "divided" in args.modes:
        for frames in args.frames:
            j, d = by[("joint", frames)], by[("divided", frames)]
            print(f"T={frames}: joint / divided = step x{j['step_s'] / d['step_s']:.2f}, peak memory "
                  f"x{j['peak_mb'] / d['peak_mb']:.2f}, attention FLOPs x{j['attention_gflops_per_clip'] / d['attention_gflops_per_clip']:.2f}")
    report = {"config": {k: str(v) for k, v in vars(args).items()},
              "environment": {"torch": torch.__version__, "device": platform.processor() or args.device,
                              "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()},
              "results": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
