"""Which LabelMe this is, and what of it the adapter relies on (``REQUIRED``, per LabelMe line)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from qtpy import QtWidgets


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



def _safely(callback: Callable, *args) -> Any:
    """Run plugin code inside LabelMe's own flow: a bug of ours must not stop a save or a load."""
    try:
        return callback(*args)
    except Exception:  # noqa: BLE001 - printed; LabelMe's excepthook would close the app
        traceback.print_exc()
        return None


class _WindowPart:
    """What every part of the adapter stands on: LabelMe's main window and its canvas."""

    window: Any

    @property
    def canvas(self):
        return self.window._canvas_widgets.canvas
