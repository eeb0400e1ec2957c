"""Thresholds: where a model's raw scores become 0.5 (``model.scoring``).

Two rules, one per kind of calibration data:

- **normals only** (the first training's held-out normal images): the image
  threshold is the 95% quantile of their image scores, the pixel threshold
  the 95% quantile of their per-image 99.9th-percentile pixel scores, so on
  19 normal images in 20 at most 0.1% of the map lies above it. A quantile,
  not the highest: on Magnetic Tile two of 76 validation normals lie far
  above the rest, and set at the highest the threshold hid most real
  defects. With fewer than ``NORMAL_FLOOR_MINIMUM`` normals it is their
  highest;
- **real defects and normals** (corrected labels held back from retraining):
  each threshold goes where F1 is best, but no lower than the normals allow:
  the image threshold above 95% of their scores, the pixel threshold where
  they get at most ``FALSE_SUGGESTIONS_PER_NORMAL`` suggestions each, as
  suggestions are drawn (at the image's own size, default polygon settings).

Before either, ``fit_map_correction`` brings down the positions of the map
that score higher or spread wider than the median position on defect-free
images (``model.networks.MapCorrection``), so thresholds and the image-score
window are chosen on the maps the model will give.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from labelme_dsarad.model.inference import Prediction, map_at_image_size
from labelme_dsarad.model.networks import DSARAD, image_score
from labelme_dsarad.model.polygons import DEFAULT_EXTEND_TO, DEFAULT_MIN_PEAK, SuggestionSettings
from labelme_dsarad.model.scoring import ScoreNormaliser, clamp_threshold

from .metrics import best_f1, pixel_curves
from .sources import AnomalySources
from .suggestion_metrics import best_region_ious, labelled_defects
from .synthesis import synthesise

PIXEL_THRESHOLD_QUANTILE = 0.999
# Raw maps whose values spread less than this over the validation images
# are flat: the U-Net answers the same everywhere and has learnt nothing.
FLAT_MAP_SPREAD = 1e-3
BATCH = 16
# Thresholds stay above this quantile of the normals' scores (their highest,
# with fewer than NORMAL_FLOOR_MINIMUM of them): 1 normal image in 20 may lie above.
NORMAL_FLOOR_QUANTILE = 0.95
NORMAL_FLOOR_MINIMUM = 20
# A retrained model's pixel threshold gives the held-back normals at most this many
# suggestions each on average: half of the one per normal image a review can bear,
# for the noise of a few tens of calibration images. Thresholds tried: this many
# quantiles of their scores above the best F1.
FALSE_SUGGESTIONS_PER_NORMAL = 0.5
FLOOR_CANDIDATES = 64
# The extents tried per defect kind (``choose_suggestion_levels``): from far below the threshold
# to only where it is reached, and above it, for a kind whose regions spread past its defects
# (Magnetic Tile's blowholes: docs/experiments.md).
EXTEND_TO_CANDIDATES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6)
# The peaks tried (``choose_suggestion_levels``), times the threshold (1 to nearly the top of the
# normalised scale), and how much of the calibration defects' mean IoU a higher one may cost:
# one defect of fifty outlined at IoU 0.5.
MIN_PEAK_CANDIDATES = (1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9)
MIN_PEAK_IOU_LOSS = 0.01
# The reach is chosen on maps of at most this many pixels a side: a map is the model's (a few
# hundred pixels) drawn larger, so little is lost, and a large photo's calibration images fit
# in memory.
EXTEND_TO_MAX_SIDE = 1024
# Image-score windows tried (odd sides, pixels at the model's input size).
SCORE_WINDOWS = (1, 3, 5, 7, 9, 11, 15, 21)
# The map correction: per-pixel statistics from at most MAX normal images; below
# MIN they are too noisy.
MAP_CORRECTION_MIN_IMAGES = 32
MAP_CORRECTION_MAX_IMAGES = 256
MAP_CORRECTION_LOWEST_GAIN = 0.25
# Where the validation normals came from.
HELD_OUT = "held out from the training images"
NOT_HELD_OUT = "the training images themselves: too few to hold any out"
NORMALS_RULE = (f"image threshold: the validation normals' {NORMAL_FLOOR_QUANTILE:.0%} quantile of image scores; "
                f"pixel threshold: their {NORMAL_FLOOR_QUANTILE:.0%} quantile of each image's "
                f"{PIXEL_THRESHOLD_QUANTILE:.1%} pixel quantile (the highest, with fewer than {NORMAL_FLOOR_MINIMUM} "
                "images)")


@torch.inference_mode()
def raw_outputs(network: DSARAD, images: torch.Tensor, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Raw maps (N, S, S) and raw image scores (N,) of ``network`` on uint8 images (N, 3, S, S)."""
    network.eval()
    maps, scores = [], []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH].to(device).float() / 255.0
        raw_map, score = network(batch)[:2]
        maps.append(raw_map.float().cpu())
        scores.append(score.float().cpu())
    if not maps:
        size = images.shape[-1]
        return np.zeros((0, size, size), np.float32), np.zeros(0, np.float32)
    return torch.cat(maps).numpy(), torch.cat(scores).numpy()


