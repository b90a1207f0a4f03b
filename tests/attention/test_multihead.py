"""`MultiHeadAttention`: torch parity, causality, KV-cache decoding, GQA, cross-attention, gradients."""

from __future__ import annotations

import pytest
import torch
from attn_helpers import padding_mask, rel_err
from torch import nn

from attnlab.attention import KVCache, MultiHeadAttention, build_positional_encoding

DIM, HEADS = 32, 4


def _torch_twin(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    twin = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
    with torch.no_grad():
        if ours.cross:
            twin.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.kv_proj.weight]))
            twin.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.kv_proj.bias]))
        else:
            twin.in_proj_weight.copy_(ours.qkv_proj.weight)
            twin.in_proj_bias.copy_(ours.qkv_proj.bias)
        twin.out_proj.weight.copy_(ours.out_proj.weight)
        twin.out_proj.bias.copy_(ours.out_proj.bias)
    return twin.eval()


@pytest.mark.parametrize("backend", ["auto", "math", "reference"])
def test_self_attention_matches_torch(backend):
    ours = MultiHeadAttention(dim=DIM, num_heads=HEADS, backend=backend).eval()
    twin = _torch_twin(ours)
    x = torch.randn(2, 13, DIM)
    real = padding_mask(2, 13, [13, 8])
    out, weights = ours(x, key_padding_mask=real, need_weights=True)
    expected, expected_weights = twin(x, x, x, key_padding_mask=~real, need_weights=True, average_attn_weights=False)
    assert rel_err(ours(x, key_padding_mask=real), expected) < 1e-5
    assert rel_err(out, expected) < 1e-5
    assert rel_err(weights, expected_weights) < 1e-5


def test_causal_self_attention_matches_torch():
    ours = MultiHeadAttention(dim=DIM, num_heads=HEADS).eval()
    x = torch.randn(2, 11, DIM)
    future = torch.triu(torch.ones(11, 11, dtype=torch.bool), diagonal=1)  # torch: True = blocked
    expected, _ = _torch_twin(ours)(x, x, x, attn_mask=future)
    assert rel_err(ours(x, is_causal=True), expected) < 1e-5


def test_cross_attention_matches_torch():
    ours = MultiHeadAttention(dim=DIM, num_heads=HEADS, cross=True).eval()
    x, context = torch.randn(2, 5, DIM), torch.randn(2, 9, DIM)
    real = padding_mask(2, 9, [9, 4])
    expected, _ = _torch_twin(ours)(x, context, context, key_padding_mask=~real)
    assert rel_err(ours(x, context=context, key_padding_mask=real), expected) < 1e-5


def test_cross_attention_with_other_width():
    ours = MultiHeadAttention(dim=DIM, num_heads=HEADS, cross=True, kv_dim=20)
    assert ours(torch.randn(2, 5, DIM), context=torch.randn(2, 7, 20)).shape == (2, 5, DIM)
    with pytest.raises(ValueError, match="context"):
        ours(torch.randn(2, 5, DIM))


def test_gqa_equals_repeated_heads():
    gqa = MultiHeadAttention(dim=DIM, num_heads=HEADS, num_kv_heads=2).eval()
    x = torch.randn(2, 10, DIM)
    _q, _k, _v = gqa.project(x, None)  # (B, 4, T, 8), (B, 2, T, 8)
    full = MultiHeadAttention(dim=DIM, num_heads=HEADS).eval()
    with torch.no_grad():  # a full-head twin whose k/v heads are the GQA heads repeated
        wq, wk, wv = gqa.qkv_proj.weight.split([DIM, DIM // 2, DIM // 2])
        bq, bk, bv = gqa.qkv_proj.bias.split([DIM, DIM // 2, DIM // 2])

        def rep(t):
            return t.view(2, 8, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(DIM, *t.shape[1:])

        full.qkv_proj.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        full.qkv_proj.bias.copy_(torch.cat([bq, rep(bk), rep(bv)]))
        full.out_proj.load_state_dict(gqa.out_proj.state_dict())
    assert rel_err(gqa(x, is_causal=True), full(x, is_causal=True)) < 1e-5
    with pytest.raises(ValueError, match="num_kv_heads"):
        MultiHeadAttention(dim=DIM, num_heads=HEADS, num_kv_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(dim=30, num_heads=HEADS)


@pytest.mark.parametrize("pos", ["none", "rope", "alibi", "relative"])
@pytest.mark.parametrize("num_kv_heads", [4, 1])
def test_kv_cache_decoding_equals_full_recomputation(pos, num_kv_heads):
    attn = MultiHeadAttention(dim=DIM, num_heads=HEADS, num_kv_heads=num_kv_heads).eval()
    positions = build_positional_encoding(pos, dim=DIM, num_heads=HEADS, max_len=64)
    if pos == "relative":
        nn.init.normal_(positions.embedding.weight)
    x = torch.randn(2, 12, DIM)
    full = attn(x, is_causal=True, positions=positions)
    cache = KVCache()
    steps = [attn(x[:, :5], is_causal=True, positions=positions, cache=cache)]  # prompt, then one token a step
    steps += [attn(x[:, t : t + 1], is_causal=True, positions=positions, cache=cache) for t in range(5, 12)]
    assert cache.length == 12
    assert rel_err(torch.cat(steps, dim=1), full) < 1e-5


def test_cross_attention_cache_projects_context_once():
    attn = MultiHeadAttention(dim=DIM, num_heads=HEADS, cross=True).eval()
    x, context = torch.randn(2, 6, DIM), torch.randn(2, 9, DIM)
    full = attn(x, context=context)
    cache = KVCache()
    steps = [attn(x[:, t : t + 1], context=context, cache=cache) for t in range(6)]
    assert cache.length == 9
    assert rel_err(torch.cat(steps, dim=1), full) < 1e-5


def test_causality_future_tokens_never_change_the_past():
    attn = MultiHeadAttention(dim=DIM, num_heads=HEADS).eval()
    x = torch.randn(1, 16, DIM)
    changed = x.clone()
    changed[:, 10:] = torch.randn(1, 6, DIM)
    assert torch.equal(attn(x, is_causal=True)[:, :10], attn(changed, is_causal=True)[:, :10])


def test_gradcheck_float64():
    attn = MultiHeadAttention(dim=8, num_heads=2, num_kv_heads=1).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    real = padding_mask(1, 5, [4])
    assert torch.autograd.gradcheck(lambda t: attn(t, key_padding_mask=real, is_causal=True), (x,))


def test_bad_padding_mask_shape():
    attn = MultiHeadAttention(dim=DIM, num_heads=HEADS)
    with pytest.raises(ValueError, match="key_padding_mask"):
        attn(torch.randn(2, 5, DIM), key_padding_mask=torch.ones(2, 6, dtype=torch.bool))
