"""Intermediate features, positional-encoding options and non-square patch grids of the backbones."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from attnlab.attention import AxialRotaryPositionalEncoding, MultiHeadAttention
from attnlab.backbones import TimmBackbone, TransformerEncoder, grid_to_tokens, tokens_to_grid
from attnlab.embed import ImagePatchEmbed

CONF = Path(__file__).resolve().parents[2] / "conf" / "backbone"


def _encoder(**kwargs) -> TransformerEncoder:
    torch.manual_seed(0)
    kwargs = {"dim": 24, "depth": 3, "num_heads": 2, **kwargs}
    encoder = TransformerEncoder(attention=partial(MultiHeadAttention, backend="reference"), **kwargs).eval()
    with torch.no_grad():  # peaked attention, so positions visibly change the output
        for block in encoder.blocks:
            block.attn.qkv_proj.weight.mul_(20.0)
    return encoder


# --- TransformerEncoder.forward_intermediates -------------------------------------------------


def test_intermediates_equal_forward_features_states_and_forward():
    encoder = _encoder(pos_encoding="sinusoidal")
    tokens, mask = torch.randn(2, 7, 24), torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    hidden, states, _ = encoder.forward_features(tokens, mask)
    final, intermediates = encoder.forward_intermediates(tokens, mask)
    assert len(intermediates) == encoder.depth
    for got, want in zip(intermediates, states, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(final, hidden, atol=1e-6)
    assert torch.allclose(final, encoder(tokens, mask), atol=1e-6)
    _, normed = encoder.forward_intermediates(tokens, mask, indices=[-1], norm=True)
    assert torch.allclose(normed[0], encoder(tokens, mask), atol=1e-6)  # last block, normed == forward


def test_intermediate_index_selection():
    encoder = _encoder()
    tokens = torch.randn(1, 5, 24)
    _, states, _ = encoder.forward_features(tokens)

    def take(indices):
        return encoder.forward_intermediates(tokens, indices=indices)[1]

    for indices, expected in [(2, [1, 2]), (3, [0, 1, 2]), ([0, -1], [0, 2]), ([2, 0], [2, 0]), ((-2,), [1])]:
        got = take(indices)
        assert len(got) == len(expected), indices
        assert all(torch.allclose(g, states[i], atol=1e-6) for g, i in zip(got, expected, strict=True)), indices
    for bad in (0, 4, -1, [3], [-4], []):
        with pytest.raises(ValueError, match="indices"):
            take(bad)
    with pytest.raises(TypeError):
        take("last")


def test_tokens_to_grid_round_trip():
    tokens = torch.randn(2, 1 + 3 * 4, 5)  # 1 CLS token + a 3x4 grid of 5-d tokens
    maps = tokens_to_grid(tokens, (3, 4), num_prefix=1)
    assert maps.shape == (2, 5, 3, 4)
    assert torch.equal(maps[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # row-major: token r*W + c -> (r, c)
    assert torch.equal(grid_to_tokens(maps), tokens[:, 1:])
    with pytest.raises(ValueError, match="do not form"):
        tokens_to_grid(tokens, (4, 4), num_prefix=1)


# --- positional-encoding options through the backbone --------------------------------------------


def test_rope3d_explicit_grid_matches_axial_rope():
    grid = (4, 2, 3)  # (T, H, W): 24 tokens, not a cube
    tokens = torch.randn(2, 24, 24)
    with pytest.raises(ValueError, match="do not form a 3-D grid"):
        _encoder(pos_encoding="rope3d")(tokens)  # inferred cube: 24 tokens are no cube plus <= 8 prefix
    encoder = _encoder(pos_encoding="rope3d", pos_encoding_options=OmegaConf.create({"grid": list(grid)}))
    reference = _encoder(pos_encoding="none")  # same seed: same weights
    reference.positions = AxialRotaryPositionalEncoding(head_dim=12, axes=3, grid=grid)
    assert encoder.positions.grid == grid
    q, k = torch.randn(2, 2, 24, 12), torch.randn(2, 2, 24, 12)
    for got, want in zip(encoder.positions.rotate(q, k), reference.positions.rotate(q, k), strict=True):
        assert torch.equal(got, want)
    out = encoder(tokens)
    assert out.shape == (2, 24, 24)
    assert torch.allclose(out, reference(tokens), atol=1e-5)
    other = _encoder(pos_encoding="rope3d", pos_encoding_options={"grid": [2, 4, 3]})
    assert (out - other(tokens)).abs().max() > 1e-2  # the grid layout changes the result
    with pytest.raises(ValueError, match=r"backbone\.pos_encoding_options\.grid=\[4, 2, 3\]"):
        encoder(torch.randn(1, 20, 24))  # too few tokens
    with pytest.raises(ValueError, match=r"backbone\.pos_encoding_options\.grid"):
        encoder(torch.randn(1, 24 + 9, 24))  # more leftover tokens than max_prefix (8)
    assert encoder(torch.randn(1, 25, 24)).shape == (1, 25, 24)  # one CLS token + the grid


def test_pos_encoding_options_errors_name_the_key():
    with pytest.raises(ValueError, match=r"backbone\.pos_encoding_options\.grid=\[4, 2\] must have 3"):
        _encoder(pos_encoding="rope3d", pos_encoding_options={"grid": [4, 2]})
    with pytest.raises(ValueError, match=r"backbone\.pos_encoding_options=.*backbone\.pos_encoding='none'"):
        _encoder(pos_encoding="none", pos_encoding_options={"grid": [4, 2, 3]})


@pytest.mark.parametrize("preset", ["tiny", "compact", "small", "base"])
def test_presets_take_pos_encoding_options(preset):
    """`backbone.pos_encoding_options={grid: [4, 2, 3]}` composes (Hydra struct mode) and reaches rope3d."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        assert compose(config_name=preset, overrides=["attention=null"]).pos_encoding_options is None
        cfg = compose(
            config_name=preset,
            overrides=[
                "attention=null",  # ${attention} is another config group; null -> the default SDPA attention
                "dim=24", "depth=1", "num_heads=2", "pos_encoding=rope3d",
                "pos_encoding_options={grid: [4, 2, 3]}",
            ],
        )
    GlobalHydra.instance().clear()
    encoder = instantiate(cfg)
    assert encoder.positions.grid == (4, 2, 3)
    assert encoder(torch.randn(1, 24, 24)).shape == (1, 24, 24)


