"""Positional encodings: RoPE depends only on offsets, ALiBi/T5 buckets are correct, builder errors."""

from __future__ import annotations

import pytest
import torch

from attnlab.attention import (
    POSITIONAL_ENCODINGS,
    ALiBi,
    AxialRotaryPositionalEncoding,
    MultiHeadAttention,
    RelativePositionBias,
    RotaryPositionalEncoding,
    build_positional_encoding,
)


def _scores(pe, q, k, q_start, k_start):
    q_rot, k_rot = pe.rotate(q, k, q_start=q_start, k_start=k_start)
    return q_rot @ k_rot.transpose(-2, -1)


def test_rope_scores_depend_only_on_relative_offsets():
    pe = RotaryPositionalEncoding(head_dim=16)
    q = torch.randn(1, 2, 1, 16, dtype=torch.float64).expand(1, 2, 6, 16)  # the same vector at every position
    k = torch.randn(1, 2, 1, 16, dtype=torch.float64).expand(1, 2, 6, 16)
    base = _scores(pe, q, k, 0, 0)  # (1, 2, 6, 6)
    shifted = _scores(pe, q, k, 37, 37)
    assert torch.allclose(base, shifted, atol=1e-10)
    for offset in range(-5, 6):  # constant along each diagonal
        diagonal = torch.diagonal(base, offset=offset, dim1=-2, dim2=-1)
        assert torch.allclose(diagonal, diagonal[..., :1].expand_as(diagonal), atol=1e-10)
    assert not torch.allclose(torch.diagonal(base, 1, -2, -1)[..., 0], torch.diagonal(base, 2, -2, -1)[..., 0])


def test_rope_preserves_norms_and_rejects_odd_head_dim():
    pe = RotaryPositionalEncoding(head_dim=8)
    q = torch.randn(2, 3, 10, 8)
    q_rot, _ = pe.rotate(q, q)
    assert torch.allclose(q_rot.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="even head dim"):
        build_positional_encoding("rope", dim=12, num_heads=4, max_len=16)


@pytest.mark.parametrize("axes,grid,prefix", [(2, (3, 4), 1), (3, (2, 3, 2), 0)])
def test_axial_rope_scores_depend_only_on_grid_offsets(axes, grid, prefix):
    pe = AxialRotaryPositionalEncoding(head_dim=24, axes=axes, grid=grid)
    tokens = prefix + torch.tensor(grid).prod().item()
    q = torch.randn(1, 1, 1, 24, dtype=torch.float64).expand(1, 1, tokens, 24)
    k = torch.randn(1, 1, 1, 24, dtype=torch.float64).expand(1, 1, tokens, 24)
    scores = _scores(pe, q, k, 0, 0)[0, 0]
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), -1).reshape(-1, axes)
    coords = torch.cat([torch.zeros(prefix, axes, dtype=torch.long), coords])
    seen: dict[tuple, float] = {}
    for i in range(tokens):
        for j in range(tokens):
            offset = tuple((coords[j] - coords[i]).tolist())
            value = seen.setdefault(offset, scores[i, j].item())
            assert abs(value - scores[i, j].item()) < 1e-9
    assert len({round(v, 6) for v in seen.values()}) > 1


def test_axial_rope_infers_square_grid_with_cls_token():
    pe = build_positional_encoding("rope2d", dim=32, num_heads=2, max_len=256)
    assert pe._grid(197) == ((14, 14), 1)
    assert pe._grid(64) == ((8, 8), 0)
    with pytest.raises(ValueError, match="do not form"):
        pe._grid(90)


def test_alibi_bias_is_minus_slope_times_distance():
    pe = ALiBi(num_heads=8)
    assert torch.allclose(pe.slopes, torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    bias = pe.bias(3, 5, q_start=2)  # queries at 2..4, keys at 0..4
    assert bias.shape == (8, 3, 5)
    assert bias[0, 0, 0].item() == -0.5 * 2 and bias[0, 0, 2].item() == 0 and bias[1, 2, 0].item() == -0.25 * 4
    assert ALiBi(num_heads=6).slopes.shape == (6,)


def test_t5_buckets_are_exact_near_and_logarithmic_far():
    pe = RelativePositionBias(num_heads=2, num_buckets=32, max_distance=128)
    offsets = torch.arange(-300, 301)
    buckets = pe.bucket(offsets)
    assert buckets.min() >= 0 and buckets.max() < 32
    assert torch.equal(pe.bucket(torch.arange(0, -8, -1)), torch.arange(8))  # exact for |offset| < 8
    assert (pe.bucket(torch.arange(1, 8)) >= 16).all()  # keys after the query use the other half
    before = pe.bucket(-torch.arange(0, 300))
    assert (before.diff() >= 0).all() and before[-1] == 15  # monotone, saturates at max_distance
    causal = RelativePositionBias(num_heads=2, bidirectional=False)
    assert (causal.bucket(torch.arange(1, 50)) == 0).all()


def test_relative_bias_depends_only_on_offsets_and_has_gradients():
    pe = RelativePositionBias(num_heads=3)
    torch.nn.init.normal_(pe.embedding.weight)
    full = pe.bias(10, 10)
    assert torch.allclose(pe.bias(4, 6, q_start=5, k_start=4), full[:, 5:9, 4:10])
    full.sum().backward()
    assert pe.embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", list(POSITIONAL_ENCODINGS))
def test_every_encoding_builds_by_name(kind):
    pe = build_positional_encoding(kind, dim=48, num_heads=4, max_len=64)
    x = torch.randn(2, 16, 48)
    assert pe.embed(x).shape == x.shape
    q = torch.randn(2, 4, 16, 12)
    assert all(t.shape == q.shape for t in pe.rotate(q, q))


def test_unknown_encoding_and_long_inputs_raise():
    with pytest.raises(ValueError, match="backbone.pos_encoding='rotary'"):
        build_positional_encoding("rotary", dim=32, num_heads=4, max_len=8)
    with pytest.raises(ValueError, match="backbone.max_len"):
        build_positional_encoding("learned", dim=32, num_heads=4, max_len=8).embed(torch.randn(1, 9, 32))


@pytest.mark.parametrize("kind", ["relative", "alibi", "rope", "rope2d", "learned"])
def test_gradcheck_attention_with_encoding(kind):
    pe = build_positional_encoding(kind, dim=8, num_heads=2, max_len=16).double()
    if kind == "relative":
        torch.nn.init.normal_(pe.embedding.weight)
    attn = MultiHeadAttention(dim=8, num_heads=2).double()
    x = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)  # 4 tokens = a 2 x 2 grid
    assert torch.autograd.gradcheck(lambda t: attn(pe.embed(t), positions=pe, is_causal=True), (x,))
