"""Peak memory of one call, on CPU and CUDA alike (benchmarks under scripts/).

CPU: torch.profiler(profile_memory=True) records every allocation and free of the CPU allocator (inside
fused kernels too); the peak is the largest running sum of those bytes during the call, so inputs
allocated before it do not count. CUDA: torch.cuda.max_memory_allocated minus the bytes allocated
before the call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def peak_bytes(fn: Callable[[], None], device: torch.device, setup: Callable[[], None] | None = None) -> int:
    """Peak bytes allocated during fn() beyond what was live before it (see module docstring).

    `setup` runs before measuring (e.g. dropping old gradients), so that frees of memory allocated
    before the call cannot hide allocations made during it.
    """
    if setup is not None:
        setup()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type().name == "CPU"),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak
