"""Warm-start retraining from corrected labels: split, losses, pasting, thresholds, and a tiny run end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from labelme_dsarad.cli import main
from labelme_dsarad.model.inference import Prediction
from labelme_dsarad.model.model_file import LoadedModel, file_sha256, load_model, save_model
from labelme_dsarad.model.networks import ANOMALY_LOGITS
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.model.scoring import BULK_CONFIRM_BELOW, MAX_EXTEND_TO, ScoreNormaliser
from labelme_dsarad.model.store import ModelStore
from labelme_dsarad.train.calibration import (
    EXTEND_TO_CANDIDATES,
    EXTEND_TO_MAX_SIDE,
    MIN_PEAK_CANDIDATES,
    choose_suggestion_levels,
    f1_thresholds,
    false_suggestions,
    suggestion_floor,
)
from labelme_dsarad.train.corrections import SYNTHETIC_POOL, SYNTHETIC_USES, Examples, reconstruct, split_labels
from labelme_dsarad.train.engine import Budget, objective
from labelme_dsarad.train.labels import LabelledImage, read_label_folder
from labelme_dsarad.train.losses import focal_loss, kind_loss
from labelme_dsarad.train.progress import format_retrain_result
from labelme_dsarad.train.retrain import RetrainConfig, Retrainer, RetrainResult

from .conftest import make_tiny_model

SIZE = 40
SQUARE = 8


def write_tiny_labels(folder: Path, count: int = 8) -> Path:
    """Reviewed stripes images, every other one with a bright square a person outlined."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stripes = (128 + 60 * np.sin(np.arange(SIZE) / 3.0))[None, :].repeat(SIZE, axis=0)
    for index in range(count):
        image = np.clip(stripes + rng.normal(0, 8, (SIZE, SIZE)), 0, 255).astype(np.uint8)
        shapes: list[dict] = []
        if index % 2:
            x, y = 4 + 3 * index, 6 + 2 * index
            image[y : y + SQUARE, x : x + SQUARE] = 250
            shapes = [{"label": "defect", "points": [[x, y], [x + SQUARE, y], [x + SQUARE, y + SQUARE], [x, y + SQUARE]],
                       "group_id": None, "description": "", "shape_type": "polygon", "flags": {}, "mask": None}]
        cv2.imwrite(str(folder / f"tile_{index:02d}.png"), image)
        (folder / f"tile_{index:02d}.json").write_text(json.dumps(
            {"version": "6.3.1", "flags": {"ok": True}, "shapes": shapes, "imagePath": f"tile_{index:02d}.png",
             "imageData": None, "imageHeight": SIZE, "imageWidth": SIZE}))
    return folder


def tiny_store(root: Path, product: str = "widget") -> ModelStore:
    """A store whose product has one version, v1, current."""
    store = ModelStore(root)
    make_tiny_model(root / product / "v1.safetensors", product=product, input_size=32)
    store.set_current(product, 1)
    return store


def labelled(name: str, defect: bool, pending: bool = False) -> LabelledImage:
    shape = {"label": "defect", "points": [[1, 1], [4, 1], [4, 4]]}
    return LabelledImage(Path(f"{name}.json"), Path(f"{name}.png"), [shape] if defect else [], [shape] if pending else [])


def noise_examples(count: int, generator: torch.Generator, masks: torch.Tensor | None = None) -> Examples:
    """``count`` random 64 x 64 images, defects where ``masks`` says (none without), no kinds."""
    masks = torch.zeros(count, 1, 64, 64) if masks is None else masks
    return Examples(torch.randint(0, 256, (count, 3, 64, 64), generator=generator, dtype=torch.uint8), masks,
                    torch.zeros_like(masks), torch.full((count, 1, 64, 64), -1), np.full((count, 2), 64),
                    masks.flatten(1).amax(1).numpy() > 0)


def noise_retrainer(tmp_path: Path, normals: int, defects: int, seed: int, **config) -> tuple[LoadedModel, Retrainer]:
    """A tiny 64 px base and a retrainer set on ``normals`` noise images and ``defects`` noise
    images with a 10 x 10 defect each."""
    base = load_model(make_tiny_model(tmp_path / "base.safetensors", input_size=64))
    retrainer = Retrainer(base, RetrainConfig("widget", str(tmp_path), **config), torch.device("cpu"))
    noise = torch.Generator().manual_seed(seed)
    masks = torch.zeros(defects, 1, 64, 64)
    masks[:, :, 10:20, 10:20] = 1.0
    retrainer.set_data(noise_examples(normals, noise), noise_examples(defects, noise, masks))
    return base, retrainer


