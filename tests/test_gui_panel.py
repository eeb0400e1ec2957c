"""The "Defect detection" panel inside a real LabelMe window (offscreen)."""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from qtpy import QtCore, QtGui, QtWidgets

from labelme_dsarad import review
from labelme_dsarad._labelme_adapter import PENDING_COLOUR, move_vertex, wait_for_saves
from labelme_dsarad.model.model_file import read_header
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.panel import ModelOption, describe_model
from labelme_dsarad.train.stats import suggestion_stats
from labelme_dsarad.worker import ModelDescription

from .conftest import TORCH_INSTALLED, make_tiny_model
from .test_gui_support import FakePredictor, fake_factory, inside_squares, write_sample_images

WAIT = 20000  # ms; generous, the machine is shared
DURATION = r"(\d+ ms|\d+\.\d s)"  # as the status line writes a time


def test_the_model_line_shows_scores_not_counts(tmp_path):
    info = read_header(make_tiny_model(tmp_path / "tiny.safetensors"))
    info = replace(info, metrics={"overall": {"images": 0, "image_auroc": 0.9125}})
    text = describe_model(ModelDescription("key", "widget v2", "cpu", info))
    assert "image auroc 0.912" in text and "images" not in text


def fake_option(predictor: FakePredictor, title: str = "fake") -> ModelOption:
    return ModelOption(title, None, fake_factory(predictor))


def ready(qtbot, panel):
    qtbot.waitUntil(lambda: panel.model is not None, timeout=WAIT)


def detect(qtbot, panel) -> int:
    with qtbot.waitSignal(panel.suggestions_shown, timeout=WAIT) as shown:
        panel.view.detect_action.trigger()
    return shown.args[1]


def person_shape(label: str, box: tuple[int, int, int, int]) -> dict:
    x0, y0, x1, y1 = box
    return {"label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "group_id": None,
            "description": "", "shape_type": "polygon", "flags": {}, "mask": None}


def write_person_labels(image: Path, shapes: list[dict]) -> Path:
    from PIL import Image

    width, height = Image.open(image).size
    path = image.with_suffix(".json")
    path.write_text(json.dumps({"version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": image.name,
                                "imageData": None, "imageHeight": height, "imageWidth": width}))
    return path


def test_detect_with_tiny_model_and_slider_rederives_without_inference(qtbot, tmp_path, make_window, tiny_model_path):
    images = write_sample_images(tmp_path / "images", 2)
    window, panel = make_window([ModelOption("tiny", tiny_model_path)], open_path=tmp_path / "images")
    panel.view.detect_on_open_box.setChecked(False)  # one model run, the one Detect asks for
    ready(qtbot, panel)
    assert "widget v1" in panel.view.model_info.text() and "tiny, 64 px" in panel.view.model_info.text()

    shown = detect(qtbot, panel)
    # A random tiny model scores everything a little above its threshold: one region.
    assert shown >= 1
    pending = review.pending(panel.adapter.shapes())
    assert len(pending) == shown
    for shape in pending:
        assert shape.flags == {"dsarad_pending": True}
        assert panel.adapter.colours(shape)[0].getRgb()[:3] == PENDING_COLOUR
        assert shape.other_data["dsarad"]["model_sha256"] == panel.model.key
    assert re.fullmatch(rf"\d+ suggestions? in {DURATION} \(decoding and model {DURATION} on cpu\)",
                        window.statusBar().currentMessage())
    assert panel.inference_runs == 1

    score_map = panel.current_map().prediction.score_map
    assert score_map.shape == (72, 80)  # image_00's own size, not the model's 64 x 64
    panel.view.threshold_slider.setValue(99)
    assert review.pending(panel.adapter.shapes()) == []
    panel.view.threshold_slider.setValue(50)
    assert len(review.pending(panel.adapter.shapes())) == shown
    part = int(float(np.quantile(score_map, 0.9)) * 100)  # where only part of this map reaches the threshold
    panel.view.threshold_slider.setValue(part)
    # Until the slider moves, suggestions reach as far as the model has it (per kind, for a retrained one).
    assert panel.view.extend_by_model_box.isChecked() and panel.view.extend_label.text() == "0.70"
    assert panel.view.suggestion_settings().extend_to is None
    shown = {}
    for extend_to, value in ((1.0, 20), (0.5, 10)):  # what the slider sets is what is drawn
        panel.view.extend_slider.setValue(value)
        assert panel.view.extend_label.text() == f"{extend_to:.2f}"
        drawn = SuggestionSettings(threshold=part / 100, extend_to=extend_to).regions(score_map)
        shown[extend_to] = sorted(shape.other_data["dsarad"]["score_mean"] for shape in review.pending(panel.adapter.shapes()))
        assert drawn and shown[extend_to] == sorted(round(region.score_mean, 4) for region in drawn)
    assert shown[1.0] != shown[0.5]
    assert not panel.view.extend_by_model_box.isChecked()
    panel.view.extend_by_model_box.setChecked(True)  # back to the model's own
    drawn = SuggestionSettings(threshold=part / 100).regions(score_map)
    assert sorted(shape.other_data["dsarad"]["score_mean"] for shape in review.pending(panel.adapter.shapes())) == \
        sorted(round(region.score_mean, 4) for region in drawn)
    assert panel.view.threshold_label.toolTip() == ""  # a model with no peak of its own says nothing of it
    panel.view.set_model_levels({"pit": 0.4}, 1.4)  # as a model retrained on pits shows it
    assert panel.view.extend_label.text() == "by kind" and "pit 0.40" in panel.view.extend_label.toolTip()
    assert "1.40 times the threshold" in panel.view.threshold_label.toolTip()
    panel.view.threshold_slider.setValue(50)
    panel.view.min_area_box.setValue(72 * 80 + 1)  # larger than the image: nothing can qualify
    assert review.pending(panel.adapter.shapes()) == []
    assert panel.inference_runs == 1, "the sliders re-derive from the cached map"
    assert images[0].with_suffix(".json").exists()


