"""Normalised scores: every model's threshold sits at ``NORMALISED_THRESHOLD`` (0.5).

Raw scores are anomaly probabilities in [0, 1] whose useful range differs
from model to model. Each model file carries, for the image score and the
pixel map, the raw threshold chosen in training; the normalisation maps raw
[0, threshold] linearly onto [0, 0.5] and [threshold, 1] onto [0.5, 1]. It is
strictly monotone and not clipped, so rankings (AUROC, AUPRO) are the same on
raw and normalised scores, and a slider over 0..1 means the same for every
model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Every model's threshold on the normalised scale: the one number the CLI, the
# panel's slider, the heat map and the evaluation report share (docs/design.md).
NORMALISED_THRESHOLD = 0.5

# How high a suggestion's peak must reach where neither the settings nor the model say: a
# multiple of the threshold; 1 keeps every region that reaches the threshold.
DEFAULT_MIN_PEAK = 1.0
# The highest a peak can be asked to reach: the top of the normalised scale.
MAX_MIN_PEAK = 1.0 / NORMALISED_THRESHOLD
# The highest a model's reach for a kind (``extend_to_by_kind``) can be: above 1 it cuts the
# kind's regions back to where that multiple of the threshold is reached.
MAX_EXTEND_TO = MAX_MIN_PEAK

# Raw thresholds are kept strictly inside (0, 1) so both linear pieces exist.
THRESHOLD_EPSILON = 1e-6

# In ``ScoreNormaliser.statistics``: the normalised image score below which the bulk confirmation
# offers unreviewed images as likely defect-free; a retrain sets it to the lowest score of its
# calibration images with defects (train/retrain.py). A model without it offers none.
BULK_CONFIRM_BELOW = "bulk_confirm_below"


@dataclass(frozen=True)
class ScoreNormaliser:
    image_threshold: float
    pixel_threshold: float
    # How the thresholds were chosen and the validation statistics behind them.
    statistics: dict = field(default_factory=dict, compare=False)
    # How far the suggestions of each defect kind extend below the threshold (a fraction of it,
    # as ``SuggestionSettings.extend_to``), or above 1 where they are cut back, chosen on a
    # retrain's calibration images; kinds not listed take the default.
    extend_to_by_kind: dict[str, float] = field(default_factory=dict)
    # How high a suggestion's peak must reach, a multiple of the threshold (as
    # ``SuggestionSettings.min_peak``), chosen on a retrain's calibration images.
    min_peak: float = DEFAULT_MIN_PEAK

    def __post_init__(self):
        for name in ("image_threshold", "pixel_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
        if not isinstance(self.extend_to_by_kind, dict):
            raise ValueError("extend_to_by_kind must be an object")
        for kind, value in self.extend_to_by_kind.items():
            if not isinstance(value, (int, float)) or not np.isfinite(value) or not 0.0 < value <= MAX_EXTEND_TO:
                raise ValueError(f"extend_to_by_kind[{kind!r}] must be a number in (0, {MAX_EXTEND_TO:g}], got {value!r}")
        if not isinstance(self.min_peak, (int, float)) or not 1.0 <= self.min_peak <= MAX_MIN_PEAK:
            raise ValueError(f"min_peak must be a number in [1, {MAX_MIN_PEAK:g}], got {self.min_peak!r}")

    def image(self, raw):
        return normalise(raw, self.image_threshold)

    def pixel(self, raw):
        return normalise(raw, self.pixel_threshold)

    def to_dict(self) -> dict:
        return {
            "image_threshold": float(self.image_threshold),
            "pixel_threshold": float(self.pixel_threshold),
            "statistics": self.statistics,
            **({"extend_to_by_kind": dict(self.extend_to_by_kind)} if self.extend_to_by_kind else {}),
            **({"min_peak": float(self.min_peak)} if self.min_peak != DEFAULT_MIN_PEAK else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ScoreNormaliser:
        if not isinstance(data, dict):
            raise ValueError("scores must be an object")
        statistics = data.get("statistics", {})
        if not isinstance(statistics, dict):
            raise ValueError("scores.statistics must be an object")
        return cls(data["image_threshold"], data["pixel_threshold"], statistics, data.get("extend_to_by_kind", {}),
                   data.get("min_peak", DEFAULT_MIN_PEAK))


def clamp_threshold(value: float) -> float:
    return float(min(max(value, THRESHOLD_EPSILON), 1.0 - THRESHOLD_EPSILON))


def normalise(raw, threshold: float):
    """Map raw scores (array or tensor) so that ``threshold`` becomes ``NORMALISED_THRESHOLD``."""
    below = raw * (NORMALISED_THRESHOLD / threshold)
    above = NORMALISED_THRESHOLD + (raw - threshold) * ((1.0 - NORMALISED_THRESHOLD) / (1.0 - threshold))
    is_below = raw < threshold
    if isinstance(raw, np.ndarray) or np.isscalar(raw):
        return np.where(is_below, below, above)
    import torch

    return torch.where(is_below, below, above)
