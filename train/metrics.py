"""Anomaly-detection metrics: image and pixel AUROC, AP, best F1 and AUPRO.

Inputs are, per image, an anomaly map (HxW float, any score where higher means
more anomalous; maps may differ in size from image to image) and a
ground-truth bool mask of the same shape (all False for a normal image), plus
one score and one label per image. Scores are compared in float32.

Image-level metrics come straight from scikit-learn. Pixel-level metrics over
hundreds of maps mean tens of millions of pixels, where scikit-learn is slow
(input checks, an argsort for each metric), so all pixel metrics here come
from one exact set of curve vertices (``PixelCurves``); the tests check them against
scikit-learn and against a slow, plain AUPRO of their own. Every pixel is
used: nothing is subsampled. To bound memory, a caller may shrink maps and
masks first with ``downsample_for_metrics``, as ``evaluation.evaluate`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score

METRIC_KEYS = (
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "pixel_ap",
    "image_best_f1",
    "pixel_best_f1",
)
DEFAULT_FPR_LIMIT = 0.3
_NORMAL_GROUP = "\0normal images"  # cannot clash with a defect type's name


# --- Image level -------------------------------------------------------------


def image_auroc(scores, labels) -> float:
    """Area under the ROC curve of the image scores."""
    return float(roc_auc_score(np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)))


# F1 values this close are equal: the same F1 computed two ways (from precision
# and recall, or from counts) can differ in the last bit.
F1_TIE = 1e-12


def best_f1(scores, labels) -> tuple[float, float]:
    """(best F1, threshold reaching it); a score >= threshold means anomalous.

    Among thresholds with the same F1, the highest is returned (fewest false
    alarms).
    """
    precision, recall, thresholds = precision_recall_curve(
        np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64)
    )
    # The last (precision 1, recall 0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    best = int(np.flatnonzero(f1 >= f1.max() - F1_TIE)[-1])  # thresholds ascend: the last is highest
    return float(f1[best]), float(thresholds[best])


# --- Pixel level --------------------------------------------------------------
#
# Defect pixels are few, normal pixels many. Every curve only changes shape at
# the scores of defect pixels: between two of them the TPR and PRO stay put
# while the FPR grows, a straight horizontal segment. So the normal pixels'
# scores are sorted once (np.sort on float32 is fast, argsort far slower)
# and only counted, by binary search, at the defect pixels' distinct scores.


@dataclass(frozen=True)
class _PixelGroup:
    """The pixels of some images, ready for counting."""

    negatives: np.ndarray  # float32 scores of normal pixels, ascending
    positives: np.ndarray  # float32 scores of defect pixels
    overlap_gains: np.ndarray  # per defect pixel: 1 / size of its region
    regions: int  # ground-truth regions (connected components) in these images


def downsample_for_metrics(
    score_map: np.ndarray, mask: np.ndarray, max_side: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The map (area) and its mask (nearest) shrunk to at most ``max_side``; None keeps full size."""
    height, width = score_map.shape
    if max_side is None or max(height, width) <= max_side:
        return score_map, mask
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_map = cv2.resize(score_map, size, interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return small_map, small_mask


def _as_pairs(maps, masks) -> tuple[list[np.ndarray], list[np.ndarray]]:
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    masks = [np.asarray(m, dtype=bool) for m in masks]
    if len(maps) != len(masks):
        raise ValueError(f"got {len(maps)} maps but {len(masks)} masks")
    for i, (score_map, mask) in enumerate(zip(maps, masks)):
        if score_map.ndim != 2 or score_map.shape != mask.shape:
            raise ValueError(f"map {i} has shape {score_map.shape} but its mask {mask.shape}")
        if not np.isfinite(score_map).all():
            raise ValueError(f"map {i} contains NaN or infinite scores")
    return maps, masks


def _pixel_group(maps, masks) -> _PixelGroup:
    maps, masks = _as_pairs(maps, masks)
    negatives, positives, gains, regions = [], [], [], 0
    for score_map, mask in zip(maps, masks):
        negatives.append(score_map[~mask])
        positives.append(score_map[mask])
        # 8-connectivity, as MVTec AD's own evaluation code labels regions.
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        region_of_pixel = labels[mask]
        gains.append(1.0 / np.bincount(region_of_pixel, minlength=count)[region_of_pixel])
        regions += count - 1
    empty = np.empty(0, dtype=np.float32)
    return _PixelGroup(
        negatives=np.sort(np.concatenate([empty, *negatives])),
        positives=np.concatenate([empty, *positives]),
        overlap_gains=np.concatenate([np.empty(0), *gains]),
        regions=regions,
    )


@dataclass(frozen=True)
class PixelCurves:
    """Counts at every distinct defect-pixel score, highest first.

    At vertex k (threshold ``thresholds[k]``, a pixel is flagged when its
    score is >= it): ``tp`` defect pixels and ``fp`` normal pixels are
    flagged, ``fp_above`` normal pixels score strictly higher, and ``pro`` is
    the per-region overlap averaged over all ground-truth regions. The full
    curves (``roc``, ``pro_curve``) are the polylines through these vertices,
    which is what they are at every other threshold too.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fp_above: np.ndarray
    pro: np.ndarray
    positives: int
    negatives: int

    def _polyline(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, values) from (0, 0) to FPR 1: each vertex is reached from
        (fp_above, previous value), where the normal pixels tied with it begin."""
        k = len(self.thresholds)
        fp, y = np.empty(2 * k + 2), np.empty(2 * k + 2)
        fp[0], y[0] = 0, 0
        fp[1:-1:2], y[1:-1:2] = self.fp_above, np.concatenate([[0.0], values[:-1]])
        fp[2:-1:2], y[2:-1:2] = self.fp, values
        fp[-1], y[-1] = self.negatives, values[-1]
        return fp / self.negatives, y

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) polyline."""
        self._require_both("the pixel ROC")
        return self._polyline(self.tp / self.positives)

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, PRO) polyline."""
        self._require_both("the PRO curve")
        return self._polyline(self.pro)

    def _require_both(self, metric: str) -> None:
        if self.positives == 0 or self.negatives == 0:
            raise ValueError(f"{metric} needs both defect and normal pixels")

    def auroc(self) -> float:
        return float(auc(*self.roc()))

    def average_precision(self) -> float:
        """Step-wise AP as scikit-learn's average_precision_score defines it."""
        self._require_both("pixel AP")
        recall_gain = np.diff(self.tp, prepend=0) / self.positives
        return float(np.sum(recall_gain * self.tp / (self.tp + self.fp)))

    def best_f1(self) -> tuple[float, float]:
        """(best F1, threshold); the highest threshold among equals, as ``best_f1``.

        No other threshold can do better: it flags no more defect pixels than
        the vertex above it, and at least as many normal ones.
        """
        self._require_both("pixel F1")
        f1 = 2 * self.tp / (self.tp + self.fp + self.positives)
        best = int(np.flatnonzero(f1 >= f1.max() - F1_TIE)[0])  # thresholds descend: the first is highest
        return float(f1[best]), float(self.thresholds[best])

    def aupro(self, fpr_limit: float = DEFAULT_FPR_LIMIT) -> float:
        return _area_up_to(*self.pro_curve(), fpr_limit) / fpr_limit