def test_accept_and_reject_each_and_all(qtbot, tmp_path, make_window):
    write_sample_images(tmp_path, 1, squares=3)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 3
    adapter = panel.adapter
    first, second, third = review.pending(adapter.shapes())

    adapter.select([first])
    assert panel.view.accept_action.isEnabled()
    panel.view.accept_action.trigger()
    assert review.state(first) == review.ACCEPTED and first.flags["dsarad_pending"] is False
    assert panel.adapter.colours(first)[0].getRgb()[:3] != PENDING_COLOUR

    adapter.select([second])
    panel.view.reject_action.trigger()
    assert second not in adapter.shapes()
    assert panel.view.review_label.text() == "Suggestions: 1 pending, 1 accepted"

    panel.view.accept_all_action.trigger()
    assert review.pending(adapter.shapes()) == [] and review.state(third) == review.ACCEPTED
    assert not panel.view.accept_all_action.isEnabled() and not panel.view.reject_all_action.isEnabled()

    # Detect again: the accepted ones are not repeated, the rejected one stays rejected.
    assert detect(qtbot, panel) == 0
    assert len(adapter.shapes()) == 2

    panel.view.threshold_slider.setValue(55)  # re-derives, still nothing new
    assert review.pending(adapter.shapes()) == []
    # Asking for more than when it was rejected (a lower threshold) shows the rejected one again.
    panel.view.threshold_slider.setValue(40)
    assert len(review.pending(adapter.shapes())) == 1


def test_editing_a_suggestion_accepts_it_and_reject_all_keeps_it(qtbot, tmp_path, make_window):
    write_sample_images(tmp_path, 1, squares=3)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 3
    adapter = panel.adapter
    moved = review.pending(adapter.shapes())[0]
    move_vertex(moved, 0, 2.0, 0.0)
    adapter.canvas.shape_moved.emit()  # what LabelMe's canvas says after a vertex drag
    assert review.state(moved) == review.ACCEPTED

    panel.view.reject_all_action.trigger()
    assert adapter.shapes() == [moved]
    wait_for_saves()
    saved = json.loads((tmp_path / "image_00.json").read_text())  # autosave
    assert [shape["dsarad"]["state"] for shape in saved["shapes"]] == ["accepted"]


