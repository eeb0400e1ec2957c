"""The label-file side: what is open, where its label file is, the file's top-level record, saving."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtpy import QtCore, QtWidgets

from labelme_dsarad._labelme_adapter._required import APP_MODULE, LABELME_7, _WindowPart, main_window_class
from labelme_dsarad.model.labelfile import label_path_for


class _LabelFileSide(_WindowPart):
    """The adapter's methods over the open image and its label file (mixed into ``LabelMeAdapter``)."""

    # Set by LabelMeAdapter.__init__: (undo step, the label file's top-level entries at that step).
    _file_record_steps: list[tuple[list, Any]]

    # --- what is open ---

    def image_path(self) -> str | None:
        """The image on the canvas; None when none is, also after LabelMe failed to open one
        (it keeps the failed path and the previous picture, but shows nothing)."""
        if self.canvas.pixmap.isNull():
            return None
        return self.window._image_path

    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of the open image, as LabelMe shows it."""
        image = self.window._image
        if self.image_path() is None or image.isNull():
            return None
        return image.height(), image.width()

    def image_bytes(self) -> bytes | None:
        if LABELME_7:
            annotation = self.window._annotation
            return annotation.image_data if annotation is not None else None
        return getattr(self.window, "_image_data", None)

    def image_list(self) -> list[str]:
        return list(self.window.image_list)

    def file_list(self) -> QtWidgets.QListWidget:
        """LabelMe's file list: one row per image of the folder, its text the image's path."""
        return self.window._docks.file_list

    def next_image_path(self) -> str | None:
        images = self.image_list()
        current = self.image_path()
        if current not in images:
            return None
        index = images.index(current) + 1
        return images[index] if index < len(images) else None

    def output_dir(self) -> Path | None:
        return self.window._output_dir

    def label_path(self, image_path: str) -> Path:
        """Where LabelMe reads and writes the label file of an image."""
        if self.window._label_file_path and image_path == self.window._image_path:
            return Path(self.window._label_file_path)
        return label_path_for(image_path, self.window._output_dir or None)  # an empty --output too: beside the image

    def is_dirty(self) -> bool:
        return bool(self.window._is_changed)

    def file_record(self, key: str) -> dict:
        """The open label file's top-level entry ``key`` (a dict), created if missing.

        LabelMe keeps a label file's unknown top-level keys in ``_other_data``
        and writes them back on save, so what is put here is saved with the
        shapes (LabelMe 7 keeps them in the open file's ``_annotation``).
        """
        if not LABELME_7 and not isinstance(self.window._other_data, dict):
            self.window._other_data = {}
        other_data = self._file_entries()
        if other_data is None:
            return {}  # no image open: nothing to save
        entry = other_data.get(key)
        if not isinstance(entry, dict):
            entry = other_data[key] = {}
        return entry

    def _file_entries(self) -> dict | None:
        """The open label file's top-level entries LabelMe does not know, as LabelMe keeps them."""
        if LABELME_7:
            annotation = self.window._annotation
            return annotation.other_data if annotation is not None else None
        return self.window._other_data

    def _set_file_entries(self, entries: dict | None) -> None:
        if LABELME_7:
            import dataclasses

            annotation = self.window._annotation
            if annotation is not None:  # a frozen dataclass: replaced, as LabelMe replaces it
                self.window._annotation = dataclasses.replace(annotation, other_data=entries or {})
            return
        self.window._other_data = entries

    # --- opening and saving ---

    def _file_list_row(self, path: str) -> int | None:
        """The file-list row of the image at ``path``; None when the open folder does not list it."""
        images, wanted = self.image_list(), os.path.normpath(str(path))
        return images.index(wanted) if wanted in images else None

    def open_file(self, path: str) -> None:
        """Open an image the way the file list does (also selects it there)."""
        if LABELME_7:  # its _load_file leaves the Image List's row where it was: choose the row
            row, file_list = self._file_list_row(path), self.window._docks.file_list
            if row is not None and file_list.currentRow() != row:
                file_list.setCurrentRow(row)  # loads it, as a click on the row does
                return
        self.window._load_file(image_or_label_path=str(path))

    def open_from_file_list(self, path: str) -> None:
        """Open an image of the folder as a click on its file-list row does: LabelMe first asks
        whether to save unsaved changes (auto-save saves them)."""
        row = self._file_list_row(path)
        if row is None:
            self.open_file(path)
            return
        self.window._docks.file_list.setCurrentRow(row)

    def open_folder(self, folder: str) -> None:
        self.window._load_from_file_or_dir(file_or_dir=str(folder))

    def reload_current(self) -> None:
        path = self.image_path()
        if path is not None:
            self.window._load_file(image_or_label_path=path)

    def save(self) -> Path:
        """Save the open image's labels where LabelMe would, without a dialog."""
        image_path = self.image_path()
        assert image_path is not None, "save needs an open image"
        path = self.label_path(image_path)
        if self.window.save_labels(label_path=str(path)):
            self.window.mark_clean()
        return path

    def refresh_file_checks(self) -> None:
        """Tick the file-list entries that now have a label file (after Detect all)."""
        file_list = self.window._docks.file_list
        for row, image_path in enumerate(self.image_list()):  # the list's rows, in its order
            if self.label_path(image_path).is_file():
                file_list.item(row).setCheckState(QtCore.Qt.Checked)

    # --- the label file's top-level entries, tied to undo steps ---

    def _remember_file_record(self) -> None:
        """Tie the label file's top-level entries, as they are now, to the undo step just pushed."""
        backups = self.canvas.shape_backups
        steps = [(step, record) for step, record in self._file_record_steps if any(step is kept for kept in backups)]
        if backups:
            steps.append((backups[-1], copy.deepcopy(self._file_entries())))
        self._file_record_steps = steps

    def _restore_file_record(self, step: list) -> None:
        """An undo back to ``step``: the label file's top-level entries as they were then."""
        for known, record in self._file_record_steps:
            if known is step:
                self._set_file_entries(copy.deepcopy(record))
                return


@dataclass
class LabelMeFile:
    """What LabelMe's own reader makes of a label file."""

    shapes: list[dict]  # each with LabelMe's "other_data" (the keys it does not know)
    image_data: bytes | None
    image_path: str


def read_label_file(path: os.PathLike | str) -> LabelMeFile:
    """Read a label file with LabelMe's own reader (tests: LabelMe opens what we write); raises what it raises."""
    if LABELME_7:
        from labelme._label_file import read_label_file as read

        annotation = read(filename=str(path))
        return LabelMeFile(list(annotation.shapes), annotation.image_data, annotation.image_path)
    from labelme._label_file import LabelFile

    label_file = LabelFile(str(path))
    return LabelMeFile(list(label_file.shapes), label_file.image_data, label_file.image_path)


def wait_for_saves() -> None:
    """Wait until every LabelMe window's saves are on disk (tests read the files): LabelMe 7 writes
    its automatic saves in a thread; LabelMe 6 has written them already."""
    if not LABELME_7:
        return
    window_class = main_window_class()
    windows: list[Any] = [widget for widget in QtWidgets.QApplication.topLevelWidgets() if isinstance(widget, window_class)]
    # Events already queued (a finished write, a deferred edit) may start another write: until none does.
    QtWidgets.QApplication.processEvents()
    while any(window._save_writer.is_busy for window in windows):
        for window in windows:
            window._wait_for_save()
        QtWidgets.QApplication.processEvents()


def decoded_picture(path: os.PathLike | str):
    """The picture LabelMe decodes and orients before handing it to Qt, as RGB uint8 (tests compare ours)."""
    import numpy as np
    from labelme import _label_file

    if LABELME_7:
        from labelme._utils import apply_exif_orientation

        picture = apply_exif_orientation(_label_file._imread(str(path), max_decode_mb=None))
    else:
        from labelme.utils import apply_exif_orientation

        picture = apply_exif_orientation(_label_file._imread(str(path)))
    return np.asarray(picture.convert("RGB"))



def resave_label_file(path: os.PathLike | str, image_size: tuple[int, int], edit: Callable[[list], None] | None = None,
                      label_flags: dict[str, list[str]] | None = None) -> None:
    """What LabelMe's window does to a label file on open then save, minus the window (tests):
    its reader, its shapes from the file's dicts, ``edit`` on them as a person would, its dicts
    from the shapes and its writer. ``image_size`` is (height, width)."""
    import importlib

    from labelme import _label_file

    app = importlib.import_module(APP_MODULE)
    height, width = image_size
    if LABELME_7:
        import dataclasses

        annotation = _label_file.read_label_file(filename=str(path))
        shapes = app._shapes_from_dicts(shape_dicts=annotation.shapes, label_flags=label_flags)
        if edit is not None:
            edit(shapes)
        _label_file.write_label_file(
            filename=str(path), annotation=dataclasses.replace(annotation, shapes=[app._shape_to_dict(s) for s in shapes]),
            image_height=height, image_width=width, save_image_data=False)
        return
    label_data = _label_file.read_label_file(str(path))
    shapes = app._shapes_from_dicts(shape_dicts=label_data.shapes, label_flags=label_flags)
    if edit is not None:
        edit(shapes)
    _label_file.write_label_file(
        str(path), shapes=[app._shape_to_dict(shape) for shape in shapes], image_path=label_data.image_path,
        image_height=height, image_width=width, image_data=None, other_data=label_data.other_data,
        flags=label_data.flags)
