"""Label files: our suggestions come and go, people's shapes never change."""

from __future__ import annotations

import base64
import copy
import io
import json
import multiprocessing
import os
import pickle
import stat
import tempfile
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelme_dsarad.model import labelfile
from labelme_dsarad.model.labelfile import (
    PENDING_FLAG,
    RECORD_KEY,
    REJECTED_KEY,
    SUGGESTED_KEY,
    LabelFileError,
    is_pending_suggestion,
    load_label_file,
    merge_suggestions,
    set_state,
    suggestion_shape,
    update_label_file,
    write_label_file,
)
from labelme_dsarad.model.polygons import Region

labelme = pytest.importorskip("labelme")
from labelme_dsarad._labelme_adapter import move_vertex, read_label_file, resave_label_file  # noqa: E402 - LabelMe's own

PROVENANCE = {"model": "magnetic_tile_compact", "model_sha256": "ab" * 32, "threshold": 0.5}
WIDTH, HEIGHT = 64, 48


def region(points, score_max=0.87, score_mean=0.7) -> Region:
    xs, ys = zip(*points)
    return Region(list(points), 42, score_max, score_mean, (int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1))


def suggestion(x: float = 10, y: float = 10, label: str = "crack") -> dict:
    return suggestion_shape(region([(x, y), (x + 5, y), (x + 5, y + 4.5)]), label, PROVENANCE)


def mask_b64() -> str:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.eye(4, dtype=bool)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def people_shapes() -> list[dict]:
    """One shape of every LabelMe 6 type, with fields LabelMe does not know."""

    def shape(shape_type, points, **extra):
        return {
            "label": f"person {shape_type}",
            "points": points,
            "group_id": None,
            "description": "",
            "shape_type": shape_type,
            "flags": {},
            "mask": None,
            **extra,
        }

    return [
        shape("polygon", [[1, 1], [9, 1], [5, 7.25]], attributes={"severity": 3}),
        shape("rectangle", [[2.5, 3], [20, 30]], group_id=4),
        shape("circle", [[30, 30], [35, 30]], description="round pit"),
        shape("line", [[0, 0], [63, 47]]),
        shape("point", [[12.125, 40]], flags={"checked": True}),
        shape("linestrip", [[1, 40], [10, 44], [20, 41]]),
        shape("mask", [[40, 10], [43, 13]], mask=mask_b64()),
        shape("oriented_rectangle", [[10, 20], [20, 20], [20, 25], [10, 25]]),
        # A person may tick a box named like ours; without our record it is theirs.
        shape("polygon", [[50, 5], [60, 5], [55, 9]], flags={PENDING_FLAG: True}),
    ]


def reviewed_suggestions() -> list[dict]:
    """Our suggestions after a person touched them: all belong to people now."""
    accepted = suggestion(1, 1)
    set_state(accepted, "accepted")
    moved = suggestion(2, 2)
    moved["points"][0] = [2.5, 2]
    relabelled = suggestion(3, 3)
    relabelled["label"] = "scratch"
    unticked = suggestion(4, 4)
    unticked["flags"][PENDING_FLAG] = False
    noted = suggestion(5, 5)
    noted["description"] = "real defect, check batch"
    grouped = suggestion(6, 6)
    grouped["group_id"] = 1
    return [accepted, moved, relabelled, unticked, noted, grouped]


