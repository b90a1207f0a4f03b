"""Segmentation end to end: the attention gate against its formula in float64, the pyramid routes, CE + Dice,
masks and small objects, joint augmentation, bad masks, fast_dev_run of the shared and timm encoders with and
without gates, eval.py on a disk dataset writing mask PNGs, predict.py with overlays and gate maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from tasks.segmentation.data import SegmentationDataModule, small_objects
from tasks.segmentation.model import AttentionUNetHead, small_object_target, soft_dice_loss
from tests.conftest import TINY_TASK, compose_config, train_tiny_checkpoint

from attnlab import cli
from attnlab.attention import AttentionGate


def test_gate_matches_the_additive_formula_in_float64():
    torch.manual_seed(0)
    gate = AttentionGate(x_channels=6, g_channels=10, inter_channels=4).double()
    x = torch.randn(2, 6, 8, 12, dtype=torch.float64)
    g = torch.randn(2, 10, 4, 6, dtype=torch.float64)  # coarser gating signal
    gated, alpha = gate(x, g)
    assert gated.shape == x.shape and alpha.shape == (2, 1, 8, 12)
    assert 0 <= alpha.min() and alpha.max() <= 1
    # alpha = sigmoid(psi^T ReLU(W_x x + up(W_g g + b_g)) + b_psi), written out with einsum
    wx = gate.theta_x.weight[:, :, 0, 0]
    wg, bg = gate.phi_g.weight[:, :, 0, 0], gate.phi_g.bias
    psi, bpsi = gate.psi.weight[0, :, 0, 0], gate.psi.bias
    projected_g = torch.einsum("ic,bchw->bihw", wg, g) + bg[:, None, None]
    upsampled = F.interpolate(projected_g, size=(8, 12), mode="bilinear", align_corners=False)
    hidden = torch.relu(torch.einsum("ic,bchw->bihw", wx, x) + upsampled)
    expected = torch.sigmoid(torch.einsum("i,bihw->bhw", psi, hidden) + bpsi)[:, None]
    torch.testing.assert_close(alpha, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gated, x * expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="channels must be >= 1"):
        AttentionGate(x_channels=0, g_channels=2, inter_channels=2)


def test_soft_dice_loss_is_zero_for_perfect_logits_and_ignores_ignored_pixels():
    target = torch.randint(0, 4, (2, 9, 9))
    target[0, :2] = 255
    perfect = F.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2).float() * 50.0
    assert soft_dice_loss(perfect, target, ignore_index=255) < 1e-3
    wrong = perfect.roll(1, dims=1)  # every pixel scored as the next class
    assert soft_dice_loss(wrong, target, ignore_index=255) > 0.9
    changed = perfect.clone()
    changed[0, :, :2] = torch.randn(4, 2, 9) * 10  # only ignored pixels change
    torch.testing.assert_close(soft_dice_loss(changed, target, ignore_index=255),
                               soft_dice_loss(perfect, target, ignore_index=255))


def test_small_objects_are_connected_regions_under_the_height():
    labels = np.zeros((40, 40), np.uint8)
    labels[2:10, 2:6] = 3  # 8 px high: small
    labels[15:35, 10:14] = 3  # 20 px high: large, same class
    labels[20:31, 30:33] = 7  # 11 px high: small
    labels[0:5, 30:35] = 255  # ignore is never an object
    small = small_objects(labels, small_height=12, ignore_index=255)
    assert small[2:10, 2:6].all() and small[20:31, 30:33].all()
    assert small.sum() == 8 * 4 + 11 * 3


def test_miou_small_scores_only_the_surroundings_of_small_objects():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 2:4, 2:4] = 1
    small = target == 1
    near = small_object_target(target, small, margin=1, ignore_index=255)
    assert (near != 255).sum() == 16  # the 2x2 object and a 1-pixel ring around it
    assert (near[0, 1:5, 1:5] != 255).all()


def test_metrics_share_one_dice_state_and_match_independent_torchmetrics():
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

    head = AttentionUNetHead(dim=8, level_channels=[4, 8], num_classes=4, class_names=list("abcd"), small_margin=1)
    metrics = head.build_metrics().clone(prefix="val/segmentation/")
    generator = torch.Generator().manual_seed(0)
    for _epoch in range(2):  # the second epoch after a reset: shared states start again from zero
        f1 = MulticlassF1Score(4, ignore_index=255, average="none")
        jaccard, jaccard_small = (MulticlassJaccardIndex(4, ignore_index=255, average="macro") for _ in range(2))
        for _ in range(3):
            logits = torch.randn(2, 4, 12, 12, generator=generator)
            target = torch.randint(0, 4, (2, 12, 12), generator=generator)
            target[:, 0] = 255
            small = torch.rand(2, 12, 12, generator=generator) > 0.9
            head.update_metrics(metrics, {"logits": logits}, {"mask": target, "small": small})
            preds = logits.argmax(1)
            f1.update(preds, target)
            jaccard.update(preds, target)
            jaccard_small.update(preds, small_object_target(target, small, margin=1, ignore_index=255))
        computed = {k.split("/")[-1]: v for k, v in metrics.compute().items()}
        per_class = f1.compute()
        for k, name in enumerate("abcd"):
            torch.testing.assert_close(computed[f"dice_{name}"], per_class[k])
        torch.testing.assert_close(computed["dice"], per_class.mean())
        torch.testing.assert_close(computed["miou"], jaccard.compute())
        torch.testing.assert_close(computed["miou_small"], jaccard_small.compute())
        assert not torch.isclose(computed["miou"], computed["miou_small"])
        metrics.reset()


def _pairs(count: int, *, size: tuple[int, int] = (24, 24), offset: int = 0) -> tuple[list, list]:
    """Grey images and masks: a bright rectangle of class 1 + offset on class `offset` (reduce_labels sets: 1)."""
    rng = np.random.default_rng(count)
    images, masks = [], []
    for _ in range(count):
        pixels = (rng.random(size[::-1]) * 40).astype(np.uint8)
        mask = np.full(size[::-1], offset, np.uint8)
        top, left = rng.integers(2, size[1] // 2), rng.integers(2, size[0] // 2)
        pixels[top : top + 8, left : left + 6] = 230
        mask[top : top + 8, left : left + 6] = 1 + offset
        images.append(PILImage.fromarray(pixels))
        masks.append(PILImage.fromarray(mask))
    return images, masks


def _pairs_dataset(count: int, *, size: tuple[int, int] = (24, 24)) -> Dataset:
    images, masks = _pairs(count, size=size)
    return Dataset.from_dict({"image": images, "annotation": masks},
                             features=Features({"image": Image(), "annotation": Image()}))


def test_joint_augmentation_moves_images_and_masks_together():
    data = SegmentationDataModule(image_size=24, num_classes=2, translate=0.2, scale=(0.7, 1.3))
    row = _pairs_dataset(1)[0]
    for seed in range(5):
        torch.manual_seed(seed)
        sample = data.preprocess(row, train=True)
        bright = sample["image"][0] > 0.3  # normalised to [-1, 1]: the rectangle stays bright
        labelled = sample["mask"] != 255
        assert labelled.float().mean() > 0.4
        agree = (bright == (sample["mask"] == 1))[labelled].float().mean()
        assert agree > 0.97, f"seed {seed}: image and mask moved apart ({agree:.3f} agreement)"
    eval_sample = data.preprocess(row, train=False)
    assert eval_sample["image"].shape == (1, 24, 24) and eval_sample["mask"].dtype == torch.long


def test_bad_masks_name_the_sample(tmp_path):
    images, masks = _pairs(3)
    wrong_size = PILImage.fromarray(np.zeros((24, 20), np.uint8))
    too_big = PILImage.fromarray(np.full((24, 24), 40, np.uint8))
    for bad, message in ((wrong_size, r"annotation is 20x24 \(W x H\) but its image is 24x24"),
                         (too_big, r"class ids \[40\] >= data.num_classes=11")):
        broken = Dataset.from_dict({"image": images, "annotation": [*masks[:2], bad]},
                                   features=Features({"image": Image(), "annotation": Image()}))
        path = tmp_path / f"bad{len(message)}"
        DatasetDict({"train": broken, "validation": broken, "test": broken}).save_to_disk(str(path))
        data = SegmentationDataModule(source="disk", path=str(path), image_size=24)
        data.setup("fit")
        assert data.splits["train"][1]["mask"].shape == (24, 24)  # good rows read
        with pytest.raises(ValueError, match=rf"sample 2 of split 'train'.*{message}"):
            data.splits["train"][2]


def test_palette_masks_read_as_class_ids_and_colour_masks_fail():
    data = SegmentationDataModule(image_size=24, num_classes=3)
    image = PILImage.new("L", (24, 24))
    ids = np.zeros((24, 24), np.uint8)
    ids[5:9, 5:9] = 2
    palette = PILImage.fromarray(ids, mode="P")
    palette.putpalette([0, 0, 0, 250, 250, 250, 128, 0, 0] + [0] * 759)  # class 2 is dark red: luminance would not be 2
    labels, _ = data.read_masks({"image": image, "annotation": palette}, image.size)
    assert np.array_equal(labels, ids)
    with pytest.raises(ValueError, match="a RGB image of shape .*single-channel mask of class ids"):
        data.read_masks({"image": image, "annotation": palette.convert("RGB")}, image.size)


def test_reduce_labels_maps_other_to_ignore():
    data = SegmentationDataModule(image_size=24, num_classes=2, reduce_labels=True)
    images, masks = _pairs(1, offset=1)  # 1 = the "other" class, 2 = the object
    labels = np.asarray(masks[0]).copy()
    labels[:3] = 0  # unlabelled in the source
    reduced, _ = data.read_masks({"image": images[0], "annotation": PILImage.fromarray(labels)}, images[0].size)
    assert reduced[:3].tolist() == np.full((3, 24), 255).tolist()
    assert set(np.unique(reduced[3:])) == {0, 1}
    assert (reduced == 1).sum() == (labels == 2).sum()


def test_trains_on_an_ade_style_rgb_disk_dataset(train_cfg, tmp_path):
    """scene_parse_150's shape: RGB images, 0 = "other" (reduce_labels), no small_objects column."""
    images, masks = _pairs(6, size=(32, 32), offset=1)
    split = Dataset.from_dict({"image": [i.convert("RGB") for i in images], "annotation": masks},
                              features=Features({"image": Image(), "annotation": Image()}))
    path = tmp_path / "ade"
    DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(path))
    cfg = train_cfg(*TINY_TASK["segmentation"], "data.source=disk", f"data.path={path}", "data.in_chans=3",
                    "data.num_classes=2", "data.reduce_labels=true", "data.hflip=true", "data.image_size=32",
                    "model.tasks.segmentation.head.class_names=null", "debug=fdr")
    cli.train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["test"]
    assert {"test/segmentation/dice_0", "test/segmentation/dice_1", "test/segmentation/miou_small"} <= set(metrics)


