"""Run a predictor over test samples: metrics, and a report a person can read.

The one evaluator: ``dsarad evaluate``, the retraining's before/after and the
benchmarks all measure through ``evaluate``. ``predict(image) -> (score_map,
image_score)`` gives normalised scores (``scoring.NORMALISED_THRESHOLD`` is the
model's threshold; they may leave [0, 1] and are not clipped, so rankings are
those of the raw scores). With ``suggestions``, the polygons a person would see at those settings are
measured too (``suggestion_metrics``) and drawn in the report. The report,
when asked for, holds ``metrics.json``, ``roc.png``, ``pro.png``, ``grid.png``
and ``report.md`` (``report``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from labelme_dsarad.model.polygons import SuggestionSettings

from .evaluated import Evaluated, EvaluationSample
from .metrics import compute_metrics, downsample_for_metrics
from .report import write_report
from .suggestion_metrics import SuggestionTally

if TYPE_CHECKING:
    from labelme_dsarad.model.inference import Prediction, Predictor

Predict = Callable[[np.ndarray], "Prediction"]


def evaluate(
    predict: Predict,
    samples: Sequence[EvaluationSample],
    report_dir: Path | None = None,
    suggestions: SuggestionSettings | None = None,
    max_pixels_side: int | None = 256,
    show_progress: bool = True,
    generic: str = "defect",
) -> dict:
    """Metrics of ``predict`` on ``samples``: ``metrics.compute_metrics``'s dict
    plus ``max_pixels_side``, with the suggestion metrics in ``overall`` when
    ``suggestions`` is given; also written to ``report_dir`` when given.

    Masks are read at the size of each score map. For the pixel metrics, maps
    are then downsampled (area) and masks (nearest) so that neither side
    exceeds ``max_pixels_side`` (None keeps full size): this bounds memory on
    large images, at the price of defects thinner than the shrink factor
    losing pixels. Image scores and suggestions are untouched. A suggestion
    is called by its kind when the model names one, else ``generic``.
    """
    if not samples:
        raise ValueError("no samples to evaluate")
    tally = SuggestionTally(suggestions.threshold) if suggestions is not None else None
    evaluated = [
        _evaluate_one(predict, sample, suggestions, tally, max_pixels_side, generic)
        for sample in tqdm(samples, desc="evaluating", unit="image", disable=not show_progress, leave=False)
    ]
    metrics = compute_metrics(
        [e.score_map for e in evaluated],
        [e.mask for e in evaluated],
        [e.score for e in evaluated],
        [e.sample.is_anomalous for e in evaluated],
        [e.sample.defect_type for e in evaluated],
    )
    metrics["max_pixels_side"] = max_pixels_side
    if tally is not None:
        metrics["overall"].update(tally.summary())
    if report_dir is not None:
        write_report(Path(report_dir), evaluated, metrics, suggestions is not None)
    return metrics


def evaluate_predictor(predictor: Predictor, samples: Sequence[EvaluationSample], report_dir: Path | None = None,
                       suggestions: SuggestionSettings | None = None, show_progress: bool = True) -> dict:
    """``evaluate`` a model as the plugin and ``dsarad predict`` run it."""
    generic = predictor.model.info.labels[0]
    return evaluate(predictor.predict, samples, report_dir, suggestions, show_progress=show_progress, generic=generic)


def _evaluate_one(predict: Predict, sample: EvaluationSample, suggestions: SuggestionSettings | None,
                  tally: SuggestionTally | None, max_pixels_side: int | None, generic: str) -> Evaluated:
    prediction = predict(sample.read_image())
    score_map, score = np.asarray(prediction.score_map, dtype=np.float32), prediction.image_score
    if score_map.ndim != 2:
        raise ValueError(f"predict({sample.image_path}) gave a map of shape {score_map.shape}, not HxW")
    mask = sample.mask(*score_map.shape)
    polygons = None
    if suggestions is not None and tally is not None:
        drawn = prediction.suggestions(suggestions, generic)
        regions = [suggestion.region for suggestion in drawn]
        named = [suggestion.label for suggestion in drawn] if prediction.kinds else None
        truth_kinds = sample.kinds(*score_map.shape) if named is not None and mask.any() else None
        tally.add(score_map, float(score), regions, mask, named, truth_kinds)
        polygons = [region.points for region in regions]
    small_map, small_mask = downsample_for_metrics(score_map, mask, max_pixels_side)
    return Evaluated(sample, float(score), small_map, small_mask, polygons, score_map.shape)
