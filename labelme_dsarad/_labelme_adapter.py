"""Every touch of LabelMe's internals, in one place.

LabelMe has no plugin API, so the plugin reaches into ``MainWindow``, its
``Canvas`` and ``Shape``. All of it goes through this module, and
``REQUIRED`` names each attribute we rely on: ``missing_attributes`` (and a
test over it) reports by name what a LabelMe release no longer has, instead
of a crash deep in a slot.

Two LabelMe lines, each with its own list: 6.3 on PyQt5 (``labelme>=6.3,<7``,
Python 3.10-3.11) and 7 on PySide6 (``labelme>=7.1,<8``, Python 3.12+), both
through qtpy. LabelMe 7 renamed its modules with underscores, takes keyword
arguments only, made ``Shape`` a plain dataclass (points in a numpy array,
colours chosen by the canvas at paint time), keeps a label file's other keys
in ``_annotation`` and saves automatically in a thread; where the lines
differ, ``LABELME_7`` says which is which. The methods LabelMe calls are
called here with keywords, the parameters' names being the same in both.

Hooks are instance attributes that wrap the window's own methods. LabelMe
calls the wrapped ones through ``self.``, so the wrappers see every call,
whatever starts it; where LabelMe bound a method to a signal before we
could wrap it (shape moves, undo, image flags), we connect to the same signal.

Undo: LabelMe's undo restores the canvas's shapes only. The label file's
top-level entries (our review record among them) are tied here to each undo
step, so an undo takes back a rejection as well as the shape. Neither LabelMe
line has a redo.

Why one module (and one class) of this size: the point of it is that
nothing else reaches into LabelMe, so every private attribute we use is
listed and tested here; splitting it would spread those touches again.
"""

from __future__ import annotations

import copy
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtpy import QtCore, QtGui, QtWidgets


def _labelme_major_version() -> int:
    from importlib.metadata import version

    return int(version("labelme").split(".")[0])


LABELME_7 = _labelme_major_version() >= 7
APP_MODULE, WIDGETS_MODULE = ("labelme._app", "labelme._widgets") if LABELME_7 else ("labelme.app", "labelme.widgets")