def test_one_undo_removes_a_whole_batch_and_keeps_people_shapes(qtbot, tmp_path, make_window):
    image, = write_sample_images(tmp_path, 1, squares=3)
    write_person_labels(image, [person_shape("scratch", (60, 60, 70, 70))])
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 3
    for value in (60, 45, 55):  # slider moves replace the batch, they do not stack
        panel.view.threshold_slider.setValue(value)
    assert len(panel.adapter.shapes()) == 4
    panel.adapter.undo()
    assert [shape.label for shape in panel.adapter.shapes()] == ["scratch"]


def test_pending_state_survives_save_and_reopen_and_labelme_reads_it(qtbot, tmp_path, make_window):
    from labelme_dsarad._labelme_adapter import read_label_file

    images = write_sample_images(tmp_path, 2, squares=3)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path, auto_save=False)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 3
    accepted = review.pending(panel.adapter.shapes())[0]
    panel.adapter.select([accepted])
    panel.view.accept_action.trigger()
    saved = panel.adapter.save()
    assert saved == images[0].with_suffix(".json")

    label_file = read_label_file(saved)  # LabelMe's own reader
    flags = sorted(shape["flags"]["dsarad_pending"] for shape in label_file.shapes)
    assert flags == [False, True, True]
    assert sorted(shape["other_data"]["dsarad"]["state"] for shape in label_file.shapes) == [
        "accepted", "pending", "pending"]
    raw = json.loads(saved.read_text())
    assert set(raw) == {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth", "dsarad"}
    assert len(raw["dsarad"]["suggested"]) == 3  # what was suggested, so a later deletion counts as a rejection
    assert raw["imageData"] is None, "the heat map (or the image) never goes into the file"

    panel.adapter.open_file(str(images[1]))
    panel.adapter.open_file(str(images[0]))
    shapes = panel.adapter.shapes()
    pending = review.pending(shapes)
    assert len(shapes) == 3 and len(pending) == 2
    assert all(panel.adapter.colours(shape)[1].getRgb()[:3] == PENDING_COLOUR for shape in pending)
    texts = [item.text() for item in panel.adapter.window._docks.label_list]
    assert sum("pending 0.8" in text for text in texts) == 2
    assert panel.view.review_label.text() == "Suggestions: 2 pending, 1 accepted"


def test_heat_map_overlay_toggles_and_is_drawn_under_the_shapes(qtbot, tmp_path, make_window):
    write_sample_images(tmp_path, 1, squares=1)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    window.show()
    ready(qtbot, panel)
    detect(qtbot, panel)
    overlay = panel.adapter.overlay()
    assert overlay is not None and (overlay.height(), overlay.width()) == (72, 80)
    canvas = panel.adapter.canvas
    with_map = canvas.grab().toImage()
    panel.view.heat_map_box.setChecked(False)
    assert panel.adapter.overlay() is None and not panel.view.heat_map_action.isChecked()
    without_map = canvas.grab().toImage()
    assert with_map != without_map
    panel.view.heat_map_action.setChecked(True)
    assert panel.adapter.overlay() is not None


def test_a_large_photos_heat_map_made_at_a_fraction_of_its_size_covers_the_whole_picture(qtbot, tmp_path, make_window):
    from PIL import Image

    photo = np.full((800, 1200, 3), 40, dtype=np.uint8)
    photo[500:600, 900:1100] = 240  # the defect, near the bottom right corner
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    window.show()
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 1
    overlay = panel.adapter.overlay()
    assert overlay is not None and overlay.width() < 1200, "the map of a reduced copy of the photo"
    canvas = panel.adapter.canvas
    origin = panel.adapter.image_origin()

    def at_the_defect() -> QtGui.QColor:
        qtbot.wait(50)
        return canvas.grab().toImage().pixelColor(int((1000 + origin.x()) * canvas.scale),
                                                  int((550 + origin.y()) * canvas.scale))

    with_map = at_the_defect()
    panel.view.heat_map_box.setChecked(False)
    assert with_map != at_the_defect(), "the heat map is drawn where its defect is in the photo"


def test_hundred_fast_switches_never_put_a_shape_on_the_wrong_image(qtbot, tmp_path, make_window, no_dialogs):
    images = [str(path) for path in write_sample_images(tmp_path, 6)]
    predictor = FakePredictor(delay=0.02)
    window, panel = make_window([fake_option(predictor)], open_path=tmp_path)
    ready(qtbot, panel)
    panel.view.detect_on_open_box.setChecked(True)
    wrong = []

    def check(path: str, count: int) -> None:
        index = images.index(path)
        if path != panel.adapter.image_path():
            wrong.append(f"suggestions for {path} shown on {panel.adapter.image_path()}")
        for shape in review.pending(panel.adapter.shapes()):
            if not inside_squares(review.points_of(shape), index):
                wrong.append(f"shape {review.points_of(shape)[:2]}… on {path}")

    panel.suggestions_shown.connect(check)
    rng = random.Random(4)
    for _ in range(100):
        panel.adapter.open_file(rng.choice(images))
        qtbot.wait(rng.choice([0, 0, 1, 5, 15]))
    final = panel.adapter.image_path()
    qtbot.waitUntil(lambda: panel.worker.pending_count() == 0, timeout=WAIT)
    qtbot.wait(50)
    assert wrong == []
    assert no_dialogs == []
    assert panel.adapter.image_path() == final
    for path in images:  # what autosave wrote is each image's own
        label_path = Path(path).with_suffix(".json")
        if label_path.exists():
            shapes = json.loads(label_path.read_text())["shapes"]
            assert all(inside_squares(shape["points"], images.index(path)) for shape in shapes), path
    assert len(predictor.calls) < 100, "queued work for images left behind was dropped"


class SlowPredictor:
    """The real tiny model, run again and again for ``seconds``: a slow model."""

    def __init__(self, model_path: Path, seconds: float):
        from labelme_dsarad.model.inference import Predictor

        self.inner = Predictor(model_path, device="cpu")
        self.seconds = seconds
        self.model, self.name, self.device = self.inner.model, self.inner.name, self.inner.device

    def predict(self, image, photo_shape=None):
        started = time.perf_counter()
        prediction = self.inner.predict(image, photo_shape)
        while time.perf_counter() - started < self.seconds:
            prediction = self.inner.predict(image, photo_shape)
            time.sleep(0.005)
        prediction.seconds = time.perf_counter() - started
        return prediction


def test_event_loop_keeps_answering_during_a_slow_inference(qtbot, tmp_path, make_window, tiny_model_path):
    write_sample_images(tmp_path, 1)
    slow = SlowPredictor(tiny_model_path, seconds=2.0)
    window, panel = make_window([fake_option(slow)], open_path=tmp_path)
    ready(qtbot, panel)
    lateness = []
    interval = 0.02
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        lateness.append(now - last[0] - interval)
        last[0] = now

    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.PreciseTimer)
    timer.timeout.connect(tick)
    timer.start(int(interval * 1000))
    started = time.perf_counter()
    with qtbot.waitSignal(panel.suggestions_shown, timeout=WAIT):
        panel.view.detect_action.trigger()
    timer.stop()
    assert time.perf_counter() - started >= 2.0
    assert len(lateness) > 50
    assert max(lateness) < 0.1, f"the event loop stalled for {max(lateness) * 1000:.0f} ms"


