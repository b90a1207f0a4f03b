"""One entry point for scaled dot-product attention with an explicit backend choice.

Shape legend: B batch, H query heads, Hkv key/value heads (H % Hkv == 0), Tq queries,
Tk keys, D head dim. Boolean masks are True where attention is allowed.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)

Backend = Literal["auto", "flash", "efficient", "cudnn", "math", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "flash", "efficient", "cudnn", "math", "reference")

_SDPA_BACKENDS: dict[str, SDPBackend] = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
# torch._fused_sdp_choice returns the SDPBackend enum value of the kernel `auto` would pick.
_BACKEND_NAMES = {int(b.value): name for name, b in _SDPA_BACKENDS.items()}
_LOGGED: set[tuple[str, str]] = set()
_AUTO_SEEN: set[tuple] = set()


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> Tensor:
    """Lower-right aligned causal mask (Tq, Tk): query i sees keys j <= i + (Tk - Tq).

    With Tq == Tk this is the usual lower-triangular mask; with Tq < Tk (decoding with a KV
    cache) the last query sees every key.
    """
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device).unsqueeze(1)  # (Tq, 1)
    cols = torch.arange(k_len, device=device).unsqueeze(0)  # (1, Tk)
    return cols <= rows + offset


def _merge_causal(attn_mask: Tensor | None, q_len: int, k_len: int, device: torch.device) -> Tensor:
    causal = causal_mask(q_len, k_len, device)
    if attn_mask is None:
        return causal
    if attn_mask.dtype == torch.bool:
        return attn_mask & causal
    return attn_mask.masked_fill(~causal, float("-inf"))


def _rows_with_keys(attn_mask: Tensor) -> Tensor:
    """(.., Tq, 1) bool: which query rows of a bool mask or float bias may attend to some key."""
    allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask > float("-inf")
    return allowed.any(dim=-1, keepdim=True)


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"attention backend '{backend}' is unknown; choose one of {', '.join(BACKENDS)}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, T, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[1] != v.shape[1] or q.shape[1] % k.shape[1] != 0:
        raise ValueError(
            f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]}, {v.shape[1]})"
        )


def softmax_attention(
    scores: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Masked softmax over precomputed scores (B, H, Tq, Tk), then weights @ v (B, H, Tk, Dv).

    Returns (out (B, H, Tq, Dv), weights (B, H, Tq, Tk)); fully masked rows give zeros and zero gradients.
    """
    q_len, k_len = scores.shape[-2], scores.shape[-1]
    if is_causal:
        attn_mask = _merge_causal(attn_mask, q_len, k_len, scores.device)
    row_allowed = None
    if attn_mask is not None:
        # a fully masked row would softmax to NaN (and NaN gradients): unmask it, zero it afterwards
        row_allowed = _rows_with_keys(attn_mask)  # (.., Tq, 1)
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~(attn_mask | ~row_allowed), float("-inf"))
        else:
            scores = scores + attn_mask.masked_fill(~row_allowed, 0.0)
    weights = torch.softmax(scores, dim=-1)
    if row_allowed is not None:
        weights = weights.masked_fill(~row_allowed, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Explicit matmul-softmax attention; returns (out (B, H, Tq, D), weights (B, H, Tq, Tk))."""
    num_heads, num_kv_heads = q.shape[1], k.shape[1]
    if num_kv_heads != num_heads:  # GQA / MQA: every key/value head serves H / Hkv query heads
        k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)
        v = v.repeat_interleave(num_heads // num_kv_heads, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    return softmax_attention(scores, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p)


def _kernel_name(q: Tensor, k: Tensor, v: Tensor, attn_mask, dropout_p, is_causal, scale, gqa) -> str:
    """Name of the fused kernel that `auto` dispatches to (best effort, private torch API)."""
    try:
        choice = torch._fused_sdp_choice(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=gqa)
    except (RuntimeError, TypeError, AttributeError):
        return "unknown"
    return _BACKEND_NAMES.get(int(choice), f"backend-{int(choice)}")


def _log_once(requested: str, ran: str, device: torch.device) -> None:
    key = (f"{requested}->{ran}", device.type)
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("attention: backend=%s ran kernel '%s' on %s", requested, ran, device.type)


def _auto_signature(q: Tensor, mask: Tensor | None, dropout_p: float, is_causal: bool, gqa: bool) -> tuple:
    """What decides the kernel `auto` picks; the choice is looked up once per signature."""
    mask_kind = None if mask is None else str(mask.dtype)
    return (q.device.type, q.dtype, q.requires_grad, mask_kind, dropout_p > 0, is_causal, gqa)


def _upcast_for_cpu_backward(q: Tensor, k: Tensor, v: Tensor, backend: str) -> bool:
    """Whether to run a fused CPU kernel in float32 for bf16/fp16 inputs that need gradients.

    On CPU, SDPA's fused kernel runs forward + backward up to 6x slower on bf16 inputs than on float32
    ones at 48-350 tokens, and as fast (0.98-1.04x) at 1,024 (``python scripts/bench_cpu_attention_precision.py``),
    so under ``bf16-mixed`` training it runs on float32 copies and the output is cast back: the same
    attention, computed more precisely. Inference (no gradients) keeps the bf16 kernel, which is faster.
    """
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and backend in ("auto", "flash")
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    )


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: Backend = "auto",
    strict: bool = True,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention over (B, H, T, D) tensors through the chosen kernel.

    Args:
        attn_mask: bool (True = may attend) or float additive bias, broadcastable to (B, H, Tq, Tk).
        is_causal: lower-right aligned causal masking (also for Tq != Tk).
        backend: ``auto`` lets torch pick; ``flash``/``efficient``/``cudnn``/``math`` pin one fused
            kernel; ``reference`` is the explicit matmul-softmax path.
        strict: when the pinned kernel cannot serve the inputs, raise (True) or warn and use ``auto``.
        return_weights: also return the (B, H, Tq, Tk) weights; always runs the reference path.

    A query row with no allowed key returns zeros on every backend. On CPU, bf16/fp16 inputs that need
    gradients run the fused kernel in float32 (its bf16 backward is slower; see `_upcast_for_cpu_backward`).
    """
    _check_inputs(q, k, v, backend)
    if return_weights or backend == "reference":
        _log_once(backend, "reference", q.device)
        out, weights = reference_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p, scale=scale
        )
        return (out, weights) if return_weights else out

    q_len, k_len = q.shape[-2], k.shape[-2]
    if is_causal and (attn_mask is not None or q_len != k_len):
        # torch's is_causal is upper-left aligned and exclusive with attn_mask: build the mask.
        attn_mask, is_causal = _merge_causal(attn_mask, q_len, k_len, q.device), False
    gqa = k.shape[1] != q.shape[1]
    row_allowed, kernel_mask = None, attn_mask
    if attn_mask is not None:
        # rows with no allowed key: let them see every key, zero them afterwards (no NaN on any kernel)
        row_allowed = _rows_with_keys(attn_mask)  # (.., Tq, 1)
        # every row has a key: skip the fix-up. Checking is free on CPU; on CUDA it would wait for the
        # device, and under torch.compile the data-dependent branch would break the graph.
        if q.device.type == "cpu" and not torch.compiler.is_compiling() and bool(row_allowed.all()):
            row_allowed = None
        elif attn_mask.dtype == torch.bool:
            kernel_mask = attn_mask | ~row_allowed
        else:
            kernel_mask = attn_mask.masked_fill(~row_allowed, 0.0)

    def run() -> Tensor:
        if not _upcast_for_cpu_backward(q, k, v, backend):
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=kernel_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=gqa
            )
        mask = kernel_mask.float() if kernel_mask is not None and kernel_mask.is_floating_point() else kernel_mask
        with torch.autocast("cpu", enabled=False):  # CPU autocast would cast the float32 inputs back
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal,
                scale=scale, enable_gqa=gqa,
            )
        return out.to(q.dtype)

    if backend == "auto":
        signature = _auto_signature(q, kernel_mask, dropout_p, is_causal, gqa)
        if signature not in _AUTO_SEEN:  # the dispatcher query costs a few microseconds: once per signature
            _AUTO_SEEN.add(signature)
            _log_once(backend, _kernel_name(q, k, v, kernel_mask, dropout_p, is_causal, scale, gqa), q.device)
        out = run()
    else:
        try:
            with sdpa_kernel(_SDPA_BACKENDS[backend]):
                out = run()
            _log_once(backend, backend, q.device)
        except RuntimeError as err:
            message = (
                f"attention backend '{backend}' cannot serve these inputs on {q.device.type} "
                f"(dtype={q.dtype}, q={tuple(q.shape)}, k={tuple(k.shape)}, mask={'yes' if kernel_mask is not None else 'no'}, "
                f"dropout={dropout_p}): {str(err).splitlines()[0]}. "
                "Use backend=auto, or strict=false to fall back automatically."
            )
            if strict:
                raise ValueError(message) from err
            log.warning("%s Falling back to auto.", message)
            out = run()
    if row_allowed is not None:
        out = out.masked_fill(~row_allowed, 0.0)
    return out