# "Owner.attribute[.attribute]": checked on a live window, because many
# MainWindow attributes exist only on instances.
REQUIRED_LABELME_6 = (
    "labelme.__main__.main",
    "labelme.__main__.MainWindow",
    "labelme._shape.Shape",
    "labelme.widgets.format_shape_label",
    "labelme.widgets.LabelListWidgetItem",
    "Shape.label",
    "Shape.points",
    "Shape.flags",
    "Shape.other_data",
    "Shape.add_point",
    "Shape.close",
    "Shape.line_color",
    "Shape.fill_color",
    "Shape.vertex_fill_color",
    "Shape.select_fill_color",
    "Shape.point_size",
    "MainWindow._canvas_widgets.canvas",
    "MainWindow._docks.label_list",
    "MainWindow._docks.file_list",
    "MainWindow._docks.flag_list",
    "MainWindow._actions.undo",
    "MainWindow._actions.on_shapes_present",
    "MainWindow._actions.brightness_contrast",
    "MainWindow._image",
    "MainWindow._image_path",
    "MainWindow._image_data",
    "MainWindow._label_file_path",
    "MainWindow._output_dir",
    "MainWindow._is_changed",
    "MainWindow._other_data",
    "MainWindow._load_file",
    "MainWindow._load_shapes",
    "MainWindow._update_shape_color",
    "MainWindow.add_label",
    "MainWindow.remove_labels",
    "MainWindow.reset_state",
    "MainWindow.mark_dirty",
    "MainWindow.mark_clean",
    "MainWindow.save_labels",
    "MainWindow.undo_shape_edit",
    "MainWindow.has_no_shapes",
    "MainWindow.image_list",
    "MainWindow._load_from_file_or_dir",
    "Canvas.shapes",
    "Canvas.mode",
    "Canvas._hovered_vertex",
    "Canvas._transform_point_widget_to_image",
    "Canvas._compute_image_origin_offset",
    "MainWindow._canvas_widgets.scroll_bars",
    "Canvas.hovered_shape",
    "Canvas.can_restore_shape",
    "Canvas.selected_shapes",
    "Canvas.shape_backups",
    "Canvas.backup_shapes",
    "Canvas.restore_last_shape",
    "Canvas.deselect_shape",
    "Canvas.select_shapes",
    "Canvas.selection_changed",
    "Canvas.shape_moved",
    "Canvas.menus",
    "Canvas.pixmap",
    "Canvas.scale",
    "Canvas._render_layers",
    "Canvas._draw_pixmap_layer",
    "LabelListItem.setText",
    "LabelListItem.shape",
    "LabelList.find_item_by_shape",
    "LabelList.clicked",
    "ToolsToolBar",
)
REQUIRED_LABELME_7 = (
    "labelme.__main__.main",
    "labelme.__main__.MainWindow",
    "labelme._shape.Shape",
    "labelme._widgets.format_shape_label",
    "labelme._widgets.LabelListWidgetItem",
    "labelme._widgets.Palette",
    "Shape.label",
    "Shape.points",
    "Shape.flags",
    "Shape.other_data",
    "Shape.closed",
    "MainWindow._canvas_widgets.canvas",
    "MainWindow._docks.label_list",
    "MainWindow._docks.file_list",
    "MainWindow._docks.flag_list",
    "MainWindow._actions.undo",
    "MainWindow._actions.brightness_contrast",
    "MainWindow._image",
    "MainWindow._image_path",
    "MainWindow._annotation",
    "MainWindow._label_file_path",
    "MainWindow._output_dir",
    "MainWindow._is_changed",
    "MainWindow._load_file",
    "MainWindow._load_shapes",
    "MainWindow._capture_save_request",
    "MainWindow._wait_for_save",
    "MainWindow._save_writer",
    "MainWindow.add_label",
    "MainWindow.remove_labels",
    "MainWindow.reset_state",
    "MainWindow.mark_dirty",
    "MainWindow.mark_clean",
    "MainWindow.save_labels",
    "MainWindow.undo_shape_edit",
    "MainWindow.has_no_shapes",
    "MainWindow.image_list",
    "MainWindow._load_from_file_or_dir",
    "MainWindow._canvas_widgets.scroll_bars",
    "Canvas.shapes",
    "Canvas.mode",
    "Canvas._hovered_vertex",
    "Canvas.transform_widget_point_to_image",
    "Canvas._compute_image_origin_offset",
    "Canvas._render_context",
    "Canvas.hovered_shape",
    "Canvas.can_restore_shape",
    "Canvas.selected_shapes",
    "Canvas.shape_backups",
    "Canvas.backup_shapes",
    "Canvas.restore_last_shape",
    "Canvas.deselect_shape",
    "Canvas.select_shapes",
    "Canvas.selection_changed",
    "Canvas.shape_moved",
    "Canvas.context_menu",
    "Canvas.pixmap",
    "Canvas.scale",
    "Canvas._render_layers",
    "Canvas._draw_pixmap_layer",
    "LabelListItem.setText",
    "LabelListItem.shape",
    "LabelList.find_item_by_shape",
    "LabelList.clicked",
    "ToolsToolBar",
)
REQUIRED = REQUIRED_LABELME_7 if LABELME_7 else REQUIRED_LABELME_6

PENDING_COLOUR = (255, 140, 0)  # amber: unlike LabelMe's label colours, reads as "not final"


def missing_attributes(window: QtWidgets.QMainWindow) -> list[str]:
    """Names in REQUIRED that this LabelMe does not provide."""
    import importlib

    from labelme._shape import Shape

    roots: dict[str, Any] = {
        "MainWindow": window,
        "Shape": Shape(label="probe"),
    }
    canvas = getattr(getattr(window, "_canvas_widgets", None), "canvas", None)
    roots["Canvas"] = canvas
    label_list = getattr(getattr(window, "_docks", None), "label_list", None)
    roots["LabelList"] = label_list
    roots["LabelListItem"] = importlib.import_module(WIDGETS_MODULE).LabelListWidgetItem()
    missing = []
    for name in REQUIRED:
        if name == "ToolsToolBar":
            if window.findChild(QtWidgets.QToolBar, "ToolsToolBar") is None:
                missing.append(name)
            continue
        if name.startswith("labelme."):
            module_name, _, attribute = name.rpartition(".")
            try:
                found = hasattr(importlib.import_module(module_name), attribute)
            except ImportError:
                found = False
            if not found:
                missing.append(name)
            continue
        root, *path = name.split(".")
        value = roots.get(root)
        for part in path:
            if value is not None and not hasattr(value, part) and _declared(value, part):
                break  # declared by the class, set once a file is open (``_image_data``)
            if value is None or not hasattr(value, part):
                missing.append(name)
                break
            value = getattr(value, part)
    return missing


