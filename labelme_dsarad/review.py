"""Suggestion state on LabelMe shapes: pending, accepted, rejected.

A suggestion is an ordinary LabelMe polygon that carries its state in the two
places a label file keeps it (``model/labelfile.py`` defines the format):
the shape flag ``dsarad_pending``, which LabelMe's own label dialog shows
(unticking it accepts), and the ``dsarad`` record (state, scores, model,
threshold, fingerprint), which LabelMe carries through load and save as the
shape's ``other_data``. So the state survives save and reopen with no
plugin-side storage, and the retrain loop reads it back from the files.

Works on anything with ``label``, ``points``, ``flags`` and ``other_data``:
no Qt here. Rejecting a suggestion deletes it, as the label-file format has
no rejected state.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from labelme_dsarad.model import labelfile
from labelme_dsarad.model.polygons import Region

PENDING, ACCEPTED = "pending", "accepted"  # a rejected suggestion is deleted
PENDING_FLAG = labelfile.PENDING_FLAG
RECORD_KEY = labelfile.RECORD_KEY
# A new suggestion mostly inside a shape a person made, or one they rejected
# in this session, is the same finding again: not suggested twice.
COVERED_FRACTION = 0.5


def points_of(shape) -> list[tuple[float, float]]:
    """(x, y) pairs of a shape's points (QPointF or pairs)."""
    return [(point.x(), point.y()) if callable(getattr(point, "x", None)) else tuple(point) for point in shape.points]


def record(shape) -> dict | None:
    value = (shape.other_data or {}).get(RECORD_KEY)
    return value if isinstance(value, dict) else None


def is_suggestion(shape) -> bool:
    return record(shape) is not None


def state(shape) -> str | None:
    value = record(shape)
    return value.get("state") if value is not None else None


def _as_dict(shape) -> dict:
    """The shape as the label-file module sees it (flags and record shared, not copied)."""
    if shape.flags is None:
        shape.flags = {}
    return {
        "label": shape.label,
        "points": [list(point) for point in points_of(shape)],
        "group_id": getattr(shape, "group_id", None),
        "description": getattr(shape, "description", None),
        "shape_type": getattr(shape, "shape_type", "polygon"),
        "flags": shape.flags,
        RECORD_KEY: record(shape),
    }


def is_pending(shape) -> bool:
    """Our suggestion, untouched by any person: the label-file module's rule."""
    return is_suggestion(shape) and labelfile.is_pending_suggestion(_as_dict(shape))


def pending(shapes: Iterable) -> list:
    return [shape for shape in shapes if is_pending(shape)]


def set_state(shape, new_state: str) -> None:
    data = _as_dict(shape)
    labelfile.set_state(data, new_state)
    shape.flags = data["flags"]
    shape.other_data = {**(shape.other_data or {}), RECORD_KEY: data[RECORD_KEY]}


def list_suffix(shape) -> str:
    """What the annotation list adds after a pending suggestion's label."""
    if not is_pending(shape):
        return ""
    entry = record(shape)
    assert entry is not None  # a pending shape is a suggestion
    score = entry.get("score_max")
    return f"  · pending {score:.2f}" if isinstance(score, (int, float)) else "  · pending"


def accept_edited(shapes: Iterable) -> list:
    """Accept the suggestions a person moved, reshaped, relabelled or unflagged; return them."""
    accepted = []
    for shape in shapes:
        if state(shape) == PENDING and not is_pending(shape):
            set_state(shape, ACCEPTED)
            accepted.append(shape)
    return accepted


def reviewed_outlines(shapes: Iterable) -> list[list[tuple[float, float]]]:
    """Outlines a new suggestion must not repeat: everything but pending suggestions."""
    return [points_of(shape) for shape in shapes if not is_pending(shape) and len(shape.points) >= 3]


def drop_covered(regions: list[Region], outlines: list[list[tuple[float, float]]]) -> list[Region]:
    """Regions not mostly inside one of the outlines (people's shapes, rejected ones)."""
    if not outlines:
        return regions
    boxes = [_box(outline) for outline in outlines]
    kept = []
    for region in regions:
        x0, y0, x1, y1 = region.bbox
        covered = False
        for outline, (bx0, by0, bx1, by1) in zip(outlines, boxes):
            if bx1 <= x0 or bx0 >= x1 or by1 <= y0 or by0 >= y1:
                continue
            if _covered_fraction(region, outline) >= COVERED_FRACTION:
                covered = True
                break
        if not covered:
            kept.append(region)
    return kept


def _box(outline) -> tuple[float, float, float, float]:
    xs = [x for x, _ in outline]
    ys = [y for _, y in outline]
    return min(xs), min(ys), max(xs), max(ys)


def _covered_fraction(region: Region, outline) -> float:
    """Share of the region's polygon inside the outline, rasterised over the region's box."""
    x0, y0, x1, y1 = region.bbox
    size = (y1 - y0 + 2, x1 - x0 + 2)
    mine = np.zeros(size, np.uint8)
    theirs = np.zeros(size, np.uint8)
    offset = np.array([x0 - 0.5, y0 - 0.5])
    cv2.fillPoly(mine, [np.round(np.asarray(region.points) - offset).astype(np.int32)], 1)
    cv2.fillPoly(theirs, [np.round(np.asarray(outline, dtype=np.float64) - offset).astype(np.int32)], 1)
    area = int(mine.sum())
    return float((mine & theirs).sum()) / area if area else 0.0


def provenance(model, threshold: float) -> dict:
    """Which model and setting made a suggestion (``model`` is the worker's ModelDescription)."""
    return {"model": model.name, "model_sha256": model.key, "threshold": threshold}


def suggestion_dict(region: Region, label: str, provenance_record: dict) -> dict:
    return labelfile.suggestion_shape(region, label, provenance_record)
