"""The label-folder reader and ``dsarad stats`` on crafted LabelMe files."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from labelme_dsarad.cli import main
from labelme_dsarad.model.labelfile import RECORD_KEY, SUGGESTED_KEY, set_state, shape_fingerprint, suggestion_shape
from labelme_dsarad.model.polygons import Region
from labelme_dsarad.train.labels import rasterise_shapes, read_label_folder
from labelme_dsarad.train.stats import SUGGESTED_POINTS_KEY, suggestion_stats

SIZE = 40
PROVENANCE = {"model": "widget v1", "model_sha256": "0" * 64, "threshold": 0.5}


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def person_shape(points, shape_type="polygon", **extra) -> dict:
    return {"label": "defect", "points": points, "group_id": None, "description": "", "shape_type": shape_type,
            "flags": {}, "mask": None, **extra}


def suggestion(x0, y0, x1, y1, provenance=PROVENANCE) -> dict:
    region = Region(points=[(x, y) for x, y in square(x0, y0, x1, y1)], area=(x1 - x0) * (y1 - y0),
                    score_max=0.9, score_mean=0.7, bbox=(x0, y0, x1, y1))
    return suggestion_shape(region, "defect", provenance)


def write_labelled(folder: Path, name: str, shapes: list[dict], flags: dict | None = None, **top) -> Path:
    """An image and its LabelMe file, as LabelMe 6 writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}.png"), np.full((SIZE, SIZE, 3), 90, np.uint8))
    data = {"version": "6.3.1", "flags": {} if flags is None else flags, "shapes": shapes, "imagePath": f"{name}.png",
            "imageData": None, "imageHeight": SIZE, "imageWidth": SIZE, **top}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


OK = {"ok": True}


def test_reviewed_images_sort_into_normal_defect_and_skipped(tmp_path):
    accepted = suggestion(4, 4, 12, 12)
    set_state(accepted, "accepted")
    edited = suggestion(4, 4, 12, 12)
    edited["points"] = square(4, 4, 20, 12)  # moved by a person; still flagged pending
    write_labelled(tmp_path, "a_normal", [], OK)
    write_labelled(tmp_path, "b_drawn", [person_shape(square(2, 3, 6, 8))], OK)
    write_labelled(tmp_path, "c_accepted", [accepted], OK)
    write_labelled(tmp_path, "d_edited", [edited], OK)
    write_labelled(tmp_path, "e_only_pending", [suggestion(4, 4, 12, 12)], OK)
    write_labelled(tmp_path, "f_drawn_and_pending", [person_shape(square(2, 2, 8, 8)), suggestion(20, 20, 30, 30)], OK)
    write_labelled(tmp_path, "g_not_ok", [person_shape(square(2, 3, 6, 8))], {"ok": False})
    write_labelled(tmp_path, "h_no_flags", [])
    write_labelled(tmp_path, "i_other_flag", [], {"good": True})

    folder = read_label_folder(tmp_path)

    kinds = {image.image_path.stem: image.is_defect for image in folder.images}
    assert kinds == {"a_normal": False, "b_drawn": True, "c_accepted": True, "d_edited": True,
                     "f_drawn_and_pending": True}
    skipped = {path.stem: why for path, why in folder.skipped}
    assert set(skipped) == {"e_only_pending", "g_not_ok", "h_no_flags", "i_other_flag"}
    assert "pending" in skipped["e_only_pending"] and "not reviewed" in skipped["g_not_ok"]
    assert not folder.problems

    by_name = {image.image_path.stem: image for image in folder.images}
    defect, ignore = by_name["f_drawn_and_pending"].masks(SIZE, SIZE)
    assert defect.sum() == 36 and ignore.sum() == 100 and not (defect & ignore).any()
    defect, ignore = by_name["d_edited"].masks(SIZE, SIZE)
    assert defect.sum() == 16 * 8 and not ignore.any()
    assert by_name["d_edited"].read_image().shape == (SIZE, SIZE, 3)


def test_malformed_files_are_reported_in_one_line_and_skipped(tmp_path):
    write_labelled(tmp_path, "good", [], OK)
    (tmp_path / "broken.json").write_text('{"shapes": [')
    (tmp_path / "not_a_list.json").write_text('{"shapes": {}, "flags": {"ok": true}}')
    write_labelled(tmp_path, "bad_polygon", [person_shape([[1, 1], [5, 5]])], OK)
    write_labelled(tmp_path, "odd_type", [person_shape([[1, 1]], shape_type="spline")], OK)
    missing = write_labelled(tmp_path, "no_image", [], OK)
    (tmp_path / "no_image.png").unlink()

    folder = read_label_folder(tmp_path)

    assert [image.image_path.stem for image in folder.images] == ["good"]
    assert len(folder.problems) == 5
    assert all("\n" not in problem for problem in folder.problems)
    named = {Path(problem.split(": ", 1)[0]).name: problem for problem in folder.problems}
    assert set(named) == {"broken.json", "not_a_list.json", "bad_polygon.json", "odd_type.json", missing.name}
    assert "invalid JSON" in named["broken.json"] and "spline" in named["odd_type.json"]


