"""Review decisions follow what a person sees: undo, the reviewed tick, files LabelMe cannot
open, and the On-open setting (a real LabelMe window, offscreen)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qtpy import QtCore, QtWidgets

from labelme_dsarad import review
from labelme_dsarad._labelme_adapter import LABELME_7, PENDING_COLOUR, wait_for_saves
from labelme_dsarad.model import labelfile
from labelme_dsarad.model.polygons import Region
from labelme_dsarad.train.stats import suggestion_stats

from .test_gui_panel import WAIT, detect, fake_option, ready, tick_reviewed
from .test_gui_support import SQUARE, FakePredictor, square_origins, write_sample_images


def pending_shapes(panel) -> list:
    return review.pending(panel.adapter.shapes())


def saved(image: Path) -> dict:
    wait_for_saves()
    return json.loads(image.with_suffix(".json").read_text())


def contradictions(data: dict) -> set[str]:
    """Fingerprints a label file holds both as a pending suggestion and as a rejection."""
    pending = {shape["dsarad"]["fingerprint"] for shape in data["shapes"] if labelfile.is_pending_suggestion(shape)}
    rejected = {entry["fingerprint"] for entry in (data.get("dsarad") or {}).get("rejected") or []}
    return pending & rejected


def counts(folder: Path) -> dict:
    wait_for_saves()
    groups, problems = suggestion_stats(folder)
    assert not problems
    (only,) = groups.values()
    return only


def is_drawn_pending(panel, shape) -> bool:
    """Amber, and its line in the annotation list tells score and size."""
    item = panel.adapter.window._docks.label_list.find_item_by_shape(shape=shape)
    return (panel.adapter.colours(shape)[0].getRgb()[:3] == PENDING_COLOUR and "· pending 0.8" in item.text()
            and " px" in item.text())


# --- undo ---


def detected_two_squares(qtbot, tmp_path, make_window) -> tuple[list[Path], object]:
    """One image with two squares, opened (autosave on) and detected: two pending suggestions."""
    images = write_sample_images(tmp_path, 1, squares=2)
    _, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 2
    return images, panel


def test_undo_of_a_reject_takes_back_the_rejection_in_the_file(qtbot, tmp_path, make_window):
    images = write_sample_images(tmp_path, 2, squares=2)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path, auto_save=False)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 2
    first, _ = pending_shapes(panel)
    panel.adapter.select([first])
    panel.view.reject_action.trigger()
    assert len(pending_shapes(panel)) == 1
    panel.adapter.undo()  # Ctrl+Z
    assert len(pending_shapes(panel)) == 2
    assert all(is_drawn_pending(panel, shape) for shape in pending_shapes(panel))
    assert panel.view.review_label.text() == "Suggestions: 2 pending, 0 accepted"
    assert panel.adapter.is_dirty(), "an undo is an edit to save"
    data = json.loads(panel.adapter.save().read_text())  # Ctrl+S
    assert (data["dsarad"].get("rejected") or []) == []
    assert counts(tmp_path)["rejected"] == 0 and counts(tmp_path)["pending"] == 2

    panel.adapter.open_file(str(images[1]))
    panel.adapter.open_file(str(images[0]))
    assert len(pending_shapes(panel)) == 2
    assert detect(qtbot, panel) == 2, "nothing on this image is rejected"


def test_undo_of_a_reject_then_another_edit_leaves_no_suggestion_both_pending_and_rejected(
        qtbot, tmp_path, make_window):
    images = write_sample_images(tmp_path, 1, squares=3)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)  # autosave
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 3
    panel.adapter.select(pending_shapes(panel)[:1])
    panel.view.reject_action.trigger()
    panel.adapter.undo()
    panel.adapter.select(pending_shapes(panel)[1:2])  # the shapes are LabelMe's copies now
    panel.view.accept_action.trigger()
    data = saved(images[0])
    assert contradictions(data) == set()
    assert counts(tmp_path)["rejected"] == 0
    assert counts(tmp_path)["pending"] == 2 and counts(tmp_path)["accepted_unchanged"] == 1


def test_undo_of_an_accept_makes_it_pending_again_on_the_canvas_and_in_the_file(qtbot, tmp_path, make_window):
    images, panel = detected_two_squares(qtbot, tmp_path, make_window)
    panel.adapter.select(pending_shapes(panel)[:1])
    panel.view.accept_action.trigger()
    assert [shape["dsarad"]["state"] for shape in saved(images[0])["shapes"]] == ["accepted", "pending"]
    panel.adapter.undo()
    assert len(pending_shapes(panel)) == 2
    assert all(is_drawn_pending(panel, shape) for shape in panel.adapter.shapes())
    assert [shape["dsarad"]["state"] for shape in saved(images[0])["shapes"]] == ["pending", "pending"]


def test_undo_of_a_detect_forgets_what_it_suggested(qtbot, tmp_path, make_window):
    images, panel = detected_two_squares(qtbot, tmp_path, make_window)
    panel.adapter.undo()
    assert panel.adapter.shapes() == []
    data = saved(images[0])
    assert data["shapes"] == [] and labelfile.remembered_rejections(data) == []
    assert detect(qtbot, panel) == 2, "taking back a suggestion is not rejecting it"


def test_a_reject_shown_again_at_a_lower_threshold_is_not_both_pending_and_rejected(qtbot, tmp_path, make_window):
    images, panel = detected_two_squares(qtbot, tmp_path, make_window)
    panel.adapter.select(pending_shapes(panel)[:1])
    panel.view.reject_action.trigger()
    panel.view.threshold_slider.setValue(40)  # asked for more: the rejected one is shown again, and says so
    shown = pending_shapes(panel)
    assert len(shown) == 2
    assert sum("rejected at 0.50" in shape.description for shape in shown) == 1
    assert contradictions(saved(images[0])) == set()
    panel.view.threshold_slider.setValue(50)  # back where it was rejected: it stays rejected
    assert len(pending_shapes(panel)) == 1
    assert counts(tmp_path)["rejected"] == 1


# --- the first image LabelMe opens ---


def pre_annotate(image: Path, index: int) -> None:
    """A label file with one pending suggestion on the image's square, as 'dsarad predict' writes it."""
    x0, y0 = square_origins(index)[0]
    points = [(float(x), float(y)) for x, y in ((x0, y0), (x0 + SQUARE, y0), (x0 + SQUARE, y0 + SQUARE), (x0, y0 + SQUARE))]
    region = Region(points, SQUARE * SQUARE, 0.85, 0.85, (x0, y0, x0 + SQUARE, y0 + SQUARE))
    provenance = {"model": "widget v1", "model_sha256": "f" * 64, "threshold": 0.5}
    width, height = Image.open(image).size
    labelfile.update_label_file(image.with_suffix(".json"), image, height, width,
                                [labelfile.suggestion_shape(region, "defect", provenance)], run_record=provenance)


