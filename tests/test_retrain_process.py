"""The plugin's "Retrain from labels": a tiny retrain in a child process, its dialog, and cancel."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qtpy import QtCore  # noqa: E402

from labelme_dsarad.retrain_process import RetrainDialog  # noqa: E402
from labelme_dsarad.train.metric_names import REPORTED_METRICS  # noqa: E402
from labelme_dsarad.train.retrain_checks import MIN_REVIEWED_DEFECTS  # noqa: E402

from .test_retrain import tiny_store, write_tiny_labels  # noqa: E402

RUN_TIMEOUT_MS = 240_000  # a child Python importing torch on two loaded cores


def ticking(parent: QtCore.QObject) -> list[int]:
    """Counts timer ticks in this process: if the run blocked the event loop, there would be none."""
    ticks: list[int] = []
    timer = QtCore.QTimer(parent)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(50)
    return ticks


def test_dialog_retrains_in_a_child_process_and_switches_on_request(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child inherits it
    labels = write_tiny_labels(tmp_path / "labels")
    defect_free = tmp_path / "defect_free"
    defect_free.mkdir()
    for name in ("a.png", "b.png"):
        (defect_free / name).write_bytes((labels / "tile_00.png").read_bytes())
    store = tiny_store(tmp_path / "store")
    dialog = RetrainDialog(None, "widget", labels, store.root, steps=4, extra_arguments=("--batch-size", "4"),
                           minimum_defects=4)
    qtbot.addWidget(dialog)
    dialog.normals_box.setText(str(defect_free))
    dialog.show()
    events, ticks = [], ticking(dialog)

    with qtbot.waitSignal(dialog.retrained, timeout=RUN_TIMEOUT_MS) as done:
        dialog.start()
        dialog.run.progress.connect(events.append)
        assert dialog.run.process.processId() not in (0, os.getpid())
        assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()

    result = done.args[0]
    assert len(ticks) > 10, "the event loop stalled while the retrain ran"
    assert any(event["event"] == "progress" for event in events)
    assert result["version"] == 2 and result["in_use"] == "widget v1"
    assert result["counts"]["given_normals"] == 2
    assert store.resolve("widget").version == 1, "the new version must wait for the person's choice"
    assert dialog.status.text() == "Done: widget v2 stored; still using widget v1."
    assert dialog.results.isVisible() and dialog.use_button.isVisible() and dialog.use_button.text() == "Use v2"
    assert dialog.results.item(1, 1).text() == f"{result['after']['pixel_auroc']:.3f}"

    with qtbot.waitSignal(dialog.switched) as switched:
        dialog.use_button.click()
    assert switched.args[:2] == ["widget", 2]
    assert store.resolve("widget").version == 2 and dialog.status.text() == "Now using widget v2."


def test_cancel_stops_the_child_and_stores_nothing(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    labels = write_tiny_labels(tmp_path / "labels")
    store = tiny_store(tmp_path / "store")
    dialog = RetrainDialog(None, "widget", labels, store.root, minutes=10, minimum_defects=4)
    qtbot.addWidget(dialog)
    training = []

    dialog.start()
    dialog.run.progress.connect(lambda event: training.append(event) if event["event"] == "progress" else None)
    qtbot.waitUntil(lambda: bool(training), timeout=RUN_TIMEOUT_MS)
    run = dialog.run
    with qtbot.waitSignal(run.cancelled, timeout=30_000):
        dialog.cancel_button.click()

    assert not run.is_running() and run.result is None
    if sys.platform != "win32":  # SIGTERM became KeyboardInterrupt: it unwound, it was not killed
        assert run.process.exitCode() == 130
    assert "Cancelled" in dialog.status.text() and dialog.start_button.isEnabled()
    assert [stored.version for stored in store.versions("widget")] == [1]
    assert sorted(path.name for path in (store.root / "widget").iterdir()) == ["current", "v1.safetensors"]


def reviewed_only(labels, with_defects: bool) -> None:
    """Untick 'ok' on the images of the other kind."""
    for path in labels.glob("*.json"):
        data = json.loads(path.read_text())
        if bool(data["shapes"]) != with_defects:
            data["flags"] = {}
            path.write_text(json.dumps(data))


def test_start_waits_for_labels_that_can_teach_and_says_what_to_add(qtbot, tmp_path):
    labels = write_tiny_labels(tmp_path / "labels")  # 4 reviewed images with defects, 4 without
    reviewed_only(labels, with_defects=True)
    dialog = RetrainDialog(None, "widget", labels, tmp_path / "store")
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.start_button.isEnabled() and dialog.blocked.isVisible()
    reason = dialog.blocked.text()
    assert f"Only 4 reviewed images with defects: review at least {MIN_REVIEWED_DEFECTS}." in reason
    assert "No defect-free image to learn from" in reason and "<b>Defect-free images</b>" in reason
    assert dialog.height() >= dialog.layout().totalHeightForWidth(dialog.width()), "every wrapped line in sight"
    dialog.start()
    assert dialog.run is None, "a blocked Start must not run anything"

    enough = RetrainDialog(None, "widget", labels, tmp_path / "store", minimum_defects=4)
    qtbot.addWidget(enough)
    enough.show()
    assert enough.blocked.text().startswith("No defect-free image to learn from: choose a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    enough.normals_box.setText(str(empty))
    assert f"{empty} holds no images" in enough.blocked.text() and not enough.start_button.isEnabled()
    enough.normals_box.setText(str(labels))  # holds the unreviewed defect-free images too
    assert enough.start_button.isEnabled() and not enough.blocked.isVisible()

    reviewed_only(write_tiny_labels(tmp_path / "normals_only"), with_defects=False)
    normals_only = RetrainDialog(None, "widget", tmp_path / "normals_only", tmp_path / "store")
    qtbot.addWidget(normals_only)
    assert normals_only.why_not_start().startswith("No reviewed image with defects: outline the defects")
    assert not normals_only.start_button.isEnabled()


def done_event(holdout: dict) -> dict:
    before = {key: 0.5 for key, _ in REPORTED_METRICS if key != "kind_accuracy"}
    return {"event": "done", "product": "magnetic_tile", "version": 1, "in_use": "magnetic_tile bundled",
            "previous": {"name": "magnetic_tile bundled", "version": "bundled"}, "counts": {"holdout": holdout},
            "before": before, "after": {key: value + 0.25 for key, value in before.items()}}


def test_after_a_run_the_whole_table_is_read_in_a_dialog_that_fits_1280_by_800(qtbot, tmp_path):
    dialog = RetrainDialog(None, "magnetic_tile", write_tiny_labels(tmp_path / "labels"), tmp_path / "store",
                           minimum_defects=4)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog._on_finished(done_event({"defect": 6, "normal": 4}))
    qtbot.wait(50)
    assert dialog.status.text() == "Done: magnetic_tile v1 stored; still using magnetic_tile bundled."
    assert dialog.use_button.isVisible() and dialog.use_button.text() == "Use v1"
    table = dialog.results
    assert table.isVisible() and table.verticalScrollBar().maximum() == 0, "every row in sight, no scrolling"
    shown = [row for row in range(table.rowCount()) if not table.isRowHidden(row)]
    assert len(shown) == len(REPORTED_METRICS) - 1  # "Kind right": neither model names kinds
    assert table.item(shown[0], 1).text() == "0.750"
    assert dialog.results_caption.text().endswith("10 held-out reviewed images (6 with defects, 4 normal), never "
                                                  "trained on: <b>before</b> magnetic_tile bundled, <b>after</b> "
                                                  "magnetic_tile v1.")
    wanted = dialog.sizeHint()
    assert wanted.width() <= 1280 and wanted.height() <= 800 - 40  # a window title bar above it
    assert dialog.height() >= wanted.height() and table.height() >= table.verticalHeader().length()

    dialog._on_finished(done_event({"defect": 3, "normal": 0}))
    assert not table.isVisible()
    assert dialog.results_caption.text().startswith(
        "Before and after: 3 held-out images (3 with defects, 0 normal): too few to measure")
