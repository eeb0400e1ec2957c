"""The window side: the adapter class, its hooks into LabelMe's main window, our widgets in it, running LabelMe."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from typing import Any

from qtpy import QtCore, QtGui, QtWidgets

from labelme_dsarad._labelme_adapter._canvas import _CanvasSide, _SuggestionClickFilter
from labelme_dsarad._labelme_adapter._files import _LabelFileSide
from labelme_dsarad._labelme_adapter._required import LABELME_7, WIDGETS_MODULE, _safely


class LabelMeAdapter(_LabelFileSide, _CanvasSide):
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

    # --- the window ---

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

    def install_hooks(
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
        self._install_pending_style(is_pending)
        self._wrap_labels_and_saves(shape_suffix, before_save, after_change)
        self._wrap_opening(image_closing, image_opened)
        self._wrap_undo_steps()
        self._connect_signals(shape_moved, undone, image_flag_changed, selection_changed)
        self._click_filter = _SuggestionClickFilter(self.canvas, is_pending)
        self.canvas.installEventFilter(self._click_filter)
        self._install_overlay_layer()
        self._catch_up_with_open_file()

    def _wrap_labels_and_saves(self, shape_suffix: Callable[[Any], str], before_save: Callable[[], object],
                               after_change: Callable[[], None]) -> None:
        window = self.window
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

        window.add_label = _add_label
        setattr(window, save_name, _save_labels)
        window.mark_dirty = _mark_dirty

    def _wrap_opening(self, image_closing: Callable[[], None], image_opened: Callable[[str | None], None]) -> None:
        window = self.window
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

        window.reset_state = _reset_state
        window._load_file = _load_file

    def _wrap_undo_steps(self) -> None:
        """Tie the label file's top-level entries to each undo step (see the package's docstring)."""
        canvas = self.canvas
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

        canvas.backup_shapes = _backup_shapes
        canvas.restore_last_shape = _restore_last_shape

    def _connect_signals(self, shape_moved: Callable[[], None], undone: Callable[[], None],
                         image_flag_changed: Callable[[str, bool], None],
                         selection_changed: Callable[[list], None]) -> None:
        window, canvas = self.window, self.canvas

        def _undone() -> None:
            if self._restored_by_undo:  # not when there was nothing to undo
                self._restored_by_undo = False
                undone()

        def _image_flag_changed(item: QtWidgets.QListWidgetItem) -> None:
            if not self._loading:
                image_flag_changed(item.text(), item.checkState() == QtCore.Qt.Checked)

        # LabelMe connected the original mark_dirty to shape_moved before we
        # wrapped it; hear moves too (a moved suggestion is an accepted one).
        canvas.shape_moved.connect(lambda: _safely(shape_moved))
        # Undo is an action bound to the original method; connected after it, we run after it.
        window._actions.undo.triggered.connect(lambda *_: _safely(_undone))
        # LabelMe marks the image changed on a flag's tick; connected after it, we run after it.
        window._docks.flag_list.itemChanged.connect(lambda item: _safely(_image_flag_changed, item))
        canvas.selection_changed.connect(lambda shapes: _safely(selection_changed, shapes))
        # A click in the list, not any selection change: clicks on the canvas select in the list too.
        window._docks.label_list.clicked.connect(lambda *_: _safely(self._centre_on_list_selection))

    def _catch_up_with_open_file(self) -> None:
        """LabelMe may have opened a file before we were attached ('labelme-dsarad FOLDER'):
        its shapes were drawn without our colours, its undo steps recorded without us."""
        for shape in self.shapes():
            _safely(self.restyle, shape)
        self._file_record_steps = [(step, copy.deepcopy(self._file_entries())) for step in self.canvas.shape_backups]

    def _append_suffix(self, shape, shape_suffix: Callable[[Any], str]) -> None:
        suffix = shape_suffix(shape)
        if suffix:
            item = self.window._docks.label_list.find_item_by_shape(shape=shape)
            item.setText(item.text() + suffix)

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


def install_qsettings_sandbox(folder: os.PathLike | str) -> None:
    """Point Qt's user settings at a folder (tests, screenshots): the real layout is left alone."""
    QtCore.QSettings.setPath(QtCore.QSettings.NativeFormat, QtCore.QSettings.UserScope, str(folder))
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(folder))
