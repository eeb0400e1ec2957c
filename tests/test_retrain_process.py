"""The plugin's "Retrain from labels": a tiny retrain in a child process, its dialog, and cancel."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qtpy import QtCore  # noqa: E402

from labelme_dsarad.retrain_process import RetrainDialog  # noqa: E402

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
    dialog = RetrainDialog(None, "widget", labels, store.root, steps=4,
                           extra_arguments=("--batch-size", "4"))
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
    assert result["version"] == 2 and result["current"] is False
    assert result["counts"]["given_normals"] == 2
    assert store.resolve("widget").version == 1, "the new version must wait for the person's choice"
    assert dialog.results.isVisible() and dialog.use_button.isVisible()
    assert dialog.results.item(1, 1).text() == f"{result['after']['pixel_auroc']:.3f}"

    with qtbot.waitSignal(dialog.switched) as switched:
        dialog.use_button.click()
    assert switched.args[:2] == ["widget", 2]
    assert store.resolve("widget").version == 2


def test_cancel_stops_the_child_and_stores_nothing(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    labels = write_tiny_labels(tmp_path / "labels")
    store = tiny_store(tmp_path / "store")
    dialog = RetrainDialog(None, "widget", labels, store.root, minutes=10)
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