def test_image_is_found_through_a_windows_style_relative_path_or_embedded_data(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    cv2.imwrite(str(images / "tile.png"), np.full((SIZE, SIZE, 3), 50, np.uint8))
    labels.mkdir()
    (labels / "tile.json").write_text(json.dumps({"flags": OK, "shapes": [], "imagePath": "..\\images\\tile.png"}))
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), 70, np.uint8)).save(buffer, format="PNG")
    (labels / "embedded.json").write_text(json.dumps({"flags": OK, "shapes": [], "imagePath": "gone.png",
                                                      "imageData": base64.b64encode(buffer.getvalue()).decode()}))
    folder = read_label_folder(labels)
    read = {image.label_path.stem: image.read_image() for image in folder.images}
    assert read["tile"].mean() == 50 and read["embedded"].mean() == 70


def test_rasterising_follows_labelme_pixel_coordinates():
    rectangle = person_shape([[2, 3], [6, 8]], shape_type="rectangle")
    polygon = person_shape(square(2, 3, 6, 8))
    expected = np.zeros((SIZE, SIZE), bool)
    expected[3:8, 2:6] = True  # pixel (x, y) spans [x, x + 1): the box covers x 2..5, y 3..7
    assert (rasterise_shapes([rectangle], SIZE, SIZE) == expected).all()
    assert (rasterise_shapes([polygon], SIZE, SIZE) == expected).all()

    circle = rasterise_shapes([person_shape([[20, 20], [28, 20]], shape_type="circle")], SIZE, SIZE)
    assert abs(circle.sum() - np.pi * 8**2) < 0.1 * np.pi * 8**2
    assert circle[19, 19] and not circle[19, 29]

    crop = np.zeros((5, 7), np.uint8)
    crop[1:4, 2:5] = 1
    buffer = io.BytesIO()
    Image.fromarray(crop * 255).save(buffer, format="PNG")
    mask_shape = person_shape([[10, 12], [16, 16]], shape_type="mask", mask=base64.b64encode(buffer.getvalue()).decode())
    placed = rasterise_shapes([mask_shape], SIZE, SIZE)
    assert placed.sum() == crop.sum() and placed[13:16, 12:15].all()

    line = rasterise_shapes([person_shape([[5, 30], [35, 30]], shape_type="linestrip")], SIZE, SIZE)
    assert line[29:31, 10:30].all() and not line[:25].any()


def test_stats_counts_accepted_edited_rejected_pending_and_missed(tmp_path):
    model_a = PROVENANCE
    model_b = {**PROVENANCE, "model": "widget v2"}
    accepted = suggestion(2, 2, 10, 10, model_a)
    set_state(accepted, "accepted")
    edited = suggestion(20, 20, 30, 30, model_a)
    edited[RECORD_KEY][SUGGESTED_POINTS_KEY] = copy.deepcopy(edited["points"])
    edited["points"] = square(20, 20, 30, 35)  # grown by half: IoU 100/150
    rejected = suggestion(30, 2, 36, 8, model_a)
    still_pending = suggestion(2, 30, 8, 36, model_a)
    drawn_overlapping = person_shape(square(22, 22, 26, 26))  # inside the edited suggestion
    drawn_missed = person_shape(square(12, 30, 16, 36))
    suggested = [shape_fingerprint(s) for s in (accepted, edited, rejected, still_pending)]
    suggested[0] = accepted[RECORD_KEY]["fingerprint"]
    suggested[1] = edited[RECORD_KEY]["fingerprint"]
    run = {"model": "widget v1", SUGGESTED_KEY: suggested}
    write_labelled(tmp_path, "one", [accepted, edited, still_pending, drawn_overlapping, drawn_missed], OK,
                   dsarad=run)
    # Another model's file without the suggested list: its rejections are unknown.
    write_labelled(tmp_path, "two", [suggestion(5, 5, 15, 15, model_b)], {})
    write_labelled(tmp_path, "three", [person_shape(square(1, 1, 4, 4))], OK)
    (tmp_path / "four.json").write_text("[]")

    groups, problems = suggestion_stats(tmp_path)

    assert len(problems) == 1 and "four.json" in problems[0]
    one = groups["widget v1"]
    assert (one["accepted_unchanged"], one["edited"], one["pending"], one["rejected"]) == (1, 1, 1, 1)
    assert one["suggestions"] == 4 and one["drawn_by_people"] == 2 and one["missed"] == 1
    assert one["edited_mean_iou"] == pytest.approx(100 / 150)
    two = groups["widget v2"]
    assert two["rejected"] is None and two["pending"] == 1 and two["reviewed_images"] == 0
    assert groups["(no model recorded)"]["missed"] == 1


def test_stats_command_prints_a_row_per_model(tmp_path, capsys):
    write_labelled(tmp_path, "one", [suggestion(2, 2, 10, 10)], OK)
    assert main(["stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "widget v1" in out and "not recorded" in out
    assert main(["stats", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
