"""The review queue and bulk confirmation, without Qt: the order, each image's state, the CSV
``dsarad predict`` writes, and what confirming an image defect-free does to its label file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import PIL.Image

from labelme_dsarad.cli import main
from labelme_dsarad.model.labelfile import (
    confirm_defect_free,
    load_label_file,
    suggestion_shape,
    update_label_file,
    write_label_file,
)
from labelme_dsarad.model.polygons import Region
from labelme_dsarad.review_queue import QUEUE_FILE, bulk_confirmable, next_to_review, review_queue
from tests.conftest import PERSON_SHAPE, make_tiny_model

PROVENANCE = {"model": "widget v1", "model_sha256": "f" * 64, "threshold": 0.5}


def image(folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    PIL.Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    return path


def suggested(path: Path, score: float, squares: int = 1) -> Path:
    """A run's label file for ``path``: ``squares`` pending suggestions and the image score."""
    shapes = [suggestion_shape(Region([(x, 2.0), (x + 4.0, 2.0), (x + 4.0, 6.0), (x, 6.0)], 16, 0.9, 0.8,
                                      (int(x), 2, int(x) + 4, 6)), "defect", PROVENANCE)
              for x in np.arange(squares) * 6.0 + 1.0]
    label_path = path.with_suffix(".json")
    update_label_file(label_path, path, 20, 30, shapes, run_record={**PROVENANCE, "image_score": score})
    return label_path


def reviewed(label_path: Path, with_shape: bool = False) -> None:
    data = load_label_file(label_path)
    data["flags"] = {"ok": True}
    if with_shape:
        data["shapes"].append(PERSON_SHAPE)
    write_label_file(label_path, data)


def test_the_queue_puts_likely_defects_first_then_unscored_then_reviewed(tmp_path):
    low, high, middle, unscored, done = (image(tmp_path, name) for name in ("low", "high", "middle", "new", "done"))
    suggested(low, 0.1, squares=0)
    suggested(high, 0.9, squares=2)
    suggested(middle, 0.6)
    reviewed(suggested(done, 0.95))
    queue = review_queue([low, high, middle, unscored, done])
    assert [entry.image.stem for entry in queue] == ["high", "middle", "low", "new", "done"]
    assert [entry.state for entry in queue] == ["2 pending", "1 pending", "new", "new", "reviewed"]
    assert next_to_review(queue).image == high
    assert next_to_review(queue, current=high).image == middle


def test_bulk_confirmation_offers_only_low_unreviewed_images_without_a_persons_shape(tmp_path):
    quiet, flagged, drawn, done, high = (image(tmp_path, name) for name in ("quiet", "flagged", "drawn", "done", "high"))
    suggested(quiet, 0.05, squares=0)
    suggested(flagged, 0.2)
    reviewed(suggested(drawn, 0.1), with_shape=True)
    data = load_label_file(drawn.with_suffix(".json"))
    data["flags"] = {"ok": False}  # a person's shape, not reviewed yet
    write_label_file(drawn.with_suffix(".json"), data)
    reviewed(suggested(done, 0.01))
    suggested(high, 0.45)
    offered = bulk_confirmable(review_queue([quiet, flagged, drawn, done, high]), below=0.3)
    assert [entry.image.stem for entry in offered] == ["quiet", "flagged"]


def test_confirming_rejects_the_pending_suggestions_for_good_and_never_touches_a_persons_shape(tmp_path):
    flagged, drawn = image(tmp_path, "flagged"), image(tmp_path, "drawn")
    flagged_labels = suggested(flagged, 0.2, squares=2)
    assert confirm_defect_free(flagged_labels) == 2
    data = load_label_file(flagged_labels)
    assert data["shapes"] == [] and data["flags"]["ok"] is True
    assert len(data["dsarad"]["rejected"]) == 2
    # A later run at the same threshold suggests nothing there again.
    again = suggested(flagged, 0.2, squares=2)
    assert load_label_file(again)["shapes"] == []

    drawn_labels = suggested(drawn, 0.2)
    data = load_label_file(drawn_labels)
    data["shapes"].append(PERSON_SHAPE)
    write_label_file(drawn_labels, data)
    before = drawn_labels.read_bytes()
    assert confirm_defect_free(drawn_labels) is None
    assert drawn_labels.read_bytes() == before


def test_predict_writes_the_queue_beside_the_labels_and_says_how_many_score_above_the_threshold(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    for index in range(3):
        PIL.Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"image_{index}.png")
    out = tmp_path / "labels"
    assert main(["predict", "--model", str(model), "--out", str(out), str(tmp_path)]) == 0
    with (out / QUEUE_FILE).open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert {Path(row["image"]).name for row in rows} == {f"image_{index}.png" for index in range(3)}
    assert (out / Path(rows[0]["image"])).resolve() == (tmp_path / Path(rows[0]["image"]).name).resolve()
    above = sum(score >= 0.5 for score in scores)
    assert f"{above} of 3 images score above the model's threshold; 3 to review" in capsys.readouterr().err