@pytest.mark.parametrize(
    "variant",
    [[], ["model.tasks.segmentation.head.gates=false"], ["experiment=segmentation_timm"],
     ["experiment=segmentation_timm", "model.tasks.segmentation.head.gates=false"]],
    ids=["shared_gates", "shared_plain", "timm_gates", "timm_plain"],
)
def test_fast_dev_run(train_cfg, variant):
    cfg = train_cfg(*TINY_TASK["segmentation"], *variant, "model.tasks.segmentation.head.dice_weight=1", "debug=fdr")
    cli.train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["test"]
    assert {"test/segmentation/miou", "test/segmentation/dice", "test/segmentation/miou_small",
            "test/segmentation/dice_background", "test/segmentation/dice_9"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if not k.endswith("loss"))


def test_pyramid_levels_and_gate_overhead(train_cfg):
    from hydra.utils import instantiate

    for variant, strides in (([], [1, 2, 4, 8]), (["experiment=segmentation_timm"], [1, 2, 4, 8, 16, 32])):
        model = instantiate(train_cfg(*TINY_TASK["segmentation"], *variant).model)
        plain = instantiate(train_cfg(*TINY_TASK["segmentation"], *variant,
                                      "model.tasks.segmentation.head.gates=false").model)
        batch = {"image": torch.randn(2, 1, 64, 64), "mask": torch.zeros(2, 64, 64, dtype=torch.long),
                 "small": torch.zeros(2, 64, 64, dtype=torch.bool), "index": torch.arange(2)}
        levels, _ = model.routes["segmentation"](model.backbone, model.adapters["segmentation"], batch)
        assert [64 // level.shape[-1] for level in levels] == strides
        outputs = model(batch, "segmentation")
        assert outputs["logits"].shape == (2, 11, 64, 64)
        assert sorted(k for k in outputs if k.startswith("gate_")) == [f"gate_{i}" for i in range(len(strides) - 1)]
        assert not any(k.startswith("gate_") for k in plain(batch, "segmentation"))
        gate_parameters = sum(p.numel() for p in model.heads["segmentation"].gates.parameters())
        total, plain_total = (sum(p.numel() for p in m.parameters()) for m in (model, plain))
        assert total - plain_total == gate_parameters > 0


def test_timm_indices_must_reach_the_last_stage(train_cfg):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cfg = train_cfg(*TINY_TASK["segmentation"], "experiment=segmentation_timm",
                    "model.tasks.segmentation.route.timm_indices=[0,1,2]")
    with pytest.raises(InstantiationException, match="stops before the last stage of resnet18"):
        instantiate(cfg.model)


@pytest.fixture(scope="module")
def segmentation_checkpoint(tmp_path_factory, data_dir) -> Path:
    return train_tiny_checkpoint("segmentation", tmp_path_factory.mktemp("segmentation") / "run", data_dir)


def test_eval_on_a_disk_dataset_writes_mask_pngs(segmentation_checkpoint, eval_cfg, tmp_path):
    test = _pairs_dataset(5, size=(64, 64))
    path = tmp_path / "scenes"
    DatasetDict({"test": test}).save_to_disk(str(path))
    cfg = eval_cfg(f"ckpt_path={segmentation_checkpoint}", "data.source=disk", f"data.path={path}")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True)
    metrics = cli.evaluate(cfg)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(5))
    for record in records:
        mask = np.asarray(PILImage.open(out / record["mask"]))
        assert mask.shape == (64, 64) and mask.max() < 11
        present = {str(c - 1) if c else "background" for c in np.unique(mask)} - {"background"}
        assert set(record["pixels"]) == present
        assert sum(record["pixels"].values()) == int((mask > 0).sum())
    assert {"test/segmentation/miou", "test/segmentation/miou_small"} <= set(metrics)


def test_predict_writes_overlays_and_with_viz_the_gate_maps(segmentation_checkpoint, tmp_path, data_dir):
    image = tmp_path / "digits.png"
    _pairs_dataset(1, size=(64, 64))[0]["image"].save(image)
    cfg = compose_config("predict", [f"ckpt_path={segmentation_checkpoint}", f"input={image}"], tmp_path / "p", data_dir)
    (record,) = cli.predict(cfg)
    out = Path(cfg.paths.output_dir)
    assert PILImage.open(out / record["overlay"]).size == (64, 64)
    assert PILImage.open(out / record["mask"]).size == (64, 64)
    assert not list(out.glob("*.png"))  # no figures without viz
    cfg = compose_config("predict", [f"ckpt_path={segmentation_checkpoint}", f"input={image}", "viz=true"],
                         tmp_path / "viz", data_dir)
    cli.predict(cfg)
    (picture,) = Path(cfg.paths.output_dir).glob("*.png")
    assert picture.stat().st_size > 10_000  # input, mask and the three gates' maps
