"""CPU attention under bf16-mixed training: the fused kernel in bf16 against float32 copies, in one run.

    python scripts/bench_cpu_attention_precision.py            # training shapes of the tasks, ~1 min
    python scripts/bench_cpu_attention_precision.py --repeats 3

`attnlab.attention.scaled_dot_product_attention` runs SDPA's CPU kernel on float32 copies of bf16
queries/keys/values that need gradients (and casts the output back), because that kernel's bf16
backward is slower than its float32 one. This script measures why, per shape: forward + backward of
``torch.nn.functional.scaled_dot_product_attention`` on the bf16 tensors as they are ("bf16 kernel"),
against the library entry point ("float32 kernel", the casts included), and forward alone (no grad,
where the library keeps bf16). Times are medians over repeats after a warm-up call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention import scaled_dot_product_attention

# (batch, heads, tokens, head dim, causal, padded): the shapes bf16-mixed training feeds the kernel here
SHAPES = [
    (32, 4, 133, 32, False, True),  # qa: bAbI task 2 batches
    (24, 4, 350, 32, False, True),  # qa: bAbI task 3 batches
    (8, 4, 1024, 32, False, True),  # qa: the longest windows
    (32, 4, 48, 32, True, False),  # seq2seq decoder self-attention
    (16, 8, 256, 64, False, False),  # vqa / image tokens at width 512
]


def median_ms(fn: Callable[[], None], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, repeats: int) -> tuple[float, float, float]:
    """(fwd+bwd of the bf16 kernel, fwd+bwd through the library, forward without grad) in ms."""

    def bf16_kernel() -> None:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal).float().sum().backward()

    def library() -> None:
        scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal).float().sum().backward()

    def forward_only() -> None:
        with torch.no_grad():
            scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

    return median_ms(bf16_kernel, repeats), median_ms(library, repeats), median_ms(forward_only, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU, medians of {args.repeats}")
    print("| B x H x n x Dh | causal | padded | fwd+bwd bf16 kernel | fwd+bwd float32 kernel | speed-up | fwd bf16 (no grad) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for batch, heads, tokens, head_dim, causal, padded in SHAPES:
        q, k, v = (torch.randn(batch, heads, tokens, head_dim, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        mask = None
        if padded:  # half the batch padded by a quarter, as length-bucketed batches are
            mask = torch.ones(batch, 1, 1, tokens, dtype=torch.bool)
            mask[: batch // 2, ..., tokens - tokens // 4 :] = False

        native, upcast, forward = measure(q, k, v, mask, causal, args.repeats)
        print(f"| {batch} x {heads} x {tokens} x {head_dim} | {causal} | {padded} | {native:.1f} ms | {upcast:.1f} ms "
              f"| {native / upcast:.2f}x | {forward:.1f} ms |")


if __name__ == "__main__":
    main()