def test_look_ahead_shows_the_next_image_without_waiting(qtbot, tmp_path, make_window):
    images = [str(path) for path in write_sample_images(tmp_path, 3)]
    predictor = FakePredictor(delay=0.2)
    window, panel = make_window([fake_option(predictor)], open_path=tmp_path)
    panel.view.detect_on_open_box.setChecked(False)  # before the model is ready: nothing detected yet
    ready(qtbot, panel)
    with qtbot.waitSignal(panel.suggestions_shown, timeout=WAIT):
        panel.view.detect_on_open_box.setChecked(True)
    qtbot.waitUntil(lambda: panel.cache.get(images[1], panel.model.key) is not None, timeout=WAIT)
    shown = []
    panel.suggestions_shown.connect(lambda path, count: shown.append(path))
    panel.adapter.open_file(images[1])
    assert shown == [images[1]], "shown during the open, no inference to wait for"
    assert panel.last_open_to_shown_ms < 200
    assert re.fullmatch(rf"1 suggestion in \d+ ms \(computed ahead: {DURATION} on cpu\)",
                        window.statusBar().currentMessage())
    qtbot.waitUntil(lambda: panel.cache.get(images[2], panel.model.key) is not None, timeout=WAIT)
    assert len(predictor.calls) == 3


def test_a_look_ahead_still_running_when_the_image_opens_reports_the_wait_not_computed_ahead(
        qtbot, tmp_path, make_window):
    images = [str(path) for path in write_sample_images(tmp_path, 2)]
    predictor = FakePredictor(delay=0.6)
    window, panel = make_window([fake_option(predictor)], open_path=tmp_path)
    ready(qtbot, panel)  # On open: the first image, then the second one ahead
    qtbot.waitUntil(lambda: len(predictor.calls) == 2, timeout=WAIT)  # the second one's model is running
    with qtbot.waitSignal(panel.suggestions_shown, timeout=WAIT):
        panel.adapter.open_file(images[1])
    message = window.statusBar().currentMessage()
    assert "computed ahead" not in message
    assert re.fullmatch(rf"1 suggestion in {DURATION} \(decoding and model {DURATION} on cpu\)", message)
    assert 100 < panel.last_open_to_shown_ms < 0.6 * 1000 + WAIT, "the time the person waited for it"


