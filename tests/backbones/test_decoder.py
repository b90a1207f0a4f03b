"""TransformerDecoder: causality, memory padding, KV-cached decoding equal to recomputation, beam reordering."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from attnlab.attention import KVCache, MultiHeadAttention, build_positional_encoding
from attnlab.backbones import DecoderCache, TransformerDecoder
from attnlab.backbones.decoder import DECODER_POSITIONAL_ENCODINGS

DIM, HEADS = 8, 2
TOL = 1e-10


def _decoder(pos: str = "none", *, depth: int = 2, seed: int = 0, **options) -> TransformerDecoder:
    """A float64 decoder with every parameter redrawn large enough that attention is far from uniform."""
    torch.manual_seed(seed)
    decoder = TransformerDecoder(
        dim=DIM, depth=depth, num_heads=HEADS, pos_encoding=pos, max_len=32, **options
    )
    decoder = decoder.double().eval()
    with torch.no_grad():
        for param in decoder.parameters():
            param.normal_(0.0, 0.5)
    return decoder


def _inputs(batch: int = 2, length: int = 6, memory_len: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, DIM, generator=g, dtype=torch.float64)
    memory = torch.randn(batch, memory_len, DIM, generator=g, dtype=torch.float64)
    memory_mask = torch.ones(batch, memory_len, dtype=torch.bool)
    memory_mask[0, -2:] = False  # item 0 has two padded memory tokens
    return tokens, memory, memory_mask


@pytest.mark.parametrize("pos", DECODER_POSITIONAL_ENCODINGS)
def test_changing_a_later_target_token_leaves_earlier_outputs_unchanged(pos):
    decoder = _decoder(pos)
    tokens, memory, memory_mask = _inputs()
    out = decoder(tokens, memory, memory_mask=memory_mask)  # (B, T, D)
    changed = tokens.clone()
    changed[:, 4] += torch.randn(2, DIM, dtype=torch.float64)  # not a constant shift: LayerNorm removes those
    out_changed = decoder(changed, memory, memory_mask=memory_mask)
    assert torch.allclose(out[:, :4], out_changed[:, :4], rtol=0, atol=TOL)
    assert (out[:, 4:] - out_changed[:, 4:]).abs().amax(dim=-1).min() > 1e-3  # positions 4 and 5 do see it


def test_padded_memory_tokens_are_ignored_and_get_no_weight():
    decoder = _decoder("rope")
    tokens, memory, memory_mask = _inputs()
    out, cross_weights = decoder(tokens, memory, memory_mask=memory_mask, need_weights=True)
    garbage = memory.clone()
    garbage[0, -2:] = 100.0 * torch.randn(2, DIM, dtype=torch.float64)  # only padded positions change
    assert torch.allclose(decoder(tokens, garbage, memory_mask=memory_mask), out, rtol=0, atol=TOL)
    real_change = memory.clone()
    real_change[0, 0] += torch.randn(DIM, dtype=torch.float64)
    assert (decoder(tokens, real_change, memory_mask=memory_mask)[0] - out[0]).abs().max() > 1e-3

    assert len(cross_weights) == 2
    for weights in cross_weights:
        assert weights.shape == (2, HEADS, 6, 5)  # (B, H, T, S)
        assert torch.all(weights[0, :, :, -2:] == 0)
        assert torch.allclose(weights.sum(-1), torch.ones(2, HEADS, 6, dtype=torch.float64), atol=TOL)


@pytest.mark.parametrize("pos", DECODER_POSITIONAL_ENCODINGS)
def test_cached_decoding_equals_full_recomputation(pos):
    decoder = _decoder(pos, layer_scale_init=0.7 if pos == "learned" else None)
    tokens, memory, memory_mask = _inputs(length=8)
    padding_mask = torch.ones(2, 8, dtype=torch.bool)
    padding_mask[1, :2] = False  # item 1 is left-padded by two target tokens
    full, full_cross = decoder(
        tokens, memory, memory_mask=memory_mask, padding_mask=padding_mask, need_weights=True
    )

    cache = decoder.new_cache()
    pieces, cross_pieces, start = [], [], 0
    for size in (3, 1, 2, 1, 1):  # a prompt of 3, then single tokens and a chunk of 2 (causal with a cache)
        piece, cross = decoder(
            tokens[:, start : start + size],
            memory if start == 0 else None,  # the cache holds the memory after the first call
            memory_mask=memory_mask if start == 0 else None,
            padding_mask=padding_mask[:, start : start + size],
            cache=cache,
            need_weights=True,
        )
        pieces.append(piece)
        cross_pieces.append(cross)
        start += size
        assert cache.length == start
    assert torch.allclose(torch.cat(pieces, dim=1), full, rtol=0, atol=TOL)
    for layer in range(2):  # the per-layer cross-attention maps agree too
        incremental = torch.cat([cross[layer] for cross in cross_pieces], dim=2)  # (B, H, T, S)
        assert torch.allclose(incremental, full_cross[layer], rtol=0, atol=TOL)


@pytest.mark.parametrize("pos", DECODER_POSITIONAL_ENCODINGS)
def test_reorder_after_a_step_matches_recomputation_on_reordered_prefixes(pos):
    decoder = _decoder(pos)
    tokens, memory, memory_mask = _inputs(batch=3, length=4, seed=2)
    memory_mask[2, -1] = False
    cache = decoder.new_cache()
    for t in range(3):  # decode a 3-token prefix one step at a time
        decoder(tokens[:, t : t + 1], memory, memory_mask=memory_mask, cache=cache)
    indices = torch.tensor([2, 0, 0])  # beam search: row 1 dropped, row 0 duplicated
    cache.reorder(indices)
    assert cache.batch_size == 3 and cache.length == 3
    nxt = tokens[:, 3:4]  # the next token of each new row
    step = decoder(nxt, None, cache=cache)[:, 0]  # (3, D): each row continues its new prefix
    prefixes = torch.cat([tokens[indices, :3], nxt], dim=1)  # (3, 4, D)
    expected = decoder(prefixes, memory[indices], memory_mask=memory_mask[indices])[:, 3]
    assert torch.allclose(step, expected, rtol=0, atol=TOL)
    assert not torch.allclose(step[0], step[1], atol=1e-3)  # rows really carry different prefixes


@pytest.mark.parametrize("pos", ["sinusoidal", "relative"])
def test_repeat_interleave_expands_rows_for_beams(pos):
    decoder = _decoder(pos)
    tokens, memory, memory_mask = _inputs(batch=2, length=3)
    padding_mask = torch.tensor([[True, True], [False, True]])
    cache = decoder.new_cache()
    decoder(tokens[:, :2], memory, memory_mask=memory_mask, padding_mask=padding_mask, cache=cache)
    cache.repeat_interleave(3)  # rows 0, 0, 0, 1, 1, 1
    assert cache.batch_size == 6 and cache.self_mask.shape == (6, 2) and cache.memory_mask.shape == (6, 5)
    nxt = torch.randn(6, 1, DIM, dtype=torch.float64)  # a different next token per beam
    step = decoder(nxt, None, cache=cache)[:, 0]  # (6, D)
    rows = torch.arange(2).repeat_interleave(3)
    full_tokens = torch.cat([tokens[rows, :2], nxt], dim=1)  # (6, 3, D)
    full_mask = torch.cat([padding_mask[rows], torch.ones(6, 1, dtype=torch.bool)], dim=1)
    expected = decoder(full_tokens, memory[rows], memory_mask=memory_mask[rows], padding_mask=full_mask)[:, 2]
    assert torch.allclose(step, expected, rtol=0, atol=TOL)


def test_empty_cache_and_kv_cache_select():
    cache = DecoderCache.empty(2)
    assert cache.length == 0 and cache.batch_size is None and not cache.has_memory
    assert cache.repeat_interleave(4) is cache  # nothing cached yet: a no-op
    kv = KVCache()
    kv.append(torch.arange(3.0).view(3, 1, 1, 1), -torch.arange(3.0).view(3, 1, 1, 1))
    kv.select(torch.tensor([2, 2, 0]))
    assert kv.k.flatten().tolist() == [2.0, 2.0, 0.0] and kv.v.flatten().tolist() == [-2.0, -2.0, 0.0]


@pytest.mark.parametrize("pos", ["sinusoidal", "learned"])
def test_absolute_encodings_embed_from_an_offset(pos):
    pe = build_positional_encoding(pos, dim=DIM, num_heads=HEADS, max_len=6)
    x = torch.randn(2, 6, DIM)
    assert torch.equal(pe.embed(x[:, 2:5], start=2), pe.embed(x)[:, 2:5])
    with pytest.raises(ValueError, match="max_len"):
        pe.embed(x[:, :2], start=5)


def test_gradcheck_one_layer_decoder():
    decoder = _decoder("rope", depth=1)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(1, 3, DIM, generator=g, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(1, 2, DIM, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True]])
    assert torch.autograd.gradcheck(lambda t, m: decoder(t, m, memory_mask=mask), (tokens, memory))


def test_bad_arguments_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="pos_encoding='rope2d'"):
        TransformerDecoder(dim=DIM, depth=1, num_heads=HEADS, pos_encoding="rope2d")
    with pytest.raises(ValueError, match="depth"):
        TransformerDecoder(dim=DIM, depth=0, num_heads=HEADS)
    with pytest.raises(ValueError, match="pos_encoding_options"):
        TransformerDecoder(
            dim=DIM, depth=1, num_heads=HEADS, pos_encoding="alibi", pos_encoding_options={"x": 1}
        )
    with pytest.raises(ValueError, match="cross_attention"):
        TransformerDecoder(dim=DIM, depth=1, num_heads=HEADS, cross_attention=partial(MultiHeadAttention))
    decoder = _decoder()
    tokens, memory, memory_mask = _inputs()
    with pytest.raises(ValueError, match="memory"):
        decoder(tokens, None)
    with pytest.raises(ValueError, match="repeat_interleave"):
        decoder(tokens, memory[:1])
    with pytest.raises(ValueError, match="memory_mask"):
        decoder(tokens, memory, memory_mask=memory_mask[:, :2])
    cache = decoder.new_cache()
    decoder(tokens[:, :1], memory, cache=cache)
    with pytest.raises(ValueError, match="cache holds 2 rows"):
        decoder(tokens[:1, 1:2], None, cache=cache)