def label_file(shapes: list[dict], **top_level) -> dict:
    return {
        "version": "6.3.1",
        "flags": {"image_ok": True},
        "shapes": shapes,
        "imagePath": "part.png",
        "imageData": None,
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
        **top_level,
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def make_image(folder: Path, name: str = "part.png", width: int = WIDTH, height: int = HEIGHT) -> Path:
    path = folder / name
    PIL.Image.new("RGB", (width, height), (90, 90, 90)).save(path)
    return path


# -- our marks -----------------------------------------------------------------


def test_suggestion_is_a_marked_labelme_polygon():
    shape = suggestion_shape(region([(1.004, 2.5), (7, 2.5), (7, 9)], score_max=0.8712), "blowhole", PROVENANCE)
    assert shape["shape_type"] == "polygon" and shape["label"] == "blowhole"
    assert shape["points"] == [[1.0, 2.5], [7.0, 2.5], [7.0, 9.0]]
    assert shape["flags"] == {PENDING_FLAG: True}
    assert shape["description"] == "dsarad 0.87"
    assert shape["group_id"] is None and shape["mask"] is None
    record = shape[RECORD_KEY]
    assert record["state"] == "pending" and record["score_max"] == 0.8712
    assert {record[key] for key in ("model", "model_sha256", "threshold")} == set(PROVENANCE.values())
    assert is_pending_suggestion(shape)


def test_suggestion_needs_full_provenance():
    with pytest.raises(ValueError, match="model_sha256"):
        suggestion_shape(region([(0, 0), (1, 0), (1, 1)]), "x", {"model": "m", "threshold": 0.5})


@pytest.mark.parametrize("index", range(6))
def test_touched_suggestions_are_not_pending(index):
    assert not is_pending_suggestion(reviewed_suggestions()[index])


def test_float_rewrite_of_the_same_points_keeps_it_pending():
    shape = suggestion_shape(region([(1, 2), (7, 2), (7, 9)]), "x", PROVENANCE)
    shape["points"] = [[float(x), float(y)] for x, y in shape["points"]]
    assert is_pending_suggestion(shape)


def test_set_state_accepts_and_reopens():
    shape = suggestion()
    set_state(shape, "accepted")
    assert shape["flags"][PENDING_FLAG] is False and shape[RECORD_KEY]["state"] == "accepted"
    assert not is_pending_suggestion(shape)
    shape["points"][0] = [0.0, 0.0]
    set_state(shape, "pending")
    assert is_pending_suggestion(shape)


def test_set_state_refuses_peoples_shapes_and_unknown_states():
    with pytest.raises(ValueError, match="no 'dsarad' record"):
        set_state(people_shapes()[0], "accepted")
    with pytest.raises(ValueError, match="state"):
        set_state(suggestion(), "rejected")


@pytest.mark.parametrize(
    "shape",
    [{}, {"label": "x"}, {RECORD_KEY: "pending", "flags": {PENDING_FLAG: True}, "label": "x", "points": []}, None, []],
)
def test_malformed_shapes_are_not_pending(shape):
    assert not is_pending_suggestion(shape)


# -- merging -------------------------------------------------------------------


def test_merge_replaces_only_untouched_suggestions_and_keeps_order():
    people = people_shapes() + reviewed_suggestions()
    stale = [suggestion(30, 30), suggestion(40, 20)]
    shapes = [people[0], stale[0], *people[1:8], stale[1], *people[8:]]
    existing = label_file(shapes)
    before = copy.deepcopy(existing)
    new = [suggestion(40, 35, "crack"), suggestion(48, 20, "pit")]  # where no person's shape is
    merged = merge_suggestions(existing, new, "part.png", HEIGHT, WIDTH)
    assert merged["shapes"] == people + new
    assert existing == before  # the input is not modified
    assert {key: merged[key] for key in merged if key != "shapes"} == {key: before[key] for key in before if key != "shapes"}


def test_merge_skips_a_suggestion_identical_to_an_accepted_one():
    accepted = suggestion(10, 10)
    set_state(accepted, "accepted")
    merged = merge_suggestions(label_file([accepted]), [suggestion(10, 10), suggestion(30, 30)], "part.png", HEIGHT, WIDTH)
    assert merged["shapes"] == [accepted, suggestion(30, 30)]


def test_a_new_suggestion_inside_a_persons_shape_is_not_added():
    rectangle = {"label": "pit", "points": [[5, 5], [30, 30]], "group_id": None, "description": "",
                 "shape_type": "rectangle", "flags": {}, "mask": None}
    circle = {**rectangle, "points": [[45, 20], [52, 20]], "shape_type": "circle"}
    line = {**rectangle, "points": [[0, 40], [60, 40], [60, 47], [0, 47]], "shape_type": "linestrip"}
    inside, half_out, elsewhere, across_line = suggestion(10, 10), suggestion(27, 27), suggestion(45, 18), suggestion(20, 41)
    merged = merge_suggestions(label_file([rectangle, circle, line]), [inside, half_out, elsewhere, across_line],
                               "part.png", HEIGHT, WIDTH)
    # Lines and points cover no area; a suggestion mostly outside every shape stays.
    assert merged["shapes"] == [rectangle, circle, line, half_out, across_line]


def test_a_rejected_suggestion_stays_rejected_through_any_number_of_runs_unless_the_threshold_is_lower():
    run = {"model": "m", "model_sha256": "ab", "threshold": 0.5}
    first = merge_suggestions(None, [suggestion(10, 10), suggestion(30, 20)], "part.png", HEIGHT, WIDTH, run)
    # The person deletes the second suggestion in LabelMe and accepts the first.
    reviewed = copy.deepcopy(first)
    reviewed["shapes"] = reviewed["shapes"][:1]
    set_state(reviewed["shapes"][0], "accepted")
    again = [suggestion(10, 10), suggestion(30.5, 20)]  # the same findings, one a little shifted
    second = merge_suggestions(reviewed, again, "part.png", HEIGHT, WIDTH, run)
    assert second["shapes"] == reviewed["shapes"]  # nothing undone, no twin of the accepted one
    assert [entry["points"] for entry in second[RECORD_KEY][REJECTED_KEY]] == [suggestion(30, 20)["points"]]
    third = merge_suggestions(second, again, "part.png", HEIGHT, WIDTH, run)
    assert third["shapes"] == reviewed["shapes"] and len(third[RECORD_KEY][REJECTED_KEY]) == 1
    # Asked for more (a lower threshold than it was rejected at), the finding may come back, saying so.
    lower = suggestion_shape(region([(30.5, 20), (35.5, 20), (35.5, 24.5)]), "crack", {**PROVENANCE, "threshold": 0.3})
    fourth = merge_suggestions(third, [lower], "part.png", HEIGHT, WIDTH, {**run, "threshold": 0.3})
    assert fourth["shapes"][:1] == reviewed["shapes"] and len(fourth["shapes"]) == 2
    back = fourth["shapes"][1]
    assert back["points"] == lower["points"] and back["description"] == "dsarad 0.87, rejected at 0.50"
    assert is_pending_suggestion(back)
    assert len(fourth[RECORD_KEY][REJECTED_KEY]) == 1


def test_a_suggestion_is_never_both_pending_and_rejected(tmp_path):
    run = {"model": "m", "model_sha256": "ab", "threshold": 0.5}
    first = merge_suggestions(None, [suggestion(10, 10), suggestion(30, 20)], "part.png", HEIGHT, WIDTH, run)
    # Shown again at the very place and threshold it was rejected at, it has the rejection's fingerprint.
    same = suggestion_shape(region([(30, 20), (35, 20), (35, 24.5)]), "crack", PROVENANCE)
    # An older version left this after an undone rejection: pending, and rejected too.
    contradictory = {**first, RECORD_KEY: {**first[RECORD_KEY],
                                           REJECTED_KEY: [labelfile.suggestion_memory(first["shapes"][1])]}}
    assert labelfile.remembered_rejections(contradictory) == []  # what the person last saw: pending
    path = tmp_path / "part.json"
    write_label_file(path, contradictory)
    assert load_label_file(path)[RECORD_KEY][REJECTED_KEY] == []
    assert labelfile.without_contradictions(first) is first  # nothing to repair: the same object
    # A lower threshold shows it again with a fingerprint of its own, and the rejection stays.
    rejected = labelfile.suggestion_memory(same)
    lower = suggestion_shape(region([(30, 20), (35, 20), (35, 24.5)]), "crack", {**PROVENANCE, "threshold": 0.4})
    (back,) = labelfile.new_suggestions([lower], [], [rejected])
    assert back[RECORD_KEY]["fingerprint"] != rejected["fingerprint"] == lower[RECORD_KEY]["fingerprint"]
    assert labelfile.new_suggestions([same], [], [rejected]) == []


def test_new_file_has_labelmes_layout():
    merged = merge_suggestions(None, [suggestion()], "part.png", HEIGHT, WIDTH)
    assert list(merged) == ["version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"]
    assert merged["version"] == labelme.__version__
    assert merged["flags"] == {} and merged["imageData"] is None
    assert (merged["imagePath"], merged["imageHeight"], merged["imageWidth"]) == ("part.png", HEIGHT, WIDTH)


def test_merge_refuses_labels_of_another_image():
    with pytest.raises(ValueError, match="other.png"):
        merge_suggestions(label_file([], imagePath="..\\imgs\\other.png"), [], "part.png", HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="64 x 48"):
        merge_suggestions(label_file([]), [], "part.png", HEIGHT * 2, WIDTH)
    # A Windows-written path to the same image is fine.
    merged = merge_suggestions(label_file([], imagePath="..\\imgs\\PART.png"), [], "part.png", HEIGHT, WIDTH)
    assert merged["imagePath"] == "..\\imgs\\PART.png"


# -- fuzz: people's shapes always survive ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
coordinate = st.integers(0, WIDTH - 1) | st.floats(0, WIDTH - 1, allow_nan=False).map(lambda v: round(v, 3))
point = st.lists(coordinate, min_size=2, max_size=2)
POINT_COUNTS = {"polygon": (3, 7), "rectangle": (2, 2), "circle": (2, 2), "line": (2, 2), "point": (1, 1), "linestrip": (2, 6),
                "mask": (2, 2), "oriented_rectangle": (4, 4)}
MASK_B64 = mask_b64()
label_text = st.text(min_size=1, max_size=10)


@st.composite
def person_shape(draw) -> dict:
    shape_type = draw(st.sampled_from(sorted(POINT_COUNTS)))
    low, high = POINT_COUNTS[shape_type]
    shape = {
        "label": draw(label_text),
        "points": draw(st.lists(point, min_size=low, max_size=high)),
        "group_id": draw(st.none() | st.integers(0, 9)),
        "description": draw(st.text(max_size=8)),
        "shape_type": shape_type,
        "flags": draw(st.dictionaries(st.sampled_from(["ok", "occluded", PENDING_FLAG]), st.booleans(), max_size=2)),
        "mask": MASK_B64 if shape_type == "mask" else None,
    }
    extra = draw(st.dictionaries(st.sampled_from(["attributes", "score", "note", RECORD_KEY]), json_values, max_size=2))
    if isinstance(extra.get(RECORD_KEY), dict) and extra[RECORD_KEY].get("state") == "pending":
        extra[RECORD_KEY]["state"] = "reviewed"  # a fingerprint match by chance is not what this draws
    shape.update(extra)
    return shape


@st.composite
def our_suggestion(draw) -> dict:
    points = draw(st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=6))
    return suggestion_shape(region(points, draw(st.floats(0.5, 1))), draw(label_text), PROVENANCE)