# --- non-square images in ImagePatchEmbed --------------------------------------------------------


def test_non_square_image_patch_grid():
    torch.manual_seed(0)
    adapter = ImagePatchEmbed(dim=24, image_size=(16, 24), patch_size=4, in_chans=1, stem_channels=4)
    assert adapter.grid_size == adapter.grid == (4, 6) and adapter.num_patches == 24
    assert adapter.pos_embed.shape == (1, 24, 24)
    images = torch.randn(2, 1, 16, 24)
    tokens, mask = adapter({"image": images})
    assert tokens.shape == (2, 24, 24) and mask is None
    # the patch at row 1, col 5 is token 1 * 6 + 5
    patch = images[:, :, 4:8, 20:24]
    alone = torch.zeros_like(images)
    alone[:, :, 4:8, 20:24] = patch
    no_pos = ImagePatchEmbed(dim=24, image_size=(16, 24), patch_size=4, in_chans=1, pos_embed=False)
    assert torch.allclose(no_pos({"image": images})[0][:, 11], no_pos({"image": alone})[0][:, 11])
    encoder = _encoder(pos_encoding="rope2d", pos_encoding_options={"grid": adapter.grid_size})
    hidden = encoder(tokens)
    assert hidden.shape == (2, 24, 24)
    assert tokens_to_grid(hidden, adapter.grid_size).shape == (2, 24, 4, 6)
    rect = ImagePatchEmbed(dim=8, image_size=[16, 24], patch_size=(4, 6), in_chans=1)
    assert rect.grid_size == (4, 4) and rect({"image": images})[0].shape == (2, 16, 8)


