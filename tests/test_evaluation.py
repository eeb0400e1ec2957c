"""evaluate(): metrics and report on a tiny synthetic folder data set."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from labelme_dsarad.model.inference import Prediction
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.train import evaluation
from labelme_dsarad.train.datasets import Sample, folder_test_samples
from labelme_dsarad.train.evaluated import Evaluated
from labelme_dsarad.train.evaluation import evaluate
from labelme_dsarad.train.metrics import downsample_for_metrics
from labelme_dsarad.train.report import _grid_rows
from labelme_dsarad.train.suggestion_metrics import best_region_ious, defect_overlaps, labelled_defects

DEFECT_GRAY = 230  # defects are bright boxes on a ~100 gray background


def make_folder_dataset(root: Path, normals: int = 5, defects: int = 5) -> Path:
    """root/normal, root/defect, root/masks with images of a few sizes."""
    rng = np.random.default_rng(0)
    for name in ("normal", "defect", "masks"):
        (root / name).mkdir(parents=True)
    sizes = [(48, 64), (40, 30), (64, 64)]
    for i in range(normals):
        image = rng.integers(90, 111, sizes[i % 3], dtype=np.uint8)
        cv2.imwrite(str(root / "normal" / f"n{i}.png"), image)
    for i in range(defects):
        height, width = sizes[i % 3]
        image = rng.integers(90, 111, (height, width), dtype=np.uint8)
        mask = np.zeros((height, width), dtype=np.uint8)
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        mask[top : top + 4 + i, left : left + 6] = 255
        image[mask > 0] = DEFECT_GRAY
        cv2.imwrite(str(root / "defect" / f"d{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"d{i}.png"), mask)
    return root


def prediction(score_map: np.ndarray, score: float) -> Prediction:
    return Prediction(score_map, score, score, 0.0, "cpu")


def brightness_predict(image: np.ndarray) -> Prediction:
    """A fake model that is perfect here: the defects are the bright pixels (0.7), the rest
    scores 0.2, well below where suggestions extend to."""
    grey = image[:, :, 0].astype(np.float32)
    score_map = (grey - 100.0) / (2 * (DEFECT_GRAY - 100.0)) + 0.5 - 0.3
    return prediction(score_map, float(score_map.max()))


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    return folder_test_samples(make_folder_dataset(tmp_path_factory.mktemp("folder")))


def test_perfect_predictor_writes_a_full_report(samples, tmp_path):
    report = tmp_path / "report"
    metrics = evaluate(brightness_predict, samples, report_dir=report, suggestions=SuggestionSettings(min_area=1))

    assert metrics["overall"]["image_auroc"] == 1.0
    assert metrics["overall"]["pixel_auroc"] == 1.0
    assert metrics["overall"]["aupro"] == pytest.approx(1.0)
    assert metrics["per_type"]["defect"]["image_auroc"] == 1.0
    assert metrics["num_images"] == {"good": 5, "defect": 5}
    # The suggestions a person would see are exactly the defects.
    overall = metrics["overall"]
    assert overall["labelled_defects"] == 5
    assert overall["defect_best_iou"] == pytest.approx(1.0) and overall["defects_touched"] == 1.0
    assert overall["false_suggestions_per_normal"] == 0.0 and overall["false_suggestions"] == 0.0
    assert overall["normal_images_with_suggestions"] == 0.0 and overall["image_f1_at_threshold"] == 1.0
    assert json.loads((report / "metrics.json").read_text()) == metrics
    for name in ("roc.png", "pro.png", "grid.png"):
        image = cv2.imread(str(report / name))
        assert image is not None and min(image.shape[:2]) > 300, name
    markdown = (report / "report.md").read_text()
    for link in ("(roc.png)", "(pro.png)", "(grid.png)", "(metrics.json)", "| **all** |", "| defect |"):
        assert link in markdown
    assert not list(report.glob(".*.tmp")), "temporary files left behind"


def test_scores_outside_0_1_are_not_clipped(samples):
    # Normalised scores may exceed [0, 1]: stretching them must change nothing.
    def stretched(image):
        bright = brightness_predict(image)
        return prediction((bright.score_map - 0.5) * 50, (bright.image_score - 0.5) * 50)

    def noisy(image):  # imperfect, so that clipping would show
        bright = brightness_predict(image)
        noise = np.random.default_rng(int(image.sum())).normal(0, 0.2, bright.score_map.shape)
        return prediction((bright.score_map + noise).astype(np.float32), bright.image_score + noise.max())

    def noisy_stretched(image):
        made = noisy(image)
        return prediction((made.score_map - 0.5) * 50, (made.image_score - 0.5) * 50)

    assert evaluate(stretched, samples)["overall"]["pixel_auroc"] == 1.0
    plain, wide = evaluate(noisy, samples), evaluate(noisy_stretched, samples)
    assert plain["overall"]["pixel_auroc"] < 1.0
    for key in ("pixel_auroc", "aupro", "pixel_ap", "image_auroc"):
        assert wide["overall"][key] == pytest.approx(plain["overall"][key], abs=1e-9)


def test_suggestion_metrics_count_misses_and_false_alarms(samples):
    def shifted(image):  # every map a little too high: normals light up as well
        bright = brightness_predict(image)
        return prediction(bright.score_map + 0.32, bright.image_score + 0.32)

    overall = evaluate(shifted, samples, suggestions=SuggestionSettings(min_area=1))["overall"]
    assert overall["normal_images_with_suggestions"] == 1.0 and overall["false_suggestions_per_normal"] >= 1.0
    assert overall["defect_best_iou"] < 0.5  # a defect's best suggestion is now most of its image
    assert overall["defects_touched"] == 1.0
    assert "defect_best_iou" not in evaluate(brightness_predict, samples)["overall"]


def test_predict_must_return_a_2d_map(samples):
    with pytest.raises(ValueError, match="not HxW"):
        evaluate(lambda image: prediction(np.zeros((4, 4, 3)), 0.0), samples)


def test_downsample_bounds_the_longer_side():
    score_map = np.random.default_rng(0).random((300, 200), dtype=np.float32)
    mask = np.zeros((300, 200), dtype=bool)
    mask[100:160, 50:90] = True
    small_map, small_mask = downsample_for_metrics(score_map, mask, 64)
    assert small_map.shape == small_mask.shape == (64, 43)
    assert small_mask.dtype == bool and 0.9 < small_mask.sum() / (mask.mean() * 64 * 43) < 1.1
    # Area interpolation averages, it does not pick pixels.
    assert small_map.std() < score_map.std() / 2
    assert downsample_for_metrics(score_map, mask, None)[0] is score_map
    assert downsample_for_metrics(score_map, mask, 300)[0] is score_map


def test_evaluate_downsamples_big_images(tmp_path, monkeypatch):
    root = make_folder_dataset(tmp_path / "data", normals=2, defects=2)
    seen = []
    original = evaluation.compute_metrics

    def spy(maps, masks, *args):
        seen.extend(m.shape for m in maps)
        return original(maps, masks, *args)

    monkeypatch.setattr(evaluation, "compute_metrics", spy)
    evaluate(brightness_predict, folder_test_samples(root), max_pixels_side=32)
    assert seen and all(max(shape) <= 32 for shape in seen)


def test_grid_shows_worst_cases_first():
    def item(name, anomalous, score):
        sample = Sample(Path(name), None, "x" if anomalous else "good", anomalous)
        return Evaluated(sample, score, np.zeros((2, 2)), np.zeros((2, 2), bool), None, (2, 2))

    normals = [item(f"n{i}", False, score) for i, score in enumerate([0.1, 0.9, 0.3, 0.2, 0.4, 0.05])]
    defects = [item(f"d{i}", True, score) for i, score in enumerate([0.8, 0.2, 0.95, 0.6, 0.7, 0.99])]
    rows = _grid_rows(normals + defects)
    names = [str((normals + defects)[i].sample.image_path) for i, _ in rows]
    assert names[:8] == ["n1", "n4", "n2", "n3", "d1", "d3", "d4", "d0"]
    assert names[8:] == ["d5", "d2", "n5", "n0"]  # the rest were shown already
    assert len(set(names)) == len(names) <= 16


def test_best_region_ious_are_each_defects_best_of_defect_overlaps():
    rng = np.random.default_rng(3)
    truth = rng.random((30, 40)) > 0.93
    truth[5:12, 5:15] = True
    labels, areas = labelled_defects(truth)
    regions = cv2.connectedComponents((rng.random((30, 40)) > 0.6).astype(np.uint8), connectivity=8)[1]
    kept = np.arange(1, int(regions.max()) + 1)[::2]  # only some regions became suggestions
    expected = np.zeros(len(areas) - 1)
    for label in kept:
        expected = np.maximum(expected, defect_overlaps(regions == label, labels, areas)[1][1:])
    assert expected.max() > 0
    assert np.allclose(best_region_ious(regions, kept, labels, areas), expected)
    assert not best_region_ious(regions, kept[:0], labels, areas).any()