@st.composite
def touched_suggestion(draw) -> dict:
    shape = draw(our_suggestion())
    touch = draw(st.sampled_from(["accept", "move", "relabel", "untick", "describe", "drop flags"]))
    if touch == "accept":
        set_state(shape, "accepted")
    elif touch == "move":
        index = draw(st.integers(0, len(shape["points"]) - 1))
        shape["points"][index] = [shape["points"][index][0] + draw(st.sampled_from([0.01, 1, -3.5])), shape["points"][index][1]]
    elif touch == "relabel":
        shape["label"] += draw(label_text)
    elif touch == "untick":
        shape["flags"][PENDING_FLAG] = False
    elif touch == "describe":
        shape["description"] += " " + draw(label_text)
    else:
        shape["flags"] = {}
    return shape


existing_shapes = st.lists(
    st.one_of(
        person_shape().map(lambda shape: ("person", shape)),
        touched_suggestion().map(lambda shape: ("touched", shape)),
        our_suggestion().map(lambda shape: ("stale", shape)),
    ),
    max_size=10,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=existing_shapes,
    new=st.lists(our_suggestion(), max_size=4),
    extra_top_level=st.dictionaries(st.sampled_from(["custom", "lineage", "checkedBy"]), json_values, max_size=2),
    embed_image=st.booleans(),
)
def test_fuzz_people_survive_and_labelme_reads_the_result(shapes, new, extra_top_level, embed_image):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        image = make_image(folder)
        image_data = base64.b64encode(image.read_bytes()).decode() if embed_image else None
        existing = label_file([shape for _, shape in shapes], imageData=image_data, **extra_top_level)
        json_path = write_json(folder / "part.json", existing)

        written = update_label_file(json_path, image, HEIGHT, WIDTH, new)

        reloaded = load_label_file(json_path)
        assert reloaded == written
        survivors = [shape for kind, shape in shapes if kind != "stale"]
        assert reloaded["shapes"][: len(survivors)] == survivors
        added = reloaded["shapes"][len(survivors) :]
        assert all(shape in new and is_pending_suggestion(shape) for shape in added)
        assert {k: v for k, v in reloaded.items() if k != "shapes"} == {k: v for k, v in existing.items() if k != "shapes"}

        loaded_by_labelme = read_label_file(json_path)
        assert len(loaded_by_labelme.shapes) == len(reloaded["shapes"])
        for ours, theirs in zip(reloaded["shapes"], loaded_by_labelme.shapes):
            assert theirs["flags"] == ours["flags"]
            assert theirs["other_data"].get(RECORD_KEY) == ours.get(RECORD_KEY)


