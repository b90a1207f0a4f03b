"""Video end to end: divided attention against an explicit loop over time and space in float64, joint and
space-only routes, the tubelet adapter, PyAV reading (frame sampling, bad files, skip_bad_samples, hub
``{bytes, path}`` columns), fast_dev_run of the three modes, eval.py on a UCF-shaped disk dataset of video
files, predict.py with per-frame attention pictures."""

from __future__ import annotations

import io
import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from tasks.video.data import VideoDataModule
from tasks.video.model import SpaceTimeRoute
from tests.conftest import TINY_TASK, compose_config, train_tiny_checkpoint

from attnlab import cli
from attnlab.attention import MultiHeadAttention
from attnlab.backbones import TransformerEncoder
from attnlab.data.video import VideoReadError, read_video, sample_frame_indices, write_video
from attnlab.embed import VideoPatchEmbed

CLASSES = ["move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out",
           "fade_in", "fade_out"]


def _modules(mode: str, *, frames: int = 4, dim: int = 16, depth: int = 2, dtype=torch.float64):
    torch.manual_seed(0)
    backbone = TransformerEncoder(dim=dim, depth=depth, num_heads=2, pos_encoding="none")
    adapter = VideoPatchEmbed(dim=dim, num_frames=frames, image_size=8, patch_size=4, in_chans=1,
                              temporal_pos=mode != "space_only")
    route = SpaceTimeRoute(dim=dim, backbone=backbone, st_attention=mode, attention=partial(MultiHeadAttention))
    for module in (backbone, adapter, route):
        module.to(dtype)
    return backbone.eval(), adapter, route


def test_divided_attention_equals_an_explicit_loop_over_time_and_space():
    backbone, adapter, route = _modules("divided")
    clips = torch.randn(2, 4, 1, 8, 8, dtype=torch.float64)  # (B, T, C, H, W): 4 steps x 4 patches
    hidden, _ = route(backbone, adapter, {"video": clips})
    tokens, _ = adapter({"video": clips})
    x = tokens.view(2, 4, 4, 16)  # (B, T', N, D)
    for temporal, block in zip(route.temporal, backbone.blocks, strict=True):
        after_time = torch.stack([temporal(x[:, :, n]) for n in range(4)], dim=2)  # each patch along time
        x = torch.stack([block(after_time[:, t], mask=None, positions=backbone.positions)[0] for t in range(4)], dim=1)
    expected = backbone.norm(x).reshape(2, 16, 16)
    torch.testing.assert_close(hidden, expected, rtol=1e-10, atol=1e-10)
    # the temporal layers matter: without them the result differs
    for layer in route.temporal:
        torch.nn.init.zeros_(layer.proj.weight)
    assert not torch.allclose(route(backbone, adapter, {"video": clips})[0], expected, atol=1e-4)


def test_joint_attends_over_the_whole_clip_and_space_only_ignores_time_order():
    clips = torch.randn(2, 4, 1, 8, 8, dtype=torch.float64)
    reversed_clips = clips.flip(1)
    backbone, adapter, route = _modules("joint")
    tokens, _ = adapter({"video": clips})
    torch.testing.assert_close(route(backbone, adapter, {"video": clips})[0], backbone(tokens))
    assert not torch.allclose(route(backbone, adapter, {"video": clips})[0].mean(1),
                              route(backbone, adapter, {"video": reversed_clips})[0].mean(1), atol=1e-6)
    backbone, adapter, route = _modules("space_only")
    forward, _ = route(backbone, adapter, {"video": clips})
    assert forward.shape == (2, 4, 16)  # (B, N, D): the time average
    torch.testing.assert_close(forward, route(backbone, adapter, {"video": reversed_clips})[0])
    frames = [backbone(adapter({"video": clips})[0].view(2, 4, 4, 16)[:, t]) for t in range(4)]
    torch.testing.assert_close(forward, torch.stack(frames).mean(0))


def test_temporal_rope_shows_divided_attention_the_order_of_frames():
    """Without temporal positions in the adapter, the order of frames reaches divided attention only
    through RoPE inside its temporal layers: with it, reversing a clip changes the pooled features."""
    clips = torch.randn(2, 4, 1, 8, 8, dtype=torch.float64)
    pooled = {}
    for kind in ("rope", "none"):
        torch.manual_seed(0)
        backbone = TransformerEncoder(dim=16, depth=2, num_heads=2).double().eval()
        adapter = VideoPatchEmbed(dim=16, num_frames=4, image_size=8, patch_size=4, temporal_pos=False).double()
        route = SpaceTimeRoute(dim=16, backbone=backbone, st_attention="divided", temporal_positions=kind).double()
        pooled[kind] = [route(backbone, adapter, {"video": c})[0].mean(1) for c in (clips, clips.flip(1))]
    assert not torch.allclose(*pooled["rope"], atol=1e-6)
    torch.testing.assert_close(*pooled["none"])  # permutation-equivariant over time: same time average