def test_a_zero_batch_is_refused_before_retraining():
    with pytest.raises(ValueError, match=r"^batch size must be 1 or more, got 0$"):
        RetrainConfig("widget", "labels", steps=1, batch_size=0)


def test_split_is_per_class_deterministic_and_keeps_pending_images_in_training():
    images = [labelled(f"n{i:02d}", False) for i in range(8)] + [labelled(f"d{i:02d}", True) for i in range(12)]
    images.append(labelled("d_pending", True, pending=True))
    split = split_labels(images, holdout=0.25, calibration=0.25, seed=3)
    again = split_labels(list(reversed(images)), holdout=0.25, calibration=0.25, seed=3)
    names = lambda part: sorted(i.label_path.name for i in part)  # noqa: E731
    assert [names(p) for p in (split.train, split.calibration, split.holdout)] == \
           [names(p) for p in (again.train, again.calibration, again.holdout)]
    assert split.counts()["holdout"] == {"normal": 2, "defect": 3}  # a quarter of each class
    assert split.counts()["calibration"] == {"normal": 2, "defect": 2}
    assert "d_pending.json" in names(split.train)
    assert len(set(names(split.train)) | set(names(split.calibration)) | set(names(split.holdout))) == len(images)
    # One normal only: it trains, whatever the fractions ask.
    lone = split_labels([labelled("n", False), labelled("d", True)], holdout=0.9, calibration=0.9, seed=0)
    assert [i.label_path.name for i in lone.train] == ["n.json", "d.json"]


def test_weighted_focal_loss_is_the_focal_loss_over_weighted_pixels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, generator=generator)
    mask = (torch.rand(2, 1, 6, 6, generator=generator) > 0.7).float()
    assert focal_loss(logits, mask, weight=torch.ones_like(mask)) == pytest.approx(focal_loss(logits, mask).item())
    weight = torch.ones_like(mask)
    weight[0] = 0.0  # the first sample is ignored entirely
    assert focal_loss(logits, mask, weight=weight) == pytest.approx(focal_loss(logits[1:], mask[1:]).item())


def test_kind_loss_counts_a_small_defect_as_much_as_a_large_one():
    logits = torch.zeros(2, 2, 10, 10)
    logits[:, 0] = 3.0  # kind 0 everywhere, and sure of it
    kinds = torch.full((2, 1, 10, 10), -1)
    kinds[0, :, :5] = 0  # 50 pixels of kind 0: right
    kinds[1, :, 0, 0] = 1  # 1 pixel of kind 1: wrong
    right, wrong = (torch.nn.functional.cross_entropy(torch.tensor([[3.0, 0.0]]), torch.tensor([kind]))
                    for kind in (0, 1))
    assert kind_loss(logits, kinds) == pytest.approx(((right + wrong) / 2).item())  # not (50 right + 1 wrong) / 51
    assert kind_loss(logits, torch.full_like(kinds, -1)) == 0.0


def test_batches_are_whole_images_with_the_real_defects_their_masks_and_kinds(tmp_path):
    base = load_model(make_tiny_model(tmp_path / "base.safetensors", input_size=64))
    retrainer = Retrainer(base, RetrainConfig("widget", str(tmp_path), steps=1, batch_size=8, real_share=0.5,
                                              synthetic_share=0.25), torch.device("cpu"), kinds=("dent", "scratch"))
    masks = torch.zeros(3, 1, 64, 64)
    for index in range(3):
        masks[index, :, 40 + 4 * index : 46 + 4 * index, 50:57] = 1.0  # a 6 x 7 defect near a corner
    white = torch.where(masks > 0, 255, 0).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    kinds = torch.where(masks > 0, torch.tensor([0, 1, 0]).view(3, 1, 1, 1), -1)
    pending = torch.zeros_like(masks)
    pending[:, :, :4, :4] = 1.0  # a suggestion nobody reviewed, in a corner
    retrainer.set_data(Examples(torch.zeros(4, 3, 64, 64, dtype=torch.uint8), torch.zeros(4, 1, 64, 64),
                                torch.zeros(4, 1, 64, 64), torch.full((4, 1, 64, 64), -1), np.full((4, 2), 64),
                                np.zeros(4, bool)),
                       Examples(white, masks, pending, kinds, np.full((3, 2), 64), np.ones(3, bool)))
    batch = retrainer.batches()
    assert batch.inputs.shape == (8, 3, 64, 64) and batch.reconstructions.shape == (8, 3, 64, 64)
    assert batch.dice and len(batch.clean) == 0
    real = slice(4, 8)  # synthetic, normal, then real images (flips keep the order)
    # Each real image holds its whole defect, wherever the flips put it ...
    assert batch.masks[real].sum(dim=(1, 2, 3)).tolist() == [42.0] * 4
    # ... the image is white exactly there, and the kind comes along.
    assert torch.equal(batch.inputs[real].mean(1, keepdim=True) == 1.0, batch.masks[real] > 0)
    assert torch.equal(batch.kinds[real] >= 0, batch.masks[real] > 0)
    # Every labelled pixel counts alike; the pending suggestion's pixels not at all.
    assert set(batch.weights[real][batch.masks[real] > 0].tolist()) == {1.0}
    assert (batch.weights[real] == 0).sum(dim=(1, 2, 3)).tolist() == [16.0] * 4
    assert (batch.weights[:4] == 1).all()
    normal = slice(2, 4)
    assert not batch.masks[normal].any() and (batch.kinds[: 4] == -1).all()
    assert batch.masks[0:2].any()  # a synthetic anomaly in every synthetic image