# -- LabelMe's own open and save -----------------------------------------------------


def open_and_save_in_labelme(json_path: Path, edit=None) -> None:
    """What LabelMe's window does on open then save, minus the window: app.py _load_file ->
    _shapes_from_dicts, then save_labels -> _shape_to_dict (``resave_label_file``)."""
    resave_label_file(json_path, (HEIGHT, WIDTH), edit, label_flags={".*": ["occluded"]})


def test_our_marks_survive_labelme_open_and_save(tmp_path):
    image = make_image(tmp_path)
    json_path = tmp_path / "part.json"
    write_json(json_path, label_file(people_shapes(), custom={"kept": [1, 2]}))
    update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion(40, 35), suggestion(48, 20)])

    open_and_save_in_labelme(json_path)

    saved = load_label_file(json_path)
    assert saved["custom"] == {"kept": [1, 2]}
    pending = [shape for shape in saved["shapes"] if is_pending_suggestion(shape)]
    assert len(pending) == 2
    assert pending[0][RECORD_KEY] == suggestion(40, 35)[RECORD_KEY]
    assert pending[0]["flags"] == {"occluded": False, PENDING_FLAG: True}
    people = saved["shapes"][:-2]
    assert [shape["attributes"] for shape in people if "attributes" in shape] == [{"severity": 3}]
    assert len(people) == len(people_shapes())