def test_adapter_tokens_are_time_major_and_tubelets_group_frames():
    adapter = VideoPatchEmbed(dim=8, num_frames=8, image_size=16, patch_size=4, tubelet_size=2, in_chans=1)
    assert adapter.grid == (4, 4, 4) and adapter.num_steps == 4 and adapter.num_patches == 16
    clips = torch.randn(1, 8, 1, 16, 16)
    tokens, mask = adapter({"video": clips})
    assert tokens.shape == (1, 64, 8) and mask is None
    changed = clips.clone()
    changed[:, 5] += 1.0  # frame 5 belongs to tubelet 2
    moved = (adapter({"video": changed})[0] - tokens).abs().view(1, 4, 16, 8).sum((0, 2, 3))
    assert moved[2] > 0 and moved[[0, 1, 3]].eq(0).all()
    with pytest.raises(ValueError, match="multiple of the adapter's tubelet_size=3"):
        VideoPatchEmbed(dim=8, num_frames=8, image_size=16, patch_size=4, tubelet_size=3)
    with pytest.raises(ValueError, match=r"set data.num_frames"):
        adapter({"video": torch.randn(1, 6, 1, 16, 16)})


def test_routes_refuse_what_they_cannot_run():
    backbone = TransformerEncoder(dim=24, depth=1, num_heads=2, pos_encoding="rope3d")
    with pytest.raises(ValueError, match="use task.st_attention=joint"):
        SpaceTimeRoute(dim=24, backbone=backbone, st_attention="divided")
    SpaceTimeRoute(dim=24, backbone=backbone, st_attention="joint")
    with pytest.raises(ValueError, match="is unknown"):
        SpaceTimeRoute(dim=24, backbone=backbone, st_attention="axial")
    plain = TransformerEncoder(dim=24, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="must act inside attention"):
        SpaceTimeRoute(dim=24, backbone=plain, st_attention="divided", temporal_positions="sinusoidal")
    with pytest.raises(ValueError, match="not one"):
        SpaceTimeRoute(dim=24, backbone=torch.nn.Linear(2, 2), st_attention="joint")


def test_frame_sampling():
    assert sample_frame_indices(8, 8).tolist() == list(range(8))
    assert sample_frame_indices(80, 4).tolist() == [10, 30, 50, 70]  # segment centres
    assert sample_frame_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # short videos repeat frames
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        window = sample_frame_indices(40, 8, sampling="random", stride=2, rng=rng)
        assert np.diff(window).tolist() == [2] * 7 and window.max() < 40
        starts.add(int(window[0]))
    assert len(starts) > 5
    with pytest.raises(ValueError, match="unknown"):
        sample_frame_indices(8, 4, sampling="dense")


def _clip(seed: int, frames: int = 8, size: int = 32) -> np.ndarray:
    """A bright square sliding right over a dark noisy canvas, (T, H, W) uint8."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 30, (frames, size, size)).astype(np.uint8)
    for t in range(frames):
        video[t, 10:18, 2 + 2 * t : 10 + 2 * t] = 220
    return video


def test_written_files_decode_to_their_frames_and_damaged_files_name_themselves(tmp_path):
    frames = _clip(0)
    write_video(tmp_path / "a.mp4", frames)
    decoded = read_video("a.mp4", root=tmp_path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    buffer = io.BytesIO()
    write_video(buffer, frames)
    from_bytes = read_video({"bytes": buffer.getvalue(), "path": "in-memory.mp4"})  # x264: equal within codec error
    assert from_bytes.shape == frames.shape and np.abs(from_bytes.astype(int) - frames).mean() < 4
    data = (tmp_path / "a.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    for name in ("truncated.mp4", "empty.mp4", "text.mp4", "missing.mp4"):
        with pytest.raises(VideoReadError, match=name):
            read_video(tmp_path / name)
    with pytest.raises(ValueError, match="even frame sides"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32), np.uint8))


def _ucf_dataset(root: Path, count: int, *, relative: bool = True, bad: int | None = None) -> DatasetDict:
    """A UCF101-shaped dataset: `video` file paths and a ClassLabel `label`; row `bad` is a truncated file."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        file = root / "clips" / f"v_{i:03d}.mp4"
        write_video(file, _clip(i, frames=12))  # longer than the 8 frames sampled
        if i == bad:
            file.write_bytes(file.read_bytes()[:200])
        paths.append(str(file.relative_to(root)) if relative else str(file))
    features = Features({"video": Value("string"), "label": ClassLabel(names=CLASSES)})
    split = Dataset.from_dict({"video": paths, "label": [i % 10 for i in range(count)]}, features=features)
    return DatasetDict({"train": split, "validation": split, "test": split})