def test_failures_are_messages_and_no_label_is_lost(qtbot, tmp_path, make_window, no_dialogs):
    image, = write_sample_images(tmp_path, 1)
    write_person_labels(image, [person_shape("scratch", (60, 60, 70, 70))])
    broken_model = tmp_path / "broken.safetensors"
    broken_model.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    failing = FakePredictor(fail_with=RuntimeError("kernel exploded"))
    working = FakePredictor()
    window, panel = make_window(
        [ModelOption("broken", broken_model), fake_option(failing, "failing"), fake_option(working, "working")],
        open_path=tmp_path,
    )
    qtbot.waitUntil(lambda: "broken.safetensors" in panel.view.message_label.text(), timeout=WAIT)
    assert not panel.view.detect_action.isEnabled()

    panel.select_model(1)
    ready(qtbot, panel)
    with qtbot.waitSignal(panel.worker.job_failed, timeout=WAIT):
        panel.view.detect_action.trigger()
    assert "inference failed (kernel exploded)" in panel.view.message_label.text()
    assert [shape.label for shape in panel.adapter.shapes()] == ["scratch"]

    panel.select_model(2)
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 1
    assert [shape.label for shape in panel.adapter.shapes()] == ["scratch", "defect"]
    assert no_dialogs == []


def test_detect_all_writes_label_files_and_keeps_people_shapes(qtbot, tmp_path, make_window):
    images = write_sample_images(tmp_path, 3, squares=2)
    write_person_labels(images[1], [person_shape("scratch", (60, 60, 70, 70))])
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    panel.view.detect_all_action.trigger()
    qtbot.waitUntil(lambda: not panel.batch.running, timeout=WAIT)
    assert "3 images: 3 predicted" in panel.view.summary_label.text()
    for index, image in enumerate(images):
        shapes = json.loads(image.with_suffix(".json").read_text())["shapes"]
        labels = sorted(shape["label"] for shape in shapes)
        assert labels == (["defect", "defect", "scratch"] if index == 1 else ["defect", "defect"])
    # The open image is reloaded from its new file (through the event loop).
    qtbot.waitUntil(lambda: len(review.pending(panel.adapter.shapes())) == 2, timeout=WAIT)


def test_detect_all_can_be_cancelled(qtbot, tmp_path, make_window):
    images = write_sample_images(tmp_path, 8)
    window, panel = make_window([fake_option(FakePredictor(delay=0.2))], open_path=tmp_path)
    ready(qtbot, panel)
    panel.view.detect_all_action.trigger()
    dialog = panel.batch.dialog
    assert dialog is not None and dialog.maximum() == 8
    qtbot.waitUntil(lambda: dialog.value() >= 1, timeout=WAIT)
    dialog.findChild(QtWidgets.QPushButton).click()  # the dialog's Cancel button
    qtbot.waitUntil(lambda: not panel.batch.running, timeout=WAIT)
    assert "(cancelled)" in panel.view.summary_label.text()
    assert sum(image.with_suffix(".json").exists() for image in images) < 8


