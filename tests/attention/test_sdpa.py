"""`scaled_dot_product_attention`: every backend the machine serves matches a float64 reference."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from attn_helpers import padding_mask, qkv, rel_err

from attnlab.attention import BACKENDS, causal_mask, reference_attention, scaled_dot_product_attention
from attnlab.attention.sdpa import _LOGGED


def _served(backend: str, device: str = "cpu") -> bool:
    q, k, v = qkv(batch=1, heads=1, q_len=4, head_dim=8)
    try:
        scaled_dot_product_attention(q.to(device), k.to(device), v.to(device), backend=backend)
    except ValueError:
        return False
    return True


CPU_BACKENDS = [b for b in BACKENDS if _served(b)]


def _dense_reference(q, k, v, mask=None):
    """Float64 softmax(q k^T / sqrt(d)) v with a bool mask; the ground truth."""
    q, k, v = q.double(), k.double(), v.double()
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v


CASES = {
    "plain": {"q_len": 33},
    "padding": {"q_len": 33, "lengths": [33, 20]},
    "causal": {"q_len": 33, "causal": True},
    "causal_lower_right": {"q_len": 7, "k_len": 29, "causal": True},
    "causal_padding": {"q_len": 33, "causal": True, "lengths": [33, 17]},
    "gqa": {"q_len": 21, "kv_heads": 2},
    "mqa_causal": {"q_len": 21, "kv_heads": 1, "causal": True},
}


def test_cpu_serves_auto_math_reference():
    assert {"auto", "math", "reference"} <= set(CPU_BACKENDS)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_backend_matches_float64_reference(backend, case):
    spec = CASES[case]
    q, k, v = qkv(q_len=spec["q_len"], k_len=spec.get("k_len"), kv_heads=spec.get("kv_heads"))
    k_len = k.shape[2]
    mask = None
    if "lengths" in spec:
        mask = padding_mask(2, k_len, spec["lengths"])[:, None, None, :]  # (B, 1, 1, Tk)
    truth_mask = mask
    if spec.get("causal"):
        causal = causal_mask(q.shape[2], k_len)
        truth_mask = causal if mask is None else mask & causal
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=spec.get("causal", False), backend=backend)
    assert out.dtype == torch.float32
    assert rel_err(out, _dense_reference(q, k, v, truth_mask)) < 1e-5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float_bias_matches_reference(backend):
    q, k, v = qkv(q_len=17)
    bias = torch.randn(1, 4, 17, 17)
    out = scaled_dot_product_attention(q, k, v, attn_mask=bias, backend=backend)
    expected, _ = reference_attention(q.double(), k.double(), v.double(), attn_mask=bias.double())
    assert rel_err(out, expected) < 1e-5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fully_masked_rows_are_zero_with_finite_gradients(backend):
    q, k, v = (t.requires_grad_() for t in qkv(q_len=9))
    mask = torch.ones(2, 1, 9, 9, dtype=torch.bool)
    mask[0, :, 3] = False  # query 3 of batch 0 sees nothing
    mask[1] = False  # batch 1 sees nothing at all
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=backend)
    assert torch.isfinite(out).all()
    assert out[0, :, 3].abs().max() == 0 and out[1].abs().max() == 0
    out.sum().backward()
    for grad in (q.grad, k.grad, v.grad):
        assert torch.isfinite(grad).all()
    assert q.grad[1].abs().max() == 0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fully_masked_rows_with_float_bias(backend):
    q, k, v = qkv(q_len=5)
    bias = torch.zeros(1, 1, 5, 5).masked_fill(torch.eye(5, dtype=torch.bool)[None, None].logical_not(), -1e4)
    bias[..., 2, :] = float("-inf")
    out = scaled_dot_product_attention(q, k, v, attn_mask=bias, backend=backend)
    assert torch.isfinite(out).all() and out[:, :, 2].abs().max() == 0


def test_return_weights_are_a_distribution():
    q, k, v = qkv(q_len=6, k_len=11)
    out, weights = scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    assert weights.shape == (2, 4, 6, 11)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 6))
    assert (weights[..., 0, 6:] == 0).all()  # lower-right causal: first query sees keys 0..5
    assert torch.allclose(out, weights @ v, atol=1e-6)


@pytest.mark.parametrize("backend", [b for b in ("efficient", "cudnn") if b not in CPU_BACKENDS])
def test_unservable_backend_raises_or_falls_back(backend, caplog):
    q, k, v = qkv(q_len=8)
    with pytest.raises(ValueError, match=f"backend '{backend}' cannot serve"):
        scaled_dot_product_attention(q, k, v, backend=backend)
    with caplog.at_level(logging.WARNING):
        out = scaled_dot_product_attention(q, k, v, backend=backend, strict=False)
    assert "Falling back" in caplog.text
    assert rel_err(out, _dense_reference(q, k, v)) < 1e-5


def test_unknown_backend_and_bad_heads_raise():
    q, k, v = qkv(q_len=4)
    with pytest.raises(ValueError, match="unknown"):
        scaled_dot_product_attention(q, k, v, backend="fast")
    with pytest.raises(ValueError, match="multiple"):
        scaled_dot_product_attention(q, k[:, :3], v[:, :3])


def test_kernel_that_ran_is_logged_once(caplog):
    _LOGGED.clear()
    q, k, v = qkv(q_len=4)
    with caplog.at_level(logging.INFO, logger="attnlab.attention.sdpa"):
        for _ in range(3):
            scaled_dot_product_attention(q, k, v, backend="math")
    assert caplog.text.count("backend=math ran kernel 'math'") == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["auto", "flash", "efficient", "cudnn", "math"])
@pytest.mark.parametrize("case", ["plain", "causal", "padding", "gqa"])
def test_gpu_bf16_within_twice_float32_error(backend, case):
    """FlashAttention's criterion: bf16 error <= 2x the float32 reference's own error (+ a floor)."""
    spec = CASES[case]
    q, k, v = qkv(q_len=257, head_dim=64, kv_heads=spec.get("kv_heads"))
    mask = None
    if "lengths" in spec:
        mask = padding_mask(2, 257, [257, 100])[:, None, None, :].cuda()
    causal = spec.get("causal", False)
    truth_mask = causal_mask(257, 257).cuda() if causal else mask
    truth = _dense_reference(q.cuda(), k.cuda(), v.cuda(), truth_mask)
    ref32, _ = reference_attention(q.cuda(), k.cuda(), v.cuda(), attn_mask=mask, is_causal=causal)
    bf = [t.cuda().bfloat16() for t in (q, k, v)]
    ref_bf, _ = reference_attention(*bf, attn_mask=mask, is_causal=causal)
    try:
        out = scaled_dot_product_attention(*bf, attn_mask=mask, is_causal=causal, backend=backend)
    except ValueError as err:
        pytest.skip(str(err))
    tolerance = 2 * max((ref_bf.double() - truth).abs().max().item(), (ref32.double() - truth).abs().max().item())
    assert (out.double() - truth).abs().max().item() <= tolerance + 1e-3


@pytest.mark.parametrize("backend", [b for b in ("auto", "flash") if b in CPU_BACKENDS])
@pytest.mark.parametrize("case", ["padding", "causal", "gqa"])
def test_cpu_bf16_training_runs_the_kernel_in_float32(backend, case):
    """bf16 inputs that need gradients (bf16-mixed training on CPU): the fused kernel runs on float32
    copies, so output and gradients are the float32 kernel's, cast to bf16 (also under autocast)."""
    spec = CASES[case]
    q, k, v = qkv(q_len=spec["q_len"], kv_heads=spec.get("kv_heads"))
    mask = padding_mask(2, q.shape[2], spec["lengths"])[:, None, None, :] if "lengths" in spec else None
    causal = spec.get("causal", False)
    upcast = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = scaled_dot_product_attention(*upcast, attn_mask=mask, is_causal=causal, backend=backend)
    expected.sum().backward()
    bf = [t.bfloat16().float().requires_grad_() for t in (q, k, v)]  # float32 leaves holding bf16 values
    upcast_bf = [t.detach().requires_grad_() for t in bf]
    reference = scaled_dot_product_attention(*upcast_bf, attn_mask=mask, is_causal=causal, backend=backend)
    reference.bfloat16().float().sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = scaled_dot_product_attention(*(t.bfloat16() for t in bf), attn_mask=mask, is_causal=causal, backend=backend)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference.bfloat16())  # float32 kernel, then one rounding to bf16
    out.float().sum().backward()
    for grad, ref_grad in zip((t.grad for t in bf), (t.grad for t in upcast_bf)):
        assert rel_err(grad, ref_grad) < 1e-2  # only the bf16 rounding of the incoming gradient differs
    assert rel_err(out.float(), expected.detach()) < 2e-2  # bf16 rounding of inputs and output
