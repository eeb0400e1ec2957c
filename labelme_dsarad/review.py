"""Suggestion state on LabelMe shapes: pending, accepted, rejected.

A suggestion is an ordinary LabelMe polygon that carries its state in the two
places a label file keeps it (``model/labelfile.py`` defines the format):
the shape flag ``dsarad_pending``, which LabelMe's own label dialog shows
(unticking it accepts), and the ``dsarad`` record (state, scores, model,
threshold, fingerprint), which LabelMe carries through load and save as the
shape's ``other_data``. So the state survives save and reopen with no
plugin-side storage, and the retrain loop reads it back from the files.

Works on anything with ``label``, ``points``, ``flags`` and ``other_data``:
no Qt here. Rejecting a suggestion deletes it and remembers it in the label
file's top-level record (``labelfile.REJECTED_KEY``), so no later run or
slider move suggests it again at the same place.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from labelme_dsarad.model import labelfile
from labelme_dsarad.model.polygons import Region

PENDING, ACCEPTED = "pending", "accepted"  # a rejected suggestion is deleted
PENDING_FLAG = labelfile.PENDING_FLAG
RECORD_KEY = labelfile.RECORD_KEY


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
    """What the annotation list adds after a pending suggestion's label (its kind): score and size,
    so a person knows which one they are accepting or rejecting."""
    if not is_pending(shape):
        return ""
    entry = record(shape)
    assert entry is not None  # a pending shape is a suggestion
    score = entry.get("score_max")
    scored = f" {score:.2f}" if isinstance(score, (int, float)) else ""
    kind = entry.get("kind_probability")
    named = f" ({kind:.0%} sure of the kind)" if isinstance(kind, (int, float)) else ""
    return f"  · pending{scored} · {polygon_area(points_of(shape)):.0f} px{named}"


def polygon_area(points: list[tuple[float, float]]) -> float:
    """Area in image pixels (shoelace formula)."""
    if len(points) < 3:
        return 0.0
    xs, ys = np.array(points, dtype=np.float64).T
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def accept_edited(shapes: Iterable) -> list:
    """Accept the suggestions a person moved, reshaped, relabelled or unflagged; return them."""
    accepted = []
    for shape in shapes:
        if state(shape) == PENDING and not is_pending(shape):
            set_state(shape, ACCEPTED)
            accepted.append(shape)
    return accepted


def shape_dict(shape) -> dict:
    """A canvas shape as the label-file module reads one (a copy)."""
    return {**_as_dict(shape), "points": [list(point) for point in points_of(shape)],
            "flags": dict(shape.flags or {}), RECORD_KEY: record(shape)}


def decisions(shapes: Iterable, file_record: dict) -> tuple[list[dict], list[dict]]:
    """(people's shapes, rejections) on the open image: what a new suggestion must not repeat.

    ``file_record`` is the open label file's top-level ``dsarad`` entry.
    """
    dicts = [shape_dict(shape) for shape in shapes]
    people = [shape for shape in dicts if not labelfile.is_pending_suggestion(shape)]
    return people, labelfile.remembered_rejections({RECORD_KEY: file_record, "shapes": dicts})


def remember_suggested(file_record: dict, shapes: Iterable, rejections: list[dict]) -> None:
    """Record what was just suggested, replacing what the record said before, and every rejection
    so far (``decisions``): a suggestion of the last run deleted in LabelMe is remembered only
    through that run's list, which this replaces."""
    file_record[labelfile.REJECTED_KEY] = list(rejections)
    file_record[labelfile.SUGGESTED_KEY] = [labelfile.suggestion_memory(shape_dict(shape)) for shape in shapes]


def settle(file_record: dict, shapes: Iterable) -> None:
    """Forget rejections of suggestions that are pending on the canvas (an undo brought them back):
    a suggestion is never both pending and rejected."""
    settled = labelfile.without_contradictions({RECORD_KEY: file_record, "shapes": [shape_dict(shape) for shape in shapes]})
    if settled[RECORD_KEY] is not file_record:
        file_record[labelfile.REJECTED_KEY] = settled[RECORD_KEY][labelfile.REJECTED_KEY]


def remember_rejected(file_record: dict, shapes: Iterable) -> None:
    """Record rejected suggestions (LabelMe shapes), for good: no later run suggests them again at the same place."""
    labelfile.remember_rejected(file_record, (shape_dict(shape) for shape in shapes))


def provenance(model, threshold: float) -> dict:
    """Which model and setting made a suggestion (``model`` is the worker's ModelDescription)."""
    return {"model": model.name, "model_sha256": model.key, "threshold": threshold}


def suggestion_dict(region: Region, label: str, provenance_record: dict, kind_probability: float | None = None) -> dict:
    return labelfile.suggestion_shape(region, label, provenance_record, kind_probability)