def test_after_labelme_save_a_rerun_replaces_only_untouched_suggestions(tmp_path):
    image = make_image(tmp_path)
    json_path = tmp_path / "part.json"
    update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion(10, 10), suggestion(30, 20), suggestion(40, 5)])

    def review(shapes):
        shapes[0].flags[PENDING_FLAG] = False  # a person unticks the box
        move_vertex(shapes[1], 0, 2.0, 0.0)  # a person moves a vertex

    open_and_save_in_labelme(json_path, edit=review)
    reviewed = load_label_file(json_path)["shapes"][:2]

    rerun = update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion(50, 30)])
    assert rerun["shapes"] == [*reviewed, suggestion(50, 30)]


def test_run_record_is_kept_at_top_level_through_labelme_and_replaced_by_the_next_run(tmp_path):
    image = make_image(tmp_path)
    json_path = tmp_path / "part.json"
    first = {"model": "m", "model_sha256": "ab", "threshold": 0.5, "min_area": 20}
    update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion()], run_record=first)
    open_and_save_in_labelme(json_path)
    stored = load_label_file(json_path)[RECORD_KEY]
    assert {key: stored[key] for key in first} == first
    assert [entry["fingerprint"] for entry in stored[SUGGESTED_KEY]] == [suggestion()[RECORD_KEY]["fingerprint"]]
    second = {**first, "threshold": 0.6}
    written = update_label_file(json_path, image, HEIGHT, WIDTH, [], run_record=second)
    assert written[RECORD_KEY] == {**second, SUGGESTED_KEY: [], REJECTED_KEY: []} == load_label_file(json_path)[RECORD_KEY]