def test_retrain_from_labels_opens_the_dialog_for_this_product_and_folder_and_switches(
        qtbot, tmp_path, make_window, tiny_model_path):
    write_sample_images(tmp_path / "images", 1)
    window, panel = make_window([ModelOption("tiny", tiny_model_path)], open_path=tmp_path / "images")
    ready(qtbot, panel)
    dialog = panel.retrain_from_labels()
    if not TORCH_INSTALLED:  # a review station's install: the panel says how to add training
        assert dialog is None and "pip install 'labelme-dsarad[train]'" in panel.view.message_label.text()
        return
    assert dialog is not None and dialog.isVisible()
    assert dialog.product == "widget" and dialog.labels_dir == tmp_path / "images"
    dialog.close()
    # The dialog reports a new current version: the panel offers and loads it.
    retrained = tmp_path / "v2.safetensors"
    retrained.write_bytes(tiny_model_path.read_bytes())
    dialog.switched.emit("widget", 2, str(retrained))
    assert panel.view.model_box.currentText() == "widget v2 (current)"
    assert panel.models[-1].path == retrained
    # Switching again: one entry of the product is marked in use, and a version offered already is not added twice.
    again = tmp_path / "v3.safetensors"
    again.write_bytes(tiny_model_path.read_bytes())
    dialog.switched.emit("widget", 3, str(again))
    dialog.switched.emit("widget", 2, str(retrained))
    titles = [panel.view.model_box.itemText(index) for index in range(panel.view.model_box.count())]
    assert titles == ["tiny", "widget v2 (current)", "widget v3"]
    assert panel.view.model_box.currentText() == "widget v2 (current)"
    qtbot.waitUntil(lambda: panel.model is not None and "widget" in panel.view.model_info.text(), timeout=WAIT)


def tick_reviewed(window) -> None:
    """Tick LabelMe's image flag 'ok' (the window was made with flags=['ok']), as a person does."""
    flags = window._docks.flag_list
    item = next(flags.item(row) for row in range(flags.count()) if flags.item(row).text() == "ok")
    item.setCheckState(QtCore.Qt.Checked)


def test_detect_all_undoes_no_decision_a_person_made(qtbot, tmp_path, make_window):
    images = write_sample_images(tmp_path, 2, squares=2)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path, flags=["ok"])
    ready(qtbot, panel)
    for image in images:  # review each image: reject one suggestion, accept the other, tick 'ok', save
        panel.adapter.open_file(str(image))
        assert detect(qtbot, panel) == 2
        kept, dropped = review.pending(panel.adapter.shapes())
        panel.adapter.select([dropped])
        panel.view.reject_action.trigger()
        panel.adapter.select([kept])
        panel.view.accept_action.trigger()
        tick_reviewed(window)
        panel.adapter.save()
    reviewed = {image: json.loads(image.with_suffix(".json").read_text())["shapes"] for image in images}

    panel.view.detect_all_action.trigger()
    qtbot.waitUntil(lambda: not panel.batch.running, timeout=WAIT)
    assert "2 reviewed (left alone)" in panel.view.summary_label.text()
    assert {image: json.loads(image.with_suffix(".json").read_text())["shapes"] for image in images} == reviewed

    # Asked to include reviewed images: the rejected ones stay rejected and the accepted ones get no twin.
    panel.view.include_reviewed_box.setChecked(True)
    panel.view.detect_all_action.trigger()
    qtbot.waitUntil(lambda: not panel.batch.running, timeout=WAIT)
    assert "2 predicted" in panel.view.summary_label.text()
    assert {image: json.loads(image.with_suffix(".json").read_text())["shapes"] for image in images} == reviewed
    groups, problems = suggestion_stats(tmp_path)
    assert not problems and sum(counts["rejected"] for counts in groups.values()) == 2
    assert sum(counts["accepted_unchanged"] for counts in groups.values()) == 2


