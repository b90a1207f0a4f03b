"""Capture attention maps (and Q, K, V) from any model built on the library's attention modules.

    with capture_attention(model) as captured:
        model(batch, task)
    captured["backbone.blocks.0.attn"][0].weights  # (B, H, Tq, Tk), one record per call

While the context is active the chosen `MultiHeadAttention` layers (every variant: sdpa, reference,
additive, luong, sliding window, linear, low rank) also compute their weights through their exact
reference path and hand them, with the queries and keys after rotary positions, to the capture. The
model's own forward runs unchanged: no second copy of it exists anywhere.

`edit_qkv` is the write side of the same hook, for ablations: while active, the chosen layers call an
editor on their q, k (after rotary positions) and v right before attending and attend with what it
returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from attnlab.attention.multihead import MultiHeadAttention


@dataclass
class AttentionRecord:
    """One forward call of one attention layer (tensors detached; on the CPU when ``to_cpu``)."""

    weights: Tensor  # (B, H, Tq, Tk): rows sum to 1 over the keys a query may attend to, 0 elsewhere
    q: Tensor | None = None  # (B, H, Tq, Dh) after rotary positions (None unless qkv=True)
    k: Tensor | None = None  # (B, Hkv, Tk, Dh)
    v: Tensor | None = None  # (B, Hkv, Tk, Dh)


def attention_layers(model: nn.Module, pattern: str | None = None) -> dict[str, MultiHeadAttention]:
    """The model's attention modules by qualified name, optionally those whose name matches `pattern` (regex)."""
    regex = re.compile(pattern) if pattern else None
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, MultiHeadAttention) and (regex is None or regex.search(name))
    }


@contextmanager
def capture_attention(
    model: nn.Module, *, pattern: str | None = None, qkv: bool = False, to_cpu: bool = True
) -> Iterator[dict[str, list[AttentionRecord]]]:
    """Record the attention of `model`'s layers (those matching `pattern`) while the context is active.

    Args:
        model: any module containing `MultiHeadAttention` layers.
        pattern: regex on the qualified module name (e.g. ``r"backbone\\.blocks\\.\\d+\\.attn$"``); None: all.
        qkv: also keep the queries, keys (after RoPE) and values.
        to_cpu: move the captured tensors to the CPU (GPU memory is not held across batches).

    Yields: module name -> one `AttentionRecord` per forward call, in call order.
    """
    layers = attention_layers(model, pattern)
    if not layers:
        raise ValueError(
            f"no attention layer of {type(model).__name__} matches pattern {pattern!r}; "
            f"its layers: {sorted(attention_layers(model)) or 'none'}"
        )
    captured: dict[str, list[AttentionRecord]] = {name: [] for name in layers}

    def recorder_for(name: str):
        def record(*, q: Tensor, k: Tensor, v: Tensor, weights: Tensor) -> None:
            keep = (lambda t: t.detach().cpu()) if to_cpu else (lambda t: t.detach())
            extra: dict[str, Any] = {"q": keep(q), "k": keep(k), "v": keep(v)} if qkv else {}
            captured[name].append(AttentionRecord(weights=keep(weights), **extra))

        return record

    previous = {name: layer.recorder for name, layer in layers.items()}
    try:
        for name, layer in layers.items():
            layer.recorder = recorder_for(name)
        yield captured
    finally:
        for name, layer in layers.items():
            layer.recorder = previous[name]


QKVEditor = Callable[..., tuple[Tensor, Tensor, Tensor]]  # (q=, k=, v=) -> (q, k, v), same shapes


@contextmanager
def edit_qkv(model: nn.Module, editor_by_name: Mapping[str, QKVEditor]) -> Iterator[None]:
    """Let `editor_by_name[name](q=q, k=k, v=v) -> (q, k, v)` rewrite the named layers' queries, keys and values.

    The editor runs inside `MultiHeadAttention.forward` right before the attention itself: q is
    (B, H, Tq, Dh) and k, v are (B, Hkv, Tk, Dh), after rotary positions (and after the KV cache
    appended this step's keys). It must return tensors of the same shapes. Layers not named run
    unchanged, and every layer gets its previous editor back when the context ends.

    Args:
        model: any module containing `MultiHeadAttention` layers.
        editor_by_name: qualified module name (as in `attention_layers(model)`) -> editor.
    """
    layers = attention_layers(model)
    unknown = sorted(set(editor_by_name) - set(layers))
    if unknown:
        raise ValueError(
            f"edit_qkv: editor_by_name names {unknown}, which are not attention layers of "
            f"{type(model).__name__}; use names from attention_layers(model): {sorted(layers) or 'none'}"
        )
    previous = {name: layers[name].qkv_editor for name in editor_by_name}
    try:
        for name, editor in editor_by_name.items():
            layers[name].qkv_editor = editor
        yield
    finally:
        for name, editor in previous.items():
            layers[name].qkv_editor = editor
