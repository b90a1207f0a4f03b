"""Benchmark attention kernels: time and peak memory against the explicit reference, in one run.

    python scripts/bench_attention.py            # n = 256 .. 8192, a few minutes on 2 CPU cores
    python scripts/bench_attention.py --quick    # n = 256, 1024, fewer repeats (seconds)
    python scripts/bench_attention.py --allocator no-mmap --json bench/attention_no_mmap.json

Every variant runs on the same (B, H, n, Dh) queries/keys/values. Reported per (variant, n):
forward time (no grad), forward+backward time, and peak memory of each, plus ratios to the
reference at the same n. Times are medians over repeats after one warm-up run. Exact attention
(reference, sdpa) also reports fwd+bwd GFLOP/s in FlashAttention's FLOP convention and its fraction
of the dense matmul peak measured at the start of the same run.

Peak memory, CPU: torch.profiler(profile_memory=True) records every allocation and free of the CPU
allocator (inside fused kernels too); the peak is the largest running sum of those bytes during
the call, so inputs allocated before it do not count. CUDA: torch.cuda.max_memory_allocated minus
the bytes allocated before the call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.analysis.memory import peak_bytes
from attnlab.attention import (
    MultiHeadAttention,
    linear_attention,
    reference_attention,
    scaled_dot_product_attention,
    sliding_window_attention,
)
from attnlab.attention.low_rank import project_sequence

Kernel = Callable[[Tensor, Tensor, Tensor], Tensor]


def sdpa_backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    """Fused backends that serve plain (B, H, n, Dh) inputs on this device."""
    q = torch.randn(1, 2, 64, 64, device=device, dtype=dtype)
    served = []
    for backend in ("auto", "flash", "efficient", "cudnn", "math"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scaled_dot_product_attention(q, q, q, backend=backend)
            served.append(backend)
        except ValueError:
            continue
    return served


def kernels(args, device: torch.device, dtype: torch.dtype) -> dict[str, Kernel]:
    """name -> kernel(q, k, v) -> out, every one on the same inputs."""
    cases: dict[str, Kernel] = {"reference": lambda q, k, v: reference_attention(q, k, v)[0]}
    for backend in sdpa_backends(device, dtype):
        cases[f"sdpa[{backend}]"] = lambda q, k, v, b=backend: scaled_dot_product_attention(q, k, v, backend=b)
    cases[f"sliding_window[w={args.window}]"] = lambda q, k, v: sliding_window_attention(q, k, v, window=args.window)
    cases["linear"] = lambda q, k, v: linear_attention(q, k, v)
    cases["linear[causal]"] = lambda q, k, v: linear_attention(q, k, v, is_causal=True)
    max_len = max(args.lengths)
    gen = torch.Generator(device="cpu").manual_seed(0)
    proj_e = (torch.randn(args.rank, max_len, generator=gen) / math.sqrt(args.rank)).to(device, dtype)
    proj_f = (torch.randn(args.rank, max_len, generator=gen) / math.sqrt(args.rank)).to(device, dtype)
    proj_e.requires_grad_(), proj_f.requires_grad_()

    def low_rank(q, k, v):
        return scaled_dot_product_attention(q, project_sequence(k, proj_e), project_sequence(v, proj_f))

    cases[f"low_rank[k={args.rank}]"] = low_rank
    return cases


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Interference:
    """CPU time other processes used while we measured, from /proc (Linux); lets timing skip busy spells.

    The machine this benchmark targets is shared: a call during which other processes used more than
    `limit` of a core (or while `pause_file` exists) is discarded and re-run once the machine has
    been quiet for half a second.
    """

    def __init__(self, limit: float = 0.1, enabled: bool = True, pause_file: Path | None = None) -> None:
        self.limit, self.pause_file = limit, pause_file
        self.enabled = enabled and Path("/proc/stat").exists()
        self.discarded = 0
        self.tick = os.sysconf("SC_CLK_TCK") if self.enabled else 100

    def _busy_others(self) -> float:
        """Seconds of CPU used by all processes but this one since boot."""
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        mine = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        own = int(mine[11]) + int(mine[12])  # utime + stime of every thread
        return (user + nice + system + irq + softirq + steal - own) / self.tick

    def start(self) -> tuple[float, float]:
        return (self._busy_others(), time.perf_counter()) if self.enabled else (0.0, 0.0)

    def clean(self, mark: tuple[float, float]) -> bool:
        """Whether other processes stayed under the limit since `mark`."""
        if not self.enabled:
            return True
        if self.pause_file is not None and self.pause_file.exists():
            return False
        busy, wall = self._busy_others() - mark[0], time.perf_counter() - mark[1]
        return busy <= self.limit * max(wall, 0.05)

    def wait_quiet(self, max_wait_s: float = 900.0) -> None:
        """Return after a quiet half second (or after max_wait_s)."""
        deadline = time.perf_counter() + max_wait_s
        while self.enabled and time.perf_counter() < deadline:
            mark = self.start()
            time.sleep(0.5)
            if self.clean(mark):
                return


INTERFERENCE = Interference()


def time_call(
    fn: Callable[[], None], device: torch.device, repeats: int, budget_s: float,
    statistic: Callable[[list[float]], float] = statistics.median,
) -> float:
    """Median (or `statistic`) seconds per call after one warm-up; at least 3 calls, more until `repeats`
    or the budget.

    Calls during which other processes were busy are discarded and re-run (see `Interference`).
    """
    INTERFERENCE.wait_quiet()
    fn()
    _sync(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (len(times) < 3 or spent < budget_s):
        mark = INTERFERENCE.start()
        start = time.perf_counter()
        fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        if INTERFERENCE.clean(mark):
            times.append(elapsed)
            spent += elapsed
        else:
            INTERFERENCE.discarded += 1
            INTERFERENCE.wait_quiet()
    return statistic(times)


def measure(kernel: Kernel, length: int, args, device, dtype) -> dict[str, float]:
    """Forward and forward+backward time and peak memory of one kernel at one length."""
    shape = (args.batch, args.heads, length, args.head_dim)
    gen = torch.Generator(device="cpu").manual_seed(length)
    q, k, v = (torch.randn(shape, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, generator=gen).to(device, dtype)

    def forward() -> None:
        with torch.no_grad():
            kernel(q, k, v)

    def drop_grads() -> None:
        q.grad = k.grad = v.grad = None

    def forward_backward() -> None:
        kernel(q, k, v).backward(grad)

    def timed_forward_backward() -> None:
        drop_grads()
        forward_backward()

    return {
        "fwd_ms": 1e3 * time_call(forward, device, args.repeats, args.budget_s),
        "fwd_bwd_ms": 1e3 * time_call(timed_forward_backward, device, args.repeats, args.budget_s),
        "fwd_peak_mb": peak_bytes(forward, device) / 2**20,
        "fwd_bwd_peak_mb": peak_bytes(forward_backward, device, setup=drop_grads) / 2**20,
    }


class BareAttention(nn.Module):
    """The floor MultiHeadAttention is compared with: fused projection + F.sdpa + output projection."""

    def __init__(self, ours: MultiHeadAttention) -> None:
        super().__init__()
        self.heads = ours.num_heads
        self.qkv, self.out = ours.qkv_proj, ours.out_proj  # the same weights

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, n, Dh)
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))


def module_overhead(length: int, args, device, dtype) -> dict[str, float]:
    """MultiHeadAttention vs the bare projection + F.sdpa path, forward+backward, interleaved runs."""
    dim = args.heads * args.head_dim
    ours = MultiHeadAttention(dim=dim, num_heads=args.heads).to(device, dtype)
    bare = BareAttention(ours)
    x = torch.randn(args.batch, length, dim, device=device, dtype=dtype, requires_grad=True)

    def run(module: nn.Module) -> Callable[[], None]:
        def step() -> None:
            x.grad = None
            module.zero_grad(set_to_none=True)
            module(x).sum().backward()

        return step

    ours_times, bare_times = [], []
    for _ in range(args.overhead_rounds):  # alternate so that machine noise hits both alike
        ours_times.append(time_call(run(ours), device, 3, 0.0))
        bare_times.append(time_call(run(bare), device, 3, 0.0))
    ours_ms, bare_ms = 1e3 * statistics.median(ours_times), 1e3 * statistics.median(bare_times)
    return {"n": length, "ours_ms": ours_ms, "bare_ms": bare_ms, "ratio": ours_ms / bare_ms}


def flops_fwd_bwd(length: int, args) -> float:
    """FlashAttention's convention: forward 4 B H n^2 Dh, backward 2.5x forward."""
    return 3.5 * 4 * args.batch * args.heads * length**2 * args.head_dim


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """The machine's dense matmul rate in this dtype: the fastest of several square 2048 (CPU) / 8192
    (CUDA) matmuls (a peak, so the best call rather than the median)."""
    size = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    seconds = time_call(lambda: torch.mm(a, b), device, max(repeats, 10), budget_s=3.0, statistic=min)
    return 2 * size**3 / seconds / 1e9


