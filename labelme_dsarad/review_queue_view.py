"""The review queue in LabelMe: each image's state and score in the file list, the next image to
review, and the bulk confirmation of likely defect-free images (``review_queue`` has the rules)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from qtpy import QtCore, QtGui, QtWidgets

from labelme_dsarad._labelme_adapter import LabelMeAdapter
from labelme_dsarad.model.images import ImageReadError, read_image_reduced
from labelme_dsarad.model.labelfile import LabelFileError, confirm_defect_free
from labelme_dsarad.model.scoring import NORMALISED_THRESHOLD
from labelme_dsarad.panel_view import plural
from labelme_dsarad.pipeline import heat_map_overlay
from labelme_dsarad.review_queue import QueueEntry, bulk_confirmable, next_to_review, queue_entry

GRID_PAGE = 30  # thumbnails a page: 6 x 5
THUMBNAIL = 128  # pixels, the longer side


class QueueColumn(QtWidgets.QStyledItemDelegate):
    """Paints a file-list row as LabelMe does, then the image's state and score at its right edge."""

    def __init__(self, entry_at: Callable[[int], QueueEntry | None], parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.entry_at = entry_at

    def paint(self, painter: QtGui.QPainter, option: QtWidgets.QStyleOptionViewItem, index: QtCore.QModelIndex) -> None:
        super().paint(painter, option, index)
        entry = self.entry_at(index.row())
        if entry is None:
            return
        text = entry.state if entry.score is None else f"{entry.state}  {entry.score:.2f}"
        likely = entry.score is not None and entry.score >= NORMALISED_THRESHOLD and not entry.reviewed
        # At the visible right edge, over the end of a long path, on the row's own background.
        width = option.fontMetrics.horizontalAdvance(text) + 12
        right = min(option.rect.right(), option.widget.viewport().width() if option.widget else option.rect.right())
        box = QtCore.QRect(right - width, option.rect.top(), width, option.rect.height())
        selected = bool(option.state & QtWidgets.QStyle.State_Selected)
        painter.save()
        painter.fillRect(box, option.palette.highlight() if selected else option.palette.base())
        colour = option.palette.highlightedText().color() if selected else \
            QtGui.QColor("#b00020") if likely else QtGui.QColor("#707070")
        painter.setPen(colour)
        painter.drawText(box.adjusted(0, 0, -6, 0), int(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter), text)
        painter.restore()


class ReviewQueue(QtCore.QObject):
    """The open folder's queue, kept up to date as images are opened, saved and detected."""

    def __init__(self, adapter: LabelMeAdapter, show_message: Callable[[str], None],
                 cut: Callable[[], float | None], request_maps: Callable[[list[str]], None],
                 parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.adapter = adapter
        self.show_message = show_message
        self.cut = cut  # the model in use's bulk confirmation cut, None when it has none
        self.request_maps = request_maps
        self.dialog: BulkConfirmDialog | None = None
        self.entries: dict[str, QueueEntry] = {}
        self.listed: list[str] = []  # the file list's images, row by row, at the last refresh
        self.file_list = adapter.file_list()
        self.file_list.setItemDelegate(QueueColumn(self.entry_at, self.file_list))

    def entry_of(self, image: str) -> QueueEntry | None:
        return self.entries.get(os.path.normpath(image))

    def entry_at(self, row: int) -> QueueEntry | None:
        return self.entry_of(self.listed[row]) if 0 <= row < len(self.listed) else None

    def refresh(self, images: list[str] | None = None) -> None:
        """Re-read the label files of ``images`` (None: the whole folder, and forget images no longer in it)."""
        listed = self.listed = self.adapter.image_list()
        in_folder = set(map(os.path.normpath, listed))
        if images is None or not in_folder <= set(self.entries):
            images = listed
            self.entries = {key: entry for key, entry in self.entries.items() if key in in_folder}
        out_dir = self.adapter.output_dir()
        for image in images:
            self.entries[os.path.normpath(image)] = queue_entry(image, out_dir)
        self.file_list.viewport().update()

    def ordered(self) -> list[QueueEntry]:
        return sorted(self.entries.values(), key=QueueEntry.sort_key)

    def open_next(self) -> None:
        """Open the unreviewed image most likely to hold a defect (other than the open one)."""
        current = self.adapter.image_path()
        self.refresh([current] if current else [])
        entry = next_to_review(self.ordered(), current)
        if entry is None:
            self.show_message("Every image of the folder is reviewed")
            return
        self.adapter.open_from_file_list(str(entry.image))

    def confirmable(self) -> list[QueueEntry]:
        cut = self.cut()
        return bulk_confirmable(self.ordered(), cut) if cut is not None else []

    def bulk_confirm(self) -> QtWidgets.QDialog | None:
        """The grid of likely defect-free images; None (with a message) when it would be empty."""
        self.refresh()
        if self.cut() is None:
            self.show_message("The model in use has no cut for bulk confirmation: retrain it from reviewed labels")
            return None
        entries = self.confirmable()
        if not entries:
            self.show_message("No unreviewed image scores below the model's cut for bulk confirmation")
            return None
        self.dialog = BulkConfirmDialog(entries, self._confirm, self.cut() or 0.0, self.request_maps,
                                        self.adapter.window)
        self.dialog.show()
        return self.dialog

    def map_ready(self, image: str, score_map: np.ndarray) -> None:
        """An anomaly map arrived: onto its thumbnail, if the grid shows it."""
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.show_map(image, score_map)

    def _confirm(self, entries: list[QueueEntry]) -> list[QueueEntry]:
        """Confirm ``entries`` defect-free; the ones confirmed. The open image, if among them, is
        reloaded, or left out while it has unsaved changes."""
        open_image = self.adapter.image_path()
        confirmed, problems = [], []
        for entry in entries:
            is_open = open_image is not None and os.path.normpath(open_image) == os.path.normpath(entry.image)
            if is_open and self.adapter.is_dirty():
                problems.append(f"{entry.image.name}: open with unsaved changes, left out")
                continue
            try:
                rejected = confirm_defect_free(entry.label_path)
            except LabelFileError as problem:
                problems.append(str(problem))
                continue
            if rejected is None:
                problems.append(f"{entry.image.name}: has a shape of yours, left out")
                continue
            confirmed.append(entry)
            if is_open:
                self.adapter.reload_current()
        self.refresh([str(entry.image) for entry in entries])
        self.show_message(f"{plural(len(confirmed), 'image')} confirmed defect-free"
                          + (f"; {'; '.join(problems)}" if problems else ""))
        return confirmed


def thumbnail_pixels(path: Path) -> np.ndarray | None:
    """The image reduced for a thumbnail, as LabelMe shows it (RGB); None when it cannot be read."""
    try:
        return np.ascontiguousarray(read_image_reduced(path, THUMBNAIL).pixels)
    except ImageReadError:
        return None


def thumbnail(pixels: np.ndarray | None, score_map: np.ndarray | None = None) -> QtGui.QPixmap:
    """A thumbnail of ``thumbnail_pixels``, with the anomaly map over it where one is given (as the
    heat map shows it); a grey square for an image that could not be read."""
    if pixels is None:
        blank = QtGui.QPixmap(THUMBNAIL, THUMBNAIL)
        blank.fill(QtGui.QColor("#cccccc"))
        return blank
    height, width = pixels.shape[:2]
    if score_map is not None:
        resized = cv2.resize(score_map, (width, height), interpolation=cv2.INTER_LINEAR)
        pixels = np.ascontiguousarray(heat_map_overlay(pixels, resized, with_colour_bar=False)[..., ::-1])
    image = QtGui.QImage(pixels.data, width, height, 3 * width, QtGui.QImage.Format_RGB888).copy()
    return QtGui.QPixmap.fromImage(image).scaled(THUMBNAIL, THUMBNAIL, QtCore.Qt.KeepAspectRatio,
                                                 QtCore.Qt.SmoothTransformation)


def untinted_icon(picture: QtGui.QPixmap) -> QtGui.QIcon:
    """An icon drawn as it is when selected too (the caption shows the selection), so the heat map
    is never hidden under the selection's tint."""
    icon = QtGui.QIcon(picture)
    icon.addPixmap(picture, QtGui.QIcon.Selected)
    return icon


class BulkConfirmDialog(QtWidgets.QDialog):
    """A page of thumbnails of likely defect-free images, lowest score first, all selected: a
    person deselects any with a defect and confirms the rest reviewed with no defect."""

    def __init__(self, entries: list[QueueEntry], confirm: Callable[[list[QueueEntry]], list[QueueEntry]],
                 cut: float, request_maps: Callable[[list[str]], None] = lambda paths: None,
                 parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.request_maps = request_maps  # the page's anomaly maps, computed behind the dialog (``show_map``)
        self.setWindowTitle("Confirm defect-free images")
        self.entries = list(entries)
        self.confirm = confirm
        self.page = 0
        self.maps_shown = 0  # thumbnails that show their heat map (tests)
        self.pixels: list[np.ndarray | None] = []  # the page's images, reduced (``thumbnail_pixels``)
        self.heading = QtWidgets.QLabel(
            f"Unreviewed images the model scores below {cut:.3f} (below every defective image it was calibrated "
            "on), with no shape of yours, lowest score first. Click an image with a defect to deselect it; "
            "confirming marks the selected ones reviewed with no defect and rejects their suggestions.")
        self.heading.setWordWrap(True)
        self.grid = QtWidgets.QListWidget()
        self.grid.setViewMode(QtWidgets.QListView.IconMode)
        self.grid.setIconSize(QtCore.QSize(THUMBNAIL, THUMBNAIL))
        self.grid.setGridSize(QtCore.QSize(THUMBNAIL + 16, THUMBNAIL + 24))
        self.grid.setResizeMode(QtWidgets.QListView.Adjust)
        self.grid.setMovement(QtWidgets.QListView.Static)
        self.grid.setSelectionMode(QtWidgets.QAbstractItemView.MultiSelection)
        self.grid.itemSelectionChanged.connect(self._update_buttons)
        self.confirm_button = QtWidgets.QPushButton()
        self.confirm_button.clicked.connect(self._confirm_selected)
        self.previous_button = QtWidgets.QPushButton("Previous page")
        self.previous_button.clicked.connect(lambda: self.show_page(self.page - 1))
        self.next_button = QtWidgets.QPushButton("Next page")
        self.next_button.clicked.connect(lambda: self.show_page(self.page + 1))
        self.page_label = QtWidgets.QLabel()
        close_button = QtWidgets.QPushButton("Close")
        close_button.clicked.connect(self.close)
        buttons = QtWidgets.QHBoxLayout()
        for widget in (self.previous_button, self.page_label, self.next_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        buttons.addWidget(self.confirm_button)
        buttons.addWidget(close_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.grid, 1)
        layout.addLayout(buttons)
        self.resize(6 * (THUMBNAIL + 16) + 48, 5 * (THUMBNAIL + 24) + 120)
        self.show_page(0)

    def pages(self) -> int:
        return max((len(self.entries) + GRID_PAGE - 1) // GRID_PAGE, 1)

    def shown(self) -> list[QueueEntry]:
        return self.entries[self.page * GRID_PAGE : (self.page + 1) * GRID_PAGE]

    def show_page(self, page: int) -> None:
        self.page = min(max(page, 0), self.pages() - 1)
        self.grid.clear()
        # Decoded once a page: the heat map, when it arrives, is drawn over the same pixels.
        self.pixels = [thumbnail_pixels(entry.image) for entry in self.shown()]
        for entry, pixels in zip(self.shown(), self.pixels):
            item = QtWidgets.QListWidgetItem(untinted_icon(thumbnail(pixels)), f"{entry.score:.3f}  {entry.image.name}")
            item.setToolTip(f"{entry.image}\nscore {entry.score:.3f}, {entry.state}")
            self.grid.addItem(item)
        self.grid.selectAll()
        self.request_maps([str(entry.image) for entry in self.shown()])
        self.page_label.setText(f"page {self.page + 1} of {self.pages()}, {plural(len(self.entries), 'image')}")
        self._update_buttons()

    def show_map(self, image: str, score_map: np.ndarray) -> None:
        """The heat map over ``image``'s thumbnail, if it is on the page."""
        for row, entry in enumerate(self.shown()):
            if os.path.normpath(entry.image) == os.path.normpath(image):
                self.grid.item(row).setIcon(untinted_icon(thumbnail(self.pixels[row], score_map)))
                self.maps_shown += 1

    def selected(self) -> list[QueueEntry]:
        shown = self.shown()
        return [shown[self.grid.row(item)] for item in self.grid.selectedItems()]

    def _update_buttons(self) -> None:
        count = len(self.grid.selectedItems())
        self.confirm_button.setText(f"Confirm {plural(count, 'image')} defect-free")
        self.confirm_button.setEnabled(count > 0)
        self.previous_button.setEnabled(self.page > 0)
        self.next_button.setEnabled(self.page + 1 < self.pages())

    def _confirm_selected(self) -> None:
        confirmed = {id(entry) for entry in self.confirm(self.selected())}
        self.entries = [entry for entry in self.entries if id(entry) not in confirmed]
        if not self.entries:
            self.close()
            return
        self.show_page(self.page)