def _declared(value: Any, attribute: str) -> bool:
    return any(attribute in getattr(klass, "__annotations__", {}) for klass in type(value).__mro__)


def main_window_class() -> type:
    """LabelMe's main window class (tests and benchmarks build it without ``run_labelme``)."""
    import importlib

    return importlib.import_module(APP_MODULE).MainWindow


class LabelMeAdapter:
    """The plugin's view of one LabelMe main window."""

    def __init__(self, window: QtWidgets.QMainWindow):
        self.window = window
        self._overlay: QtGui.QImage | None = None
        self._overlay_opacity = 0.5
        self._hooks_installed = False
        self._shape_suffix: Callable[[Any], str] = lambda _shape: ""
        # (undo step, the label file's top-level entries at that step): see _remember_file_record.
        self._file_record_steps: list[tuple[list, Any]] = []
        self._restored_by_undo = False
        self._loading = False

    # --- what is open ---

    @property
    def canvas(self):
        return self.window._canvas_widgets.canvas

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
        image = Path(image_path)
        return (self.window._output_dir or image.parent) / f"{image.stem}.json"

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

    def open_file(self, path: str) -> None:
        """Open an image the way the file list does (also selects it there)."""
        if LABELME_7:  # its _load_file leaves the Image List's row where it was: choose the row
            images, wanted = self.image_list(), os.path.normpath(str(path))
            file_list = self.window._docks.file_list
            if wanted in images and file_list.currentRow() != images.index(wanted):
                file_list.setCurrentRow(images.index(wanted))  # loads it, as a click on the row does
                return
        self.window._load_file(image_or_label_path=str(path))

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

    def mark_dirty(self) -> None:
        self.window.mark_dirty()

    def undo(self) -> None:
        self.window._actions.undo.trigger()

    def set_image_flag(self, name: str, checked: bool) -> None:
        """Tick or untick one of the image's flags in LabelMe's flag list, as a person would."""
        flags = self.window._docks.flag_list
        for row in range(flags.count()):
            item = flags.item(row)
            if item.text() == name:
                item.setCheckState(QtCore.Qt.Checked if checked else QtCore.Qt.Unchecked)

    def show_status(self, text: str, milliseconds: int = 15000) -> None:
        self.window.statusBar().showMessage(text, milliseconds)

    # --- shapes ---

    def shapes(self) -> list:
        return list(self.canvas.shapes)

    def selected_shapes(self) -> list:
        return list(self.canvas.selected_shapes)

    def make_shape(self, shape_dict: dict):
        """A LabelMe polygon from a label-file shape dict; extra keys go to other_data."""
        from labelme._shape import Shape

        points = [(float(x), float(y)) for x, y in shape_dict["points"]]
        properties = {
            "label": shape_dict["label"],
            "shape_type": shape_dict.get("shape_type") or "polygon",
            "group_id": shape_dict.get("group_id"),
            "description": shape_dict.get("description") or "",
        }
        if LABELME_7:
            shape = Shape(**properties, points=points, closed=True)
        else:
            shape = Shape(**properties)
            for x, y in points:
                shape.add_point(QtCore.QPointF(x, y))
            shape.close()
        shape.flags = dict(shape_dict.get("flags") or {})
        known = {"label", "points", "group_id", "shape_type", "flags", "description", "mask"}
        shape.other_data = {key: value for key, value in shape_dict.items() if key not in known}
        return shape

    def replace_shapes(self, remove: Iterable, add: list, amend_top: Any = None,
                       change_file_record: Callable[[], None] | None = None) -> Any:
        """Swap shapes as ONE undo step; returns a token for amending it later.

        With ``amend_top`` (the token of the previous swap) still on top of
        LabelMe's undo stack, that step is replaced instead of stacked, so
        moving a slider ten times is still one undo away from no suggestions.
        ``change_file_record`` edits the label file's top-level entries as
        part of the same step: an undo takes the edit back with the shapes.
        """
        window, canvas = self.window, self.canvas
        backups = canvas.shape_backups
        if amend_top is not None and backups and backups[-1] is amend_top and len(backups) >= 2:
            backups.pop()
        elif not backups:
            # A fresh image has no undo entry yet: record the state to return to.
            canvas.backup_shapes()
        if change_file_record is not None:
            change_file_record()
        remove = list(remove)
        if remove:
            gone = set(map(id, remove))
            window.remove_labels(shapes=remove)
            canvas.shapes = [shape for shape in canvas.shapes if id(shape) not in gone]
            canvas.selected_shapes = [shape for shape in canvas.selected_shapes if id(shape) not in gone]
            if canvas.hovered_shape is not None and id(canvas.hovered_shape) in gone:
                canvas.hovered_shape = None
        window._load_shapes(add, replace=False)  # pushes the new state: one undo entry
        self._after_shape_change()
        return backups[-1] if backups else None

    def remove_shapes(self, shapes: list, change_file_record: Callable[[], None] | None = None) -> None:
        """Delete shapes without LabelMe's confirmation dialog, as one undo step."""
        self.replace_shapes(shapes, [], change_file_record=change_file_record)

    def record_undo_step(self) -> None:
        """After changing shapes in place (accepting): make it one undo step."""
        self.canvas.backup_shapes()
        self._after_shape_change()

    def _after_shape_change(self) -> None:
        window = self.window
        if window.has_no_shapes() and not LABELME_7:  # LabelMe 7 follows its list's rows itself
            for action in window._actions.on_shapes_present:
                action.setEnabled(False)
        window._actions.undo.setEnabled(self.canvas.can_restore_shape)
        self.canvas.update()

    def select(self, shapes: list) -> None:
        self.canvas.select_shapes(shapes=shapes)

    def restyle(self, shape) -> None:
        """Colour a shape for its state and give its list entry LabelMe's text and our suffix."""
        import importlib

        if LABELME_7:
            self.canvas.update()  # the canvas chooses colours as it paints (_install_pending_style)
        else:
            self.window._update_shape_color(shape)
        try:
            item = self.window._docks.label_list.find_item_by_shape(shape=shape)
        except ValueError:
            return
        item.setText(importlib.import_module(WIDGETS_MODULE).format_shape_label(shape=shape) + self._shape_suffix(shape))

    # --- hooks ---

    def install_hooks(  # noqa: C901 - split after the LabelMe 7 merge, which rewrites this adapter
        self,
        *,
        is_pending: Callable[[Any], bool],
        shape_suffix: Callable[[Any], str],
        before_save: Callable[[], object],  # its result is not used
        after_change: Callable[[], None],
        shape_moved: Callable[[], None],
        image_closing: Callable[[], None],
        image_opened: Callable[[str | None], None],
        selection_changed: Callable[[list], None],
        undone: Callable[[], None],
        image_flag_changed: Callable[[str, bool], None],
    ) -> None:
        """Wrap the window's methods so the plugin hears what LabelMe does."""
        if self._hooks_installed:
            return
        self._hooks_installed = True
        self._shape_suffix = shape_suffix
        window, canvas = self.window, self.canvas
        self._install_pending_style(is_pending)

        add_label = window.add_label

        def _add_label(shape) -> None:
            add_label(shape=shape)
            _safely(self._append_suffix, shape, shape_suffix)

        # Edits to a suggestion accept it before it reaches the file. LabelMe 7
        # also saves automatically, from a copy it takes on the spot and writes
        # in a thread: taking the copy is where to hear both.
        save_name = "_capture_save_request" if LABELME_7 else "save_labels"
        save_labels = getattr(window, save_name)

        def _save_labels(label_path: str):
            _safely(before_save)
            return save_labels(label_path=label_path)

        mark_dirty = window.mark_dirty

        def _mark_dirty() -> None:
            _safely(after_change)
            mark_dirty()

        reset_state = window.reset_state

        def _reset_state() -> None:
            _safely(image_closing)
            reset_state()

        load_file = window._load_file

        def _load_file(image_or_label_path: str):
            self._loading = True  # LabelMe fills in the image's flags: no person ticks them
            try:
                loaded = load_file(image_or_label_path=image_or_label_path)
            finally:
                self._loading = False
            _safely(image_opened, self.image_path())
            return loaded

        backup_shapes = canvas.backup_shapes

        def _backup_shapes() -> None:
            backup_shapes()
            _safely(self._remember_file_record)

        restore_last_shape = canvas.restore_last_shape

        def _restore_last_shape() -> None:
            restored = canvas.shape_backups[-2] if canvas.can_restore_shape else None
            restore_last_shape()
            if restored is not None:
                self._restored_by_undo = True
                _safely(self._restore_file_record, restored)

        def _undone() -> None:
            if self._restored_by_undo:  # not when there was nothing to undo
                self._restored_by_undo = False
                undone()

        def _image_flag_changed(item: QtWidgets.QListWidgetItem) -> None:
            if not self._loading:
                image_flag_changed(item.text(), item.checkState() == QtCore.Qt.Checked)

        window.add_label = _add_label
        setattr(window, save_name, _save_labels)
        window.mark_dirty = _mark_dirty
        window.reset_state = _reset_state
        window._load_file = _load_file
        canvas.backup_shapes = _backup_shapes
        canvas.restore_last_shape = _restore_last_shape
        # LabelMe connected the original mark_dirty to shape_moved before we
        # wrapped it; hear moves too (a moved suggestion is an accepted one).
        canvas.shape_moved.connect(lambda: _safely(shape_moved))
        # Undo is an action bound to the original method; connected after it, we run after it.
        window._actions.undo.triggered.connect(lambda *_: _safely(_undone))
        # LabelMe marks the image changed on a flag's tick; connected after it, we run after it.
        window._docks.flag_list.itemChanged.connect(lambda item: _safely(_image_flag_changed, item))
        canvas.selection_changed.connect(lambda shapes: _safely(selection_changed, shapes))
        self._click_filter = _SuggestionClickFilter(canvas, is_pending)
        canvas.installEventFilter(self._click_filter)
        # A click in the list, not any selection change: clicks on the canvas select in the list too.
        window._docks.label_list.clicked.connect(lambda *_: _safely(self._centre_on_list_selection))
        self._install_overlay_layer()
        # LabelMe may have opened a file before we were attached ('labelme-dsarad FOLDER'):
        # its shapes were drawn without our colours, its undo steps recorded without us.
        for shape in self.shapes():
            _safely(self.restyle, shape)
        self._file_record_steps = [(step, copy.deepcopy(self._file_entries())) for step in canvas.shape_backups]

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

    def _centre_on_list_selection(self) -> None:
        """A shape chosen in the annotation list is scrolled into the middle of the canvas."""
        from labelme_dsarad.review import points_of

        shapes = self.selected_shapes()
        points = points_of(shapes[0]) if len(shapes) == 1 else []
        if not points:
            return
        canvas = self.canvas
        origin = self.image_origin()
        centre_x = (sum(x for x, _ in points) / len(points) + origin.x()) * canvas.scale
        centre_y = (sum(y for _, y in points) / len(points) + origin.y()) * canvas.scale
        bars = self.window._canvas_widgets.scroll_bars
        for orientation, centre in ((QtCore.Qt.Horizontal, centre_x), (QtCore.Qt.Vertical, centre_y)):
            bar = bars[orientation]
            bar.setValue(int(centre - bar.pageStep() / 2))

    def image_origin(self) -> QtCore.QPointF:
        """Where the image's corner is on the canvas, in image pixels (the canvas centres a small image)."""
        canvas = self.canvas
        return canvas._compute_image_origin_offset(area=None) if LABELME_7 else canvas._compute_image_origin_offset()

    def colours(self, shape) -> tuple[QtGui.QColor, QtGui.QColor]:
        """The outline and fill colours LabelMe paints ``shape`` with."""
        if LABELME_7:
            palette = self.canvas._render_context(shape=shape, highlighted=False).palette
            return palette.line, palette.fill
        return shape.line_color, shape.fill_color

    def _append_suffix(self, shape, shape_suffix: Callable[[Any], str]) -> None:
        suffix = shape_suffix(shape)
        if suffix:
            item = self.window._docks.label_list.find_item_by_shape(shape=shape)
            item.setText(item.text() + suffix)

    # --- how suggestions look ---

    def _install_pending_style(self, is_pending: Callable[[Any], bool]) -> None:
        """Suggestions in amber with small vertices, drafts not labels (``paint_pending``)."""
        if not LABELME_7:
            window = self.window
            update_shape_color = window._update_shape_color

            def _update_shape_color(shape) -> None:
                update_shape_color(shape)
                if _safely(is_pending, shape):
                    paint_pending(shape)
                else:
                    vars(shape).pop("point_size", None)  # back to LabelMe's class-wide size

            window._update_shape_color = _update_shape_color
            return
        # LabelMe 7 picks a shape's colours and vertex size as it paints it.
        import dataclasses
        import importlib

        canvas = self.canvas
        render_context = canvas._render_context
        palette = pending_palette(importlib.import_module(WIDGETS_MODULE).Palette)

        def _render_context(*, shape, highlighted: bool):
            context = render_context(shape=shape, highlighted=highlighted)
            if not _safely(is_pending, shape):
                return context
            return dataclasses.replace(context, palette=palette, point_size=max(2, context.point_size // 2))

        canvas._render_context = _render_context

    # --- heat-map overlay: a canvas layer between the image and the shapes ---

    def _install_overlay_layer(self) -> None:
        canvas = self.canvas
        render_layers = canvas._render_layers

        def _render_layers():
            layers = list(render_layers())
            position = layers.index(canvas._draw_pixmap_layer) + 1 if canvas._draw_pixmap_layer in layers else 1
            layers.insert(position, self._draw_overlay)
            return tuple(layers)

        canvas._render_layers = _render_layers

    def set_overlay(self, image: QtGui.QImage | None, opacity: float | None = None) -> None:
        """Show an RGBA image over the whole picture, stretched to it (never part of the label file)."""
        self._overlay = image
        if opacity is not None:
            self._overlay_opacity = opacity
        self.canvas.update()

    def overlay(self) -> QtGui.QImage | None:
        return self._overlay

    def _draw_overlay(self, painter: QtGui.QPainter) -> None:
        _safely(self._paint_overlay, painter)

    def _paint_overlay(self, painter: QtGui.QPainter) -> None:
        canvas, image = self.canvas, self._overlay
        if image is None or canvas.pixmap.isNull():
            return
        painter.save()
        painter.setOpacity(self._overlay_opacity)
        # A large photo's map is made at a fraction of its size: stretched over the whole picture.
        painter.setRenderHint(QtGui.QPainter.SmoothPixmapTransform)
        pixmap = canvas.pixmap
        target = QtCore.QRectF(0.0, 0.0, pixmap.width() * canvas.scale, pixmap.height() * canvas.scale)
        painter.drawImage(target, image, QtCore.QRectF(image.rect()))
        painter.restore()

    # --- widgets ---

    def add_dock(self, dock: QtWidgets.QDockWidget) -> None:
        """Our dock in a column of its own right of LabelMe's (stacked under its four docks it
        would get a sliver of the height), or where a person left it before."""
        self.window.addDockWidget(QtCore.Qt.RightDockWidgetArea, dock, QtCore.Qt.Horizontal)
        # LabelMe restored its dock layout before our dock existed.
        self.window.restoreDockWidget(dock)

    def add_toolbar_actions(self, actions: list[QtWidgets.QAction]) -> None:
        """Buttons in LabelMe's top toolbar, after Brightness/Contrast (its end is often cut off)."""
        toolbar = self.window.findChild(QtWidgets.QToolBar, "ToolsToolBar")
        if toolbar is None:
            toolbar = self.window.addToolBar("Defect detection")
        anchor = self.window._actions.brightness_contrast
        entries = toolbar.actions()
        before = None
        for index, entry in enumerate(entries):
            widget = toolbar.widgetForAction(entry)
            if isinstance(widget, QtWidgets.QToolButton) and widget.defaultAction() is anchor:
                before = entries[index + 1] if index + 1 < len(entries) else None
                break
        for action in actions:
            button = QtWidgets.QToolButton(toolbar)
            button.setDefaultAction(action)
            button.setToolButtonStyle(toolbar.toolButtonStyle())
            if before is None:
                toolbar.addWidget(button)
            else:
                toolbar.insertWidget(before, button)

    def add_canvas_menu_actions(self, actions: list[QtWidgets.QAction]) -> None:
        """Right-click menu of the canvas."""
        menu = self.canvas.context_menu if LABELME_7 else self.canvas.menus[0]
        menu.addSeparator()
        for action in actions:
            menu.addAction(action)

    def add_view_menu_action(self, action: QtWidgets.QAction) -> None:
        for menu_action in self.window.menuBar().actions():
            if menu_action.menu() is not None and menu_action.text().replace("&", "") == "View":
                menu_action.menu().addSeparator()
                menu_action.menu().addAction(action)
                return


class _SuggestionClickFilter(QtCore.QObject):
    """A click inside a pending suggestion selects it, even when it is small enough that the
    click falls near one of its vertices (LabelMe would pick the vertex, and a drag would edit,
    and so accept, the suggestion)."""

    def __init__(self, canvas, is_pending: Callable[[Any], bool]):
        super().__init__(canvas)
        self.canvas = canvas
        self.is_pending = is_pending

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QtCore.QEvent.MouseButtonPress and event.button() == QtCore.Qt.LeftButton:
            _safely(self._prefer_the_shape, event)
        return False  # LabelMe handles the click itself

    def _prefer_the_shape(self, event) -> None:
        from labelme_dsarad.review import points_of

        canvas, shape = self.canvas, self.canvas.hovered_shape
        if canvas._hovered_vertex is None or shape is None or not self.is_pending(shape):
            return
        to_image = canvas.transform_widget_point_to_image if LABELME_7 else canvas._transform_point_widget_to_image
        outline = QtGui.QPolygonF([QtCore.QPointF(x, y) for x, y in points_of(shape)])
        if outline.containsPoint(to_image(event.position()), QtCore.Qt.OddEvenFill):
            canvas._hovered_vertex = None


def _safely(callback: Callable, *args) -> Any:
    """Run plugin code inside LabelMe's own flow: a bug of ours must not stop a save or a load."""
    try:
        return callback(*args)
    except Exception:  # noqa: BLE001 - printed; LabelMe's excepthook would close the app
        traceback.print_exc()
        return None


def pending_palette(palette_class: type):
    """LabelMe 7's colours of a suggestion: ``paint_pending``'s."""
    r, g, b = PENDING_COLOUR
    return palette_class(line=QtGui.QColor(r, g, b), fill=QtGui.QColor(r, g, b, 70),
                         select_line=QtGui.QColor(255, 255, 255), select_fill=QtGui.QColor(r, g, b, 130),
                         vertex_fill=QtGui.QColor(255, 230, 160), hvertex_fill=QtGui.QColor(255, 255, 255))


def paint_pending(shape) -> None:
    """Amber outline and small vertices: a suggestion reads as a draft, not a label."""
    r, g, b = PENDING_COLOUR
    shape.point_size = max(2, type(shape).point_size // 2)  # hovered vertices still grow for editing
    shape.line_color = QtGui.QColor(r, g, b)
    shape.vertex_fill_color = QtGui.QColor(255, 230, 160)
    shape.hvertex_fill_color = QtGui.QColor(255, 255, 255)
    shape.fill_color = QtGui.QColor(r, g, b, 70)
    shape.select_line_color = QtGui.QColor(255, 255, 255)
    shape.select_fill_color = QtGui.QColor(r, g, b, 130)


def run_labelme(attach: Callable[[QtWidgets.QMainWindow], Any], argv: list[str]) -> None:
    """Run LabelMe's own ``main`` (its options, config, logging) with our panel attached.

    ``labelme.__main__.main`` builds the window by the global name
    ``MainWindow``; we swap that name for a factory that attaches the panel
    to the window it returns.
    """
    import sys

    import labelme.__main__ as labelme_main

    window_class = labelme_main.MainWindow

    def build_window(*args, **kwargs):
        window = window_class(*args, **kwargs)
        attach(window)
        return window

    labelme_main.MainWindow = build_window
    sys.argv = [sys.argv[0] if sys.argv else "labelme-dsarad", *argv]
    try:
        labelme_main.main()
    finally:
        labelme_main.MainWindow = window_class


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


def move_vertex(shape, index: int, dx: float, dy: float) -> None:
    """Move one vertex of a shape as a drag would (tests; on a canvas, it then says ``shape_moved``)."""
    if LABELME_7:
        shape.move_vertex(i=index, pos=shape.points[index] + (dx, dy))
    else:
        shape.points[index] = shape.points[index] + QtCore.QPointF(dx, dy)


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


def install_qsettings_sandbox(folder: os.PathLike | str) -> None:
    """Point Qt's user settings at a folder (tests, screenshots): the real layout is left alone."""
    QtCore.QSettings.setPath(QtCore.QSettings.NativeFormat, QtCore.QSettings.UserScope, str(folder))
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(folder))
