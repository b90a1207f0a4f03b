"""The `attention` config group: every variant x positional encoding runs inside the encoder backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from attnlab.attention import POSITIONAL_ENCODINGS

CONF = Path(__file__).resolve().parents[2] / "conf"
ATTENTION = sorted(p.stem for p in (CONF / "attention").glob("*.yaml"))
NO_SCORE_BIAS = {"linear", "low_rank"}  # their math has no score matrix to bias


def test_group_has_every_variant():
    assert {"sdpa", "reference", "additive", "sliding_window", "linear", "low_rank"} <= set(ATTENTION)


def _backbone(attention: str, pos: str, *extra: str):
    if not (CONF / "backbone" / "tiny.yaml").exists():
        pytest.skip("conf/backbone/tiny.yaml not present")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+attention={attention}", "+backbone=tiny", f"backbone.pos_encoding={pos}", *extra])
    return cfg, instantiate(cfg.backbone)


@pytest.mark.parametrize("pos", [p for p in POSITIONAL_ENCODINGS if p != "rope3d"])
@pytest.mark.parametrize("attention", ATTENTION)
def test_every_variant_with_every_encoding_in_the_encoder(attention, pos):
    _, backbone = _backbone(attention, pos, "backbone.depth=1")
    tokens = torch.randn(2, 16, backbone.dim)  # 16 = a 4 x 4 grid for rope2d
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 12:] = False
    if attention in NO_SCORE_BIAS and pos in ("alibi", "relative"):
        with pytest.raises(ValueError, match="backbone.pos_encoding"):
            backbone(tokens, mask)
        return
    hidden = backbone(tokens, mask)
    assert hidden.shape == tokens.shape and torch.isfinite(hidden).all()
    hidden.sum().backward()
    _, _, weights = backbone.forward_features(tokens, mask, need_weights=True)
    assert len(weights) == 1 and weights[0].shape[:3] == (2, backbone.num_heads, 16)


def test_low_rank_max_len_follows_backbone_and_names_the_key():
    cfg, backbone = _backbone("low_rank", "none", "backbone.max_len=32")
    assert cfg.attention.max_len == 32
    backbone(torch.randn(1, 32, backbone.dim))
    with pytest.raises(ValueError, match="max_len"):
        backbone(torch.randn(1, 33, backbone.dim))
