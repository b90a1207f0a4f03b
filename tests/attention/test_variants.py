"""Every attention variant: one constructor/forward contract, float64 parity, causality, gradients."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from attn_helpers import padding_mask, qkv, rel_err

from attnlab.attention import (
    AdditiveAttention,
    AdditiveScore,
    KVCache,
    LinearAttention,
    LowRankAttention,
    LuongAttention,
    MultiHeadAttention,
    MultiplicativeScore,
    SlidingWindowAttention,
    build_positional_encoding,
    linear_attention,
    reference_attention,
    sliding_window_attention,
    sliding_window_mask,
)
from attnlab.attention.linear import elu_feature_map, linear_attention_weights

VARIANTS = {
    "sdpa": MultiHeadAttention,
    "reference": partial(MultiHeadAttention, backend="reference"),
    "additive": AdditiveAttention,
    "luong_dot": partial(LuongAttention, score="dot"),
    "luong_general": LuongAttention,
    "sliding_window": partial(SlidingWindowAttention, window=2, num_global=1, block_size=4),
    "linear": partial(LinearAttention, chunk_size=4),
    "low_rank": partial(LowRankAttention, rank=5, max_len=16),
}
CAUSAL = [name for name in VARIANTS if name != "low_rank"]


def _copy_projections(src: MultiHeadAttention, dst: MultiHeadAttention) -> None:
    with torch.no_grad():
        dst.qkv_proj.load_state_dict(src.qkv_proj.state_dict())
        dst.out_proj.load_state_dict(src.out_proj.state_dict())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract_factory_and_forward(name):
    attn = VARIANTS[name](dim=32, num_heads=4)
    x = torch.randn(2, 11, 32)
    real = padding_mask(2, 11, [11, 7])
    out = attn(x, key_padding_mask=real, positions=build_positional_encoding("rope", dim=32, num_heads=4, max_len=16))
    assert out.shape == (2, 11, 32) and torch.isfinite(out).all()
    out, weights = attn(x, key_padding_mask=real, need_weights=True)
    assert weights.shape[:3] == (2, 4, 11)
    # padded tokens never influence real ones
    changed = x.clone()
    changed[1, 7:] = torch.randn(4, 32)
    assert rel_err(attn(changed, key_padding_mask=real)[1, :7], attn(x, key_padding_mask=real)[1, :7]) < 1e-6


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradcheck_float64(name, causal):
    attn = VARIANTS[name](dim=8, num_heads=2).double()
    if causal and name not in CAUSAL:  # no causal mode: it must refuse, not silently attend to the future
        with pytest.raises(ValueError):
            attn(torch.randn(1, 6, 8, dtype=torch.float64), is_causal=True)
        return
    x = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    real = padding_mask(1, 6, [5])
    assert torch.autograd.gradcheck(lambda t: attn(t, key_padding_mask=real, is_causal=causal), (x,))
    params = [p for p in attn.parameters() if p.requires_grad]
    attn(x, key_padding_mask=real).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


@pytest.mark.parametrize("name", CAUSAL)
def test_causality_future_tokens_never_change_the_past(name):
    attn = VARIANTS[name](dim=16, num_heads=2).double().eval()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    changed = x.clone()
    changed[:, 7:] = torch.randn(2, 5, 16, dtype=torch.float64)
    past, past_changed = attn(x, is_causal=True)[:, :7], attn(changed, is_causal=True)[:, :7]
    assert (past - past_changed).abs().max() < 1e-12


def test_low_rank_rejects_causal_and_long_inputs():
    attn = LowRankAttention(dim=16, num_heads=2, rank=4, max_len=8)
    with pytest.raises(ValueError, match="causal"):
        attn(torch.randn(1, 6, 16), is_causal=True)
    with pytest.raises(ValueError, match="attention.max_len"):
        attn(torch.randn(1, 9, 16))
    with pytest.raises(ValueError, match="KV cache"):
        attn(torch.randn(1, 6, 16), cache=KVCache())


@pytest.mark.parametrize("window", [11, 40])
def test_sliding_window_covering_the_sequence_equals_full_attention(window):
    full = MultiHeadAttention(dim=32, num_heads=4, backend="reference").double().eval()
    local = SlidingWindowAttention(dim=32, num_heads=4, window=window, block_size=4).eval()
    _copy_projections(full.float(), local)
    full.double()
    x = torch.randn(2, 12, 32)
    real = padding_mask(2, 12, [12, 9])
    assert rel_err(local(x, key_padding_mask=real), full(x.double(), key_padding_mask=real)) < 1e-5


SLIDING_CASES = {
    "plain": {"window": 3},
    "causal": {"window": 5, "is_causal": True},
    "global": {"window": 2, "num_global": 3},
    "global_causal": {"window": 4, "num_global": 2, "is_causal": True},
    "padding_global": {"window": 3, "num_global": 2, "lengths": [37, 21]},
    "gqa_alibi": {"window": 6, "kv_heads": 2, "pos": "alibi", "num_global": 1},
    "relative_causal": {"window": 4, "pos": "relative", "is_causal": True, "lengths": [30, 37]},
    "one_block": {"window": 3, "block_size": 64},
    "one_block_causal_global": {"window": 3, "num_global": 2, "is_causal": True, "block_size": 64, "lengths": [37, 20]},
    "full_window_causal_alibi": {"window": 36, "is_causal": True, "pos": "alibi", "lengths": [37, 25]},
    # no padding, no globals: inner blocks share one broadcast mask, edge blocks keep their own
    "inner_alibi": {"window": 3, "pos": "alibi"},
    "inner_gqa_relative": {"window": 5, "kv_heads": 2, "pos": "relative"},
    "inner_wide_window": {"window": 12},
    "inner_causal_exact_blocks": {"window": 9, "is_causal": True, "q_len": 40},
    "inner_exact_blocks": {"window": 8, "q_len": 40},
    "no_inner_block": {"window": 20},
}


@pytest.mark.parametrize("one_block_per_call", [False, True])
@pytest.mark.parametrize("case", list(SLIDING_CASES))
def test_chunked_sliding_window_matches_dense_float64(case, one_block_per_call, monkeypatch):
    if one_block_per_call:
        monkeypatch.setattr("attnlab.attention.sliding_window._CALL_BYTES", 1)
    spec = SLIDING_CASES[case]
    length = spec.get("q_len", 37)
    q, k, v = qkv(q_len=length, kv_heads=spec.get("kv_heads"))
    real = padding_mask(2, length, spec["lengths"]) if "lengths" in spec else None
    positions = None
    if "pos" in spec:
        positions = build_positional_encoding(spec["pos"], dim=64, num_heads=4, max_len=64)
        if spec["pos"] == "relative":
            torch.nn.init.normal_(positions.embedding.weight)
    window, num_global, causal = spec["window"], spec.get("num_global", 0), spec.get("is_causal", False)
    out = sliding_window_attention(
        q, k, v, window=window, num_global=num_global, is_causal=causal, key_padding_mask=real,
        positions=positions, block_size=spec.get("block_size", 8),
    )
    mask = sliding_window_mask(length, window=window, num_global=num_global, is_causal=causal)[None, None]
    if real is not None:
        mask = mask & real[:, None, None, :]
    if positions is not None:
        mask = torch.where(mask, positions.bias(length, length).double(), float("-inf"))
    expected, _ = reference_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    assert rel_err(out, expected) < 1e-5


def test_sliding_window_inner_blocks_share_one_mask_and_gradcheck(monkeypatch):
    import attnlab.attention.sliding_window as sliding

    calls, kernel = [], sliding.scaled_dot_product_attention

    def counting(q, k, v, **kwargs):
        calls.append((q.shape[0], tuple(kwargs["attn_mask"].shape)))
        return kernel(q, k, v, **kwargs)

    monkeypatch.setattr(sliding, "scaled_dot_product_attention", counting)
    q, k, v = (t.double().requires_grad_() for t in qkv(batch=1, heads=2, q_len=13, head_dim=4))
    sliding_window_attention(q, k, v, window=2, block_size=4)
    # 4 blocks: block 0 (keys before the start), one inner block, blocks 2-3 (keys past the end)
    assert calls == [(1, (1, 1, 4, 8)), (1, (4, 8)), (2, (2, 1, 4, 8))]
    assert torch.autograd.gradcheck(lambda q, k, v: sliding_window_attention(q, k, v, window=2, block_size=4), (q, k, v))


def test_sliding_window_memory_is_linear_in_length():
    """The chunked path never builds an (n, n) tensor: peak score size is n * (c + 2w)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    Largest.largest = max(Largest.largest, t.numel())
            return out

    q, k, v = qkv(batch=1, heads=1, q_len=1024, head_dim=8)
    with Largest():
        sliding_window_attention(q, k, v, window=16, num_global=2)
    assert Largest.largest < 1024 * 1024 // 8