def test_the_first_image_labelme_opens_draws_its_suggestions_as_pending(qtbot, tmp_path, make_window):
    images = write_sample_images(tmp_path, 2)
    for index, image in enumerate(images):
        pre_annotate(image, index)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path, opened_by_labelme=True)
    (shape,) = panel.adapter.shapes()
    assert is_drawn_pending(panel, shape)
    assert panel.view.review_label.text() == "Suggestions: 1 pending, 0 accepted"


# --- ticking the image reviewed ---


@pytest.mark.parametrize("answer", ["accept", "reject", "leave"])
def test_ticking_reviewed_with_pending_suggestions_asks_what_to_do_with_them(qtbot, tmp_path, make_window, answer):
    images = write_sample_images(tmp_path, 1, squares=2)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path, flags=["ok"])
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 2
    asked = []
    panel.review.ask_about_pending = lambda count: asked.append(count) or answer
    tick_reviewed(window)
    assert asked == [2]
    data = saved(images[0])
    if answer == "accept":
        assert pending_shapes(panel) == [] and len(panel.adapter.shapes()) == 2
        assert [shape["dsarad"]["state"] for shape in data["shapes"]] == ["accepted", "accepted"]
    elif answer == "reject":
        assert panel.adapter.shapes() == [] and len(data["dsarad"]["rejected"]) == 2
    else:
        assert len(pending_shapes(panel)) == 2
    assert data["flags"]["ok"] is (answer != "leave"), "left pending, the image is not reviewed"
    assert reviewed_box(window).checkState() == (QtCore.Qt.Unchecked if answer == "leave" else QtCore.Qt.Checked)

    # Nothing pending: ticking asks nothing.
    panel.review.accept_all()
    reviewed_box(window).setCheckState(QtCore.Qt.Unchecked)
    tick_reviewed(window)
    assert asked == [2] and saved(images[0])["flags"]["ok"] is True


def reviewed_box(window) -> QtWidgets.QListWidgetItem:
    flags = window._docks.flag_list
    return next(flags.item(row) for row in range(flags.count()) if flags.item(row).text() == "ok")


@pytest.mark.parametrize(("button", "answer"), [("Accept all", "accept"), ("Reject all", "reject"),
                                                ("Leave them pending", "leave")])
def test_the_reviewed_question_is_a_message_box_with_three_answers(qtbot, tmp_path, make_window, button, answer):
    window, panel = make_window([])
    seen = []

    def click() -> None:
        box = next(widget for widget in QtWidgets.QApplication.topLevelWidgets()
                   if isinstance(widget, QtWidgets.QMessageBox) and widget.isVisible())
        seen.append(box.text())
        next(choice for choice in box.buttons() if choice.text() == button).click()

    QtCore.QTimer.singleShot(0, click)
    assert panel.review.ask_about_pending(2) == answer
    assert "2 suggestions are still pending" in seen[0]


# --- a file LabelMe cannot open ---


