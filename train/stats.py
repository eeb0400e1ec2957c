"""How our suggestions fared against the final labels of a folder: ``dsarad stats``."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelme_dsarad.model.labelfile import (
    RECORD_KEY,
    REJECTED_KEY,
    SUGGESTED_KEY,
    LabelFileError,
    is_pending_suggestion,
    load_label_file,
    remembered_rejections,
    shape_fingerprint,
)

from .labels import POINT_RADIUS, is_reviewed, label_files, rasterise_shapes

# Read when present (see suggestion_stats): what a writer may record so that
# edits can be measured.
SUGGESTED_POINTS_KEY = "suggested_points"  # in a shape's record: its outline as suggested
NO_MODEL = "(no model recorded)"


@dataclass
class ModelStats:
    """Counts for one model version (``product vN``) over a folder."""

    images: int = 0
    reviewed_images: int = 0
    suggestions: int = 0  # shapes that carry our record
    accepted_unchanged: int = 0
    edited: int = 0
    edited_ious: list[float] = field(default_factory=list)  # where the original outline was recorded
    pending: int = 0
    rejected: int = 0
    rejections_known_in: int = 0  # images whose file recorded what was suggested
    drawn: int = 0  # people's shapes with no record of ours
    missed: int = 0  # drawn shapes that no suggestion overlaps

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "reviewed_images": self.reviewed_images,
            "suggestions": self.suggestions + self.rejected,
            "accepted_unchanged": self.accepted_unchanged,
            "edited": self.edited,
            "edited_mean_iou": float(np.mean(self.edited_ious)) if self.edited_ious else None,
            "edited_with_iou": len(self.edited_ious),
            "rejected": self.rejected if self.rejections_known_in else None,
            "rejections_known_in_images": self.rejections_known_in,
            "pending": self.pending,
            "drawn_by_people": self.drawn,
            "missed": self.missed,
        }


def suggestion_stats(folder: os.PathLike | str) -> tuple[dict[str, dict], list[str]]:
    """({"product vN": counts}, problems): how the suggestions fared against the final labels.

    Per label file, each shape carrying our ``dsarad`` record is one
    suggestion: *pending* (untouched), *accepted unchanged* (no longer pending,
    fingerprint as written) or *edited* (the fingerprint changed: moved,
    reshaped, relabelled or noted). Shapes without our record are *drawn by
    people*; one that no suggestion's area overlaps is a *missed* defect.

    Two things the shapes alone cannot tell, read when the writer recorded
    them: the IoU of an edited suggestion with its outline as suggested (from
    ``suggested_points`` in the shape's record), and rejections, since LabelMe
    deletes a rejected shape without a trace (from the file's top-level
    ``dsarad`` record: the rejections it remembers, and what its last run
    suggested that no shape carries any more). Where they are missing
    the IoU is left out and ``rejected`` is None ("not recorded"), never a
    guess. A file counts for the model its top-level record names, else the
    one most of its suggestions name; files with neither go under
    ``(no model recorded)``. Every file is counted; ``reviewed_images`` says how
    many carry the ``ok`` flag.
    """
    groups: dict[str, ModelStats] = defaultdict(ModelStats)
    problems = []
    for path in label_files(Path(folder)):
        try:
            data = load_label_file(path)
            _count_file(data, groups)
        except LabelFileError as problem:
            problems.append(str(problem))
        except ValueError as problem:
            problems.append(str(LabelFileError(path, str(problem))))
    return {name: stats.to_dict() for name, stats in sorted(groups.items())}, problems


def _count_file(data: dict, groups: dict[str, ModelStats]) -> None:
    shapes = data["shapes"]
    ours = [shape for shape in shapes if isinstance(shape.get(RECORD_KEY), dict)]
    drawn = [shape for shape in shapes if not isinstance(shape.get(RECORD_KEY), dict)]
    height, width = _canvas_size(data)
    counts = ModelStats()  # this file's, merged into its model's below
    counts.images, counts.reviewed_images = 1, int(is_reviewed(data))
    for shape in ours:
        counts.suggestions += 1
        record = shape[RECORD_KEY]
        if is_pending_suggestion(shape):
            counts.pending += 1
        elif shape_fingerprint(shape) == record.get("fingerprint"):
            counts.accepted_unchanged += 1
        else:
            counts.edited += 1
            original = record.get(SUGGESTED_POINTS_KEY)
            if original is not None:
                counts.edited_ious.append(_iou({"points": original}, shape, height, width))
    run = data.get(RECORD_KEY)
    if not isinstance(run, dict):
        run = {}
    if isinstance(run.get(SUGGESTED_KEY), list) or isinstance(run.get(REJECTED_KEY), list):
        present = {shape[RECORD_KEY].get("fingerprint") for shape in ours}
        # Files written before outlines were remembered list bare fingerprints.
        older = [entry for entry in run.get(SUGGESTED_KEY) or [] if isinstance(entry, str) and entry not in present]
        counts.rejected = len(remembered_rejections(data)) + len(older)
        counts.rejections_known_in = 1
    suggested_area = rasterise_shapes(ours, height, width) if ours else np.zeros((height, width), dtype=bool)
    counts.drawn = len(drawn)
    counts.missed = sum(not (rasterise_shapes([shape], height, width) & suggested_area).any() for shape in drawn)
    _merge(groups[_model_of(run, ours)], counts)


def _merge(total: ModelStats, part: ModelStats) -> None:
    for name, value in vars(part).items():
        setattr(total, name, getattr(total, name) + value)


def _model_of(run: dict, ours: list[dict]) -> str:
    if isinstance(run.get("model"), str):
        return run["model"]
    names = [shape[RECORD_KEY].get("model") for shape in ours if isinstance(shape[RECORD_KEY].get("model"), str)]
    return max(set(names), key=names.count) if names else NO_MODEL


def _canvas_size(data: dict) -> tuple[int, int]:
    """The image's (height, width) from the file; else just big enough for every shape."""
    height, width = data.get("imageHeight"), data.get("imageWidth")
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return height, width
    extent = [point for shape in data["shapes"] for point in shape["points"]]
    if not extent:
        return 1, 1
    return int(max(y for _, y in extent)) + POINT_RADIUS + 2, int(max(x for x, _ in extent)) + POINT_RADIUS + 2


def _iou(first: dict, second: dict, height: int, width: int) -> float:
    a = rasterise_shapes([{**second, **first}], height, width)  # the original takes the edited shape's type
    b = rasterise_shapes([second], height, width)
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def format_stats(groups: dict[str, dict]) -> str:
    """A table a person reads: one row per model version."""
    headers = ["model", "images", "reviewed", "suggested", "accepted", "edited", "edited IoU", "rejected", "pending",
               "drawn", "missed"]
    rows = []
    for name, counts in groups.items():
        rejected = "not recorded" if counts["rejected"] is None else str(counts["rejected"])
        if counts["rejected"] is not None and counts["rejections_known_in_images"] < counts["images"]:
            rejected += f" (in {counts['rejections_known_in_images']} images)"
        rows.append([name, counts["images"], counts["reviewed_images"], counts["suggestions"],
                     counts["accepted_unchanged"], counts["edited"], _edited_iou(counts), rejected, counts["pending"],
                     counts["drawn_by_people"], counts["missed"]])
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _edited_iou(counts: dict) -> str:
    """The mean IoU of the edited suggestions with their outlines as suggested: "-" where no edited
    one recorded its outline, and how many did where only some did."""
    iou, known = counts["edited_mean_iou"], counts["edited_with_iou"]
    if iou is None:
        return "-"
    return f"{iou:.2f}" if known == counts["edited"] else f"{iou:.2f} ({known} of {counts['edited']})"
