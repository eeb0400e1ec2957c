"""Detect all: every image of the open folder through the worker, with a progress dialog.

Writes label files exactly as ``dsarad predict`` does (``pipeline``); the
open image is left out while it has unsaved edits, which live only in the
window. Its summary (with the files that failed) stays in the dock until the
person dismisses it or runs Detect all again, whatever opens in between.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy import QtCore, QtWidgets

from labelme_dsarad._labelme_adapter import LabelMeAdapter
from labelme_dsarad.guarded import guarded
from labelme_dsarad.panel_view import plural
from labelme_dsarad.worker import BatchJob, DetectionWorker

if TYPE_CHECKING:
    from labelme_dsarad.model.polygons import SuggestionSettings
    from labelme_dsarad.pipeline import Summary


class BatchDetection(QtCore.QObject):
    """One Detect-all run at a time; its dialog, its summary, and a reload of the open image when it was done."""

    def __init__(self, worker: DetectionWorker, adapter: LabelMeAdapter, show_message: Callable[..., None],
                 show_summary: Callable[..., None], parent: QtWidgets.QWidget):
        super().__init__(parent)
        self.worker = worker
        self.adapter = adapter
        self.show_message = show_message
        self.show_summary = show_summary
        self.parent_widget = parent
        self.batch: BatchJob | None = None
        self.dialog: QtWidgets.QProgressDialog | None = None
        self.includes_current = False
        worker.batch_progress.connect(self._on_progress)
        worker.batch_finished.connect(self._on_finished)
        worker.batch_failed.connect(self._on_failed)

    @property
    def running(self) -> bool:
        return self.batch is not None

    @guarded
    def start(self, current: str | None, settings: SuggestionSettings, include_reviewed: bool) -> None:
        from labelme_dsarad.pipeline import PredictOptions

        if self.batch is not None:
            return
        self.show_summary("")  # the last run's, replaced by this one's
        images = self.adapter.image_list() or ([current] if current else [])
        self.includes_current = current in images
        if current in images and self.adapter.is_dirty():
            images.remove(current)
            self.includes_current = False
        if not images:
            self.show_message("No images to detect: open a folder first.")
            return
        options = PredictOptions(suggestions=settings, out_dir=self.adapter.output_dir(),
                                 include_reviewed=include_reviewed)
        self.batch = BatchJob([Path(image) for image in images], options)
        dialog = QtWidgets.QProgressDialog(
            f"Detecting defects in {plural(len(images), 'image')}…", "Cancel", 0, len(images), self.parent_widget.window()
        )
        dialog.setWindowTitle("Detect all")
        dialog.setWindowModality(QtCore.Qt.WindowModal)
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(self.batch.cancel.set)
        dialog.setValue(0)
        dialog.show()
        self.dialog = dialog
        self.worker.submit_batch(self.batch)

    def cancel(self) -> None:
        if self.batch is not None:
            self.batch.cancel.set()

    @guarded
    def _on_progress(self, done: int, total: int, path: str) -> None:
        dialog = self.dialog
        if dialog is not None:
            dialog.setMaximum(total)
            dialog.setLabelText(f"{done} of {total}: {Path(path).name}")
            # Last: a modal dialog's setValue processes events, which may deliver the end of the batch and close it.
            dialog.setValue(done)

    @guarded
    def _on_finished(self, batch: BatchJob, summary: Summary) -> None:
        self._end()
        lines = summary.describe().splitlines()
        self.show_summary("\n".join(lines[:4] + ([f"… {len(lines) - 4} more failures"] if len(lines) > 4 else [])),
                          error=bool(summary.failures))
        self.adapter.show_status(lines[0])
        self.adapter.refresh_file_checks()
        if self.includes_current and self.adapter.image_path() is not None and not self.adapter.is_dirty():
            self.adapter.reload_current()  # show what was written for the open image

    @guarded
    def _on_failed(self, batch: BatchJob, message: str) -> None:
        self._end()
        self.show_summary(f"Detect all failed: {message}", error=True)

    def _end(self) -> None:
        self.batch = None
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
