"""Every touch of LabelMe's internals, in one place: this private package.

LabelMe has no plugin API, so the plugin reaches into ``MainWindow``, its
``Canvas`` and ``Shape``. All of it goes through this package (nothing else
in the plugin imports ``labelme``), and ``REQUIRED`` names each attribute we
rely on: ``missing_attributes`` (and a test over it) reports by name what a
LabelMe release no longer has, instead of a crash deep in a slot.

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

Its modules, by concern: ``_required`` (which LabelMe line, the REQUIRED list
of each, ``missing_attributes``), ``_files`` (what is open, its label file and
top-level record, saving; LabelMe's reader and writer), ``_canvas`` (how
suggestions look, the heat-map overlay, clicks on suggestions) and ``_window``
(``LabelMeAdapter`` with its hooks into the main window, our widgets in it,
``run_labelme``). The plugin imports only the names below, from the package.
"""

from labelme_dsarad._labelme_adapter._canvas import PENDING_COLOUR, move_vertex
from labelme_dsarad._labelme_adapter._files import decoded_picture, read_label_file, resave_label_file, wait_for_saves
from labelme_dsarad._labelme_adapter._required import LABELME_7, REQUIRED, main_window_class, missing_attributes
from labelme_dsarad._labelme_adapter._window import LabelMeAdapter, install_qsettings_sandbox, run_labelme

__all__ = [
    "LABELME_7",
    "PENDING_COLOUR",
    "REQUIRED",
    "LabelMeAdapter",
    "decoded_picture",
    "install_qsettings_sandbox",
    "main_window_class",
    "missing_attributes",
    "move_vertex",
    "read_label_file",
    "resave_label_file",
    "run_labelme",
    "wait_for_saves",
]