def test_a_batch_that_ends_while_its_progress_is_shown_is_no_failure(qtbot, tmp_path, make_window):
    # A modal progress dialog's setValue processes events: the batch's end can arrive inside it and close the dialog.
    write_sample_images(tmp_path, 2, squares=1)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    ready(qtbot, panel)
    panel.view.detect_all_action.trigger()
    qtbot.waitUntil(lambda: not panel.batch.running, timeout=WAIT)
    panel.batch.dialog = QtWidgets.QProgressDialog()
    panel.batch.dialog.setValue = lambda value: panel.batch._end()
    panel.batch._on_progress(1, 2, str(tmp_path / "a.png"))
    assert panel.batch.dialog is None
    assert "progress failed" not in panel.view.message_label.text()
    assert "2 predicted" in panel.view.summary_label.text()


def test_a_click_inside_a_small_suggestion_selects_it_instead_of_grabbing_a_vertex(qtbot, tmp_path, make_window):
    from qtpy.QtTest import QTest

    write_sample_images(tmp_path, 1, squares=1)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    window.show()
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 1
    canvas = panel.adapter.canvas
    (suggestion,) = review.pending(panel.adapter.shapes())
    xs, ys = zip(*review.points_of(suggestion))
    origin = panel.adapter.image_origin()
    # Inside, and a few screen pixels from a corner: within LabelMe's vertex-grabbing distance.
    inside = QtCore.QPoint(int((min(xs) + 1.5 + origin.x()) * canvas.scale), int((min(ys) + 1.5 + origin.y()) * canvas.scale))
    QTest.mouseMove(canvas, inside)
    assert canvas._hovered_vertex is not None  # what used to grab the vertex
    QTest.mousePress(canvas, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, inside)
    QTest.mouseRelease(canvas, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier, inside)
    assert panel.adapter.selected_shapes() == [suggestion]
    assert review.is_pending(suggestion)  # selected, not edited
    text = panel.adapter.window._docks.label_list[0].text()
    assert "pending 0.8" in text and " px" in text  # a person sees score and size


def test_choosing_a_suggestion_in_the_list_centres_the_canvas_on_it(qtbot, tmp_path, make_window):
    from qtpy.QtTest import QTest

    write_sample_images(tmp_path, 1, squares=2)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    window.show()
    ready(qtbot, panel)
    assert detect(qtbot, panel) == 2
    window._canvas_widgets.zoom_widget.setValue(800)  # zoomed in: the image is larger than the view
    bars = window._canvas_widgets.scroll_bars
    label_list = window._docks.label_list
    scrolled = 0
    for index, shape in enumerate(review.pending(panel.adapter.shapes())):
        row = label_list.model().index(index, 0)
        QTest.mouseClick(label_list.viewport(), QtCore.Qt.LeftButton, QtCore.Qt.NoModifier,
                         label_list.visualRect(row).center())
        canvas = panel.adapter.canvas
        origin = panel.adapter.image_origin()
        centre_x = (sum(x for x, _ in review.points_of(shape)) / len(shape.points) + origin.x()) * canvas.scale
        horizontal = bars[QtCore.Qt.Horizontal]
        # Centred, as far as the scroll bar reaches (how far depends on the LabelMe line's layout).
        wanted = min(max(centre_x - horizontal.pageStep() / 2, 0), horizontal.maximum())
        assert abs(horizontal.value() - wanted) < 2
        scrolled += 0 < horizontal.value() < horizontal.maximum()  # a real scroll, not a clamp at an edge
        assert panel.adapter.selected_shapes() == [shape]
    assert scrolled


def test_the_keyboard_shortcuts_detect_accept_and_reject(qtbot, tmp_path, make_window):
    write_sample_images(tmp_path, 1, squares=2)
    window, panel = make_window([fake_option(FakePredictor())], open_path=tmp_path)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    ready(qtbot, panel)
    with qtbot.waitSignal(panel.suggestions_shown, timeout=WAIT):
        qtbot.keyClick(window, QtCore.Qt.Key_I, QtCore.Qt.ControlModifier)  # Detect
    first, second = review.pending(panel.adapter.shapes())
    panel.adapter.select([first])
    qtbot.keyClick(window, QtCore.Qt.Key_Return, QtCore.Qt.ControlModifier)  # Accept
    assert review.state(first) == review.ACCEPTED
    panel.adapter.select([second])
    qtbot.keyClick(window, QtCore.Qt.Key_Return, QtCore.Qt.ControlModifier | QtCore.Qt.ShiftModifier)  # Reject
    assert panel.adapter.shapes() == [first]
