"""The plugin's "Retrain from labels": ``dsarad retrain`` in a separate process, shown in a dialog.

A process, not a thread: training keeps every core busy and holds the GIL
between operations, so in LabelMe's process it would make the window stutter;
in its own process the window stays usable, a cancel is a signal that works
at any moment (the command unwinds and leaves the store as it was), and a
crash there cannot take LabelMe and unsaved labels down with it. The process
runs the same code as the command line, ``python -m labelme_dsarad.cli
retrain ... --progress-json``, and reports one JSON object per line on
stdout; the new version is stored but only becomes the model in use when the
person says so in the dialog (*Use vN*), as ``dsarad use`` does.

Start waits until the labels can teach something (``retrain_checks``): a
reviewed image with defects, at least ``MIN_REVIEWED_DEFECTS`` of them, and a
defect-free image (reviewed, or in the *Defect-free images* folder); the
dialog says which is missing.

For the panel::

    dialog = RetrainDialog(parent, product, labels_dir, store_root)
    dialog.switched.connect(panel_reload_models)  # (product, version, path)
    dialog.show()  # non-modal; Start runs it, or call dialog.start()
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qtpy import QtCore, QtWidgets

from labelme_dsarad.model.model_file import ModelFileError
from labelme_dsarad.model.store import ModelStore
from labelme_dsarad.panel_view import plural
from labelme_dsarad.train.metric_names import REPORTED_METRICS
from labelme_dsarad.train.retrain_checks import MIN_REVIEWED_DEFECTS, unmeasured

CANCEL_GRACE_MS = 5000  # after SIGTERM, how long the command may take to unwind before it is killed
STDERR_KEEP_LINES = 20


def retrain_arguments(product: str, labels_dir, store_root=None, minutes: float | None = None,
                      steps: int | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """The command line after the Python executable."""
    arguments = ["-m", "labelme_dsarad.cli", "retrain", "--product", product, "--labels", str(labels_dir),
                 "--progress-json"]
    if store_root is not None:
        arguments += ["--store", str(store_root)]
    if steps is not None:
        arguments += ["--steps", str(int(steps))]
    elif minutes is not None:
        arguments += ["--minutes", f"{float(minutes):g}"]
    return arguments + list(extra)


class RetrainProcess(QtCore.QObject):
    """One run of ``dsarad retrain`` in a child process, as Qt signals.

    Exactly one of ``finished``, ``failed`` and ``cancelled`` ends a run.
    """

    progress = QtCore.Signal(object)  # each event dict: {"event": "stage"|"progress"|"problem", ...}
    finished = QtCore.Signal(object)  # the "done" event: version, path, previous, before, after, counts, ...
    failed = QtCore.Signal(str)  # one line
    cancelled = QtCore.Signal()

    def __init__(self, arguments: list[str], parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.arguments = arguments
        self.result: dict | None = None
        self._buffer = b""
        self._errors: list[str] = []
        self._cancelling = False
        self._ended = False
        self.process = QtCore.QProcess(self)
        environment = QtCore.QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(environment)
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.readyReadStandardError.connect(self._read_errors)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error)

    def start(self) -> None:
        self.process.start(sys.executable, self.arguments)

    def is_running(self) -> bool:
        return self.process.state() != QtCore.QProcess.NotRunning

    def cancel(self) -> None:
        if not self.is_running():
            return
        self._cancelling = True
        if sys.platform == "win32":
            self.process.kill()  # a console program gets no WM_CLOSE: nothing softer reaches it
            return
        self.process.terminate()  # SIGTERM: the command turns it into KeyboardInterrupt and unwinds
        QtCore.QTimer.singleShot(CANCEL_GRACE_MS, self._kill_if_running)

    def _kill_if_running(self) -> None:
        if self.is_running():
            self.process.kill()

    def _read_output(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._handle_line(line.decode("utf-8", errors="replace").strip())

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = {"event": "stage", "stage": "output", "message": line}  # stray output, shown as is
        if not isinstance(event, dict):
            return
        if event.get("event") == "done":
            self.result = event
        else:
            self.progress.emit(event)

    def _read_errors(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode("utf-8", errors="replace")
        self._errors = (self._errors + [line for line in text.splitlines() if line.strip()])[-STDERR_KEEP_LINES:]

    def _on_finished(self, exit_code: int, exit_status) -> None:
        self._read_output()
        self._read_errors()
        self._handle_line(self._buffer.decode("utf-8", errors="replace").strip())
        self._buffer = b""
        if self._cancelling:
            self._end(self.cancelled.emit)
        elif exit_code == 0 and exit_status == QtCore.QProcess.NormalExit and self.result is not None:
            self._end(lambda: self.finished.emit(self.result))
        else:
            last = self._errors[-1] if self._errors else f"the retrain process ended with exit code {exit_code}"
            self._end(lambda: self.failed.emit(last))

    def _on_error(self, error) -> None:
        if error == QtCore.QProcess.FailedToStart:
            self._end(lambda: self.failed.emit(f"cannot start {sys.executable}: {self.process.errorString()}"))

    def _end(self, emit) -> None:
        if not self._ended:
            self._ended = True
            emit()


class RetrainDialog(QtWidgets.QDialog):
    """Progress, cancel, and the before/after numbers of one retrain; non-modal.

    ``switched(product, version, path)`` is emitted after the person chose
    to use the new version (the store's model in use has then changed).
    ``retrained(result)`` carries the command's "done" event.
    ``minimum_defects``: the reviewed images with defects Start waits for.
    """

    switched = QtCore.Signal(str, int, str)
    retrained = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None, product: str, labels_dir, store_root=None,
                 minutes: float = 10.0, steps: int | None = None, extra_arguments: tuple[str, ...] = (),
                 minimum_defects: int = MIN_REVIEWED_DEFECTS):
        super().__init__(parent)
        self.product = product
        self.labels_dir = Path(labels_dir)
        self.store_root = Path(store_root) if store_root is not None else None
        self.steps = steps
        self.extra_arguments = tuple(extra_arguments)
        self.minimum_defects = minimum_defects
        self.run: RetrainProcess | None = None
        self.result: dict | None = None
        self.reviewed: tuple[int, int] | None = None  # (normal, with defects); None: the folder is unreadable
        self.setWindowTitle(f"Retrain {product} from labels")
        self.setModal(False)
        self._build(minutes)
        self.read_labels()

    def _build(self, minutes: float) -> None:
        heading = QtWidgets.QLabel(
            f"Retrain <b>{self.product}</b> from the reviewed images (image flag <i>ok</i>) in {self.labels_dir}. "
            f"The model in use (<b>{self._in_use_name()}</b>) stays in use until you switch.")
        heading.setWordWrap(True)
        self.found = QtWidgets.QLabel()
        self.found.setWordWrap(True)
        self.minutes_box = QtWidgets.QDoubleSpinBox()
        self.minutes_box.setRange(0.5, 600.0)
        self.minutes_box.setValue(minutes)
        self.minutes_box.setSuffix(" min")
        self.minutes_box.setEnabled(self.steps is None)
        self.normals_box = QtWidgets.QLineEdit()
        self.normals_box.setPlaceholderText("optional folder")
        self.normals_box.setToolTip("Defect-free images to learn from beside the reviewed ones, e.g. the folder "
                                    "the first training used")
        self.normals_box.textChanged.connect(lambda text: self._update_start())
        self.normals_button = QtWidgets.QPushButton("Choose…")
        self.normals_button.clicked.connect(self._choose_normals)
        self.blocked = QtWidgets.QLabel()  # why Start is off, in the dialog's own words
        self.blocked.setWordWrap(True)
        self.blocked.setStyleSheet("color: #b00020")
        self.progress_bar = QtWidgets.QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status = QtWidgets.QLabel("Not started")
        self.status.setWordWrap(True)
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setMaximumHeight(90)
        self.log.hide()  # until a run writes to it
        self.results_caption = QtWidgets.QLabel()
        self.results_caption.setWordWrap(True)
        self.results_caption.hide()
        self.results = QtWidgets.QTableWidget(len(REPORTED_METRICS), 2)
        self.results.setHorizontalHeaderLabels(["before", "after"])
        self.results.setVerticalHeaderLabels([title for _, title in REPORTED_METRICS])
        self.results.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.results.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.Stretch)
        # Every row in sight: the table is as tall as its rows, never a small scroll area.
        self.results.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.results.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.results.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Fixed)
        self.results.hide()
        self.start_button = QtWidgets.QPushButton("Start")
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.use_button = QtWidgets.QPushButton("Use new version")
        self.close_button = QtWidgets.QPushButton("Close")
        self.cancel_button.setEnabled(False)
        self.use_button.hide()
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(self.use_new_version)
        self.close_button.clicked.connect(self.close)

        budget = QtWidgets.QHBoxLayout()
        budget.addWidget(QtWidgets.QLabel("Training time"))
        budget.addWidget(self.minutes_box)
        budget.addStretch(1)
        normals = QtWidgets.QHBoxLayout()
        normals.addWidget(QtWidgets.QLabel("Defect-free images"))
        normals.addWidget(self.normals_box, 1)
        normals.addWidget(self.normals_button)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.close_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.found)
        layout.addLayout(budget)
        layout.addLayout(normals)
        for widget in (self.blocked, self.progress_bar, self.status, self.log, self.results_caption, self.results):
            layout.addWidget(widget)
        layout.addStretch(1)
        layout.addLayout(buttons)
        self.setMinimumWidth(640)

    def _in_use_name(self) -> str:
        try:
            return ModelStore(self.store_root).in_use(self.product)[0].name
        except ModelFileError:  # no model for the product yet
            return "none yet"

    # -- what the labels allow ------------------------------------------------------

    def read_labels(self) -> None:
        """Count the reviewed images (again: the person may have reviewed more since) and say what they allow."""
        from labelme_dsarad.train.labels import read_label_folder

        try:
            folder = read_label_folder(self.labels_dir)
        except OSError as problem:
            self.reviewed = None
            self.found.setText(f"Cannot read {self.labels_dir}: {problem}")
        else:
            self.reviewed = (len(folder.normals), len(folder.defects))
            text = (f"Found {plural(len(folder.images), 'reviewed image')}: {len(folder.normals)} normal, "
                    f"{len(folder.defects)} with defects a person drew or accepted.")
            if folder.skipped:
                text += f" {plural(len(folder.skipped), 'more image')} not reviewed yet, left out."
            self.found.setText(text)
        self._update_start()

    def given_normals(self) -> int:
        """The images in the *Defect-free images* folder (0: none named, or no such folder)."""
        from labelme_dsarad.model.images import list_images

        folder = Path(self.normals_box.text().strip())
        if not self.normals_box.text().strip() or not folder.is_dir():
            return 0
        try:
            return len(list_images([folder]))
        except OSError:
            return 0

    def why_not_start(self) -> str | None:
        """What keeps Start off, naming what to add (None: nothing does)."""
        if self.reviewed is None:
            return "The label folder cannot be read."
        normals, defects = self.reviewed
        reasons = []
        if not defects:
            reasons.append(f"No reviewed image with defects: outline the defects (or accept the suggestions) on at "
                           f"least {self.minimum_defects} images and tick the image flag <i>ok</i> on them.")
        elif defects < self.minimum_defects:
            reasons.append(f"Only {plural(defects, 'reviewed image')} with defects: review at least "
                           f"{self.minimum_defects}. From fewer, a retrain outlined defects worse than the model it "
                           "started from (README, <i>Corrected images against quality</i>).")
        if not normals and not self.given_normals():
            named = self.normals_box.text().strip()
            reasons.append("No defect-free image to learn from: " + (
                f"{named} holds no images; " if named else "") + "choose a folder of images without defects in "
                "<b>Defect-free images</b> (e.g. the one the first training used), or tick <i>ok</i> on reviewed "
                "images without defects.")
        return " ".join(reasons) or None

    def _update_start(self) -> None:
        reason = None if self.is_running() else self.why_not_start()
        self.blocked.setText(reason or "")
        self.blocked.setVisible(reason is not None)
        self.start_button.setEnabled(not self.is_running() and reason is None)
        self.start_button.setToolTip(reason.replace("<i>", "").replace("</i>", "").replace("<b>", "").replace("</b>", "")
                                     if reason else "")
        self._fit()

    def _fit(self) -> None:
        """Grow to show every line of the wrapped texts and the whole table. Neither adjustSize (it stops at two
        thirds of the screen) nor the size hint (it ignores how labels wrap at this width) would."""
        layout = self.layout()
        height = layout.totalHeightForWidth(self.width()) if layout.hasHeightForWidth() else -1
        wanted = self.sizeHint()
        self.resize(max(self.width(), wanted.width()), max(self.height(), wanted.height(), height))

    def _choose_normals(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Defect-free images to learn from",
                                                            self.normals_box.text() or str(self.labels_dir))
        if folder:
            self.normals_box.setText(folder)

    # -- running --------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.run is not None and self.run.is_running()

    def start(self) -> None:
        if self.is_running() or self.why_not_start() is not None:
            return
        self.result = None
        self.results.hide()
        self.results_caption.hide()
        self.use_button.hide()
        self.log.show()
        self.log.clear()
        normals = self.normals_box.text().strip()
        arguments = retrain_arguments(self.product, self.labels_dir, self.store_root, self.minutes_box.value(),
                                      self.steps, self.extra_arguments + (("--normals", normals) if normals else ()))
        self.run = RetrainProcess(arguments, self)
        self.run.progress.connect(self._on_progress)
        self.run.finished.connect(self._on_finished)
        self.run.failed.connect(self._on_failed)
        self.run.cancelled.connect(self._on_cancelled)
        self._set_running(True)
        self._busy("Starting…")
        self.run.start()

    def cancel(self) -> None:
        if self.is_running():
            self.status.setText("Cancelling…")
            self.cancel_button.setEnabled(False)
            assert self.run is not None  # is_running() says there is one
            self.run.cancel()

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.minutes_box.setEnabled(not running and self.steps is None)
        self.normals_box.setEnabled(not running)
        self.normals_button.setEnabled(not running)
        if running:
            self.start_button.setEnabled(False)
        else:
            self._update_start()

    def _busy(self, text: str) -> None:
        # Stages of unknown length (reading, measuring): a busy bar, not a made-up percentage.
        self.progress_bar.setRange(0, 0)
        self.status.setText(text)

    def _on_progress(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(round(1000 * float(event.get("fraction", 0.0)))))
            self.status.setText(f"Training: step {event.get('step')}, {event.get('seconds', 0):.0f} s")
        elif kind == "stage":
            if event.get("stage") != "training":
                self._busy(str(event.get("message", "")))
            self.log.appendPlainText(str(event.get("message", "")))
        elif kind == "problem":
            message = str(event.get("message", ""))
            self.log.appendPlainText(message if message.startswith("warning:") else f"skipped: {message}")

    def _on_finished(self, result: dict) -> None:
        self.result = result
        self._set_running(False)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(1000)
        in_use = result.get("in_use") or self._in_use_name()
        self.status.setText(f"Done: {self.product} v{result['version']} stored; still using {in_use}.")
        self._show_results(result)
        self.use_button.setText(f"Use v{result['version']}")
        self.use_button.show()
        self.retrained.emit(result)

    def _show_results(self, result: dict) -> None:
        """The holdout's numbers before and after, every row in sight; or why there are none."""
        held_out = result.get("counts", {}).get("holdout", {})
        note = unmeasured(held_out)
        self.results_caption.show()
        self.log.hide()  # the stages it listed are over; the table needs the room
        if note:
            self.results_caption.setText(f"Before and after: {note}.")
            self.results.hide()
            self._fit()
            return
        before_name = result.get("previous", {}).get("name", "the model it started from")
        self.results_caption.setText(
            f"On {plural(held_out.get('defect', 0) + held_out.get('normal', 0), 'held-out reviewed image')} "
            f"({held_out.get('defect', 0)} with defects, {held_out.get('normal', 0)} normal), never trained on: "
            f"<b>before</b> {before_name}, <b>after</b> {self.product} v{result['version']}.")
        for row, (key, _) in enumerate(REPORTED_METRICS):
            values = [result.get(side, {}).get(key) for side in ("before", "after")]
            for column, value in enumerate(values):
                text = "–" if value is None else f"{value:.3f}"
                self.results.setItem(row, column, QtWidgets.QTableWidgetItem(text))
            # A measure neither model has (e.g. "Kind right" where no kinds are named) is left out.
            self.results.setRowHidden(row, all(value is None for value in values))
        self.results.resizeRowsToContents()
        self.results.setFixedHeight(self.results.horizontalHeader().height() + self.results.verticalHeader().length()
                                    + 2 * self.results.frameWidth())
        self.results.show()
        self._fit()

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status.setText(f"Failed: {message}")
        self.log.appendPlainText(message)

    def _on_cancelled(self) -> None:
        self._set_running(False)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status.setText("Cancelled: nothing was stored.")

    def use_new_version(self) -> None:
        if self.result is None:
            return
        version = int(self.result["version"])
        stored = ModelStore(self.store_root).set_current(self.product, version)
        self.use_button.hide()
        self.status.setText(f"Now using {stored.name}.")
        self.switched.emit(self.product, version, str(stored.path))

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        # Closing while it runs means: stop it, do not leave an orphan process training.
        if self.is_running():
            assert self.run is not None  # is_running() says there is one
            self.run.cancel()
            self.run.process.waitForFinished(CANCEL_GRACE_MS + 1000)
        super().closeEvent(event)
