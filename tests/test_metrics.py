"""Metrics: the fast pixel metrics against scikit-learn and a plain AUPRO."""

from __future__ import annotations

import json

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from labelme_dsarad.train.metrics import (
    DEFAULT_FPR_LIMIT,
    METRIC_KEYS,
    aupro,
    best_f1,
    compute_metrics,
    image_auroc,
    pixel_ap,
    pixel_auroc,
    pixel_curves,
)

# Both AUPROs are exact (every distinct score is a threshold), so they differ
# by floating-point rounding only.
EXACT = 1e-9


def aupro_reference(maps, masks, fpr_limit: float = DEFAULT_FPR_LIMIT) -> float:
    """AUPRO the slow and plain way, to check ``aupro`` against. Tiny inputs only.

    Tries every distinct score as a threshold, labels regions by flood fill and
    counts overlaps directly.
    """
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    masks = [np.asarray(m, dtype=bool) for m in masks]
    regions = [(i, region) for i, mask in enumerate(masks) for region in _flood_fill_regions(mask)]
    negatives = sum(int((~mask).sum()) for mask in masks)
    points = [(0.0, 0.0)]
    for threshold in sorted({float(s) for m in maps for s in m.ravel()}, reverse=True):
        predicted = [m >= threshold for m in maps]
        false_positives = sum(int((p & ~mask).sum()) for p, mask in zip(predicted, masks))
        overlaps = [(predicted[i] & region).sum() / region.sum() for i, region in regions]
        points.append((false_positives / negatives, float(np.mean(overlaps))))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def _flood_fill_regions(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected regions of a bool mask, one bool mask each."""
    height, width = mask.shape
    seen = np.zeros_like(mask)
    regions = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        region = np.zeros_like(mask)
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            region[y, x] = True
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        regions.append(region)
    return regions


@st.composite
def maps_and_masks(draw, max_side: int = 8):
    """1-3 maps of their own sizes with masks; scores tie often or never."""
    count = draw(st.integers(1, 3))
    # Few levels: many ties, also between normal and defect pixels.
    tied = draw(st.booleans())
    elements = st.integers(0, 4).map(float) if tied else st.floats(-2, 3, width=32, allow_subnormal=False)
    maps, masks = [], []
    for _ in range(count):
        shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
        maps.append(draw(hnp.arrays(np.float32, shape, elements=elements)))
        masks.append(draw(hnp.arrays(bool, shape)))
    flat = np.concatenate([m.ravel() for m in masks])
    if flat.all() or not flat.any():
        masks[0].flat[0] = not masks[0].flat[0]  # the metrics need both kinds of pixel
        flat = np.concatenate([m.ravel() for m in masks])
    if flat.all() or not flat.any():
        masks.append(np.array([[not flat[0]]]))
        maps.append(np.array([[0.0]], dtype=np.float32))
    return maps, masks


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays])


@settings(max_examples=60, deadline=None)
@given(maps_and_masks(), st.sampled_from([0.05, 0.3, 1.0]))
def test_aupro_matches_the_plain_reference(case, fpr_limit):
    maps, masks = case
    assert aupro(maps, masks, fpr_limit) == pytest.approx(aupro_reference(maps, masks, fpr_limit), abs=EXACT)


# Two thresholds tie at F1 1/3 (8/24 and 10/30), which precision and recall round apart.
F1_TIE_CASE = ([np.ones((1, 3), np.float32), np.array([[0] * 4 + [1] * 2] + [[1] * 6] * 2, np.float32),
                np.array([[0, 0, 1, 1]], np.float32)],
               [np.array([[True, True, False]]), np.zeros((3, 6), bool), np.array([[False, True, True, True]])])


@settings(max_examples=60, deadline=None)
@given(maps_and_masks())
@example(case=F1_TIE_CASE)
def test_pixel_metrics_match_scikit_learn(case):
    maps, masks = case
    scores, labels = flat(maps), flat(masks)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert pixel_ap(maps, masks) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    fast_f1, fast_threshold = pixel_curves(maps, masks).best_f1()
    sklearn_f1, sklearn_threshold = best_f1(scores, labels)
    assert fast_f1 == pytest.approx(sklearn_f1, abs=1e-12)
    assert fast_threshold == sklearn_threshold


def blob_masks(count: int, side: int, seed: int) -> list[np.ndarray]:
    """Masks with rectangles of different sizes in every other image."""
    rng = np.random.default_rng(seed)
    masks = []
    for i in range(count):
        mask = np.zeros((side, side), dtype=bool)
        if i % 2:
            top, left = rng.integers(0, side // 2, 2)
            mask[top : top + rng.integers(2, side // 2), left : left + rng.integers(2, side // 2)] = True
        masks.append(mask)
    return masks


def test_aupro_of_perfect_inverted_and_random_maps():
    masks = blob_masks(60, 64, seed=0)  # 30 regions: the random AUPRO's spread is about 0.006
    perfect = [mask.astype(np.float32) for mask in masks]
    inverted = [1 - p for p in perfect]
    rng = np.random.default_rng(1)
    random = [rng.random(mask.shape, dtype=np.float32) for mask in masks]
    assert aupro(perfect, masks) == pytest.approx(1.0, abs=EXACT)
    assert aupro(inverted, masks) == 0.0
    # Random scores flag the same fraction of every region as of the normal
    # pixels: PRO(fpr) ~ fpr, so the area up to 0.3, over 0.3, is 0.15.
    assert aupro(random, masks, 0.3) == pytest.approx(0.15, abs=0.02)
    assert aupro(random, masks, 1.0) == pytest.approx(0.5, abs=0.03)


def test_aupro_weighs_regions_not_pixels():
    # A 100-pixel region found at once and a 4-pixel one found last: PRO is
    # 1/2 until the very end, whatever the pixel counts.
    mask = np.zeros((20, 20), dtype=bool)
    mask[0:10, 0:10] = True
    mask[15:17, 15:17] = True
    score_map = np.random.default_rng(0).random((20, 20), dtype=np.float32)
    score_map[0:10, 0:10] = 2.0
    score_map[15:17, 15:17] = -1.0
    assert aupro([score_map], [mask]) == pytest.approx(0.5, abs=EXACT)
    assert pixel_auroc([score_map], [mask]) > 0.95


def test_regions_are_8_connected():
    # Three pixels touching by edge and corner are one region with one third
    # found; as two regions the mean overlap would be 1/2.
    mask = np.zeros((5, 5), dtype=bool)
    mask[0, 0] = mask[0, 1] = mask[1, 2] = True
    score_map = np.random.default_rng(0).random((5, 5), dtype=np.float32)
    score_map[mask] = -1.0
    score_map[1, 2] = 5.0
    assert aupro([score_map], [mask]) == pytest.approx(1 / 3, abs=EXACT)
    assert aupro_reference([score_map], [mask]) == pytest.approx(1 / 3, abs=EXACT)


def test_image_metrics():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert image_auroc(scores, labels) == 0.75
    # At 0.35: two of two defects, one false alarm: precision 2/3, recall 1.
    assert best_f1(scores, labels) == pytest.approx((0.8, 0.35))


def test_best_f1_prefers_the_highest_of_equal_thresholds():
    # Threshold 4 (precision 1, recall 1/2) and threshold 1 (1/2, 1) both
    # give F1 2/3, the others less; the higher threshold flags fewer normals.
    f1, threshold = best_f1([4.0, 3.0, 2.0, 1.0], [1, 0, 0, 1])
    assert f1 == pytest.approx(2 / 3) and threshold == 4.0


def type_case():
    """4 normals, 2 'A' defects scored well, 2 'B' defects scored backwards."""
    rng = np.random.default_rng(0)
    types = ["good"] * 4 + ["A", "A", "B", "B"]
    maps, masks, scores = [], [], []
    for kind in types:
        mask = np.zeros((16, 16), dtype=bool)
        score_map = rng.random((16, 16), dtype=np.float32) * 0.4
        if kind != "good":
            mask[4:9, 5:11] = True
            score_map[mask] = 0.9 if kind == "A" else 0.0
        maps.append(score_map)
        masks.append(mask)
        scores.append(0.01 if kind == "B" else float(score_map.max()))
    return maps, masks, scores, [kind != "good" for kind in types], types


def test_compute_metrics_overall_and_per_type():
    maps, masks, scores, labels, types = type_case()
    metrics = compute_metrics(maps, masks, scores, labels, types)
    json.dumps(metrics, allow_nan=False)  # serialisable as strict JSON
    assert set(metrics["overall"]) == set(METRIC_KEYS)
    assert list(metrics["per_type"]) == ["A", "B"]
    assert metrics["num_images"] == {"good": 4, "A": 2, "B": 2}
    a, b = metrics["per_type"]["A"], metrics["per_type"]["B"]
    assert a["image_auroc"] == 1.0 and a["pixel_auroc"] == 1.0 and a["aupro"] == pytest.approx(1.0)
    assert b["image_auroc"] == 0.0 and b["pixel_auroc"] < 0.05 and b["aupro"] == 0.0
    # Per type = the plain functions on that type's images plus the normals.
    b_images = [0, 1, 2, 3, 6, 7]
    b_maps, b_masks = [maps[i] for i in b_images], [masks[i] for i in b_images]
    assert b["pixel_ap"] == pytest.approx(pixel_ap(b_maps, b_masks), abs=1e-12)
    assert metrics["overall"]["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks), abs=1e-12)
    assert metrics["overall"]["aupro"] == pytest.approx(aupro(maps, masks), abs=1e-12)
    assert 0.0 < metrics["overall"]["image_auroc"] < 1.0


def test_compute_metrics_leaves_undefined_values_none():
    maps, masks, scores, labels, types = type_case()
    metrics = compute_metrics(maps[4:], masks[4:], scores[4:], labels[4:], types[4:])  # no normals
    assert metrics["overall"]["image_auroc"] is None
    assert metrics["overall"]["pixel_auroc"] is not None  # normal pixels around the defects
    only_normals = compute_metrics(maps[:4], masks[:4], scores[:4], labels[:4], types[:4])
    assert only_normals["overall"] == dict.fromkeys(METRIC_KEYS) and only_normals["per_type"] == {}


def test_inputs_are_checked():
    maps, masks, scores, labels, types = type_case()
    with pytest.raises(ValueError, match="labelled normal"):
        compute_metrics(maps, masks, scores, [False] * 8, types)
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc([np.zeros((3, 3))], [np.zeros((3, 4), bool)])
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc([np.full((2, 2), np.nan)], [np.eye(2, dtype=bool)])
    with pytest.raises(ValueError, match="both"):
        aupro([np.zeros((2, 2))], [np.zeros((2, 2), bool)])