@pytest.mark.parametrize("batch_size", [2, 3, 4, 8, 16])
def test_a_batch_of_the_default_recipe_holds_as_many_images_as_asked_and_real_defects(tmp_path, batch_size):
    base = load_model(make_tiny_model(tmp_path / "base.safetensors", input_size=32))
    retrainer = Retrainer(base, RetrainConfig("widget", str(tmp_path), steps=1, batch_size=batch_size),
                          torch.device("cpu"))
    masks = torch.zeros(3, 1, 32, 32)
    masks[:, :, 8:12, 8:12] = 1.0
    retrainer.set_data(Examples(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, 1, 32, 32),
                                torch.zeros(2, 1, 32, 32), torch.full((2, 1, 32, 32), -1), np.full((2, 2), 32),
                                np.zeros(2, bool)),
                       Examples(torch.full((3, 3, 32, 32), 255, dtype=torch.uint8), masks, torch.zeros_like(masks),
                                torch.full((3, 1, 32, 32), -1), np.full((3, 2), 32), np.ones(3, bool)))
    batch = retrainer.batches()
    assert len(batch.inputs) == batch_size
    real = (batch.inputs == 1.0).all(dim=(1, 2, 3))  # the white real images, wherever the flips put them
    assert 1 <= int(real.sum()) <= batch_size - 1


def test_synthetic_images_are_made_a_pool_at_a_time_each_used_twice_with_their_own_reconstructions(tmp_path):
    _, retrainer = noise_retrainer(tmp_path, normals=4, defects=1, seed=0, steps=1, batch_size=8)
    batches = retrainer.batches
    drawn = [batches.synthetic() for _ in range(SYNTHETIC_POOL + 1)]
    images = torch.cat([images for images, *_ in drawn])
    pool_images = torch.cat([images for images, *_ in drawn[:SYNTHETIC_POOL]])
    # A new pool after SYNTHETIC_POOL steps; within one, each image comes SYNTHETIC_USES times, half a pool apart.
    assert batches.synthetic_used == batches.synthetic_count
    made = SYNTHETIC_POOL // SYNTHETIC_USES
    assert len({image.numpy().tobytes() for image in pool_images}) == made
    assert all(torch.equal(pool_images[index], pool_images[index + made]) for index in range(made))
    assert not any(torch.equal(images[-1], image) for image in pool_images)
    # Each image comes with its own reconstruction and a synthetic anomaly.
    assert torch.allclose(torch.cat([recon for _, recon, *_ in drawn]), reconstruct(batches.student, images, batches.autocast),
                          atol=1e-5)
    assert all(masks.any() for _, _, masks, *_ in drawn)


def test_the_student_reconstructs_in_channels_last_under_the_training_steps_autocast(tmp_path):
    base = load_model(make_tiny_model(tmp_path / "base.safetensors", input_size=64))
    retrainer = Retrainer(base, RetrainConfig("widget", str(tmp_path), steps=1), torch.device("cpu"))
    kernels = [p for p in retrainer.network.student.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    entered = []
    step_autocast = retrainer.autocast

    def recording_autocast():
        entered.append("autocast")
        return step_autocast()

    retrainer.autocast = recording_autocast
    noise = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 10:20, 10:20] = 1.0
    retrainer.set_data(noise_examples(4, noise), noise_examples(2, noise, masks))
    assert len(entered) == 2  # the normals and the real defects, each in one chunk
    retrainer.batches.synthetic()
    assert len(entered) == 3  # the pool of synthetic images
    # bf16 where the CPU has bf16 units: the same reconstructions, to its rounding.
    batches = retrainer.batches
    assert batches.normal_reconstructions.dtype == torch.float32
    assert torch.allclose(batches.normal_reconstructions, reconstruct(batches.student, batches.normals), atol=0.02)