# exact O(n^2) attention: the FLOP count of FlashAttention's convention applies
EXACT = ("reference", "sdpa[")


# glibc malloc serves every allocation above 32 MB with a fresh mmap and unmaps it on free, so each
# call page-faults its large buffers back in: a cost that jumps once tensors cross 32 MB. This mode
# keeps freed memory in the heap instead, like the caching allocators PyTorch recommends for CPU.
NO_MMAP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 256, 1024; few repeats")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048, 4096, 8192])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--max-quadratic-len", type=int, default=4096,
                        help="skip reference and sdpa[math] (O(n^2) memory) above this n")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget-s", type=float, default=2.0, help="stop repeating a measurement after this")
    parser.add_argument("--overhead-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-wait-quiet", action="store_true", help="keep calls during which others were busy")
    parser.add_argument("--pause-file", type=Path, default=None, help="also pause timing while this file exists")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("bench/attention.json"))
    parser.add_argument("--allocator", choices=["default", "no-mmap"], default="default",
                        help="no-mmap: glibc keeps freed memory (re-executes with MALLOC_MMAP_MAX_=0)")
    args = parser.parse_args()
    if args.allocator == "no-mmap" and any(os.environ.get(k) != v for k, v in NO_MMAP_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **NO_MMAP_ENV})
    if args.quick:
        args.lengths, args.repeats, args.budget_s, args.overhead_rounds = [256, 1024], 3, 0.5, 3
    torch.set_num_threads(args.threads)
    INTERFERENCE.enabled = INTERFERENCE.enabled and not args.no_wait_quiet
    INTERFERENCE.pause_file = args.pause_file
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    cases = kernels(args, device, dtype)
    peak_gflops = matmul_peak_gflops(device, dtype, args.repeats)
    print(f"dense matmul peak ({dtype}, {torch.get_num_threads()} threads): {peak_gflops:.0f} GFLOP/s", flush=True)
    quadratic = {"reference", "sdpa[math]"}
    results: list[dict] = []
    started = time.perf_counter()
    for length in args.lengths:
        reference = None
        for name, kernel in cases.items():
            row = {"variant": name, "n": length}
            if name in quadratic and length > args.max_quadratic_len:
                row["skipped"] = f"O(n^2) memory; skipped above n={args.max_quadratic_len}"
            else:
                row.update(measure(kernel, length, args, device, dtype))
                if name.startswith(EXACT):
                    row["gflops_fwd_bwd"] = flops_fwd_bwd(length, args) / (row["fwd_bwd_ms"] * 1e-3) / 1e9
                    row["peak_fraction_fwd_bwd"] = row["gflops_fwd_bwd"] / peak_gflops
                    if device.type == "cuda":
                        row["tflops_fwd_bwd"] = row["gflops_fwd_bwd"] / 1e3
            if name == "reference":
                reference = row if "skipped" not in row else None
            if reference is not None and "skipped" not in row:
                row["speedup_fwd"] = reference["fwd_ms"] / row["fwd_ms"]
                row["speedup_fwd_bwd"] = reference["fwd_bwd_ms"] / row["fwd_bwd_ms"]
                row["mem_ratio_fwd_bwd"] = row["fwd_bwd_peak_mb"] / reference["fwd_bwd_peak_mb"]
            results.append(row)
            _print_row(row)
    overhead = [module_overhead(n, args, device, dtype) for n in sorted({1024, min(4096, max(args.lengths))})]
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "dtype": str(dtype),
            "allocator": args.allocator,
            "matmul_peak_gflops": peak_gflops,
            "malloc_env": {k: os.environ.get(k) for k in NO_MMAP_ENV},
        },
        "memory_method": "CPU: torch.profiler profile_memory allocation events (peak running sum of live bytes "
        "allocated during the call); CUDA: max_memory_allocated minus bytes live before the call",
        "interference": {"limit_core_fraction": INTERFERENCE.limit, "discarded_calls": INTERFERENCE.discarded},
        "results": results,
        "module_overhead": overhead,
        "targets": targets(results, overhead, args, peak_gflops),
        "wall_s": time.perf_counter() - started,
    }
    print()
    print(markdown_table(results))
    print()
    for item in overhead:
        print(f"MultiHeadAttention / bare proj + F.sdpa, fwd+bwd, n={item['n']}: "
              f"{item['ours_ms']:.2f} ms / {item['bare_ms']:.2f} ms = {item['ratio']:.3f}x")
    print()
    for target in report["targets"]:
        print(f"[{'PASS' if target['ok'] else 'FAIL'}] {target['target']}: {target['measured']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json} ({report['wall_s']:.0f} s; {INTERFERENCE.discarded} timed calls discarded "
          "because other processes were busy)")


