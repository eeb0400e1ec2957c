"""The review queue: a folder's images in the order a person should look at them.

Unreviewed images first, the most likely to hold a defect (the image score
the last run wrote into the label file) first among them; then images no
run has scored; reviewed images last. ``dsarad predict`` writes it as
``review_queue.csv`` beside the label files, the plugin shows each image's
state and score in LabelMe's file list and goes to the next image to review,
and the bulk-confirmation grid takes the queue's tail: unreviewed images
scoring below the model's cut, with no shape a person made.

No Qt here: the command line and the plugin share it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labelme_dsarad.model.atomic_write import write_atomically
from labelme_dsarad.model.labelfile import (
    RECORD_KEY,
    LabelFileError,
    is_pending_suggestion,
    is_reviewed,
    label_path_for,
    load_label_file,
)

QUEUE_FILE = "review_queue.csv"
IMAGE_SCORE_KEY = "image_score"  # in the label file's run record: the image score the last run gave
REVIEWED, NEW = "reviewed", "new"  # new: no run has scored it, or nothing is pending and nobody reviewed it


@dataclass(frozen=True)
class QueueEntry:
    """One image of the queue, as its label file says."""

    image: Path
    label_path: Path
    score: float | None  # the last run's normalised image score (0.5: the model's threshold); None: never scored
    pending: int  # suggestions waiting for a decision
    people_shapes: int  # shapes a person drew, accepted or edited
    reviewed: bool
    problem: str | None = None  # the label file could not be read

    @property
    def state(self) -> str:
        """What the file list shows: "reviewed", "N pending" or "new"."""
        if self.reviewed:
            return REVIEWED
        return f"{self.pending} pending" if self.pending else NEW

    def sort_key(self) -> tuple:
        return (self.reviewed, self.score is None, -(self.score or 0.0), str(self.image).encode())


def queue_entry(image: os.PathLike | str, out_dir: os.PathLike | str | None = None) -> QueueEntry:
    """``image``'s entry from its label file (none yet: a new image, never scored)."""
    image = Path(image)
    label_path = label_path_for(image, out_dir)
    if not label_path.is_file():
        return QueueEntry(image, label_path, None, 0, 0, False)
    try:
        data = load_label_file(label_path)
    except LabelFileError as problem:
        return QueueEntry(image, label_path, None, 0, 0, False, str(problem))
    return entry_from_label_data(image, label_path, data)


def entry_from_label_data(image: Path, label_path: Path, data: dict) -> QueueEntry:
    run = data.get(RECORD_KEY)
    score = run.get(IMAGE_SCORE_KEY) if isinstance(run, dict) else None
    shapes = [shape for shape in data.get("shapes") or [] if isinstance(shape, dict)]
    pending = sum(is_pending_suggestion(shape) for shape in shapes)
    return QueueEntry(image, label_path, float(score) if isinstance(score, (int, float)) else None, pending,
                      len(shapes) - pending, is_reviewed(data))


def review_queue(images: Iterable[os.PathLike | str], out_dir: os.PathLike | str | None = None) -> list[QueueEntry]:
    """The images in queue order (see the module docstring)."""
    return sorted((queue_entry(image, out_dir) for image in images), key=QueueEntry.sort_key)


def next_to_review(entries: list[QueueEntry], current: os.PathLike | str | None = None) -> QueueEntry | None:
    """The first unreviewed image of the queue other than ``current``."""
    current_path = Path(current).resolve() if current is not None else None
    return next((entry for entry in entries if not entry.reviewed and entry.image.resolve() != current_path), None)


def bulk_confirmable(entries: list[QueueEntry], below: float) -> list[QueueEntry]:
    """The unreviewed images scoring below ``below`` with no shape a person made, lowest score first:
    the ones a person may confirm defect-free from their thumbnails."""
    return sorted((entry for entry in entries if not entry.reviewed and entry.score is not None
                   and entry.score < below and not entry.people_shapes and entry.problem is None),
                  key=lambda entry: entry.score or 0.0)


def write_queue(entries: list[QueueEntry], path: Path) -> None:
    """The queue as CSV (rank, image, score, state, pending), written atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["rank", "image", "score", "state", "pending"])
    for rank, entry in enumerate(entries, 1):
        image = os.path.relpath(entry.image.resolve(), path.parent.resolve())
        writer.writerow([rank, image, "" if entry.score is None else f"{entry.score:.4f}", entry.state, entry.pending])
    write_atomically(path, text.getvalue().encode())


def write_queues(images: list[Path], out_dir: os.PathLike | str | None = None) -> list[tuple[Path, list[QueueEntry]]]:
    """One queue per label folder of ``images`` (``out_dir``, or each image's own folder), written
    there as ``QUEUE_FILE``; returns each file and its entries."""
    by_folder: dict[Path, list[Path]] = {}
    for image in images:
        by_folder.setdefault(label_path_for(image, out_dir).parent, []).append(Path(image))
    written = []
    for folder, members in by_folder.items():
        entries = review_queue(members, out_dir)
        write_queue(entries, folder / QUEUE_FILE)
        written.append((folder / QUEUE_FILE, entries))
    return written