def test_retraining_batches_learn_by_weighted_cross_entropy_not_focal_loss(tmp_path):
    _, retrainer = noise_retrainer(tmp_path, normals=4, defects=2, seed=0, steps=1, batch_size=8)
    retrainer.network.eval()  # BatchNorm as the logits below see it
    batch = retrainer.batches()
    _, terms = objective(retrainer.network.student, retrainer.network.segmentation, None, batch)
    with torch.no_grad():
        logits = retrainer.network.segmentation(torch.cat([batch.reconstructions, batch.inputs], dim=1))
    per_pixel = torch.nn.functional.cross_entropy(logits[:, :ANOMALY_LOGITS], batch.masks[:, 0].long(),
                                                  reduction="none")
    weights = batch.weights[:, 0]
    assert float(terms["segmentation"]) == pytest.approx(float((per_pixel * weights).sum() / weights.sum()), rel=1e-4)
    focal = focal_loss(logits[:, :ANOMALY_LOGITS], batch.masks, weight=batch.weights)
    assert float(terms["segmentation"]) != pytest.approx(float(focal), rel=1e-2)  # the first training's loss differs


def test_retraining_leaves_the_student_as_it_was_and_the_u_net_learns(tmp_path):
    _, retrainer = noise_retrainer(tmp_path, normals=3, defects=2, seed=0, steps=3, batch_size=4, learning_rate=1e-2)
    student_before = {name: value.clone() for name, value in retrainer.network.student.state_dict().items()}
    u_net_before = {name: value.clone() for name, value in retrainer.network.segmentation.state_dict().items()}
    history = retrainer.train(Budget(steps=3), lambda event: None)
    assert history["steps"] == 3
    assert set(history["final_losses"]) == {"segmentation", "dice"}  # no reconstruction or distillation term
    for name, value in retrainer.network.student.state_dict().items():
        assert torch.equal(value, student_before[name]), name  # weights and BatchNorm statistics alike
    assert any(not torch.equal(value, u_net_before[name])
               for name, value in retrainer.network.segmentation.state_dict().items())


def test_the_u_net_trained_in_channels_last_is_saved_and_loaded_as_it_was(tmp_path):
    base, retrainer = noise_retrainer(tmp_path, normals=2, defects=2, seed=1, steps=2, batch_size=4)
    retrainer.train(Budget(steps=2), lambda event: None)
    trained = retrainer.training.result().eval()
    save_model(tmp_path / "new.safetensors", trained, replace(base.info, architecture=trained.architecture),
               storage="fp32")
    loaded = load_model(tmp_path / "new.safetensors").network.eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for ours, theirs in zip(trained(images), loaded(images)):
            torch.testing.assert_close(theirs, ours)


def test_with_the_student_frozen_the_exported_u_net_is_the_average_and_the_student_the_base(tmp_path):
    base, retrainer = noise_retrainer(tmp_path, normals=2, defects=2, seed=3, steps=3, batch_size=4)
    retrainer.train(Budget(steps=3), lambda event: None)
    live = retrainer.network
    live_before = {name: value.clone() for name, value in live.segmentation.state_dict().items()}
    exported = retrainer.training.result()
    assert exported is not live
    for name, value in exported.student.state_dict().items():
        assert torch.equal(value, base.network.student.state_dict()[name]), name
    averaged = retrainer.training.average.module.state_dict()
    for name, value in exported.segmentation.state_dict().items():
        assert torch.equal(value, averaged[name]), name
    # The average lags behind the live U-Net, which result() leaves as it was.
    assert any(not torch.equal(value, live_before[name]) for name, value in averaged.items())
    for name, value in live.segmentation.state_dict().items():
        assert torch.equal(value, live_before[name]), name


