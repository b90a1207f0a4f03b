"""capture_attention: every layer's weights through the reference path, equal to need_weights, without
changing what the model computes."""

from __future__ import annotations

import pytest
import torch
from attn_helpers import padding_mask, rel_err

from attnlab.attention import MultiHeadAttention, capture_attention
from attnlab.backbones import TransformerEncoder


def test_captured_weights_equal_need_weights_and_respect_padding():
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=16, num_heads=4).double().eval()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    real = padding_mask(2, 7, [7, 4])
    _, expected = attn(x, key_padding_mask=real, need_weights=True)
    wrapper = torch.nn.ModuleDict({"attn": attn})
    with capture_attention(wrapper, qkv=True) as captured:
        out = attn(x, key_padding_mask=real)
    (record,) = captured["attn"]
    torch.testing.assert_close(record.weights, expected, rtol=0, atol=0)
    torch.testing.assert_close(record.weights.sum(-1), torch.ones(2, 4, 7, dtype=torch.float64))
    assert (record.weights[1, :, :, 4:] == 0).all()  # padded keys get nothing
    assert record.q.shape == (2, 4, 7, 4) and record.k.shape == record.v.shape == (2, 4, 7, 4)
    torch.testing.assert_close(out, attn(x, key_padding_mask=real), rtol=1e-12, atol=1e-12)
    assert attn.recorder is None  # switched off on exit


@pytest.mark.parametrize("pos", ["none", "rope", "alibi"])
def test_capture_over_an_encoder_records_every_block_and_keeps_its_output(pos):
    torch.manual_seed(0)
    encoder = TransformerEncoder(dim=32, depth=3, num_heads=4, pos_encoding=pos).eval()
    tokens, real = torch.randn(2, 9, 32), padding_mask(2, 9, [9, 6])
    plain = encoder(tokens, real)
    with capture_attention(encoder, pattern=r"blocks\.[02]\.attn$") as captured:
        observed = encoder(tokens, real)
    assert sorted(captured) == ["blocks.0.attn", "blocks.2.attn"]
    assert rel_err(observed, plain) < 1e-5  # the reference path computes the same attention
    _, _, weights = encoder.forward_features(tokens, real, need_weights=True)
    torch.testing.assert_close(captured["blocks.2.attn"][0].weights, weights[2], rtol=1e-5, atol=1e-6)


def test_capture_names_the_layers_when_the_pattern_matches_none():
    encoder = TransformerEncoder(dim=16, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"matches pattern 'nope'.*blocks\.0\.attn"), capture_attention(
        encoder, pattern="nope"
    ):
        pass