def test_image_size_errors_name_the_key():
    with pytest.raises(ValueError, match=r"data\.image_size \(16, 24\).*divisible by.*patch_size \(5, 5\)"):
        ImagePatchEmbed(dim=8, image_size=(16, 24), patch_size=5)
    with pytest.raises(ValueError, match=r"data\.image_size"):
        ImagePatchEmbed(dim=8, image_size=(16, 24, 3), patch_size=4)
    adapter = ImagePatchEmbed(dim=8, image_size=(16, 24), patch_size=4, in_chans=1)
    with pytest.raises(ValueError, match=r"\(24, 16\).*expects 16x24; set data\.image_size"):
        adapter({"image": torch.randn(1, 1, 24, 16)})


def test_pixels_only_and_square_int_sizes():
    pixels = ImagePatchEmbed(dim=8, image_size=(16, 24), patch_size=4, pixels_only=True)
    assert pixels.grid_size == (4, 6) and not list(pixels.parameters())
    images = torch.randn(1, 3, 16, 24)
    assert pixels.pixels({"image": images})[0] is images
    with pytest.raises(RuntimeError, match="pixels_only"):
        pixels({"image": images})
    square = ImagePatchEmbed(dim=8, image_size=8, patch_size=2)
    assert square.image_size == (8, 8) and square.grid_size == (4, 4)
    assert square({"image": torch.randn(2, 3, 8, 8)})[0].shape == (2, 16, 8)


# --- TimmBackbone intermediates -------------------------------------------------------------------


def test_timm_resnet_feature_maps_match_feature_info():
    torch.manual_seed(0)
    backbone = TimmBackbone(model_name="resnet18", in_chans=1).eval()
    images = torch.randn(2, 1, 32, 32)
    final, maps = backbone.forward_intermediates(images)
    info = backbone.feature_info
    assert [level["reduction"] for level in info] == [2, 4, 8, 16, 32]
    assert len(maps) == len(info)
    for level, fmap in zip(info, maps, strict=True):
        side = 32 // level["reduction"]
        assert fmap.shape == (2, level["num_chs"], side, side)
    assert torch.allclose(final, backbone(images), atol=1e-5)  # (B, 1, 512): the 1x1 grid as tokens
    _, last_two = backbone.forward_intermediates(images, indices=2)
    assert [m.shape[1] for m in last_two] == [lv["num_chs"] for lv in backbone.feature_info_for(2)] == [256, 512]
    _, picked = backbone.forward_intermediates(images, indices=[-1, 1])
    assert torch.allclose(picked[0], maps[-1]) and torch.allclose(picked[1], maps[1])
    with pytest.raises(ValueError, match="feature levels"):
        backbone.forward_intermediates(images, indices=[5])


def test_timm_vit_feature_maps_keep_the_grid():
    torch.manual_seed(0)
    backbone = TimmBackbone(
        model_name="vit_tiny_patch16_224", model_kwargs={"img_size": 32, "patch_size": 8}
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    final, maps = backbone.forward_intermediates(images, indices=[3, -1])
    assert [m.shape for m in maps] == [(2, 192, 4, 4)] * 2  # CLS dropped, 16 patches back on the 4x4 grid
    assert [lv["reduction"] for lv in backbone.feature_info_for([3, -1])] == [8, 8]
    assert final.shape == (2, 17, 192)  # CLS + 16 patches, normed, as forward gives
    assert torch.allclose(final, backbone(images), atol=1e-5)
    assert torch.allclose(tokens_to_grid(final, (4, 4), num_prefix=1), backbone.forward_intermediates(
        images, indices=1, norm=True)[1][0], atol=1e-5)  # last block, normed == final patch tokens