@torch.inference_mode()
def choose_score_window(network: DSARAD, normals: torch.Tensor, sources: AnomalySources, device: torch.device,
                        seed: int) -> tuple[int, dict[str, float], np.ndarray, np.ndarray]:
    """The image-score window that best tells held-out normal images (uint8, N x 3 x S x S) from the
    same images with synthetic anomalies, and each window's AUROC there; then the normals' raw maps
    (N, S, S) and their image scores with that window, for the thresholds. No real defect, and
    nothing of any test split, is involved: defects may be small or large, and this asks the
    product's own synthetic ones."""
    generator = torch.Generator(device=device).manual_seed(seed)
    clean = normals.to(device).float() / 255.0
    drawn = sources.sample(len(clean), generator, device, size=clean.shape[-1])
    anomalous = synthesise(clean, drawn, generator, sources.chroma, anomaly_probability=1.0).augmented
    network.eval()
    maps = [network(batch[start : start + BATCH])[0].float() for batch in (clean, anomalous)
            for start in range(0, len(batch), BATCH)]
    raw = torch.cat(maps)
    labels = np.r_[np.zeros(len(clean)), np.ones(len(anomalous))]
    aurocs = {str(window): float(roc_auc_score(labels, image_score(raw, window).cpu().numpy()))
              for window in SCORE_WINDOWS if window <= raw.shape[-1]}
    best = int(max(aurocs, key=lambda window: aurocs[window]))
    normal_maps = raw[: len(clean)]
    return best, aurocs, normal_maps.cpu().numpy(), image_score(normal_maps, best).cpu().numpy()


def fit_map_correction(network: DSARAD, normals: torch.Tensor, device: torch.device, seed: int) -> dict:
    """Set ``network.map_correction`` from defect-free images (uint8, N x 3 x S x S) so that no
    position of their maps has a higher mean or a wider spread than the median position's; the
    others are left as they are. What it removes is what zero padding adds: raising the quiet
    positions instead would amplify their noise into false suggestions. With fewer than
    ``MAP_CORRECTION_MIN_IMAGES`` images the correction is left as it is. Returns what the model
    header records: the images used and how much brighter the border was than the interior."""
    count = min(len(normals), MAP_CORRECTION_MAX_IMAGES)
    if count < MAP_CORRECTION_MIN_IMAGES:
        return {"fitted": False, "images": int(len(normals)),
                "reason": f"fewer than {MAP_CORRECTION_MIN_IMAGES} normal images"}
    chosen = torch.randperm(len(normals), generator=torch.Generator().manual_seed(seed))[:count]
    network.map_correction.reset()
    level, spread = map_statistics(network, normals[chosen.to(normals.device)], device)
    # Spreads below a flat map's count as flat: a model that has not learnt yet gives
    # constant maps, and dividing by their zero spreads would only amplify rounding.
    spread = spread.clamp(min=FLAT_MAP_SPREAD)
    gain = (spread.median() / spread).clamp(MAP_CORRECTION_LOWEST_GAIN, 1.0)
    offset = level.clamp(max=level.median()) - level * gain
    network.map_correction.set(gain.float(), offset.float())
    band = border_band(level.shape[-1])
    return {"fitted": True, "images": count,
            "border_to_interior_level": float(level[band].mean() / level[~band].mean().clamp(min=1e-12)),
            "border_to_interior_spread": float(spread[band].mean() / spread[~band].mean())}