def test_bad_videos_stop_with_their_name_or_are_skipped_with_a_count(tmp_path, caplog):
    path = tmp_path / "ucf"
    _ucf_dataset(path, 6, bad=4).save_to_disk(str(path))
    module = VideoDataModule(source="disk", path=str(path), batch_size=2)
    module.setup("fit")
    with pytest.raises(ValueError, match=r"sample 4 of split 'train'.*clips/v_004.mp4.*skip_bad_samples=true"):
        module.splits["train"][4]
    sample = module.splits["train"][0]
    assert sample["video"].shape == (8, 1, 32, 32) and sample["label"] == 0
    assert module.class_names == CLASSES
    with caplog.at_level(logging.WARNING):
        skipping = VideoDataModule(source="disk", path=str(path), batch_size=2, skip_bad_samples=True)
        skipping.setup("fit")
    assert len(skipping.splits["train"]) == 5
    assert "skipped 1 of 6 videos of split 'train'" in caplog.text and "v_004.mp4" in caplog.text


def test_decoded_videos_are_cached_up_to_the_budget(tmp_path):
    path = tmp_path / "ucf"
    _ucf_dataset(path, 3).save_to_disk(str(path))
    cached = VideoDataModule(source="disk", path=str(path), batch_size=2, augment=False)
    uncached = VideoDataModule(source="disk", path=str(path), batch_size=2, augment=False, cache_mb=0)
    for module in (cached, uncached):
        module.setup("fit")
    first = cached.splits["test"][0]["video"]
    torch.testing.assert_close(uncached.splits["test"][0]["video"], first)
    (path / "clips" / "v_000.mp4").unlink()  # gone from disk: only the cache still has it
    torch.testing.assert_close(cached.splits["test"][0]["video"], first)
    with pytest.raises(ValueError, match="v_000.mp4 does not exist"):
        uncached.splits["test"][0]


def test_hub_video_columns_are_read_as_bytes_without_a_decoder(tmp_path):
    """A hub `Video` column (datasets decodes it with torchcodec): the datamodule casts it to
    decode=False and reads the {bytes, path} struct with PyAV."""
    from datasets import Video

    buffers = []
    for i in range(2):
        buffer = io.BytesIO()
        write_video(buffer, _clip(i))
        buffers.append({"bytes": buffer.getvalue(), "path": f"clip{i}.mp4"})
    features = Features({"video": Video(decode=False), "label": ClassLabel(names=CLASSES)})
    split = Dataset.from_dict({"video": buffers, "label": [0, 1]}, features=features).cast_column("video", Video())
    module = VideoDataModule(source="disk", path=str(tmp_path / "hub"), batch_size=2)
    DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(tmp_path / "hub"))
    module.setup("fit")
    assert module.splits["test"][1]["video"].shape == (8, 1, 32, 32)


@pytest.mark.parametrize("mode", ["divided", "joint", "space_only"])
def test_fast_dev_run(train_cfg, mode):
    cfg = train_cfg(*TINY_TASK["video"], f"task.st_attention={mode}", "debug=fdr")
    cli.train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["test"]
    assert 0.0 <= metrics["test/video/acc"] <= 1.0


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory, data_dir) -> Path:
    return train_tiny_checkpoint("video", tmp_path_factory.mktemp("video") / "run", data_dir)


def test_eval_on_a_ucf_shaped_disk_dataset_writes_one_prediction_per_video(video_checkpoint, eval_cfg, tmp_path):
    path = tmp_path / "ucf"
    dataset = _ucf_dataset(path, 5)
    DatasetDict({"test": dataset["test"]}).save_to_disk(str(path))
    cfg = eval_cfg(f"ckpt_path={video_checkpoint}", "data.source=disk", f"data.path={path}")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True)
    metrics = cli.evaluate(cfg)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(5))
    assert [r["target"] for r in sorted(records, key=lambda r: r["index"])] == [0, 1, 2, 3, 4]
    assert 0.0 <= metrics["test/video/acc"] <= 1.0


def test_predict_prints_the_class_and_with_viz_draws_attention_per_frame(video_checkpoint, tmp_path, data_dir):
    file = tmp_path / "slide.mp4"
    write_video(file, _clip(3))
    cfg = compose_config("predict", [f"ckpt_path={video_checkpoint}", f"input={file}"], tmp_path / "p", data_dir)
    (record,) = cli.predict(cfg)
    assert record["prediction_text"] == CLASSES[record["prediction"]]
    assert not list(Path(cfg.paths.output_dir).glob("*.png"))
    cfg = compose_config("predict", [f"ckpt_path={video_checkpoint}", f"input={file}", "viz=true"], tmp_path / "viz",
                         data_dir)
    cli.predict(cfg)
    (picture,) = Path(cfg.paths.output_dir).glob("*.png")
    assert picture.stat().st_size > 10_000  # eight frames with their maps
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.predict(compose_config("predict", [f"ckpt_path={video_checkpoint}", f"input={tmp_path / 'no.mp4'}"],
                                   tmp_path / "missing", data_dir))
