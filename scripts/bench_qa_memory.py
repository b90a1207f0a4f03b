"""Peak memory of the QA model's forward + backward on one long context: sliding-window vs full attention.

    python scripts/bench_qa_memory.py                      # n = 4,096 tokens, w = 256, default task config
    python scripts/bench_qa_memory.py --length 8192 --json bench/qa_memory_8k.json

The model is the one `python train.py task=qa model.tasks.qa.route=null` builds (backbone, adapter, span
head; the token route, where every context token goes through the encoder: the default sentence-memory
route puts one slot per sentence there, so its attention is over far fewer positions), with only the
attention swapped: full attention through SDPA's default kernel (flash on CPU and CUDA: O(n) memory, it
never stores the n x n scores), through SDPA's math kernel and through the explicit reference (both
store the n x n weights per layer for the backward pass), and sliding-window attention with the question
region as global tokens. One sequence of ``--length`` tokens: the question region, then context.
Peak memory as in `attnlab.analysis.memory.peak_bytes` (CPU: profiler allocation events); time is one
forward + backward after a warm-up, for orientation only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import attnlab.config  # noqa: F401  (registers the config resolvers)
from attnlab.analysis.memory import peak_bytes
from attnlab.checkpoints import build_model

ROOT = Path(__file__).resolve().parents[1]
# the token route, trained on the labelled span alone (the batch below has no supporting facts)
TOKEN_ROUTE = ["model.tasks.qa.route=null", "model.tasks.qa.head.answer_targets=labelled",
               "model.tasks.qa.head.support_weight=0"]
FULL = {"full[sdpa:auto]": ["attention=sdpa"], "full[sdpa:math]": ["attention=sdpa", "attention.backend=math"],
        "full[reference]": ["attention=reference"]}


def qa_model(overrides: list[str], length: int) -> tuple[torch.nn.Module, dict]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["task=qa", *TOKEN_ROUTE, f"data.max_length={length}", *overrides])
    return build_model(cfg.model, {}), cfg


def long_batch(cfg, length: int, device: torch.device) -> dict:
    """One [CLS] question [SEP] context sequence of `length` tokens with an answer near the end."""
    slots = cfg.data.max_question_len + 2
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, cfg.data.vocab_size, (1, length), generator=generator)
    segments = torch.ones(1, length, dtype=torch.long)
    segments[:, :slots] = 0
    context_mask = segments.bool().clone()
    question_mask = torch.zeros_like(context_mask)
    question_mask[:, 1 : slots - 1] = True
    batch = {"input_ids": ids, "segments": segments, "context_mask": context_mask, "question_mask": question_mask,
             "question_slots": slots, "start_positions": torch.tensor([length - 5]),
             "end_positions": torch.tensor([length - 4])}
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def measure(name: str, overrides: list[str], args, device: torch.device) -> dict:
    model, cfg = qa_model(overrides, args.length)
    model = model.to(device).train()
    batch = long_batch(cfg, args.length, device)
    head = model.heads["qa"]

    def step() -> None:
        head.loss(model(batch, "qa"), batch).backward()

    def drop_grads() -> None:
        model.zero_grad(set_to_none=True)

    step()  # warm-up (kernel selection, allocator)
    drop_grads()
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = peak_bytes(step, device, setup=drop_grads)
    row = {"variant": name, "n": args.length, "peak_mb": peak / 2**20, "fwd_bwd_s": seconds,
           "num_global": cfg.attention.get("num_global"), "window": cfg.attention.get("window")}
    print(f"{name:24s} n={args.length}  peak {row['peak_mb']:9.1f} MB  fwd+bwd {seconds:6.2f} s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("bench/qa_memory.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sliding = f"sliding_window[w={args.window}]"
    variants = {**FULL, sliding: ["attention=sliding_window", f"attention.window={args.window}",
                                  "attention.impl=chunked"]}
    rows = [measure(name, overrides, args, device) for name, overrides in variants.items()]
    by_name = {row["variant"]: row for row in rows}
    ratios = {full: by_name[sliding]["peak_mb"] / by_name[full]["peak_mb"] for full in FULL}
    print()
    for full, ratio in ratios.items():
        print(f"{sliding} / {full}: {ratio:.3f}x peak memory")
    quadratic = max(ratios["full[sdpa:math]"], ratios["full[reference]"])
    ok = quadratic <= 0.25
    print(f"[{'PASS' if ok else 'FAIL'}] sliding window <= 0.25x the peak memory of full attention that stores "
          f"its n x n weights (math / reference kernels): {quadratic:.3f}x")
    print(f"(against SDPA's flash kernel, itself O(n) in memory: {ratios['full[sdpa:auto]']:.3f}x)")
    report = {"config": {k: str(v) for k, v in vars(args).items()},
              "environment": {"torch": torch.__version__, "device": platform.processor() or args.device,
                              "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "dtype": "float32"},
              "results": rows, "ratios": ratios, "target_ok": ok}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
