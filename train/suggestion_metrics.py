"""How the suggestions a person would see compare with the real defects.

Pixel and image metrics rank scores; these measure the polygons at the
model's own threshold, as the plugin and ``dsarad predict`` draw them. A
*labelled defect* is one connected region (8-connected) of an image's
ground-truth mask; a *suggestion* is one polygon.

- ``defect_best_iou``: per labelled defect, the IoU with its best-overlapping
  suggestion (0 when none overlaps), averaged over all labelled defects;
- ``defects_touched``: the share of labelled defects that some suggestion
  overlaps;
- ``false_suggestions_per_normal``: suggestions per defect-free image;
- ``false_suggestions``: the share of all suggestions that overlap no
  labelled defect;
- ``suggestion_iou``: per defect image, the IoU of all its suggestions
  together with its whole mask, averaged;
- ``normal_images_with_suggestions``: the share of defect-free images with
  at least one suggestion;
- ``pixel_f1_at_threshold`` and ``image_f1_at_threshold``: F1 of the pixels
  and of the image scores at the threshold;
- ``kind_accuracy``: where the suggestions and the labels name defect kinds,
  the share of suggestions overlapping a labelled defect whose kind is that
  defect's (None when the labels name no kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from labelme_dsarad.model.polygons import Region

from .labels import rasterise_shapes


@dataclass
class SuggestionTally:
    """Counts over the images seen so far; ``summary()`` turns them into the metrics."""

    threshold: float
    defect_ious: list[float] = field(default_factory=list)  # one per labelled defect
    image_ious: list[float] = field(default_factory=list)  # one per defect image
    normal_images: int = 0
    normal_images_flagged: int = 0
    suggestions: int = 0
    suggestions_on_normals: int = 0
    false_suggestions: int = 0
    kinds_named: int = 0  # matched suggestions whose defect has a known kind
    kinds_right: int = 0
    pixel_true: int = 0
    pixel_false: int = 0
    defect_pixels: int = 0
    image_flags: list[tuple[bool, bool]] = field(default_factory=list)  # (score >= threshold, is a defect image)

    def add(self, score_map: np.ndarray, image_score: float, regions: list[Region], truth: np.ndarray,
            region_kinds: list[str] | None = None, truth_kinds: np.ndarray | None = None) -> None:
        """One image: its normalised map and score, its suggestions, its ground-truth mask.

        ``region_kinds`` names each suggestion (its kind, or the model's generic label);
        ``truth_kinds`` is a (H, W) array of kind names (None or "" where no
        kind is known).
        """
        height, width = truth.shape
        is_defect_image = bool(truth.any())
        self.image_flags.append((image_score >= self.threshold, is_defect_image))
        flagged = score_map >= self.threshold
        self.pixel_true += int(np.count_nonzero(flagged & truth))
        self.pixel_false += int(np.count_nonzero(flagged & ~truth))
        self.defect_pixels += int(np.count_nonzero(truth))
        self.suggestions += len(regions)
        if not is_defect_image:
            self.normal_images += 1
            self.normal_images_flagged += bool(regions)
            self.suggestions_on_normals += len(regions)
            self.false_suggestions += len(regions)
            return
        labels, areas = labelled_defects(truth)
        best = np.zeros(len(areas))
        union = np.zeros_like(truth)
        for index, region in enumerate(regions):
            suggested = rasterise_shapes([{"points": region.points}], height, width)
            union |= suggested
            overlaps, ious = defect_overlaps(suggested, labels, areas)
            best = np.maximum(best, ious)
            if not overlaps.any():
                self.false_suggestions += 1
                continue
            if truth_kinds is not None and region_kinds is not None:
                defect = int(np.argmax(overlaps))
                kind = truth_kinds[labels == defect][0] if areas[defect] else None
                if kind:
                    self.kinds_named += 1
                    self.kinds_right += region_kinds[index] == kind
        self.defect_ious += best[1:].tolist()
        self.image_ious.append(np.count_nonzero(union & truth) / max(int(np.count_nonzero(union | truth)), 1))

    def summary(self) -> dict:
        defects = len(self.defect_ious)
        flags = np.array(self.image_flags, dtype=bool).reshape(-1, 2)
        image_true = int(np.count_nonzero(flags[:, 0] & flags[:, 1]))
        image_false = int(np.count_nonzero(flags[:, 0] & ~flags[:, 1]))
        image_defects = int(np.count_nonzero(flags[:, 1]))
        return {
            "defect_best_iou": float(np.mean(self.defect_ious)) if defects else None,
            "defects_touched": float(np.mean(np.array(self.defect_ious) > 0)) if defects else None,
            "false_suggestions_per_normal": (self.suggestions_on_normals / self.normal_images
                                             if self.normal_images else None),
            "false_suggestions": self.false_suggestions / self.suggestions if self.suggestions else None,
            "suggestion_iou": float(np.mean(self.image_ious)) if self.image_ious else None,
            "normal_images_with_suggestions": (self.normal_images_flagged / self.normal_images
                                               if self.normal_images else None),
            "pixel_f1_at_threshold": _f1(self.pixel_true, self.pixel_false, self.defect_pixels),
            "image_f1_at_threshold": _f1(image_true, image_false, image_defects),
            "kind_accuracy": self.kinds_right / self.kinds_named if self.kinds_named else None,
            "labelled_defects": defects,
        }


def labelled_defects(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's labelled defect (0: none; 8-connected regions of the mask) and each one's area."""
    count, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    return labels, np.bincount(labels.ravel(), minlength=count)


def defect_overlaps(suggested: np.ndarray, labels: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A suggestion's (bool mask) overlap in pixels with each labelled defect, and its IoU with
    each; index 0, the background, is zero in both."""
    overlaps = np.bincount(labels[suggested], minlength=len(areas))
    overlaps[0] = 0
    return overlaps, overlaps / np.maximum(areas + int(np.count_nonzero(suggested)) - overlaps, 1)


def best_region_ious(regions: np.ndarray, kept: np.ndarray, labels: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Per labelled defect (``labels`` 1.., ``areas`` as ``labelled_defects`` gives them), its IoU
    with the best-overlapping region of a label image ``regions`` among the ``kept`` labels (0
    when none overlaps): ``defect_overlaps`` for all regions at once, from one joint count."""
    if not len(kept):
        return np.zeros(len(areas) - 1)
    regions = regions.astype(np.int64)
    count = int(regions.max()) + 1
    overlaps = np.bincount(regions.ravel() * len(areas) + labels.ravel(),
                           minlength=count * len(areas)).reshape(count, len(areas))[kept][:, 1:]
    region_areas = np.bincount(regions.ravel(), minlength=count)[kept][:, None]
    return (overlaps / (region_areas + areas[None, 1:] - overlaps)).max(axis=0)


def _f1(true_positive: int, false_positive: int, positives: int) -> float | None:
    return 2 * true_positive / (true_positive + false_positive + positives) if positives else None
