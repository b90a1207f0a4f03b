"""predict.py: raw inputs of every task -> predictions.jsonl and attention pictures; bad inputs fail cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import DatasetDict
from PIL import Image
from tasks.image_classification.builder import build_digits
from tasks.vqa.builder import build_sort_of_clevr
from tests.conftest import TINY_TASK, compose_config, run_script, train_tiny_checkpoint

from attnlab import cli
from attnlab.analysis.heatmaps import FIGURE_DPI


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_dir) -> dict[str, Path]:
    """A one-step checkpoint of every task."""
    found = {}
    for task in ("image_classification", "vqa"):
        found[task] = train_tiny_checkpoint(task, tmp_path_factory.mktemp(task) / "run", data_dir, batches=1)
    return found


def _predict(tmp_path: Path, data_dir: Path, *overrides: str):
    cfg = compose_config("predict", list(overrides), tmp_path / "predict", data_dir)
    return cfg, Path(cfg.paths.output_dir)


def _pictures(out: Path) -> list[Path]:
    return sorted(out.glob("*.png"))


def _expected_size(panels: int) -> tuple[int, int]:
    return round((3.2 * panels + 0.6) * FIGURE_DPI), round((3.2 + 0.7) * FIGURE_DPI)


def test_image_classification_directory_of_images(tmp_path, data_dir, checkpoints):
    folder = tmp_path / "digits"
    folder.mkdir()
    test = build_digits(seed=0)["test"]
    for i in range(3):
        test[i]["image"].save(folder / f"digit{i}.png")
    cfg, out = _predict(tmp_path, data_dir, f"ckpt_path={checkpoints['image_classification']}", f"input={folder}",
                        "viz=true")
    cli.predict(cfg)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["input"]).name for r in records] == ["digit0.png", "digit1.png", "digit2.png"]
    assert all(0 <= r["prediction"] <= 9 and 0.0 <= r["confidence"] <= 1.0 and "target" not in r for r in records)
    for record in records:  # top 3, most probable first, led by the prediction
        (first, p1), (_, p2), (_, p3) = record["top_k"]
        assert first == record["prediction"] and p1 == record["confidence"] and p1 >= p2 >= p3
    pictures = _pictures(out)
    assert len(pictures) == 3  # input, pooling weights, rollout
    with Image.open(pictures[0]) as picture:
        assert picture.size == _expected_size(3)
    assert not (out / ".predict-incomplete").exists()


def test_image_classification_saved_dataset_keeps_its_labels(tmp_path, data_dir, checkpoints):
    disk = tmp_path / "four"
    DatasetDict({"test": build_digits(seed=0)["test"].select(range(4))}).save_to_disk(str(disk))
    cfg, out = _predict(tmp_path, data_dir, f"ckpt_path={checkpoints['image_classification']}", f"input={disk}",
                        "viz=true", "viz_max=3", "batch_size=2")
    records = cli.predict(cfg)
    assert [r["input"] for r in records] == [f"test[{i}]" for i in range(4)]
    assert [r["target"] for r in records] == build_digits(seed=0)["test"].select(range(4))["label"]
    assert len(_pictures(out)) == 3  # viz_max caps the pictures, not the predictions


def test_vqa_image_and_question(tmp_path, data_dir, checkpoints):
    scene = tmp_path / "scene.png"
    build_sort_of_clevr(train_images=0, validation_images=0, test_images=1, seed=3)["test"][0]["image"].save(scene)
    cfg, out = _predict(tmp_path, data_dir, f"ckpt_path={checkpoints['vqa']}", f"input={scene}", "viz=true",
                        "question=What is the shape of the red object?")
    (record,) = cli.predict(cfg)
    assert record["question"] == "What is the shape of the red object?" and record["input"] == str(scene)
    assert record["top_k"][0] == [record["prediction"], record["confidence"]] and len(record["top_k"]) == 3
    (picture,) = _pictures(out)
    with Image.open(picture) as image:
        assert image.size == _expected_size(2)  # question -> image tokens, relation layer from the top token


def test_vqa_saved_dataset(tmp_path, data_dir, checkpoints):
    rows = build_sort_of_clevr(train_images=0, validation_images=0, test_images=1, seed=4)["test"].select(range(3))
    disk = tmp_path / "three"
    rows.save_to_disk(str(disk))
    cfg, out = _predict(tmp_path, data_dir, f"ckpt_path={checkpoints['vqa']}", f"input={disk}")
    records = cli.predict(cfg)
    assert [r["question"] for r in records] == rows["question"]
    assert not _pictures(out)  # viz=false: no pictures


@pytest.mark.parametrize(
    ("task", "make_input", "extra", "error", "message"),
    [
        ("image_classification", lambda d: d / "missing.png", [], FileNotFoundError, "missing.png does not exist"),
        ("image_classification", lambda d: _text_file(d / "broken.png"), [], ValueError, "not a readable image"),
        ("image_classification", lambda d: "a sentence", [], ValueError, "cannot read text"),
        ("vqa", lambda d: _scene(d), ["question=zebras quantum flux"], ValueError, "3 of 3 words unknown"),
        ("vqa", lambda d: _scene(d), [], ValueError, 'add question="..."'),
        ("vqa_checkpoint_as_image_task", lambda d: _scene(d), ["task=image_classification"], ValueError,
         "trained for task 'vqa'"),
    ],
    ids=["missing file", "unreadable image", "text for images", "no known word", "no question", "another task"],
)
def test_bad_inputs_fail_with_one_message_and_no_output(tmp_path, data_dir, checkpoints, task, make_input, extra,
                                                        error, message):
    checkpoint = checkpoints["vqa" if task.startswith("vqa") else task]
    cfg, out = _predict(tmp_path, data_dir, f"ckpt_path={checkpoint}", f"input={make_input(tmp_path)}", "viz=true",
                        *extra)
    with pytest.raises(error, match=message):
        cli.predict(cfg)
    assert not (out / "predictions.jsonl").exists() and not _pictures(out)


def _text_file(path: Path) -> Path:
    path.write_text("not an image")
    return path


def _scene(folder: Path) -> Path:
    path = folder / "scene.png"
    build_sort_of_clevr(train_images=0, validation_images=0, test_images=1, seed=5)["test"][0]["image"].save(path)
    return path


def test_predict_script_prints_one_line_and_exits_non_zero(tmp_path, data_dir, checkpoints):
    done = run_script("predict.py", f"ckpt_path={checkpoints['image_classification']}", f"input={tmp_path}/nope.png",
                      f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}")
    assert done.returncode == 1
    expected = (
        f"predict.py: error: input={tmp_path}/nope.png does not exist; give "
        "an image file, a directory of images, or a saved dataset directory (image, label columns)"
    )
    assert done.stderr.strip().splitlines() == [expected]


def test_predict_table_and_records_from_the_script(tmp_path, data_dir, checkpoints):
    scene = _scene(tmp_path)
    done = run_script("predict.py", f"ckpt_path={checkpoints['vqa']}", f"input={scene}", "viz=true",
                      "question=Is the red object on the left side of the image?",
                      f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 predictions" in done.stdout and "red object" in done.stdout
    (run_dir,) = (tmp_path / "logs" / "predict").iterdir()
    assert len(_pictures(run_dir)) == 1 and (run_dir / "predictions.jsonl").exists()


@pytest.mark.parametrize("task", ["image_classification", "segmentation"])
def test_attention_maps_callback_saves_pictures_without_an_image_logger(train_cfg, task):
    cfg = train_cfg(*TINY_TASK[task], "debug=limit", "callbacks=attention_maps", "callbacks.attention_maps.every_n_epochs=1",
                    "callbacks.attention_maps.num_rows=2", "logger=none", "test=false", "trainer.enable_progress_bar=false",
                    quiet=False)
    cli.train(cfg)
    saved = sorted(p.name for p in (Path(cfg.paths.output_dir) / "attention").glob("*.png"))
    assert len(saved) == 4 and saved[0].startswith(f"epoch0_attention_{task}")  # 2 epochs x 2 rows


def test_attention_maps_callback_logs_images_to_tensorboard_and_offline_wandb(train_cfg, monkeypatch, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: W&B runs offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = train_cfg(*TINY_TASK["vqa"], "debug=limit", "trainer.max_epochs=1", "logger=many", "test=false",
                    "callbacks=[default,attention_maps]", "callbacks.attention_maps.every_n_epochs=1",
                    "callbacks.attention_maps.num_rows=2")
    cli.train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    images = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload().Tags()["images"]
    assert sorted(images) == ["attention/vqa/validation[0]_0", "attention/vqa/validation[1]_1"]
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert len(list(offline.glob("files/media/images/attention_*.png"))) == 2
    assert (run_dir / "checkpoints" / "last.ckpt").exists()  # the default callbacks are still there