def test_thresholds_separate_defects_from_normals_at_the_best_f1():
    rng = np.random.default_rng(0)
    normal_maps = rng.uniform(0.0, 0.3, (3, 16, 16))
    defect_maps = rng.uniform(0.0, 0.3, (2, 16, 16))
    defect_maps[:, 4:8, 4:8] = rng.uniform(0.6, 0.9, (2, 4, 4))
    maps = np.concatenate([normal_maps, defect_maps]).astype(np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[3:, 4:8, 4:8] = True
    labels = np.array([False] * 3 + [True] * 2)
    scores = maps.reshape(5, -1).max(axis=1)
    fallback = ScoreNormaliser(0.5, 0.5, {"method": "fallback"})

    normaliser = f1_thresholds(maps, scores, masks, labels, np.full((5, 2), 16), fallback)
    assert "best F1" in normaliser.statistics["method"]
    normalised = normaliser.image(scores)
    assert (normalised[labels] >= 0.5).all() and (normalised[~labels] < 0.5).all()
    assert normaliser.statistics["calibration_normals_flagged"] == 0.0
    pixels = normaliser.pixel(maps)
    assert (pixels[masks] >= 0.5).all() and (pixels[~masks] < 0.5).all()

    normals_only = f1_thresholds(maps[:3], scores[:3], masks[:3], labels[:3], np.full((3, 2), 16), fallback)
    assert normals_only.image(scores[:3]).max() == pytest.approx(0.5)
    nothing = f1_thresholds(maps[:0], scores[:0], masks[:0], labels[:0], np.zeros((0, 2)), fallback)
    assert (nothing.image_threshold, nothing.pixel_threshold) == (0.5, 0.5)


def test_tiny_retrain_end_to_end_stores_a_new_version_and_leaves_the_one_in_use(tmp_path, capsys):
    labels = write_tiny_labels(tmp_path / "labels")
    store = tiny_store(tmp_path / "store")
    v1 = store.resolve("widget", 1).path
    v1_hash = file_sha256(v1)

    code = main(["retrain", "--product", "widget", "--labels", str(labels), "--store", str(store.root),
                 "--steps", "6", "--batch-size", "4", "--progress-json"])

    assert code == 0, capsys.readouterr().err
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[-1] == "done" and "progress" in kinds and "stage" in kinds
    done = events[-1]
    assert done["version"] == 2 and done["in_use"] == "widget v1" and done["previous"]["version"] == 1
    assert done["counts"]["holdout"] == {"normal": 1, "defect": 1}
    for side in ("before", "after"):
        for key in ("pixel_auroc", "image_best_f1", "pixel_best_f1", "suggestion_iou"):
            assert 0.0 <= done[side][key] <= 1.0 and math.isfinite(done[side][key]), (side, key)
    assert [stored.version for stored in store.versions("widget")] == [1, 2]
    assert store.resolve("widget").version == 1 and file_sha256(v1) == v1_hash
    new = load_model(store.resolve("widget", 2).path)
    assert new.info.training["base"]["sha256"] == v1_hash and new.info.version == 2
    # The new version maps over mirror images; the base it started from does not.
    assert new.info.architecture.flip_average and not load_model(v1).info.architecture.flip_average
    assert "best F1" in new.info.normaliser.statistics["method"]
    assert new.info.metrics["before"] == done["before"]

    assert main(["use", "widget", "v2", "--store", str(store.root)]) == 0
    assert store.resolve("widget").version == 2
    assert main(["use", "widget", "1", "--store", str(store.root)]) == 0
    assert store.resolve("widget").version == 1
    assert main(["use", "widget", "v7", "--store", str(store.root)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no version v7" in error[0]


def test_defect_free_images_given_with_normals_join_the_reviewed_ones(tmp_path, capsys):
    labels = write_tiny_labels(tmp_path / "labels")
    given = tmp_path / "defect_free"
    given.mkdir()
    (given / "extra_a.png").write_bytes((labels / "tile_00.png").read_bytes())
    (given / "extra_b.png").write_bytes((labels / "tile_02.png").read_bytes())
    store = tiny_store(tmp_path / "store")

    code = main(["retrain", "--product", "widget", "--labels", str(labels), "--normals", str(given / "extra_*.png"),
                 str(labels / "tile_00.png"), str(given), "--store", str(store.root), "--steps", "2", "--batch-size", "4",
                 "--progress-json"])

    assert code == 0, capsys.readouterr().err
    done = json.loads(capsys.readouterr().out.splitlines()[-1])
    # tile_00.png is reviewed already, and the folder names the extra images again: each counted once;
    # the two extra images join the 4 reviewed normals.
    assert done["counts"]["given_normals"] == 2
    assert sum(part["normal"] for part in (done["counts"][name] for name in ("train", "calibration", "holdout"))) == 6
    assert main(["retrain", "--product", "widget", "--labels", str(labels), "--normals", str(given / "none_*.png"),
                 "--store", str(store.root), "--steps", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "none_*.png: no file matches" in error[0]


def test_retrain_without_reviewed_images_is_a_one_line_error(tmp_path, capsys):
    labels = write_tiny_labels(tmp_path / "labels", count=2)
    for path in labels.glob("*.json"):
        data = json.loads(path.read_text())
        data["flags"] = {}
        path.write_text(json.dumps(data))
    store = tiny_store(tmp_path / "store")
    assert main(["retrain", "--product", "widget", "--labels", str(labels), "--store", str(store.root),
                 "--steps", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert error.startswith("dsarad retrain: error: ") and "no reviewed images" in error and "'ok'" in error
    assert [stored.version for stored in store.versions("widget")] == [1]


def test_retraining_learns_the_kinds_people_named_and_suggestions_carry_them(tmp_path, capsys):
    from labelme_dsarad.model.inference import Predictor

    labels = write_tiny_labels(tmp_path / "labels", count=10)
    for index, path in enumerate(sorted(labels.glob("*.json"))):  # the people's squares get a kind each
        data = json.loads(path.read_text())
        for shape in data["shapes"]:
            shape["label"] = "pit" if index % 4 == 1 else "scratch"
        path.write_text(json.dumps(data))
    store = tiny_store(tmp_path / "store")
    assert main(["retrain", "--product", "widget", "--labels", str(labels), "--store", str(store.root),
                 "--steps", "8", "--batch-size", "4", "--progress-json"]) == 0, capsys.readouterr().err
    new = load_model(store.resolve("widget", 2).path)
    assert new.info.architecture.kinds == ("pit", "scratch") and new.info.labels == ["defect"]
    image = cv2.imread(str(labels / "tile_01.png"))[:, :, ::-1]
    for backend in ("torch", "onnx"):
        prediction = Predictor(new, backend=backend).predict(image)
        assert prediction.kinds == ("pit", "scratch") and prediction.kind_map.shape == (2, 32, 32)
        assert np.allclose(prediction.kind_map.sum(axis=0), 1.0, atol=1e-4)
    done = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "kind_accuracy" in done["after"]
    # The extent of each kind's suggestions was chosen on the calibration images and travels in the file.
    assert set(new.info.normaliser.extend_to_by_kind) <= {"pit", "scratch"}
    assert set(new.info.normaliser.extend_to_by_kind.values()) <= set(EXTEND_TO_CANDIDATES)
    assert 0.0 <= new.info.normaliser.statistics["calibration_defect_iou"] <= 1.0
    assert done["thresholds"]["extend_to_by_kind"] == new.info.normaliser.extend_to_by_kind
    # So was the peak a suggestion must reach.
    assert new.info.normaliser.min_peak in (1.0, *MIN_PEAK_CANDIDATES)
    assert done["thresholds"]["min_peak"] == new.info.normaliser.min_peak
    # And the bulk confirmation's cut: the lowest score of a calibration image with defects.
    defaults = RetrainConfig("widget", str(labels))
    calibration = split_labels(read_label_folder(labels).images, defaults.holdout, defaults.calibration,
                               defaults.seed).calibration
    scores = [Predictor(new, backend="torch").predict(item.read_image()).image_score
              for item in calibration if item.is_defect]
    assert scores and new.info.normaliser.statistics[BULK_CONFIRM_BELOW] == pytest.approx(min(scores), abs=1e-5)


def kind_prediction(score_map: np.ndarray, kind: int | None, extend_to_by_kind: dict | None = None) -> Prediction:
    """A prediction by a model that names pits and scratches, sure everywhere that ``kind`` (an
    index; None: neither, at even odds) is what it sees."""
    kind_map = np.full((2, *score_map.shape), 0.4, np.float32)
    if kind is not None:
        kind_map[:] = 0.0
        kind_map[kind] = 1.0
    return Prediction(score_map.astype(np.float32), float(score_map.max()), float(score_map.max()), 0.0, "cpu",
                      ("pit", "scratch"), kind_map, extend_to_by_kind or {})


def ringed(inner: float, ring: float) -> np.ndarray:
    """A 40 x 40 map: a 10 x 10 square at ``inner`` in a 16 x 16 one at ``ring``."""
    score_map = np.zeros((40, 40), np.float32)
    score_map[12:28, 12:28] = ring
    score_map[15:25, 15:25] = inner
    return score_map


def test_each_kind_extends_as_far_as_the_model_learnt_and_the_settings_override_it():
    score_map = ringed(0.9, 0.3)  # the ring lies below DEFAULT_EXTEND_TO (0.35), above 0.2
    areas = {kind: [suggestion.region.area for suggestion in
                    kind_prediction(score_map, kind, {"pit": 0.4}).suggestions(SuggestionSettings(), "defect")]
             for kind in (0, 1, None)}
    assert areas == {0: [256], 1: [100], None: [100]}  # only a pit reaches down to 0.2
    (pit,) = kind_prediction(score_map, 0, {"pit": 0.4}).suggestions(SuggestionSettings(), "defect")
    assert (pit.label, pit.kind_probability) == ("pit", 1.0)
    given = kind_prediction(score_map, 0, {"pit": 0.4}).suggestions(SuggestionSettings(extend_to=1.0), "defect")
    assert [suggestion.region.area for suggestion in given] == [100]
    assert kind_prediction(score_map, 0).extend_map() is None  # a model without extents: the default


def test_the_extent_of_each_kind_is_chosen_where_its_defects_are_outlined_best():
    # A pit's map spreads beyond its core, down to 0.2: a person outlined all of it. A scratch's
    # map spreads beyond the scratch (to 0.4): a person outlined the core alone.
    pit_truth, scratch_truth = ringed(1, 1) > 0, ringed(1, 0) > 0
    predictions = [kind_prediction(ringed(0.9, 0.2), 0), kind_prediction(ringed(0.9, 0.4), 1)]
    levels, _, statistics = choose_suggestion_levels(zip(predictions, [pit_truth, scratch_truth]))
    assert levels == {"pit": 0.3, "scratch": 0.9}
    assert statistics["calibration_defect_iou"] == pytest.approx(1.0)
    assert statistics["calibration_defect_iou_at_default"] == pytest.approx((100 / 256 + 100 / 256) / 2)
    # A normal image whose two scratch-like spots the default joins into one suggestion: drawing
    # scratches only where the threshold is reached would make it two, so scratches keep the default.
    normal = np.zeros((40, 40), np.float32)
    normal[5:10, 5:10] = normal[5:10, 20:25] = 0.9
    normal[6:9, 10:20] = 0.4
    levels, _, _ = choose_suggestion_levels(zip([*predictions, kind_prediction(normal, 1)],
                                                [pit_truth, scratch_truth, np.zeros((40, 40), bool)]))
    assert levels == {"pit": 0.3}
    assert choose_suggestion_levels([(kind_prediction(ringed(0.9, 0.2), 0), np.zeros((40, 40), bool))]) == \
        ({}, 1.0, {})


def test_a_kind_whose_map_spreads_past_its_defects_above_the_threshold_is_cut_back():
    # A pit's map stays above the threshold (0.6) a ring beyond what a person outlined.
    levels, _, statistics = choose_suggestion_levels([(kind_prediction(ringed(0.9, 0.6), 0), ringed(1, 0) > 0)])
    assert levels == {"pit": 1.4}  # regions cut back to 0.7: the ring left out
    assert statistics["calibration_defect_iou"] == pytest.approx(1.0)
    assert statistics["calibration_defect_iou_at_default"] == pytest.approx(100 / 256)
    assert max(EXTEND_TO_CANDIDATES) <= MAX_EXTEND_TO


def test_the_lowest_peak_is_chosen_as_high_as_the_calibration_defects_allow():
    # Two pits peaking at 0.83 and 0.75, and a normal image whose false spot peaks at 0.62: peaks
    # from 1.3 times the threshold (0.65) on drop the spot, from 1.6 (0.8) on the weaker pit too,
    # which costs more IoU than MIN_PEAK_IOU_LOSS.
    weaker = ringed(0.75, 0.0)
    normal = np.zeros((40, 40), np.float32)
    normal[5:15, 5:15] = 0.62
    pairs = [(kind_prediction(ringed(0.83, 0.0), 0), ringed(1, 0) > 0), (kind_prediction(weaker, 0), weaker > 0),
             (kind_prediction(normal, 0), np.zeros((40, 40), bool))]
    levels, min_peak, statistics = choose_suggestion_levels(pairs)
    assert min_peak == 1.5 and statistics["calibration_normal_suggestions_by_min_peak"] == [1, 0]
    assert statistics["calibration_defect_iou"] == pytest.approx(1.0)
    # A model that names no kinds gets a peak all the same.
    kindless = [(replace(prediction, kinds=(), kind_map=None), truth) for prediction, truth in pairs]
    assert choose_suggestion_levels(kindless)[:2] == ({}, 1.5)


def test_the_reach_of_a_large_photo_is_chosen_on_its_map_drawn_smaller():
    # The pit of the test above, drawn at twice the side EXTEND_TO_MAX_SIDE allows: chosen alike.
    scale = 2 * EXTEND_TO_MAX_SIDE // 40
    score_map = cv2.resize(ringed(0.9, 0.2), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    truth = cv2.resize(ringed(1, 1), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) > 0
    levels, _, statistics = choose_suggestion_levels([(kind_prediction(score_map, 0), truth)])
    assert levels == {"pit": 0.3} and statistics["calibration_defect_iou"] == pytest.approx(1.0, abs=0.01)


def test_the_retrain_summary_says_how_far_each_kind_reaches(tmp_path):
    result = RetrainResult("widget", 2, tmp_path / "v2.safetensors", {"name": "widget v1", "version": 1}, {}, {},
                           {"holdout": {"defect": 1, "normal": 1}}, {"extend_to_by_kind": {"pit": 0.4}}, "widget v1")
    assert "suggestions reach, by kind: pit 0.40 (0.70 for the rest)" in format_retrain_result(result)
    cut_back = replace(result, thresholds={"extend_to_by_kind": {"hole": 1.4, "pit": 0.4}})
    assert "suggestions reach, by kind: hole 1.40 (cut back), pit 0.40 (0.70 for the rest)" in \
        format_retrain_result(cut_back)
    plain = replace(result, thresholds={"extend_to_by_kind": {}})
    assert "by kind" not in format_retrain_result(plain) and "peak" not in format_retrain_result(plain)
    peaked = replace(result, thresholds={"min_peak": 1.4})
    assert "suggestions peak at 1.40 times the threshold or higher (a normalised score of 0.70)" in \
        format_retrain_result(peaked)


def test_the_retrain_summary_explains_a_holdout_too_small_to_measure_and_how_to_switch(tmp_path):
    result = RetrainResult("magnetic_tile", 1, tmp_path / "v1.safetensors",
                           {"name": "magnetic_tile bundled", "version": "bundled"}, {"images": 3}, {"images": 3},
                           {"holdout": {"defect": 3, "normal": 0}}, {}, "magnetic_tile bundled", seconds=60.0)
    lines = format_retrain_result(result).splitlines()
    assert lines[0] == f"magnetic_tile v1 stored in {tmp_path / 'v1.safetensors'} (1.0 min); still using magnetic_tile bundled"
    assert lines[1].startswith("before and after: 3 held-out images (3 with defects, 0 normal): too few to measure")
    assert not any("AUROC" in line for line in lines)
    assert lines[-1] == "use it with: dsarad use magnetic_tile v1"


def test_retraining_thresholds_keep_the_normals_below_them():
    rng = np.random.default_rng(1)
    normal_maps = rng.uniform(0.0, 0.3, (40, 16, 16))
    normal_maps[0, 2:6, 2:6] = 0.95  # one odd normal image, brighter than the defects
    defect_maps = rng.uniform(0.0, 0.3, (2, 16, 16))
    defect_maps[:, 4:8, 4:8] = 0.5
    maps = np.concatenate([normal_maps, defect_maps]).astype(np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[40:, 4:8, 4:8] = True
    labels = np.array([False] * 40 + [True] * 2)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    normaliser = f1_thresholds(maps, scores, masks, labels, np.full((42, 2), 16), ScoreNormaliser(0.5, 0.5))
    # The best F1 alone would sit at 0.3 and put suggestions on every normal image.
    assert normaliser.image_threshold >= np.quantile(scores[:40], 0.95)
    assert normaliser.statistics["calibration_normals_flagged"] <= 0.05


def test_a_retrained_pixel_threshold_allows_half_a_suggestion_per_normal_image_at_its_own_size():
    maps = np.zeros((4, 16, 16), np.float32)
    maps[:, 6:8, 6:8] = [[[0.9]], [[0.8]], [[0.7]], [[0.6]]]  # a speck of 2 x 2 at the model's size
    # On 16 px images the speck is 4 pixels, below the 20 a suggestion needs: nothing to rise above.
    assert suggestion_floor(maps, np.full((4, 2), 16), 0.1) == pytest.approx(0.1)
    # On 64 px images it is a suggestion: at most 2 of the 4 images may keep theirs, and no more.
    large = np.full((4, 2), 64)
    floor = suggestion_floor(maps, large, 0.1)
    assert false_suggestions(maps, large, floor) <= 0.5 < false_suggestions(maps, large, floor - 0.02)
    assert false_suggestions(maps, large, 0.1) == 1.0
    # Never below the best-F1 threshold it starts from.
    assert suggestion_floor(maps, np.full((4, 2), 64), 0.85) >= 0.85