@pytest.mark.parametrize("group", [1024, 8])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 13, 16])
def test_linear_attention_matches_dense_float64(causal, length, group, monkeypatch):
    monkeypatch.setattr("attnlab.attention.linear._GROUP_TOKENS", group)  # 8: several loop steps
    q, k, v = qkv(q_len=length, kv_heads=2)
    real = padding_mask(2, length, [length, max(1, length - 5)])
    out = linear_attention(q, k, v, is_causal=causal, key_padding_mask=real, chunk_size=4)
    weights = linear_attention_weights(q.double(), k.double(), is_causal=causal, key_padding_mask=real)
    expected = weights @ v.double().repeat_interleave(2, dim=1)
    assert rel_err(out, expected) < 1e-5
    # the dense weights are the formula phi(q) phi(k)^T, normalised
    phi_q, phi_k = torch.nn.functional.elu(q.double()) + 1, torch.nn.functional.elu(k.double()) + 1
    scores = phi_q @ phi_k.repeat_interleave(2, dim=1).transpose(-2, -1) * real[:, None, None, :]
    if causal:
        scores = scores.tril()
    assert rel_err(weights, scores / scores.sum(-1, keepdim=True)) < 1e-6  # eps=1e-6 in the denominator


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_gradcheck_across_groups(causal, monkeypatch):
    monkeypatch.setattr("attnlab.attention.linear._GROUP_TOKENS", 2)  # 4 groups of keys and queries
    q, k, v = (t.double().requires_grad_() for t in qkv(q_len=7, kv_heads=2, head_dim=4))
    real = padding_mask(2, 7, [7, 5])

    def attend(q, k, v):
        return linear_attention(q, k, v, is_causal=causal, key_padding_mask=real, chunk_size=2)

    assert torch.autograd.gradcheck(attend, (q, k, v))