# -- refusals and file safety --------------------------------------------------------

BAD_FILES = {
    "invalid JSON": b'{"shapes": [',
    "not UTF-8": b'{"shapes": [], "label": "\xff"}',
    "top level is a list": b"[]",
    "missing shapes": b'{"version": "6.3.1"}',
    "shapes is an object": b'{"shapes": {}}',
    "shape is a string": b'{"shapes": ["polygon"]}',
    "label missing": b'{"shapes": [{"points": []}]}',
    "label is a number": b'{"shapes": [{"label": 3, "points": []}]}',
    "points missing": b'{"shapes": [{"label": "a"}]}',
    "points is a string": b'{"shapes": [{"label": "a", "points": "1,2"}]}',
    "point has one number": b'{"shapes": [{"label": "a", "points": [[1]]}]}',
    "point holds text": b'{"shapes": [{"label": "a", "points": [[1, "2"]]}]}',
    "point holds a boolean": b'{"shapes": [{"label": "a", "points": [[true, 2]]}]}',
}


@pytest.mark.parametrize("problem", sorted(BAD_FILES))
def test_bad_file_is_refused_in_one_line_and_never_overwritten(tmp_path, problem):
    image = make_image(tmp_path)
    json_path = tmp_path / "part.json"
    json_path.write_bytes(BAD_FILES[problem])
    with pytest.raises(LabelFileError) as caught:
        load_label_file(json_path)
    message = str(caught.value)
    assert message.startswith(f"{json_path}: ") and "\n" not in message
    with pytest.raises(LabelFileError):
        update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion()])
    assert json_path.read_bytes() == BAD_FILES[problem]
    assert not list(tmp_path.glob("*.tmp"))


def test_refusal_survives_pickling_for_worker_processes(tmp_path):
    error = LabelFileError(tmp_path / "a.json", "invalid JSON")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is LabelFileError and str(restored) == str(error) and restored.problem == "invalid JSON"


def test_labels_of_another_image_are_refused_and_left_alone(tmp_path):
    image = make_image(tmp_path)
    json_path = write_json(tmp_path / "part.json", label_file(people_shapes(), imagePath="part.jpg"))
    before = json_path.read_bytes()
    with pytest.raises(LabelFileError, match="part.jpg"):
        update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion()])
    assert json_path.read_bytes() == before


def test_a_folder_in_place_of_the_file_is_refused(tmp_path):
    (tmp_path / "part.json").mkdir()
    with pytest.raises(LabelFileError, match="cannot read"):
        update_label_file(tmp_path / "part.json", make_image(tmp_path), HEIGHT, WIDTH, [])


