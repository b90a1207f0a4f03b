from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import timm
import torch

from attnlab.attention import MultiHeadAttention
from attnlab.backbones import TimmBackbone, TransformerEncoder


def _encoder(backend: str) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(
        dim=32, depth=2, num_heads=4, pos_encoding="sinusoidal", attention=partial(MultiHeadAttention, backend=backend)
    )


def test_sdpa_encoder_matches_float64_reference():
    tokens = torch.randn(3, 10, 32)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    fused = _encoder("auto")
    reference = _encoder("reference").double()
    out = fused(tokens, mask)
    expected = reference(tokens.double(), mask)
    real = mask[..., None].expand_as(out)
    assert torch.allclose(out.double()[real], expected[real], rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_real_tokens():
    encoder = _encoder("auto").eval()
    tokens = torch.randn(1, 6, 32)
    padded = torch.cat([tokens, torch.randn(1, 3, 32)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    assert torch.allclose(encoder(tokens)[0], encoder(padded, mask)[0, :6], atol=1e-5)


def test_forward_features_returns_states_and_maps():
    hidden, states, weights = _encoder("auto").forward_features(torch.randn(2, 5, 32), need_weights=True)
    assert hidden.shape == (2, 5, 32) and len(states) == 2
    assert [w.shape for w in weights] == [(2, 4, 5, 5)] * 2
    assert torch.allclose(weights[0].sum(-1), torch.ones(2, 4, 5), atol=1e-5)


def test_timm_backbone_tokens_and_local_pretrained_file(tmp_path: Path):
    source = timm.create_model("resnet18", num_classes=0, in_chans=1)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)
    backbone = TimmBackbone(model_name="resnet18", in_chans=1, image_size=32, pretrained_file=str(weights))
    assert torch.equal(backbone.model.conv1.weight, source.conv1.weight)
    tokens = backbone(torch.randn(2, 1, 8, 8))
    assert tokens.shape == (2, 1, backbone.dim)  # 32x32 input -> 1x1 grid of 512-d features


def test_timm_backbone_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="backbone.model_name='no_such_net'"):
        TimmBackbone(model_name="no_such_net")
    with pytest.raises(FileNotFoundError, match="backbone.pretrained_file"):
        TimmBackbone(model_name="resnet18", pretrained_file=str(tmp_path / "missing.pth"))


def test_weight_init_presets_and_bad_name():
    torch.manual_seed(0)
    vit = TransformerEncoder(dim=128, depth=1, num_heads=4, weight_init="vit")
    xavier = TransformerEncoder(dim=128, depth=1, num_heads=4, weight_init="xavier")
    qkv_vit, qkv_xavier = vit.blocks[0].attn.qkv_proj.weight, xavier.blocks[0].attn.qkv_proj.weight
    assert abs(float(qkv_vit.std()) - 0.02) < 0.002
    bound = (6 / (128 + 384)) ** 0.5  # Glorot uniform: std = bound / sqrt(3)
    assert abs(float(qkv_xavier.std()) - bound / 3**0.5) < 0.003 and float(qkv_xavier.abs().max()) <= bound
    with pytest.raises(ValueError, match="backbone.weight_init='kaiming'"):
        TransformerEncoder(dim=32, depth=1, num_heads=4, weight_init="kaiming")
