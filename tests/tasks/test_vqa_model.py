"""The VQA image adapter: the geometric relation layer (its distance bias against a float64
reference, what a signed slope reads, gradients) and the scene tokenizer's downsampling."""

from __future__ import annotations

import pytest
import torch
from tasks.vqa.model import ConvSceneTokenizer, GeometricRelationLayer, grid_coordinates


def _layer(dim: int = 8, heads: int = 2) -> GeometricRelationLayer:
    torch.manual_seed(0)
    return GeometricRelationLayer(dim=dim, num_heads=heads, mlp_ratio=2.0).double()


def test_grid_coordinates_are_row_major_token_centres():
    coords = grid_coordinates(9)
    assert coords.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1], [0, 2], [1, 2], [2, 2]]
    with pytest.raises(ValueError, match="square token grid"):
        grid_coordinates(10)


def test_distance_bias_matches_a_float64_reference():
    layer = _layer()
    with torch.no_grad():
        layer.slopes.copy_(torch.tensor([-1.5, 0.75], dtype=torch.float64))
        layer.offset.weight.normal_()  # content-dependent offsets, each bounded by half a token
    tokens = torch.randn(3, 16, 8, dtype=torch.float64)
    bias = layer.distance_bias(tokens)  # (3, 2, 16, 16)

    grid = torch.tensor([[x, y] for y in range(4) for x in range(4)], dtype=torch.float64)
    offsets = 0.5 * torch.tanh(tokens @ layer.offset.weight.T + layer.offset.bias)  # (3, 16, 2)
    assert 0.05 < offsets.abs().max() <= 0.5
    distance = (torch.cdist(grid + offsets, grid + offsets).square() + 1e-6).sqrt()  # the layer's eps
    expected = torch.stack([-1.5 * distance, 0.75 * distance], dim=1)
    torch.testing.assert_close(bias, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("slope", "corner_reads"), [(30.0, 24), (-30.0, 0)])
def test_a_positive_slope_reads_the_furthest_token_a_negative_one_the_nearest(slope, corner_reads):
    """With content scores switched off, a head's output at a corner is the value of the far corner
    (positive slope) or of the corner itself (negative slope)."""
    layer = _layer(dim=8, heads=1)
    attn = layer.attn
    with torch.no_grad():
        layer.slopes.fill_(slope)
        attn.qkv_proj.weight.zero_()
        attn.qkv_proj.bias.zero_()
        attn.qkv_proj.weight[16:].copy_(torch.eye(8))  # values = the normed tokens
        attn.out_proj.weight.copy_(torch.eye(8))
        attn.out_proj.bias.zero_()
    tokens = torch.randn(1, 25, 8, dtype=torch.float64)
    normed = layer.attn_norm(tokens)
    out = attn(normed, attn_mask=layer.distance_bias(normed))  # (1, 25, 8)
    torch.testing.assert_close(out[0, 0], normed[0, corner_reads], rtol=1e-6, atol=1e-6)


def test_relation_layer_gradcheck():
    layer = _layer(dim=4, heads=2)
    with torch.no_grad():
        layer.offset.weight.normal_()  # exercise the offset path too
    tokens = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (tokens,))


def test_relation_layer_keeps_images_apart():
    layer = _layer()
    tokens = torch.randn(2, 9, 8, dtype=torch.float64)
    out = layer(tokens)
    changed = tokens.clone()
    changed[1] = torch.randn(9, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(changed)[0], out[0])


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_scene_tokenizer_gives_a_5x5_grid_either_way(downsample):
    tokenizer = ConvSceneTokenizer(dim=16, channels=(8, 8, 16, 16), downsample=downsample)
    assert tokenizer.grid == 5
    assert tokenizer(torch.rand(2, 3, 75, 75)).shape == (2, 25, 16)


def test_scene_tokenizer_names_an_unknown_downsampling():
    with pytest.raises(ValueError, match="downsample='avg'"):
        ConvSceneTokenizer(dim=16, downsample="avg")