def _curves(groups: Sequence[_PixelGroup]) -> PixelCurves:
    positives = np.concatenate([g.positives for g in groups])
    order = np.argsort(-positives, kind="stable")
    positives = positives[order]
    gains = np.concatenate([g.overlap_gains for g in groups])[order]
    regions = sum(g.regions for g in groups)
    # Last index of every run of equal scores: one vertex per distinct score.
    ends = np.flatnonzero(np.append(positives[1:] != positives[:-1], positives.size > 0))
    thresholds = positives[ends]
    fp = sum(g.negatives.size - np.searchsorted(g.negatives, thresholds, side="left") for g in groups)
    fp_above = sum(g.negatives.size - np.searchsorted(g.negatives, thresholds, side="right") for g in groups)
    return PixelCurves(
        thresholds=thresholds.astype(np.float64),
        tp=(ends + 1).astype(np.int64),
        fp=np.asarray(fp, dtype=np.int64),
        fp_above=np.asarray(fp_above, dtype=np.int64),
        pro=np.cumsum(gains)[ends] / max(regions, 1),
        positives=int(positives.size),
        negatives=int(sum(g.negatives.size for g in groups)),
    )


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under (x, y) for x in [0, limit]; x ascends from 0.

    The curve is cut at ``limit`` by linear interpolation on the segment that
    crosses it.
    """
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"FPR limit must be in (0, 1], got {limit}")
    inside = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:inside], y[:inside]
    if inside < len(x) and xs[-1] < limit:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.trapezoid(ys, xs))


def pixel_curves(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> PixelCurves:
    """The exact ROC and PRO curves of all pixels of all maps."""
    return _curves([_pixel_group(maps, masks)])


def pixel_auroc(maps, masks) -> float:
    """AUROC over all pixels of all maps."""
    return pixel_curves(maps, masks).auroc()


def pixel_ap(maps, masks) -> float:
    """Average precision over all pixels of all maps."""
    return pixel_curves(maps, masks).average_precision()


def aupro(maps, masks, fpr_limit: float = DEFAULT_FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it.

    The MVTec AD definition (as in anomalib): at each threshold, the overlap
    of every connected ground-truth region with the predicted pixels is
    averaged over all regions of all images, the FPR is taken over the normal
    pixels of all images, and the PRO-vs-FPR curve is integrated exactly
    (every distinct score is a threshold, trapezoids, cut at ``fpr_limit`` by
    interpolation). 1 is perfect; a random map gives about fpr_limit / 2.
    """
    return pixel_curves(maps, masks).aupro(fpr_limit)