def choose_map_correction(network: DSARAD, normals: torch.Tensor, images: torch.Tensor, masks: np.ndarray,
                          device: torch.device, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """``fit_map_correction``, kept only when it ranks the defect pixels of calibration images
    (uint8 N x 3 x S x S, ``masks`` N x S x S bool) at least as well as the map without it, by
    pixel average precision; otherwise the correction is the identity. A U-Net retrained on
    real defects fires where they sit, on normal images too, and evening that out can hide them.
    Returns what the model header records, and the calibration images' raw maps and image scores
    as the network now gives them (``raw_outputs``), which the comparison has already computed."""
    fitted = fit_map_correction(network, normals, device, seed)
    if not fitted["fitted"] or not masks.any():
        return (fitted, *raw_outputs(network, images, device))
    correction = network.map_correction
    gain, offset = correction.gain.clone(), correction.offset.clone()
    correction.reset()
    uncorrected = raw_outputs(network, images, device)[0]
    correction.set(gain, offset)
    # The corrected maps follow from the uncorrected ones: one pass of the networks, not two.
    with torch.no_grad():
        corrected = correction(torch.from_numpy(uncorrected).to(gain.device)).cpu().numpy()
    with_correction = pixel_curves(list(corrected), list(masks)).average_precision()
    without = pixel_curves(list(uncorrected), list(masks)).average_precision()
    compared = {"calibration_pixel_ap": {"corrected": with_correction, "uncorrected": without}}
    if with_correction < without:
        correction.reset()
        record = {**fitted, **compared, "fitted": False,
                  "reason": f"it lowered the calibration images' pixel AP from {without:.3f} to {with_correction:.3f}"}
        maps = uncorrected
    else:
        record, maps = {**fitted, **compared}, corrected
    scores = image_score(torch.from_numpy(maps), network.architecture.score_window).numpy()
    return record, maps, scores


@torch.inference_mode()
def map_statistics(network: DSARAD, images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and standard deviation (S, S), float64 on the CPU, of the raw maps of uint8
    images (N x 3 x S x S), accumulated batch by batch: N maps at a large input size would not fit."""
    network.eval()
    total = squares = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for start in range(0, len(images), BATCH):
        maps = network(images[start : start + BATCH].to(device).float() / 255.0)[0].double().cpu()
        total, squares = total + maps.sum(dim=0), squares + (maps * maps).sum(dim=0)
    count = len(images)
    level = total / count
    variance = (squares / count - level * level).clamp(min=0.0) * count / max(count - 1, 1)
    return level, variance.sqrt()


def border_band(size: int) -> torch.Tensor:
    """(size, size) bool: the outer 1/32 of the map on every side (4 px at 128), where zero
    padding shows."""
    width = max(size // 32, 1)
    band = torch.zeros(size, size, dtype=torch.bool)
    band[:width] = band[-width:] = True
    band[:, :width] = band[:, -width:] = True
    return band


def pixel_quantiles(maps: np.ndarray) -> np.ndarray:
    """Each map's 99.9th-percentile pixel score."""
    return np.quantile(maps.reshape(len(maps), -1), PIXEL_THRESHOLD_QUANTILE, axis=1)


def normal_thresholds(maps: np.ndarray, scores: np.ndarray, validation_from: str) -> ScoreNormaliser:
    """The normals-only rule (module docstring), with the statistics behind it."""
    quantiles = pixel_quantiles(maps)
    statistics = {
        "method": NORMALS_RULE,
        "validation_images": int(len(scores)),
        "validation_from": validation_from,
        "image_score_mean": float(scores.mean()),
        "image_score_std": float(scores.std()),
        "image_score_max": float(scores.max()),
        "pixel_quantile_mean": float(quantiles.mean()),
        "pixel_quantile_max": float(quantiles.max()),
        "map_spread": float(maps.std()),
    }
    return ScoreNormaliser(clamp_threshold(normal_floor(scores)), clamp_threshold(normal_floor(quantiles)), statistics)


def describe_validation(normaliser: ScoreNormaliser) -> tuple[str, str | None]:
    """A line about the validation normals' scores, and a warning when the maps are flat or
    nothing could be held out."""
    statistics = normaliser.statistics
    line = (f"validation: {statistics['validation_images']} normal images ({statistics['validation_from']}); raw image "
            f"scores {statistics['image_score_mean']:.3f} ± {statistics['image_score_std']:.3f}, highest "
            f"{statistics['image_score_max']:.3f}; image threshold {normaliser.image_threshold:.3f}")
    correction = statistics.get("map_correction", {})
    if correction.get("fitted"):
        line += (f"; map corrected on {correction['images']} training images (their border had scored "
                 f"{correction['border_to_interior_level']:.2f}x the interior)")
    if statistics["map_spread"] < FLAT_MAP_SPREAD:
        return line, ("warning: the anomaly maps are flat (the same score everywhere): the model has not learnt yet; "
                      "train longer, on more defect-free images, or check that they are defect-free")
    if statistics["validation_from"] == NOT_HELD_OUT:
        return line, ("warning: too few images to hold any out, so the thresholds come from images the model "
                      "trained on and it will suggest more on new images; train on more defect-free images")
    return line, None


def f1_thresholds(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray, labels: np.ndarray, sizes: np.ndarray,
                  fallback: ScoreNormaliser) -> ScoreNormaliser:
    """Raw image and pixel thresholds from calibration images with real defects and normals.

    ``maps`` (N, S, S) raw, ``scores`` (N,) raw, ``masks`` (N, S, S) bool,
    ``labels`` (N,) True for a defect image, ``sizes`` (N, 2) each image's
    own (height, width). Each threshold is where F1 is best, but never below
    what the normals need (``normal_floor``, ``suggestion_floor``): on a small
    calibration set, or with a model that separates the defects poorly, the
    best F1 is "flag everything", and every normal image would get
    suggestions. Each falls back on its own: to the normals' floor alone when
    F1 is undefined (no defect, or no defect pixel left at the model's size),
    to ``fallback``'s (the starting model's) when there is no normal either.
    """
    labels = np.asarray(labels, dtype=bool)
    statistics: dict = {"calibration_images": int(len(labels)), "calibration_defects": int(labels.sum())}
    normals = ~labels
    if normals.any():
        image_floor = normal_floor(scores[normals])
    if labels.any() and normals.any():
        statistics["image_best_f1"], best = best_f1(scores, labels)
        image_threshold = max(best, image_floor)
        statistics["image_method"] = ("best F1 on held-back corrected labels (real defects and reviewed normals), "
                                      f"not below the normals' {NORMAL_FLOOR_QUANTILE:.0%} quantile")
    elif normals.any():
        image_threshold = image_floor
        statistics["image_method"] = "the held-back reviewed normals' scores (no real defect held back)"
    else:
        image_threshold = fallback.image_threshold
        statistics["image_method"] = "the starting model's (nothing held back for calibration)"
    budget = (f"at most {FALSE_SUGGESTIONS_PER_NORMAL:g} suggestions per held-back reviewed normal image on average, "
              "at their own sizes")
    if masks.any() and normals.any():
        statistics["pixel_best_f1"], best = pixel_curves(list(maps), list(masks)).best_f1()
        statistics["pixel_best_f1_threshold"] = best
        pixel_threshold = suggestion_floor(maps[normals], sizes[normals], best)
        statistics["pixel_method"] = f"best F1 over the pixels of the held-back corrected labels, raised to {budget}"
    elif normals.any():
        pixel_threshold = suggestion_floor(maps[normals], sizes[normals], 0.0)
        statistics["pixel_method"] = f"{budget} (no real defect pixel held back)"
    else:
        pixel_threshold = fallback.pixel_threshold
        statistics["pixel_method"] = "the starting model's (nothing held back for calibration)"
    statistics["method"] = f"image: {statistics['image_method']}; pixel: {statistics['pixel_method']}"
    if normals.any():
        statistics["calibration_normals_flagged"] = float(np.mean(scores[normals] >= image_threshold))
        statistics["calibration_false_suggestions_per_normal"] = false_suggestions(maps[normals], sizes[normals],
                                                                                   pixel_threshold)
    return ScoreNormaliser(clamp_threshold(image_threshold), clamp_threshold(pixel_threshold), statistics)


def choose_suggestion_levels(images: Iterable[tuple[Prediction, np.ndarray]]) -> tuple[dict[str, float], float, dict]:
    """How far each kind's suggestions extend (``ScoreNormaliser.extend_to_by_kind``) and how high
    a suggestion's peak must reach (``ScoreNormaliser.min_peak``), chosen on calibration images: a
    retrained model's prediction of each (at the model's thresholds) with its defect mask (bool, at
    the image's own size; all False on a normal image).

    Kinds differ in how their maps fall off around the threshold: on Magnetic Tile a blowhole's
    map spreads beyond the hole (drawn at twice its area at DEFAULT_EXTEND_TO; a level above 1
    cuts it back), while frays and breaks come out in pieces that join only further down. Kind by
    kind, the ``EXTEND_TO_CANDIDATES`` level with the best mean IoU of each labelled defect with its
    best suggestion is kept when it beats the level before, and the normal images get no more
    suggestions than at the default.
    Then the peak is raised through ``MIN_PEAK_CANDIDATES`` while that mean IoU stays within
    ``MIN_PEAK_IOU_LOSS`` of what it was: the suggestions a review rejects peak lower than the
    defects found. Returns the levels that differ from the default, the peak and what the
    calibration images gave; no choice (the defaults) without a labelled defect.
    """
    kinds: tuple[str, ...] = ()
    calibration: list[_CalibrationImage] = []
    for prediction, truth in images:
        kinds = prediction.kinds
        calibration.append(_CalibrationImage.of(prediction, truth))
    if all(len(image.defect_areas) == 1 for image in calibration):
        return {}, DEFAULT_MIN_PEAK, {}

    def measure(levels: dict[str, float], min_peak: float = DEFAULT_MIN_PEAK) -> tuple[float, int]:
        table = np.array([levels.get(kind, DEFAULT_EXTEND_TO) for kind in kinds] + [DEFAULT_EXTEND_TO], np.float32)
        ious: list[np.ndarray] = []
        normal_suggestions = 0
        for image in calibration:
            regions, kept = image.settings.region_pixels(image.score_map, table[image.likely_kinds], min_peak)
            if len(image.defect_areas) == 1:  # a normal image
                normal_suggestions += len(kept)
                continue
            ious.append(best_region_ious(regions, kept, image.defect_labels, image.defect_areas))
        return float(np.mean(np.concatenate(ious))), normal_suggestions

    levels: dict[str, float] = {}
    default_iou, normal_limit = best = measure(levels)
    for kind in kinds:
        for level in EXTEND_TO_CANDIDATES:
            trial = {**levels, kind: level}
            iou, normal_suggestions = measure(trial)
            if iou > best[0] and normal_suggestions <= normal_limit:
                best, levels = (iou, normal_suggestions), trial
    min_peak, peak_result = DEFAULT_MIN_PEAK, best
    for candidate in MIN_PEAK_CANDIDATES:
        result = measure(levels, candidate)
        if result[0] < best[0] - MIN_PEAK_IOU_LOSS:
            break
        min_peak, peak_result = candidate, result
    statistics = {"extend_to_method": ("per defect kind, the best mean IoU of each held-back labelled defect with its "
                                       "best suggestion, no more suggestions on the held-back normals than at "
                                       f"{DEFAULT_EXTEND_TO}"),
                  "min_peak_method": (f"the highest peak (times the threshold) at which that mean IoU stays within "
                                      f"{MIN_PEAK_IOU_LOSS} of the chosen reach's"),
                  "calibration_defect_iou_at_default": default_iou, "calibration_defect_iou": peak_result[0],
                  "calibration_normal_suggestions_by_min_peak": [best[1], peak_result[1]]}
    return {kind: level for kind, level in levels.items() if level != DEFAULT_EXTEND_TO}, min_peak, statistics


@dataclass
class _CalibrationImage:
    """What choosing the reach and the peak needs of one calibration image, at most EXTEND_TO_MAX_SIDE a side."""

    score_map: np.ndarray
    likely_kinds: np.ndarray
    defect_labels: np.ndarray
    defect_areas: np.ndarray
    settings: SuggestionSettings  # the default polygon settings, ``min_area`` at this scale

    @classmethod
    def of(cls, prediction: Prediction, truth: np.ndarray) -> _CalibrationImage:
        score_map, likely, height, width = prediction.score_map, prediction.likely_kinds(), *truth.shape
        scale = min(1.0, EXTEND_TO_MAX_SIDE / max(height, width))
        if scale < 1.0:
            size = (max(round(width * scale), 1), max(round(height * scale), 1))
            score_map = cv2.resize(score_map, size, interpolation=cv2.INTER_AREA)
            likely = cv2.resize(likely, size, interpolation=cv2.INTER_NEAREST)
            truth = cv2.resize(truth.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        defect_labels, defect_areas = labelled_defects(truth)
        settings = SuggestionSettings(min_area=max(round(SuggestionSettings.min_area * scale**2), 1))
        return cls(score_map, likely, defect_labels, defect_areas, settings)


def normal_floor(values: np.ndarray) -> float:
    """Where a threshold must be for normals to stay below it: their ``NORMAL_FLOOR_QUANTILE``
    quantile, or their highest value when there are too few of them for a quantile to mean much."""
    if len(values) < NORMAL_FLOOR_MINIMUM:
        return float(np.max(values))
    return float(np.quantile(values, NORMAL_FLOOR_QUANTILE))


def false_suggestions(maps: np.ndarray, sizes: np.ndarray, threshold: float) -> float:
    """Suggestions per image that normal images' raw maps (N, S, S) get at a raw ``threshold``,
    drawn at the images' own sizes (N, 2: height, width) with the default polygon settings."""
    return _suggestions_per_image(_at_image_sizes(maps, sizes), threshold)


def suggestion_floor(maps: np.ndarray, sizes: np.ndarray, lowest: float) -> float:
    """The lowest raw threshold, not below ``lowest``, at which normal images' raw maps (N, S, S)
    get at most ``FALSE_SUGGESTIONS_PER_NORMAL`` suggestions each on average (``false_suggestions``);
    above their highest score when no tried threshold does."""
    values = maps[maps >= lowest]
    if not values.size:
        return lowest
    full_size = _at_image_sizes(maps, sizes)
    candidates = np.unique(np.r_[lowest, np.quantile(values, np.linspace(0.0, 1.0, FLOOR_CANDIDATES + 1))])
    for threshold in candidates:
        if _suggestions_per_image(full_size, float(threshold)) <= FALSE_SUGGESTIONS_PER_NORMAL:
            return max(float(threshold), lowest)
    return float(np.nextafter(values.max(), np.float32(1.0)))


def _at_image_sizes(maps: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return [map_at_image_size(raw, int(height), int(width)) for raw, (height, width) in zip(maps, sizes)]


def _suggestions_per_image(full_size_maps: list[np.ndarray], threshold: float) -> float:
    settings = SuggestionSettings()
    return float(np.mean([settings.count(full_size, threshold) for full_size in full_size_maps]))