def _row(results: list[dict], variant: str, length: int) -> dict | None:
    for row in results:
        if row["variant"] == variant and row["n"] == length and "skipped" not in row:
            return row
    return None


def targets(results: list[dict], overhead: list[dict], args, peak_gflops: float) -> list[dict]:
    """The acceptance targets of issue 3 that this run's lengths can check.

    The speed-up targets also say what they demand: the fraction of the dense matmul peak at which
    the fused kernel would have to run its fwd+bwd FLOPs to be 2.5x faster than this reference.
    """
    checks: list[dict] = []
    fused = sorted({r["variant"] for r in results if r["variant"].startswith("sdpa[") and r["variant"] != "sdpa[math]"})
    for length in (1024, 4096):
        reference = _row(results, "reference", length)
        for name in fused:
            row = _row(results, name, length)
            if row and "speedup_fwd_bwd" in row:
                needed = flops_fwd_bwd(length, args) / (reference["fwd_bwd_ms"] / 2.5 * 1e-3) / 1e9 / peak_gflops
                checks.append({"target": f"{name} fwd+bwd >= 2.5x faster than reference at n={length}",
                               "measured": f"{row['speedup_fwd_bwd']:.2f}x (ran at {row['peak_fraction_fwd_bwd']:.0%} "
                                           f"of the matmul peak; 2.5x needs {needed:.0%})",
                               "ok": row["speedup_fwd_bwd"] >= 2.5, "needed_peak_fraction": needed})
    for name in fused:
        row = _row(results, name, 4096)
        if row and "mem_ratio_fwd_bwd" in row:
            checks.append({"target": f"{name} fwd+bwd peak memory <= 0.3x reference at n=4096",
                           "measured": f"{row['mem_ratio_fwd_bwd']:.3f}x", "ok": row["mem_ratio_fwd_bwd"] <= 0.3})
    growing = [r["variant"] for r in results if r["variant"].startswith(("sliding_window", "linear")) and r["n"] == 4096]
    for name in growing:
        small, large = _row(results, name, 4096), _row(results, name, 8192)
        if small and large:
            for key in ("fwd_bwd_ms", "fwd_ms", "fwd_bwd_peak_mb", "fwd_peak_mb"):
                growth = large[key] / small[key]
                checks.append({"target": f"{name} {key} grows <= 2.3x from n=4096 to 8192",
                               "measured": f"{growth:.2f}x", "ok": growth <= 2.3})
    for item in overhead:
        checks.append({"target": f"MultiHeadAttention <= 1.10x bare projection + F.sdpa at n={item['n']}",
                       "measured": f"{item['ratio']:.3f}x", "ok": item["ratio"] <= 1.10})
    return checks


