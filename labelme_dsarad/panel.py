"""The "Defect detection" dock: run the model, show its map, review its suggestions.

The panel wires three things together and draws nothing itself:
``DetectionWorker`` (the model, in its thread), the per-image cache of
anomaly maps (the sliders re-derive polygons from it without the model), and
LabelMe's window through ``LabelMeAdapter``. It never holds on to LabelMe
shapes between events, because LabelMe replaces them with copies on undo:
suggestions are found on the canvas each time by the record they carry.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from qtpy import QtCore, QtGui, QtWidgets

from labelme_dsarad import review
from labelme_dsarad._labelme_adapter import LabelMeAdapter
from labelme_dsarad.worker import (
    PRIORITY_CURRENT,
    PRIORITY_LOOKAHEAD,
    BatchJob,
    DetectionWorker,
    Job,
    JobResult,
    ModelDescription,
    PredictorFactory,
    default_factory,
)

# Douglas-Peucker tolerance (pixels) per step of the polygon-detail slider:
# left is coarse, right follows the map pixel by pixel.
DETAIL_TOLERANCES = (4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25, 0.0)
DEFAULT_DETAIL = DETAIL_TOLERANCES.index(1.0)
DEFAULT_MIN_AREA = 20
THRESHOLD_STEPS = 100  # slider units per 1.0 of normalised score
CACHE_SIZE = 6  # anomaly maps kept; a 2000 x 2000 map is 16 MB
# The heat map is clear below this fraction of the slider's threshold and
# opaque from the threshold up, which leaves normal surface (scoring far
# lower) readable under it.
HEAT_CLEAR_BELOW = 0.5


@dataclass
class ModelOption:
    """One entry of the model chooser."""

    title: str
    path: Path | None
    factory: PredictorFactory | None = None  # tests inject slow or fake predictors

    def predictor_factory(self) -> PredictorFactory | None:
        if self.factory is not None:
            return self.factory
        return default_factory(self.path) if self.path is not None else None


@dataclass
class CachedMap:
    path: str
    model_key: str
    prediction: Any
    image_shape: tuple[int, int]
    ahead: bool  # computed before the user opened the image


class MapCache:
    """The last few anomaly maps, per (image, model)."""

    def __init__(self, size: int = CACHE_SIZE):
        self._size = size
        self._entries: OrderedDict[tuple[str, str], CachedMap] = OrderedDict()

    def get(self, path: str, model_key: str) -> CachedMap | None:
        entry = self._entries.get((path, model_key))
        if entry is not None:
            self._entries.move_to_end((path, model_key))
        return entry

    def put(self, entry: CachedMap) -> None:
        self._entries[(entry.path, entry.model_key)] = entry
        self._entries.move_to_end((entry.path, entry.model_key))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def guarded(method: Callable) -> Callable:
    """Slots report errors in the panel: LabelMe's excepthook would close the app."""

    @functools.wraps(method)
    def wrapper(self: "DefectPanel", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown, logged, never fatal
            traceback.print_exc()
            self.show_message(f"{method.__name__.strip('_').replace('_', ' ')} failed: {error}", error=True)
            return None

    return wrapper


class HeatMap:
    """RGBA overlay of a normalised map, drawn relative to the threshold.

    Colours put the threshold at the middle of the jet scale (red: well
    beyond it) and alpha ramps up to it, so the overlay shows what is near
    the cut being made whatever the slider says. Both come from 256-entry
    lookup tables over the map's 8-bit levels: the alpha channel takes a few
    ms for 2000 x 2000 and follows the slider live; the colours take a few
    tens of ms and are redone when the slider rests (``recolour``). The
    QImage shares this object's pixels: keep the HeatMap alive while shown.
    """

    JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(1, 256), cv2.COLORMAP_JET)[0, :, ::-1].copy()

    def __init__(self, score_map: np.ndarray, threshold: float):
        levels = (np.clip(score_map, 0.0, 1.0) * 255).astype(np.uint8)
        self.levels = levels
        self.rgba = np.empty(score_map.shape + (4,), dtype=np.uint8)
        self._colour_threshold: float | None = None
        self._alpha_threshold: float | None = None
        self._recolour(threshold)

    def _recolour(self, threshold: float) -> None:
        relative = np.clip(np.round(np.arange(256) * (0.5 / threshold)), 0, 255).astype(np.intp)
        palette = self.JET[relative].reshape(1, 256, 3)
        self.rgba[..., :3] = cv2.LUT(cv2.merge([self.levels] * 3), palette)
        self._colour_threshold = threshold

    def image(self, threshold: float, recolour: bool = True) -> QtGui.QImage:
        if recolour and threshold != self._colour_threshold:
            self._recolour(threshold)
        if threshold != self._alpha_threshold:
            low = threshold * HEAT_CLEAR_BELOW
            ramp = np.clip((np.arange(256) / 255.0 - low) / max(threshold - low, 1e-6), 0.0, 1.0)
            self.rgba[..., 3] = cv2.LUT(self.levels, (ramp * 255).astype(np.uint8))
            self._alpha_threshold = threshold
        height, width = self.levels.shape
        return QtGui.QImage(self.rgba.data, width, height, 4 * width, QtGui.QImage.Format_RGBA8888)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