# --- Everything at once -------------------------------------------------------


def _metrics_of(
    groups: dict[str, _PixelGroup],
    selected_groups: Sequence[str],
    scores: np.ndarray,
    labels: np.ndarray,
    selected: np.ndarray,
    fpr_limit: float,
) -> dict:
    """The METRIC_KEYS over the selected images; None where undefined."""
    result = dict.fromkeys(METRIC_KEYS)
    image_scores, image_labels = scores[selected], labels[selected]
    if image_labels.any() and not image_labels.all():
        result["image_auroc"] = image_auroc(image_scores, image_labels)
        result["image_best_f1"] = best_f1(image_scores, image_labels)[0]
    curves = _curves([groups[name] for name in selected_groups])
    if curves.positives and curves.negatives:
        result["pixel_auroc"] = curves.auroc()
        result["aupro"] = curves.aupro(fpr_limit)
        result["pixel_ap"] = curves.average_precision()
        result["pixel_best_f1"] = curves.best_f1()[0]
    return result


def compute_metrics(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    image_scores,
    image_labels,
    defect_types: Sequence[str],
    fpr_limit: float = DEFAULT_FPR_LIMIT,
) -> dict:
    """All metrics, overall and per defect type; JSON-serialisable.

    Returns ``{"overall": {key: value}, "per_type": {type: {key: value}},
    "num_images": {type: count}, "fpr_limit": fpr_limit}`` with the keys of
    METRIC_KEYS. A defect type is measured on its images against all normal
    images (label False). A value is None where it is undefined (e.g. no
    normal images). Best F1 values are at the threshold that maximises them
    on this very set: a ceiling, not a deployable number.
    """
    scores = np.asarray(image_scores, dtype=np.float64)
    labels = np.asarray(image_labels, dtype=bool)
    types = np.array([str(t) for t in defect_types], dtype=object)
    if not len(scores) == len(labels) == len(types) == len(maps) == len(masks):
        raise ValueError(
            f"got {len(maps)} maps, {len(masks)} masks, {len(scores)} scores, "
            f"{len(labels)} labels and {len(types)} defect types"
        )
    for i, (mask, label) in enumerate(zip(masks, labels)):
        if not label and np.any(mask):
            raise ValueError(f"image {i} is labelled normal but its mask marks defects")
    defect_types_seen = list(dict.fromkeys(types[labels]))
    # One pixel group per defect type plus one of the normal images, so that
    # every subset below reuses the same sorted pixels.
    members = {name: labels & (types == name) for name in defect_types_seen}
    members[_NORMAL_GROUP] = ~labels
    groups = {
        name: _pixel_group([maps[int(i)] for i in np.flatnonzero(m)], [masks[int(i)] for i in np.flatnonzero(m)])
        for name, m in members.items()
    }
    per_type = {
        name: _metrics_of(groups, [name, _NORMAL_GROUP], scores, labels, ~labels | members[name], fpr_limit)
        for name in defect_types_seen
    }
    everything = np.ones(len(labels), dtype=bool)
    return {
        "overall": _metrics_of(groups, list(groups), scores, labels, everything, fpr_limit),
        "per_type": per_type,
        "num_images": {name: int(np.count_nonzero(types == name)) for name in dict.fromkeys(types)},
        "fpr_limit": float(fpr_limit),
    }