def test_written_like_labelme_utf8_indent_2(tmp_path):
    path = tmp_path / "a.json"
    write_label_file(path, {"shapes": [], "label": "Riß 傷"})
    assert path.read_text(encoding="utf-8") == json.dumps({"shapes": [], "label": "Riß 傷"}, ensure_ascii=False, indent=2)


def test_image_path_is_relative_to_the_label_folder(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    image = make_image(images, "Teil 1.png")
    written = update_label_file(labels / "Teil 1.json", image, HEIGHT, WIDTH, [])
    assert written["imagePath"] == os.path.join("..", "images", "Teil 1.png")
    assert read_label_file(labels / "Teil 1.json").image_path == "../images/Teil 1.png"


def test_permissions_are_kept_and_no_temporary_files_remain(tmp_path):
    image = make_image(tmp_path)
    json_path = write_json(tmp_path / "part.json", label_file([]))
    json_path.chmod(0o640)
    update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion()])
    assert stat.S_IMODE(json_path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dsarad.lock", "part.json", "part.png"]


def test_new_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        update_label_file(tmp_path / "part.json", make_image(tmp_path), HEIGHT, WIDTH, [])
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "part.json").stat().st_mode) == 0o644


def test_symlinked_label_file_stays_a_symlink(tmp_path):
    image = make_image(tmp_path)
    target = write_json(tmp_path / "stored.json", label_file([]))
    link = tmp_path / "part.json"
    link.symlink_to(target.name)
    update_label_file(link, image, HEIGHT, WIDTH, [suggestion()])
    assert link.is_symlink() and len(load_label_file(target)["shapes"]) == 1


def test_failed_write_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    image = make_image(tmp_path)
    json_path = write_json(tmp_path / "part.json", label_file(people_shapes()))
    before = json_path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(labelfile.os, "replace", disk_full)
    with pytest.raises(LabelFileError, match="No space left"):
        update_label_file(json_path, image, HEIGHT, WIDTH, [suggestion()])
    assert json_path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


# -- concurrent writers ---------------------------------------------------------------


def accepted_shape(writer: int, round_: int) -> dict:
    """A shape each writer adds that later merges must keep: any lost update shows."""
    shape = suggestion(writer, round_, label=f"writer {writer} round {round_}")
    set_state(shape, "accepted")
    return shape


def write_rounds(json_path: str, image_path: str, writer: int, rounds: int) -> None:
    for round_ in range(rounds):
        update_label_file(json_path, image_path, HEIGHT, WIDTH, [accepted_shape(writer, round_), suggestion(writer, 40)])


def assert_every_shape_survived(json_path: Path, writers: int, rounds: int) -> None:
    final = json.loads(json_path.read_text(encoding="utf-8"))  # valid JSON
    labels = [shape["label"] for shape in final["shapes"]]
    assert labels[: len(people_shapes())] == [shape["label"] for shape in people_shapes()]
    expected = {f"writer {w} round {r}" for w in range(writers) for r in range(rounds)}
    assert expected <= set(labels)
    assert sum(is_pending_suggestion(shape) for shape in final["shapes"]) == 1


def test_concurrent_threads_lose_nothing(tmp_path):
    image = make_image(tmp_path)
    json_path = write_json(tmp_path / "part.json", label_file(people_shapes()))
    writers, rounds = 6, 5
    threads = [threading.Thread(target=write_rounds, args=(str(json_path), str(image), w, rounds)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_every_shape_survived(json_path, writers, rounds)


def test_concurrent_processes_lose_nothing(tmp_path):
    image = make_image(tmp_path)
    json_path = write_json(tmp_path / "part.json", label_file(people_shapes()))
    writers, rounds = 3, 5
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=write_rounds, args=(str(json_path), str(image), w, rounds)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * writers
    assert_every_shape_survived(json_path, writers, rounds)