class DefectPanel(QtWidgets.QWidget):
    """Dock contents plus the controller behind them; one per main window."""

    # For tests and the timing script: (image path, number of suggestions).
    suggestions_shown = QtCore.Signal(str, int)

    def __init__(self, adapter: LabelMeAdapter, models: list[ModelOption], parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.adapter = adapter
        self.models = models
        self.cache = MapCache()
        self.model: ModelDescription | None = None
        self.inference_runs = 0  # results received from the worker: tests count model runs
        self.last_open_to_shown_ms: float | None = None
        self.look_ahead_enabled = True  # with Detect on open; off only to measure what it saves
        self._current: str | None = None
        self._opened_at: dict[str, float] = {}
        self._want_suggestions: set[str] = set()  # images whose map, when ready, becomes suggestions
        self._derived_for: str | None = None
        self._undo_token = None
        self._rejected: dict[str, list[list[tuple[float, float]]]] = {}
        self._batch: BatchJob | None = None
        self._batch_dialog: QtWidgets.QProgressDialog | None = None
        self._batch_includes_current = False
        self._shut_down = False
        self._shown_heat: HeatMap | None = None
        self._shown_heat_of: CachedMap | None = None
        self._recolour_timer = QtCore.QTimer(self)
        self._recolour_timer.setSingleShot(True)
        self._recolour_timer.setInterval(150)
        self._recolour_timer.timeout.connect(self._recolour_heat_map)

        self.worker = DetectionWorker()
        self.worker.model_ready.connect(self._on_model_ready)
        self.worker.model_failed.connect(self._on_model_failed)
        self.worker.result_ready.connect(self._on_result)
        self.worker.job_failed.connect(self._on_job_failed)
        self.worker.notice.connect(lambda text: self.show_message(text))
        self.worker.batch_progress.connect(self._on_batch_progress)
        self.worker.batch_finished.connect(self._on_batch_finished)
        self.worker.batch_failed.connect(self._on_batch_failed)

        self._build_actions()
        self._build_widgets()
        adapter.install_hooks(
            is_pending=review.is_pending,
            shape_suffix=review.list_suffix,
            before_save=self._reconcile,
            after_change=self._on_shapes_changed,
            shape_moved=self._on_shape_moved,
            image_closing=self._on_image_closing,
            image_opened=self._on_image_opened,
            selection_changed=lambda _shapes: self._update_review_actions(),
        )
        self.worker.start()
        if models:
            self.select_model(0)
        else:
            self.worker.set_model(None)
        if adapter.image_path() is not None:  # LabelMe opened a file before we were attached
            self._on_image_opened(adapter.image_path())
        self._update_review_actions()

    # --- building ---

    def _build_actions(self) -> None:
        def action(text, slot, shortcut=None, tip=None, checkable=False, checked=False):
            created = QtWidgets.QAction(text, self)
            if shortcut:
                created.setShortcut(QtGui.QKeySequence(shortcut))
            if tip:
                created.setToolTip(f"{tip} ({shortcut})" if shortcut else tip)
                created.setStatusTip(tip)
            created.setCheckable(checkable)
            created.setChecked(checked)
            # Toggles follow ``toggled``: it also fires when the dock's checkbox sets them.
            (created.toggled if checkable else created.triggered).connect(slot)
            return created

        self.detect_action = action("Detect", lambda: self.detect(), "Ctrl+I", "Find defects in this image")
        icon = self.style().standardIcon(QtWidgets.QStyle.SP_FileDialogContentsView)
        self.detect_action.setIcon(icon)
        self.detect_action.setIconText("Detect\nDefects")
        self.detect_on_open_action = action(
            "Detect on open", lambda checked: self._set_detect_on_open(checked), None,
            "Detect defects in every image you open, and compute the next one ahead", checkable=True,
        )
        self.detect_all_action = action(
            "Detect all…", lambda: self.detect_all(), None,
            "Detect defects in every image of the folder and write their label files",
        )
        self.heat_map_action = action(
            "Heat map", lambda checked: self._set_heat_map(checked), "Ctrl+Shift+H",
            "Show the anomaly map over the image (never saved)", checkable=True, checked=True,
        )
        self.accept_action = action("Accept", lambda: self.accept_selected(), "Ctrl+Return",
                                    "Accept the selected suggestions")
        self.reject_action = action("Reject", lambda: self.reject_selected(), "Ctrl+Shift+Return",
                                    "Reject (delete) the selected suggestions")
        self.accept_all_action = action("Accept all", lambda: self.accept_all(), None,
                                        "Accept every pending suggestion on this image")
        self.reject_all_action = action("Reject all", lambda: self.reject_all(), None,
                                        "Reject (delete) every pending suggestion on this image")
        self.retrain_action = action(
            "Retrain from labels…", lambda: self.retrain_from_labels(), None,
            "Retrain this product's model from the reviewed images (image flag 'ok') of the open folder",
        )

    def _build_widgets(self) -> None:
        self.model_box = QtWidgets.QComboBox()
        # Long model titles must not widen the dock: they elide instead.
        self.model_box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_box.setMinimumContentsLength(16)
        for option in self.models:
            self.model_box.addItem(option.title)
        self.model_box.currentIndexChanged.connect(lambda index: self.select_model(index))
        self.model_info = QtWidgets.QLabel("Loading the model…")
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)

        self.threshold_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.threshold_slider.setRange(1, THRESHOLD_STEPS - 1)
        self.threshold_slider.setValue(THRESHOLD_STEPS // 2)
        self.threshold_slider.setToolTip("Normalised anomaly score; 0.50 (the middle mark) is the model's own threshold")
        self.threshold_slider.setTickPosition(QtWidgets.QSlider.TicksBelow)
        self.threshold_slider.setTickInterval(THRESHOLD_STEPS // 2)
        self.threshold_label = QtWidgets.QLabel()
        self.threshold_slider.valueChanged.connect(lambda _value: self._on_setting_changed())

        self.min_area_box = QtWidgets.QSpinBox()
        self.min_area_box.setRange(0, 10_000_000)
        self.min_area_box.setValue(DEFAULT_MIN_AREA)
        self.min_area_box.setSuffix(" px")
        self.min_area_box.setToolTip("Smallest region that becomes a suggestion, in image pixels")
        self.min_area_box.valueChanged.connect(lambda _value: self._on_setting_changed())

        self.detail_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.detail_slider.setRange(0, len(DETAIL_TOLERANCES) - 1)
        self.detail_slider.setValue(DEFAULT_DETAIL)
        self.detail_slider.setToolTip("Polygon detail: left simplifies outlines, right follows every pixel")
        self.detail_label = QtWidgets.QLabel()
        self.detail_slider.valueChanged.connect(lambda _value: self._on_setting_changed())

        self.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(60)
        self.opacity_slider.setToolTip("Heat-map opacity")
        self.opacity_slider.valueChanged.connect(lambda value: self.adapter.set_overlay(self.adapter.overlay(), value / 100))

        self.review_label = QtWidgets.QLabel()
        self.message_label = QtWidgets.QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)

        def button(action: QtWidgets.QAction) -> QtWidgets.QPushButton:
            # A push button mirroring the action: one line of text, the action's state.
            created = QtWidgets.QPushButton(action.text())
            created.setToolTip(action.toolTip())
            created.setEnabled(action.isEnabled())
            created.clicked.connect(action.trigger)
            action.changed.connect(lambda: created.setEnabled(action.isEnabled()))
            return created

        def row(*widgets) -> QtWidgets.QHBoxLayout:
            layout = QtWidgets.QHBoxLayout()
            for widget in widgets:
                layout.addWidget(widget)
            return layout

        self.heat_map_box = QtWidgets.QCheckBox("Heat map")
        self.heat_map_box.setChecked(True)
        self.heat_map_box.toggled.connect(self.heat_map_action.setChecked)
        self.heat_map_action.toggled.connect(self.heat_map_box.setChecked)
        self.detect_on_open_box = QtWidgets.QCheckBox("Detect on open")
        self.detect_on_open_box.setToolTip(self.detect_on_open_action.toolTip())
        self.detect_on_open_box.toggled.connect(self.detect_on_open_action.setChecked)
        self.detect_on_open_action.toggled.connect(self.detect_on_open_box.setChecked)

        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.AllNonFixedFieldsGrow)
        form.addRow("Threshold", row(self.threshold_slider, self.threshold_label))
        form.addRow("Min. area", self.min_area_box)
        form.addRow("Detail", row(self.detail_slider, self.detail_label))
        form.addRow(self.heat_map_box, self.opacity_slider)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setSpacing(4)
        layout.addWidget(self.model_box)
        layout.addWidget(self.model_info)
        layout.addLayout(row(button(self.detect_action), button(self.detect_all_action)))
        layout.addWidget(self.detect_on_open_box)
        layout.addLayout(form)
        layout.addWidget(self.review_label)
        layout.addLayout(row(button(self.accept_action), button(self.reject_action)))
        layout.addLayout(row(button(self.accept_all_action), button(self.reject_all_action)))
        layout.addWidget(button(self.retrain_action))
        layout.addWidget(self.message_label)
        layout.addStretch(1)
        self._show_setting_labels()

    # --- retraining ---

    def retrain_from_labels(self) -> QtWidgets.QDialog | None:
        """Open the retrain dialog for the model's product on the open image's folder."""
        from labelme_dsarad.retrain_process import RetrainDialog

        info = self.model.info if self.model is not None else None
        image = self.adapter.image_path()
        if info is None or image is None:
            self.show_message("Open an image and load a model first: retraining reads the open folder's labels.")
            return None
        dialog = RetrainDialog(self, info.product, Path(image).parent)
        dialog.switched.connect(self._use_retrained_model)
        dialog.show()
        self.retrain_dialog = dialog
        return dialog

    def _use_retrained_model(self, product: str, version: int, path: str) -> None:
        self.models.append(ModelOption(f"{product} v{version} (current)", Path(path)))
        self.model_box.addItem(self.models[-1].title)
        self.model_box.setCurrentIndex(len(self.models) - 1)

    # --- settings ---

    @property
    def threshold(self) -> float:
        return self.threshold_slider.value() / THRESHOLD_STEPS

    @property
    def min_area(self) -> int:
        return self.min_area_box.value()

    @property
    def tolerance(self) -> float:
        return DETAIL_TOLERANCES[self.detail_slider.value()]

    def _show_setting_labels(self) -> None:
        self.threshold_label.setText(f"{self.threshold:.2f}")
        self.detail_label.setText(f"{self.tolerance:g} px")

    @guarded
    def _on_setting_changed(self) -> None:
        self._show_setting_labels()
        entry = self.current_map()
        if entry is None:
            return
        if self.heat_map_action.isChecked():
            self._show_map(entry, recolour=False)  # transparency now, colours once the slider rests
        if self._derived_for == self._current or review.pending(self.adapter.shapes()):
            self._derive(entry, ahead_note=False)

    @guarded
    def _set_detect_on_open(self, checked: bool) -> None:
        if checked and self._current is not None and self.model is not None:
            self._detect_on_open(self._current)

    @guarded
    def _set_heat_map(self, checked: bool) -> None:
        entry = self.current_map()
        if checked and entry is not None:
            self._show_map(entry)
        else:
            self._hide_map()

    # --- model ---

    @guarded
    def select_model(self, index: int) -> None:
        if not 0 <= index < len(self.models):
            return
        option = self.models[index]
        if self.model_box.currentIndex() != index:
            self.model_box.setCurrentIndex(index)  # re-enters through the signal
            return
        self.model = None
        self.cache.clear()
        self._set_ready(False)
        self.model_info.setText(f"Loading {option.title}…")
        self.worker.set_model(option.predictor_factory())

    def _set_ready(self, ready: bool) -> None:
        for action in (self.detect_action, self.detect_all_action):
            action.setEnabled(ready)

    @guarded
    def _on_model_ready(self, description: ModelDescription) -> None:
        changed = self.model is None or self.model.key != description.key
        self.model = description
        self.model_info.setText(describe_model(description))
        self._set_ready(True)
        if not changed:
            return  # the same weights on another device (GPU out of memory)
        self.cache.clear()
        if self.detect_on_open_action.isChecked() and self._current is not None:
            self._detect_on_open(self._current)

    @guarded
    def _on_model_failed(self, message: str) -> None:
        self.model = None
        self._set_ready(False)
        self.model_info.setText("No model in use.")
        self.show_message(f"Model: {message}", error=True)

    # --- opening images ---

    @guarded
    def _on_image_closing(self) -> None:
        self._current = None
        self._derived_for = None
        self._undo_token = None
        self._hide_map()

    @guarded
    def _on_image_opened(self, path: str | None) -> None:
        if path is None or path == self._current or self.adapter.image_size() is None:
            return  # nothing opened, or LabelMe's file list re-announcing the same load
        self._current = path
        self._opened_at[path] = time.perf_counter()
        # Switching images cancels what was queued for the others.
        self.worker.keep_only({path, self.adapter.next_image_path() or path})
        self._want_suggestions.intersection_update({path})
        self._update_review_actions()
        if self.model is None:
            return
        if self.detect_on_open_action.isChecked():
            self._detect_on_open(path)
        else:
            entry = self.current_map()
            if entry is not None:
                self._show_map(entry)

    def _detect_on_open(self, path: str) -> None:
        # An image whose file already holds suggestions (reviewed or not) is
        # not re-suggested on open: only its map is computed, for the heat map
        # and the sliders. Detect replaces its pending ones on request.
        if not any(review.is_suggestion(shape) for shape in self.adapter.shapes()):
            self._want_suggestions.add(path)
        self._request(path, PRIORITY_CURRENT)
        self._look_ahead()

    def _look_ahead(self) -> None:
        following = self.adapter.next_image_path()
        if following is None or self.model is None or not self.look_ahead_enabled:
            return
        if self.cache.get(following, self.model.key) is None:
            self.worker.submit(Job(following, PRIORITY_LOOKAHEAD))

    # --- detecting ---

    @guarded
    def detect(self) -> None:
        """Detect on the open image: from the cache at once, else in the worker."""
        path = self._current
        if path is None:
            self.show_message("Open an image first.")
            return
        if self.model is None:
            self.show_message("No model loaded.", error=True)
            return
        self._want_suggestions.add(path)
        self._request(path, PRIORITY_CURRENT)
        if self.detect_on_open_action.isChecked():
            self._look_ahead()

    def _request(self, path: str, priority: int) -> None:
        entry = self.cache.get(path, self.model.key)
        if entry is not None and entry.image_shape == self.adapter.image_size():
            self._deliver(entry)
            return
        image_bytes = self.adapter.image_bytes() if path == self._current else None
        self.worker.submit(Job(path, priority, image_bytes))
        self.show_message(f"Detecting defects in {Path(path).name}…")

    @guarded
    def _on_result(self, result: JobResult) -> None:
        self.inference_runs += 1
        if self.model is None or result.model_key != self.model.key:
            return  # computed by a model no longer in use
        entry = CachedMap(result.job.path, result.model_key, result.prediction, tuple(result.image_shape),
                          ahead=result.job.priority == PRIORITY_LOOKAHEAD)
        self.cache.put(entry)
        if entry.path != self._current:
            return  # stale or computed ahead: kept for later, never drawn on this image
        if entry.image_shape != self.adapter.image_size():
            self.show_message(f"{Path(entry.path).name} changed while it was analysed; press Detect again.", error=True)
            return
        self._deliver(entry)

    def _deliver(self, entry: CachedMap) -> None:
        self._show_map(entry)
        if entry.path in self._want_suggestions:
            self._want_suggestions.discard(entry.path)
            self._derive(entry, ahead_note=entry.ahead)
        else:
            self.show_message(self._timing_text(entry, "anomaly map ready"))

    def _show_map(self, entry: CachedMap, recolour: bool = True) -> None:
        if self.heat_map_action.isChecked():
            # One heat map at a time (a 2000 x 2000 one is 32 MB); it owns the overlay's pixels.
            if self._shown_heat is None or self._shown_heat_of is not entry:
                self._shown_heat, self._shown_heat_of = HeatMap(entry.prediction.score_map, self.threshold), entry
            image = self._shown_heat.image(self.threshold, recolour)
            self.adapter.set_overlay(image, self.opacity_slider.value() / 100)
            if not recolour:
                self._recolour_timer.start()

    @guarded
    def _recolour_heat_map(self) -> None:
        entry = self.current_map()
        if entry is not None and entry is self._shown_heat_of:
            self._show_map(entry)

    def _hide_map(self) -> None:
        self.adapter.set_overlay(None)
        self._shown_heat = self._shown_heat_of = None

    def current_map(self) -> CachedMap | None:
        if self._current is None or self.model is None:
            return None
        entry = self.cache.get(self._current, self.model.key)
        if entry is None or entry.image_shape != self.adapter.image_size():
            return None
        return entry

    def _derive(self, entry: CachedMap, ahead_note: bool) -> None:
        """Turn the cached map into pending suggestions, replacing the pending ones."""
        shapes = self.adapter.shapes()
        regions = review.regions_from_map(entry.prediction.score_map, self.threshold, self.min_area, self.tolerance)
        kept = review.drop_covered(regions, review.reviewed_outlines(shapes)
                                   + self._rejected.get(entry.path, []))
        provenance = review.provenance(self.model, self.threshold)
        label = self.model.info.labels[0] if self.model.info is not None else "defect"
        new_shapes = [self.adapter.make_shape(review.suggestion_dict(region, label, provenance)) for region in kept]
        old = review.pending(shapes)
        if old or new_shapes:
            self._undo_token = self.adapter.replace_shapes(
                old, new_shapes, amend_top=self._undo_token if self._derived_for == entry.path else None
            )
            self.adapter.mark_dirty()
        self._derived_for = entry.path
        opened = self._opened_at.pop(entry.path, None)
        if opened is not None:
            self.last_open_to_shown_ms = (time.perf_counter() - opened) * 1000
        found = plural(len(new_shapes), "suggestion") if new_shapes else "no suggestions"
        self.show_message(self._timing_text(entry, found, ahead_note))
        self._update_review_actions()
        self.suggestions_shown.emit(entry.path, len(new_shapes))

    def _timing_text(self, entry: CachedMap, what: str, ahead: bool = False) -> str:
        prediction = entry.prediction
        text = f"{what}, {prediction.seconds * 1000:.0f} ms on {prediction.device}"
        return text + (" (computed ahead)" if ahead else "")

    @guarded
    def _on_job_failed(self, job: Job, message: str) -> None:
        self._want_suggestions.discard(job.path)
        if job.path == self._current or job.priority == PRIORITY_CURRENT:
            self.show_message(message, error=True)

    # --- reviewing ---

    def _selected_pending(self) -> list:
        return review.pending(self.adapter.selected_shapes())

    @guarded
    def accept_selected(self) -> None:
        self._accept(self._selected_pending())

    @guarded
    def accept_all(self) -> None:
        self._accept(review.pending(self.adapter.shapes()))

    def _accept(self, shapes: list) -> None:
        if not shapes:
            return
        for shape in shapes:
            review.set_state(shape, review.ACCEPTED)
            self.adapter.restyle(shape)
        self.adapter.record_undo_step()
        self.adapter.mark_dirty()
        self.show_message(f"accepted {plural(len(shapes), 'suggestion')}")
        self._update_review_actions()

    @guarded
    def reject_selected(self) -> None:
        self._reject(self._selected_pending())

    @guarded
    def reject_all(self) -> None:
        self._reject(review.pending(self.adapter.shapes()))

    def _reject(self, shapes: list) -> None:
        if not shapes:
            return
        if self._current is not None:
            # Remembered for this session, so the sliders do not bring them back.
            self._rejected.setdefault(self._current, []).extend(review.points_of(shape) for shape in shapes)
        self.adapter.remove_shapes(shapes)
        self._undo_token = None
        self.adapter.mark_dirty()
        self.show_message(f"rejected {plural(len(shapes), 'suggestion')}")
        self._update_review_actions()

    def _reconcile(self) -> bool:
        """Suggestions a person edited (moved, reshaped, relabelled, unflagged) are accepted."""
        changed = review.accept_edited(self.adapter.shapes())
        for shape in changed:
            self.adapter.restyle(shape)
        if changed:
            self._update_review_actions()
        return bool(changed)

    @guarded
    def _on_shapes_changed(self) -> None:
        self._reconcile()
        self._update_review_actions()

    @guarded
    def _on_shape_moved(self) -> None:
        # LabelMe's own handler (autosave) ran first with the old state.
        if self._reconcile():
            self.adapter.mark_dirty()

    def _update_review_actions(self) -> None:
        shapes = self.adapter.shapes()
        pending = review.pending(shapes)
        accepted = sum(review.state(shape) == review.ACCEPTED for shape in shapes)
        selected = self._selected_pending()
        self.accept_action.setEnabled(bool(selected))
        self.reject_action.setEnabled(bool(selected))
        self.accept_all_action.setEnabled(bool(pending))
        self.reject_all_action.setEnabled(bool(pending))
        self.review_label.setText(f"Suggestions: {len(pending)} pending, {accepted} accepted")

    # --- Detect all ---

    @guarded
    def detect_all(self) -> None:
        from labelme_dsarad.pipeline import PredictOptions

        if self.model is None or self._batch is not None:
            return
        images = self.adapter.image_list() or ([self._current] if self._current else [])
        self._batch_includes_current = self._current in images
        if self._current in images and self.adapter.is_dirty():
            # Unsaved edits live only in the window: leave that file to the person.
            images.remove(self._current)
            self._batch_includes_current = False
        if not images:
            self.show_message("No images to detect: open a folder first.")
            return
        options = PredictOptions(
            threshold=self.threshold, min_area=self.min_area, tolerance=self.tolerance,
            out_dir=self.adapter.output_dir(),
        )
        self._batch = BatchJob([Path(image) for image in images], options)
        dialog = QtWidgets.QProgressDialog(
            f"Detecting defects in {plural(len(images), 'image')}…", "Cancel", 0, len(images), self.window()
        )
        dialog.setWindowTitle("Detect all")
        dialog.setWindowModality(QtCore.Qt.WindowModal)
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(self._batch.cancel.set)
        dialog.setValue(0)
        dialog.show()
        self._batch_dialog = dialog
        self.worker.submit_batch(self._batch)

    @guarded
    def _on_batch_progress(self, done: int, total: int, path: str) -> None:
        if self._batch_dialog is not None:
            self._batch_dialog.setMaximum(total)
            self._batch_dialog.setValue(done)
            self._batch_dialog.setLabelText(f"{done} of {total}: {Path(path).name}")

    @guarded
    def _on_batch_finished(self, batch: BatchJob, summary) -> None:
        self._end_batch()
        lines = summary.describe().splitlines()
        self.show_message("\n".join(lines[:4] + ([f"… {len(lines) - 4} more failures"] if len(lines) > 4 else [])),
                          error=bool(summary.failures))
        self.adapter.show_status(lines[0])
        self.adapter.refresh_file_checks()
        if self._batch_includes_current and self._current is not None and not self.adapter.is_dirty():
            self.adapter.reload_current()  # show what was written for the open image

    @guarded
    def _on_batch_failed(self, batch: BatchJob, message: str) -> None:
        self._end_batch()
        self.show_message(f"Detect all failed: {message}", error=True)

    def _end_batch(self) -> None:
        self._batch = None
        if self._batch_dialog is not None:
            self._batch_dialog.close()
            self._batch_dialog.deleteLater()
            self._batch_dialog = None

    # --- messages and shutdown ---

    def show_message(self, text: str, error: bool = False) -> None:
        self.message_label.setStyleSheet("color: #b00020;" if error else "")
        self.message_label.setText(text)
        self.adapter.show_status(text.splitlines()[0] if text else "")

    def shutdown(self) -> None:
        """Stop the worker thread (waits for a running inference to end)."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._batch is not None:
            self._batch.cancel.set()
        self.worker.stop()


def describe_model(description: ModelDescription) -> str:
    info = description.info
    parts = [f"<b>{description.name}</b> on {description.device}"]
    if info is not None:
        architecture = info.architecture
        parts.append(f"{architecture.preset}, {architecture.input_size} px; labels: {', '.join(info.labels)}")
        if info.created:
            parts.append(f"trained {info.created[:10]}")
        metrics = info.metrics.get("overall", info.metrics) if isinstance(info.metrics, dict) else {}
        shown = [f"{name.replace('_', ' ')} {value:.3f}" for name, value in metrics.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)][:4]
        if shown:
            parts.append(", ".join(shown))
    return "<br>".join(parts)


def attach_panel(window: QtWidgets.QMainWindow, models: list[ModelOption]) -> DefectPanel:
    """Add the "Defect detection" dock, its toolbar button and menu entries to a LabelMe window."""
    adapter = LabelMeAdapter(window)
    dock = QtWidgets.QDockWidget("Defect detection", window)
    dock.setObjectName("DefectDetection")
    # Scrollable, so the dock never forces a tall window on a small screen.
    scroll = QtWidgets.QScrollArea(dock)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QtWidgets.QFrame.NoFrame)
    scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
    panel = DefectPanel(adapter, models, scroll)
    scroll.setWidget(panel)
    # Scroll only vertically: the dock column is made wide enough for the panel.
    scroll.setMinimumWidth(panel.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
    dock.setWidget(scroll)
    adapter.add_dock(dock)
    adapter.add_toolbar_actions([panel.detect_action])
    actions = [panel.detect_action, panel.detect_on_open_action, panel.detect_all_action, panel.heat_map_action,
               panel.accept_action, panel.reject_action, panel.accept_all_action, panel.reject_all_action]
    window.addActions(actions)  # shortcuts work wherever the focus is in the window
    adapter.add_canvas_menu_actions([panel.accept_action, panel.reject_action])
    adapter.add_view_menu_action(dock.toggleViewAction())
    app = QtWidgets.QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(panel.shutdown)
    return panel