def test_elu_feature_map_equals_elu_plus_one_with_its_gradient():
    x = torch.tensor([-100.0, -3.0, -1e-3, 0.0, 1e-3, 2.0, 100.0], dtype=torch.float64, requires_grad=True)
    phi = elu_feature_map(x)
    assert torch.allclose(phi, torch.nn.functional.elu(x.detach()) + 1, rtol=1e-15, atol=1e-15)
    # elu(x) + 1 = exp(x) for x <= 0, without elu's -1 + 1 cancellation (elu gives 0 at x = -100)
    assert torch.equal(phi[:4], x.detach()[:4].exp()) and (phi > 0).all()
    phi.sum().backward()
    slope = torch.where(x.detach() > 0, 1.0, x.detach().exp()).to(torch.float64)
    assert torch.equal(x.grad, slope)  # finite at +-100: no exp overflow
    assert torch.autograd.gradcheck(elu_feature_map, (torch.randn(16, dtype=torch.float64, requires_grad=True),))


def test_linear_attention_kv_cache_equals_full():
    attn = LinearAttention(dim=16, num_heads=2).eval()
    x = torch.randn(2, 9, 16)
    full = attn(x, is_causal=True)
    cache = KVCache()
    steps = [attn(x[:, :4], is_causal=True, cache=cache)]
    steps += [attn(x[:, t : t + 1], is_causal=True, cache=cache) for t in range(4, 9)]
    assert rel_err(torch.cat(steps, dim=1), full) < 1e-5


