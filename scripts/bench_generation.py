"""Benchmark autoregressive decoding: the KV cache against re-running the decoder over the whole prefix.

    python scripts/bench_generation.py                                # the translation preset, untrained
    python scripts/bench_generation.py --ckpt logs/translation/<run>/checkpoints/best.ckpt
    python scripts/bench_generation.py --batch 32 --tokens 64 --json bench/generation.json

Every search generates exactly ``--tokens`` tokens per item (EOS is forbidden until then, so trained and
untrained models do the same work) for ``--batch`` items, from the same encoder states. Reported: wall
time (median of ``--repeats`` after one warm-up) of greedy search with and without the cache, their
ratio, and generated tokens per second (items x tokens / time) of greedy and beam search with the cache.
Decoding speed does not depend on what the weights learned, so an untrained model built from the task
config measures the same thing as a checkpoint of it.
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

from attnlab.backbones import GenerationConfig
from attnlab.checkpoints import build_model, restore_from_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def load_model(task: str, ckpt: str | None, overrides: list[str]) -> torch.nn.Module:
    if ckpt:
        model, _, _ = restore_from_checkpoint(ckpt)
        return model
    os.environ.setdefault("ATTNLAB_ROOT", str(ROOT))
    import attnlab.config  # noqa: F401  (registers the resolvers the configs use)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"task={task}", *overrides])
    return build_model(cfg.model, None)


def timed(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="translation")
    parser.add_argument("--ckpt", default=None, help="a checkpoint of the task (default: its config, untrained)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--source-len", type=int, default=24)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. decoder.depth=6")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_model(args.task, args.ckpt, args.overrides).eval()
    task = model.task_names[0]
    head, adapter = model.heads[task], model.adapters[task]
    ids = torch.randint(4, head.vocab_size, (args.batch, args.source_len))  # (B, S) source ids
    with torch.no_grad():
        tokens, mask = adapter({adapter.tokens_key: ids})
        memory = model.backbone(tokens, mask)  # (B, S, D)

    def search(strategy: str, use_cache: bool, beam: int = 1):
        config = GenerationConfig(strategy=strategy, beam_size=beam, max_length=args.tokens, min_length=args.tokens,
                                  length_penalty=0.0)
        return lambda: head.generate(memory, mask, config=config, use_cache=use_cache)

    generated = args.batch * args.tokens
    sequences, _ = search("greedy", True)()
    assert sequences.shape == (args.batch, args.tokens), sequences.shape
    cached = timed(search("greedy", True), args.repeats)
    uncached = timed(search("greedy", False), args.repeats)
    beam = timed(search("beam", True, args.beam), args.repeats)
    results = {
        "task": task,
        "decoder": type(head.decoder).__name__,
        "checkpoint": args.ckpt,
        "batch": args.batch,
        "tokens": args.tokens,
        "source_len": args.source_len,
        "greedy_cached_s": round(cached, 4),
        "greedy_uncached_s": round(uncached, 4),
        "cache_speedup": round(uncached / cached, 2),
        "greedy_tokens_per_s": round(generated / cached, 1),
        f"beam{args.beam}_tokens_per_s": round(generated / beam, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