def test_a_file_labelme_cannot_open_clears_the_panel(qtbot, tmp_path, make_window, no_dialogs):
    images = write_sample_images(tmp_path, 1, squares=2)
    deep = tmp_path / "image_01.png"
    Image.fromarray(np.full((40, 50), 1000, dtype=np.uint16)).save(deep)  # 16-bit greyscale
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 2
    panel.adapter.open_file(str(deep))
    if LABELME_7:  # it opens 16-bit images, and after a file it cannot open it keeps the open one
        return
    assert [kind for kind, _ in no_dialogs] == ["critical"]  # LabelMe says it cannot open it
    assert panel.view.review_label.text() == "Suggestions: 0 pending, 0 accepted"
    assert not panel.view.accept_all_action.isEnabled() and not panel.view.reject_all_action.isEnabled()
    assert not panel.view.detect_action.isEnabled()
    panel.adapter.open_file(str(images[0]))
    assert len(pending_shapes(panel)) == 2 and panel.view.detect_action.isEnabled()


# --- On open ---


def test_detect_on_open_is_on_by_default_and_remembered(qtbot, tmp_path, make_window, qsettings_sandbox):
    window, panel = make_window([])
    assert panel.view.detect_on_open_action.isChecked()
    panel.view.detect_on_open_box.setChecked(False)
    assert list(qsettings_sandbox.rglob("*")), "kept with Qt's settings, in the test's own folder"
    later_window, later = make_window([])
    assert not later.view.detect_on_open_action.isChecked()
    later.view.detect_on_open_box.setChecked(True)
    assert make_window([])[1].view.detect_on_open_action.isChecked()


def test_the_detect_all_summary_stays_until_the_person_acts(qtbot, tmp_path, make_window):
    images = write_sample_images(tmp_path, 3)
    images[2].write_bytes(b"not an image")
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    assert panel.view.detect_on_open_action.isChecked()
    panel.view.detect_all_action.trigger()
    qtbot.waitUntil(lambda: not panel.batch.running, timeout=WAIT)
    summary = panel.view.summary_label.text()
    assert "1 failed" in summary and "image_02.png" in summary
    assert panel.view.summary_label.isVisibleTo(panel.view)
    # The reload of the open image and On open's detection on it and on the next one leave it there.
    qtbot.wait(100)
    panel.adapter.open_file(str(images[1]))
    qtbot.waitUntil(lambda: panel.worker.pending_count() == 0, timeout=WAIT)
    qtbot.wait(50)
    assert panel.view.summary_label.text() == summary
    panel.view.dismiss_summary_action.trigger()
    assert panel.view.summary_label.text() == "" and not panel.view.summary_label.isVisibleTo(panel.view)


def test_a_result_for_the_open_image_during_detect_all_leaves_its_file_to_detect_all(qtbot, tmp_path, make_window):
    # With On open, the open image's result can arrive while Detect all works on its label file:
    # derived then, LabelMe's autosave (truncate, then write) raced Detect all's read of the file.
    from labelme_dsarad.pipeline import PredictOptions
    from labelme_dsarad.worker import BatchJob, Job, JobResult

    write_sample_images(tmp_path, 2, squares=2)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    panel.view.detect_on_open_box.setChecked(False)
    ready(qtbot, panel)
    current = panel.adapter.image_path()
    pixels = np.asarray(Image.open(current).convert("RGB"))
    result = JobResult(Job(current), FakePredictor().predict(pixels), pixels.shape[:2], panel.model.key)
    panel.batch.batch, panel.batch.includes_current = BatchJob([Path(current)], PredictOptions()), True
    panel._want_suggestions.add(current)
    shown = []
    panel.suggestions_shown.connect(lambda path, count: shown.append(path))
    try:
        panel._on_result(result)
    finally:
        panel.batch.batch = None
    assert shown == [] and panel.adapter.shapes() == [] and not Path(current).with_suffix(".json").exists()
    assert panel.cache.get(current, panel.model.key) is not None, "kept for the open image's reload"


# --- one name for one thing ---


def test_the_tolerance_control_has_the_cli_options_name_default_and_unit(qtbot, make_window):
    from labelme_dsarad.cli import build_parser
    from labelme_dsarad.model.polygons import SuggestionSettings

    window, panel = make_window([])
    view = panel.view
    texts = {label.text() for label in view.findChildren(QtWidgets.QLabel)}
    assert "Tolerance" in texts and "Detail" not in texts
    assert "--tolerance" in view.tolerance_slider.toolTip()
    cli_default = build_parser("predict").parse_args(["predict", "image.png"]).tolerance
    assert view.suggestion_settings().tolerance == cli_default == SuggestionSettings.tolerance
    assert view.tolerance_label.text() == f"{cli_default:g} px"
    view.tolerance_slider.setValue(view.tolerance_slider.minimum())
    assert view.suggestion_settings().tolerance == 0.0 and view.tolerance_label.text() == "0 px"
    view.tolerance_slider.setValue(view.tolerance_slider.maximum())  # right: more simplified, as the number grows
    assert view.suggestion_settings().tolerance == 4.0 and view.tolerance_label.text() == "4 px"