def test_low_rank_with_identity_projection_equals_full_attention():
    full = MultiHeadAttention(dim=32, num_heads=4, backend="reference")
    low = LowRankAttention(dim=32, num_heads=4, rank=10, max_len=10).eval()
    _copy_projections(full, low)
    with torch.no_grad():
        low.key_proj_seq.copy_(torch.eye(10))
        low.value_proj_seq.copy_(torch.eye(10))
    x = torch.randn(2, 10, 32)
    assert rel_err(low(x), full.double()(x.double())) < 1e-5


def test_luong_dot_and_general_match_explicit_scores():
    dot = LuongAttention(dim=16, num_heads=2, score="dot").double()
    general = LuongAttention(dim=16, num_heads=2, score="general").double()
    _copy_projections(dot, general)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    assert rel_err(general(x), dot(x)) < 1e-12  # W_h starts as the identity
    with torch.no_grad():
        general.bilinear.normal_()
    q, k, v = general.project(x, None)
    scores = torch.einsum("bhqd,hde,bhke->bhqk", q, general.bilinear, k)  # q W k, unscaled
    out = torch.softmax(scores, -1) @ v
    expected = general.out_proj(out.transpose(1, 2).reshape(2, 7, 16))
    assert rel_err(general(x), expected) < 1e-10
    general32 = LuongAttention(dim=16, num_heads=2)
    general32.load_state_dict({k: t.float() for k, t in general.state_dict().items()})
    assert rel_err(general32(x.float()), expected) < 1e-5
    with pytest.raises(ValueError, match="attention.score"):
        LuongAttention(dim=16, num_heads=2, score="concat")


def test_additive_matches_explicit_bahdanau_scores():
    attn = AdditiveAttention(dim=8, num_heads=2).double()
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    q, k, v = attn.project(x, None)  # (1, 2, 4, 4)
    scores = torch.empty(1, 2, 4, 4, dtype=torch.float64)
    for h in range(2):
        for i in range(4):
            for j in range(4):
                scores[0, h, i, j] = attn.score_weight[h] @ torch.tanh(q[0, h, i] + k[0, h, j])
    out = torch.softmax(scores, -1) @ v
    expected = attn.out_proj(out.transpose(1, 2).reshape(1, 4, 8))
    assert rel_err(attn(x), expected) < 1e-12
    attn32 = AdditiveAttention(dim=8, num_heads=2)
    attn32.load_state_dict({k: t.float() for k, t in attn.state_dict().items()})
    assert rel_err(attn32(x.float()), expected) < 1e-5


@pytest.mark.parametrize("scorer", ["additive", "dot", "general"])
def test_single_query_scorers(scorer):
    module = (
        AdditiveScore(query_dim=12, key_dim=12, hidden_dim=8)
        if scorer == "additive"
        else MultiplicativeScore(query_dim=12, key_dim=12, score=scorer)
    ).double()
    query, keys = torch.randn(3, 12, dtype=torch.float64), torch.randn(3, 5, 12, dtype=torch.float64)
    real = padding_mask(3, 5, [5, 2, 0])
    context, weights = module(query, keys, real)
    assert weights.shape == (3, 5) and context.shape == (3, 12)
    assert torch.allclose(weights[:2].sum(-1), torch.ones(2, dtype=torch.float64))
    assert (weights[1, 2:] == 0).all() and (context[2] == 0).all()  # fully masked -> zeros
    assert torch.allclose(context, torch.einsum("bt,btd->bd", weights, keys))
    assert torch.autograd.gradcheck(lambda q: module(q, keys, real)[0], (query.requires_grad_(),))
    if scorer == "dot":
        expected = torch.softmax(keys[0] @ query[0], -1)
        assert torch.allclose(weights[0], expected)
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        MultiplicativeScore(query_dim=4, key_dim=6, score="dot")


