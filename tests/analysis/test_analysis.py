"""attnlab.analysis on known maps and planted values, the edit_qkv hook, and the analysis script end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from attnlab.analysis import (
    attention_entropy,
    attention_rollout,
    dimension_norms,
    flag_massive,
    infer_key_mask,
    mean_attention_distance,
    mean_replace_editor,
    random_dims_like,
    rope_band_counts,
    rope_dimension_info,
    sink_statistics,
)
from attnlab.attention import AxialRotaryPositionalEncoding, RotaryPositionalEncoding
from attnlab.attention.capture import edit_qkv
from attnlab.backbones import TransformerEncoder

ROOT = Path(__file__).resolve().parents[2]


def softmax_weights(batch: int, heads: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, n, n, generator=generator).mul(3).softmax(-1)  # (B, H, N, N)


# ---- rollout -------------------------------------------------------------------------------------


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(6).expand(2, 3, 6, 6)  # (B, H, N, N)
    rollout = attention_rollout([eye, eye, eye])
    assert torch.equal(rollout, torch.eye(6).expand(2, 6, 6))


def test_rollout_rows_sum_to_one_and_match_the_definition():
    layers = [softmax_weights(2, 4, 5, seed) for seed in range(3)]
    rollout = attention_rollout(layers)
    assert torch.allclose(rollout.sum(-1), torch.ones(2, 5), atol=1e-6)
    expected = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for layer in layers:
        expected = (0.5 * torch.eye(5, dtype=torch.float64) + 0.5 * layer.double().mean(1)) @ expected
    assert torch.allclose(rollout.double(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="residual"):
        attention_rollout(layers, residual=1.5)
    with pytest.raises(ValueError, match=r"\(B, H, N, N\)"):
        attention_rollout([torch.rand(2, 4, 1, 5)])


# ---- head statistics -----------------------------------------------------------------------------


def test_entropy_of_uniform_attention_over_valid_keys_is_log_n_and_padding_is_ignored():
    weights = torch.full((2, 3, 8, 8), 1 / 8)  # uniform over all 8 keys, padding included
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :5] = True  # 5 real keys
    entropy = attention_entropy(weights, mask, mask)
    assert torch.allclose(entropy, torch.full((3,), math.log(5), dtype=torch.float64))
    assert torch.allclose(attention_entropy(weights), torch.full((3,), math.log(8), dtype=torch.float64))
    one_hot = torch.eye(8).expand(2, 3, 8, 8)
    assert torch.equal(attention_entropy(one_hot), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention_entropy(weights, mask[:, :4])


def test_infer_key_mask_recovers_padding():
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    scores = torch.randn(2, 2, 4, 4).masked_fill(~mask[:, None, None, :], float("-inf"))
    assert torch.equal(infer_key_mask(scores.softmax(-1)), mask)


def test_sink_share_of_one_hot_attention_is_one():
    weights = torch.zeros(2, 4, 6, 6)
    weights[..., 3] = 1.0  # every query of every head attends to key 3 only
    sink = sink_statistics(weights)
    assert torch.equal(sink.sink_key, torch.full((4,), 3))
    for value in (sink.peak_share, sink.sink_frequency, sink.sink_share):
        assert torch.allclose(value, torch.ones(4, dtype=torch.float64))
    diagonal = sink_statistics(torch.eye(6).expand(2, 4, 6, 6))  # one-hot, but a different key per query
    assert torch.allclose(diagonal.peak_share, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(diagonal.sink_share, torch.full((4,), 1 / 6, dtype=torch.float64))


def test_mean_distance_of_known_maps():
    n = 7
    weights = torch.zeros(1, 2, n, n)
    weights[..., 0] = 0.5  # half on the first token ...
    weights += 0.5 * torch.eye(n)  # ... half on itself: distance i / 2 for query i
    expected = sum(i / 2 for i in range(n)) / n
    assert torch.allclose(mean_attention_distance(weights), torch.full((2,), expected, dtype=torch.float64))

    # a 2x2 grid of 4-px patches after a CLS token; each patch looks half at CLS, half at the opposite corner
    grid_weights = torch.zeros(1, 1, 5, 5)
    grid_weights[0, 0, :, 0] = 0.5
    for patch, opposite in ((1, 4), (2, 3), (3, 2), (4, 1)):
        grid_weights[0, 0, patch, opposite] = 0.5
    grid_weights[0, 0, 0, 1:] = 0.125  # the CLS query has no position: left out
    distance = mean_attention_distance(grid_weights, grid=(2, 2), patch_size=4, num_prefix=1)
    assert torch.allclose(distance, torch.tensor([4 * math.sqrt(2)], dtype=torch.float64))
    with pytest.raises(ValueError, match="Tq == Tk"):
        mean_attention_distance(torch.rand(1, 1, 2, 5))


# ---- massive values ------------------------------------------------------------------------------


def test_detector_flags_a_planted_dimension():
    q = torch.randn(4, 3, 32, 16, generator=torch.Generator().manual_seed(0))  # (B, H, T, Dh)
    q[:, 1, :, 5] *= 20.0
    flags = flag_massive(dimension_norms(q))
    assert flags.sum() == 1 and flags[1, 5]


@pytest.mark.parametrize("seed", range(5))
def test_detector_flags_nothing_in_isotropic_random_tensors(seed):
    generator = torch.Generator().manual_seed(seed)
    for shape in ((4, 4, 32, 24), (2, 8, 5, 64), (16, 2, 2, 32)):
        assert not flag_massive(dimension_norms(torch.randn(shape, generator=generator))).any()


def test_padding_does_not_count_in_the_norms():
    x = torch.ones(1, 1, 4, 2)
    x[0, 0, 2:, 1] = 1000.0  # huge values on padded tokens only
    mask = torch.tensor([[True, True, False, False]])
    assert torch.allclose(dimension_norms(x, mask), torch.full((1, 2), math.sqrt(2), dtype=torch.float64))


def test_rope_band_of_a_planted_dimension():
    head_dim, length = 24, 16
    rope = RotaryPositionalEncoding(head_dim=head_dim)
    q = torch.randn(2, 2, length, head_dim, generator=torch.Generator().manual_seed(1))
    q[:, 0, :, 11] *= 20.0  # rotate-half pair 11 (dims 11 and 23): the slowest frequency
    rotated, _ = rope.rotate(q, q)
    flags = flag_massive(dimension_norms(rotated))
    assert flags.nonzero().tolist() == [[0, 11]]
    info = rope_dimension_info(rope, head_dim)
    assert (info[11].pair, info[23].pair, info[0].pair, info[12].pair) == (11, 11, 0, 0)
    assert info[11].frequency == pytest.approx(10000 ** (-22 / 24)) and info[11].band == "low"
    assert info[0].frequency == 1.0 and info[0].band == "high" and info[17].band == "mid"
    assert rope_band_counts(flags, info) == {"high": 0, "mid": 0, "low": 1}
    axial = rope_dimension_info(AxialRotaryPositionalEncoding(head_dim=24, axes=2), 24)  # 12 dims per axis
    assert (axial[13].axis, axial[13].pair, axial[19].pair) == (1, 1, 1)
    assert axial[13].frequency == pytest.approx(100 ** (-2 / 12))
    assert rope_dimension_info(None, 24) is None


def test_random_dims_match_the_flag_count_per_head_and_avoid_flagged_dims():
    flags = torch.zeros(3, 8, dtype=torch.bool)
    flags[0, [1, 2]] = True
    flags[2, 7] = True
    chosen = random_dims_like(flags, generator=torch.Generator().manual_seed(0))
    assert chosen.sum(1).tolist() == [2, 0, 1]
    assert not (chosen & flags).any()


# ---- the edit hook -------------------------------------------------------------------------------


def tiny_encoder(pos_encoding: str = "rope") -> TransformerEncoder:
    torch.manual_seed(0)
    model = TransformerEncoder(dim=16, depth=2, num_heads=2, pos_encoding=pos_encoding).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv_proj.weight.mul_(50.0)  # sharp attention: q and k matter (the init is near uniform)
    return model


def test_edit_qkv_identity_leaves_outputs_unchanged_and_mean_replacement_changes_them():
    model = tiny_encoder()
    tokens, mask = torch.randn(2, 6, 16), torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.no_grad():
        before = model(tokens, mask)
        with edit_qkv(model, {}):
            assert torch.equal(model(tokens, mask), before)  # no editor: bitwise the same
        with edit_qkv(model, {"blocks.0.attn": lambda *, q, k, v: (q, k, v), "blocks.1.attn": lambda *, q, k, v: (q, k, v)}):
            assert torch.equal(model(tokens, mask), before)
        everything = torch.ones(2, 8, dtype=torch.bool)  # (H, Dh)
        with edit_qkv(model, {"blocks.0.attn": mean_replace_editor(q_dims=everything, k_dims=everything)}):
            edited = model(tokens, mask)
        assert not torch.allclose(edited, before, atol=1e-4)
        assert torch.equal(model(tokens, mask), before)  # the editor is gone after the context
    assert all(block.attn.qkv_editor is None for block in model.blocks)
    with pytest.raises(ValueError, match="blocks.9.attn"), edit_qkv(model, {"blocks.9.attn": mean_replace_editor()}):
        pass


def test_mean_replace_editor_replaces_only_the_chosen_dims():
    q = torch.randn(2, 2, 5, 4)
    dims = torch.zeros(2, 4, dtype=torch.bool)
    dims[1, 2] = True
    edited, _, _ = mean_replace_editor(q_dims=dims)(q=q, k=q, v=q)
    assert torch.allclose(edited[:, 1, :, 2], q[:, 1, :, 2].mean(1, keepdim=True).expand(2, 5))
    untouched = ~dims[None, :, None, :].expand_as(q)
    assert torch.equal(edited[untouched], q[untouched])
    with pytest.raises(ValueError, match="q_dims"):
        mean_replace_editor(q_dims=torch.zeros(3, 4, dtype=torch.bool))(q=q, k=q, v=q)


# ---- the script, end to end ----------------------------------------------------------------------


def load_script():
    spec = importlib.util.spec_from_file_location("analyze_attention", ROOT / "scripts" / "analyze_attention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_analyze_attention_script_writes_report_and_plots(train_cfg, tmp_path):
    from attnlab import cli

    # debug=fdr (one batch per stage) with checkpointing back on, so the run leaves a checkpoint
    cfg = train_cfg("debug=fdr", "trainer.fast_dev_run=false", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                    "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "backbone.pos_encoding=rope",
                    "logger=none", "callbacks.early_stopping=null", "test=false")
    cli.train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    out = tmp_path / "analysis"
    result = load_script().main([f"ckpt_path={ckpt}", "--out", str(out), "--batches", "1", "--seeds", "2",
                                 "--lambda", "2"])
    report = (out / "report.md").read_text()
    assert "## Heads" in report and "## Massive values (λ = 2.0)" in report and "## Ablation" in report
    for name in ("entropy", "sink_share", "distance", "norms", "rollout"):
        assert (out / f"{name}.png").stat().st_size > 1000
    data = json.loads((out / "analysis.json").read_text())
    assert set(data["baseline"]) == {"acc"}
    layers = data["heads"]
    assert {f"backbone.blocks.{i}.attn" for i in range(4)} | {"heads.image_classification.pool"} == set(layers)
    block = layers["backbone.blocks.0.attn"]
    assert block["distance_unit"] == "px" and 0 < block["distance"][0] < 8 * math.sqrt(2)  # inside an 8x8 image
    assert block["max_entropy"][0] == pytest.approx(math.log(16))  # 4x4 patches, no padding
    assert 0 < block["entropy"][0] <= block["max_entropy"][0] + 1e-9
    assert data["massive"]["backbone.blocks.0.attn"]["rope"] == "RotaryPositionalEncoding"
    assert data["massive"]["heads.image_classification.pool"]["rope"] is None
    assert result["ablation"]["num_dims"] == 0 or len(result["ablation"]["random"]) == 2