def _print_row(row: dict) -> None:
    if "skipped" in row:
        print(f"{row['variant']:>24} n={row['n']:>5}  skipped ({row['skipped']})", flush=True)
        return
    speed = f"  x{row['speedup_fwd_bwd']:.2f} vs ref" if "speedup_fwd_bwd" in row else ""
    if "gflops_fwd_bwd" in row:
        speed += f"  {row['gflops_fwd_bwd']:.0f} GFLOP/s ({row['peak_fraction_fwd_bwd']:.0%} of peak)"
    print(f"{row['variant']:>24} n={row['n']:>5}  fwd {row['fwd_ms']:9.2f} ms  fwd+bwd {row['fwd_bwd_ms']:9.2f} ms  "
          f"peak {row['fwd_peak_mb']:8.1f} / {row['fwd_bwd_peak_mb']:8.1f} MB{speed}", flush=True)


def markdown_table(results: list[dict]) -> str:
    """The README table: one row per (variant, n)."""
    lines = [
        (
            "| variant | n | fwd ms | fwd+bwd ms | fwd peak MB | fwd+bwd peak MB | fwd+bwd speed-up vs ref "
            "| fwd+bwd memory vs ref | fwd+bwd GFLOP/s (% of matmul peak) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        if "skipped" in row:
            lines.append(f"| {row['variant']} | {row['n']} | skipped: {row['skipped']} | | | | | | |")
            continue
        speed = f"{row['speedup_fwd_bwd']:.2f}x" if "speedup_fwd_bwd" in row else "n/a"
        memory = f"{row['mem_ratio_fwd_bwd']:.3f}x" if "mem_ratio_fwd_bwd" in row else "n/a"
        rate = f"{row['gflops_fwd_bwd']:.0f} ({row['peak_fraction_fwd_bwd']:.0%})" if "gflops_fwd_bwd" in row else ""
        lines.append(
            f"| {row['variant']} | {row['n']} | {row['fwd_ms']:.1f} | {row['fwd_bwd_ms']:.1f} | "
            f"{row['fwd_peak_mb']:.1f} | {row['fwd_bwd_peak_mb']:.1f} | {speed} | {memory} | {rate} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