@pytest.mark.parametrize("name", ["linear", "low_rank"])
@pytest.mark.parametrize("pos", ["alibi", "relative"])
def test_variants_without_score_bias_reject_bias_encodings(name, pos):
    attn = VARIANTS[name](dim=16, num_heads=2)
    positions = build_positional_encoding(pos, dim=16, num_heads=2, max_len=16)
    with pytest.raises(ValueError, match="backbone.pos_encoding"):
        attn(torch.randn(1, 5, 16), positions=positions)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sliding_window_applies_an_explicit_mask_inside_its_band(kind):
    torch.manual_seed(0)
    local = SlidingWindowAttention(dim=16, num_heads=2, window=2, num_global=1).double()
    full = MultiHeadAttention(dim=16, num_heads=2, backend="reference").double()
    full.load_state_dict(local.state_dict())
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    real = padding_mask(2, 9, [9, 7])
    band = sliding_window_mask(9, window=2, num_global=1, device=x.device)
    if kind == "bool":
        extra = torch.rand(2, 2, 9, 9) > 0.3
        extra[..., 0] = True  # every query keeps the global key: no empty row
        expected = full(x, key_padding_mask=real, attn_mask=band & extra)
    else:
        extra = torch.randn(2, 2, 9, 9, dtype=torch.float64)
        expected = full(x, key_padding_mask=real, attn_mask=extra.masked_fill(~band, float("-inf")))
    torch.testing.assert_close(local(x, key_padding_mask=real, attn_mask=extra), expected)
    out, weights = local(x, key_padding_mask=real, attn_mask=extra, need_weights=True)
    torch.testing.assert_close(out, expected)
    assert torch.all(weights[..., ~band] == 0)  # nothing outside the band


def test_sliding_window_rejects_cache_and_bad_config():
    attn = SlidingWindowAttention(dim=16, num_heads=2, window=2)
    with pytest.raises(ValueError, match="KV cache"):
        attn(torch.randn(1, 5, 16), cache=KVCache(), is_causal=True)
    with pytest.raises(ValueError, match="cross=False"):
        attn(torch.randn(1, 5, 16), context=torch.randn(1, 4, 16))
    with pytest.raises(ValueError, match="attention.window"):
        SlidingWindowAttention(dim=16, num_heads=2, window=-1)
    with pytest.raises(ValueError, match="attention.impl"):
        SlidingWindowAttention(dim=16, num_heads=2, impl="triton")


@pytest.mark.slow
def test_flex_sliding_window_matches_chunked():
    """FlexAttention path (compiled; minutes on a small CPU, so marked slow)."""
    q, k, v = qkv(batch=1, heads=2, q_len=256, head_dim=16)
    real = padding_mask(1, 256, [200])
    from attnlab.attention.sliding_window import flex_sliding_window_attention

    out = flex_sliding_window_attention(q, k, v, window=32, num_global=2, key_padding_mask=real)
    expected = sliding_window_attention(q, k, v, window=32, num_global=2, key_padding_mask=real)
    assert rel_err(out, expected) < 1e-5


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_accumulates_bf16_inputs_in_float32(causal, monkeypatch):
    """Running sums over 8,192 keys in bf16 lose precision with every group and chunk added (measured
    before the fix: 4.3e-2 / 8.9e-3 relative error, 1.5e-2 / 8.0e-3 under autocast); in float32 the
    only error left is bf16's rounding of the inputs and of the output (1.6e-3)."""
    monkeypatch.setattr("attnlab.attention.linear._GROUP_TOKENS", 64)  # 128 running-sum updates
    q, k, v = (t.bfloat16() for t in qkv(batch=1, heads=2, q_len=8192, head_dim=16))
    expected = linear_attention(q.double(), k.double(), v.double(), is_causal=causal, chunk_size=4)
    out = linear_attention(q, k, v, is_causal=causal, chunk_size=4)  # same rounded inputs
    assert out.dtype == torch.bfloat16
    assert rel_err(out, expected) < 3e-3  # bf16 output rounding is 2^-9 = 2e-3 at most
    torch.manual_seed(0)
    attn = LinearAttention(dim=32, num_heads=2, chunk_size=4)
    x = torch.randn(1, 8192, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16-mixed: the projections run in bf16
        mixed = attn(x, is_causal=causal)
    assert rel_err(mixed, attn.double()(x.double(), is_causal=causal)) < 4e-3
