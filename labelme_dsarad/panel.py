"""The "Defect detection" dock's controller: run the model, show its map, review its suggestions.

``DefectPanel`` holds the state and the actions and draws nothing itself. It
wires four things together: its view (``panel_view.PanelView``, the dock's
widgets), ``DetectionWorker`` (the model, in its thread), the per-image cache
of anomaly maps (``heat_map``; the sliders re-derive polygons from it without
the model), and LabelMe's window through ``LabelMeAdapter``. It never holds
on to LabelMe shapes between events, because LabelMe replaces them with
copies on undo: suggestions are found on the canvas each time by the record
they carry.

What a person chose in the dock between launches (Detect on open) is kept
with Qt's settings, as LabelMe keeps its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from qtpy import QtCore, QtWidgets

from labelme_dsarad import review
from labelme_dsarad._labelme_adapter import LabelMeAdapter
from labelme_dsarad.batch_detection import BatchDetection
from labelme_dsarad.guarded import guarded
from labelme_dsarad.heat_map import CachedMap, HeatMap, MapCache
from labelme_dsarad.model import labelfile
from labelme_dsarad.model.polygons import DEFAULT_MIN_PEAK
from labelme_dsarad.model.scoring import BULK_CONFIRM_BELOW
from labelme_dsarad.panel_view import PanelView, plural
from labelme_dsarad.review_actions import ReviewActions
from labelme_dsarad.review_queue import IMAGE_SCORE_KEY
from labelme_dsarad.review_queue_view import ReviewQueue
from labelme_dsarad.worker import (
    PRIORITY_CURRENT,
    PRIORITY_LOOKAHEAD,
    DetectionWorker,
    Job,
    JobResult,
    ModelDescription,
    PredictorFactory,
    default_factory,
)

SETTINGS_SCOPE = ("labelme-dsarad", "panel")  # QSettings organisation and application
DETECT_ON_OPEN_SETTING = "detect_on_open"


def settings() -> QtCore.QSettings:
    return QtCore.QSettings(*SETTINGS_SCOPE)


IN_USE_MARK = " (current)"  # after the title of the model in use for its product


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


class DefectPanel(QtCore.QObject):
    """The controller behind the dock's view; one per main window."""

    # For tests and the timing script: (image path, number of suggestions).
    suggestions_shown = QtCore.Signal(str, int)

    def __init__(self, adapter: LabelMeAdapter, models: list[ModelOption], parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.view = PanelView([option.title for option in models], parent)
        self.adapter = adapter
        self.models = models
        self.cache = MapCache()
        self.model: ModelDescription | None = None
        self.inference_runs = 0  # results received from the worker: tests count model runs
        self.last_open_to_shown_ms: float | None = None
        self.look_ahead_enabled = True  # with Detect on open; off only to measure what it saves
        self._current: str | None = None
        self._last_opened: str | None = None
        self._closed: str | None = None
        # When the person started waiting for an image's map: it opened with On open, or Detect was pressed.
        self._waiting_since: dict[str, float] = {}
        self._want_suggestions: set[str] = set()  # images whose map, when ready, becomes suggestions
        self._derived_for: str | None = None
        self._undo_token = None
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
        self.batch = BatchDetection(self.worker, adapter, self.show_message, self.view.show_summary, self.view)
        self.review = ReviewActions(adapter, self.view, self.show_message, self._forget_undo)
        self.queue = ReviewQueue(adapter, self.show_message, self._bulk_confirm_cut, self._request_maps, self)
        self.worker.batch_finished.connect(lambda *_: self.queue.refresh())

        self.view.detect_on_open_action.setChecked(settings().value(DETECT_ON_OPEN_SETTING, True, type=bool))
        self._connect_view()
        adapter.install_hooks(
            is_pending=review.is_pending,
            shape_suffix=review.list_suffix,
            before_save=self.review.reconcile,
            after_change=self.review.on_shapes_changed,
            shape_moved=self.review.on_shape_moved,
            image_closing=self._on_image_closing,
            image_opened=self._on_image_opened,
            selection_changed=lambda _shapes: self.review.update(),
            undone=self.review.on_undone,
            image_flag_changed=self.review.on_image_flag_changed,
        )
        self.worker.start()
        if models:
            self.select_model(0)
        else:
            self.worker.set_model(None)
        if adapter.image_path() is not None:  # LabelMe opened a file before we were attached
            self._on_image_opened(adapter.image_path())
        self.review.update()

    def _connect_view(self) -> None:
        view = self.view
        view.detect_action.triggered.connect(lambda: self.detect())
        view.detect_on_open_action.toggled.connect(lambda checked: self._set_detect_on_open(checked))
        view.detect_all_action.triggered.connect(lambda: self.detect_all())
        view.heat_map_action.toggled.connect(lambda checked: self._set_heat_map(checked))
        view.accept_action.triggered.connect(lambda: self.review.accept_selected())
        view.reject_action.triggered.connect(lambda: self.review.reject_selected())
        view.accept_all_action.triggered.connect(lambda: self.review.accept_all())
        view.reject_all_action.triggered.connect(lambda: self.review.reject_all())
        view.retrain_action.triggered.connect(lambda: self.retrain_from_labels())
        view.next_to_review_action.triggered.connect(lambda: self.queue.open_next())
        view.bulk_confirm_action.triggered.connect(lambda: self.queue.bulk_confirm())
        view.model_box.currentIndexChanged.connect(lambda index: self.select_model(index))
        view.on_settings_changed(self._on_setting_changed)
        view.opacity_slider.valueChanged.connect(
            lambda value: self.adapter.set_overlay(self.adapter.overlay(), value / 100))

    # --- retraining ---

    def retrain_from_labels(self) -> QtWidgets.QDialog | None:
        """Open the retrain dialog for the model's product on the open image's folder."""
        from labelme_dsarad.model.inference import torch_installed
        from labelme_dsarad.model.model_file import TRAIN_EXTRA_HINT
        from labelme_dsarad.retrain_process import RetrainDialog

        if not torch_installed():
            self.show_message(f"Retraining needs PyTorch, which a review station's install leaves out: {TRAIN_EXTRA_HINT}")
            return None
        info = self.model.info if self.model is not None else None
        image = self.adapter.image_path()
        if info is None or image is None:
            self.show_message("Open an image and load a model first: retraining reads the open folder's labels.")
            return None
        dialog = RetrainDialog(self.view, info.product, Path(image).parent)
        dialog.switched.connect(self._use_retrained_model)
        dialog.show()
        self.retrain_dialog = dialog
        return dialog

    def _use_retrained_model(self, product: str, version: int, path: str) -> None:
        # One model of a product is in use: the one it replaces loses its mark, an entry already offered is reused.
        for index, option in enumerate(self.models):
            if option.title.startswith(f"{product} ") and option.title.endswith(IN_USE_MARK):
                option.title = option.title.removesuffix(IN_USE_MARK)
                self.view.model_box.setItemText(index, option.title)
        title = f"{product} v{version}{IN_USE_MARK}"
        offered = [index for index, option in enumerate(self.models)
                   if option.path is not None and option.path.resolve() == Path(path).resolve()]
        if offered:
            self.models[offered[0]].title = title
            self.view.model_box.setItemText(offered[0], title)
        else:
            self.models.append(ModelOption(title, Path(path)))
            self.view.model_box.addItem(title)
        self.view.model_box.setCurrentIndex(offered[0] if offered else len(self.models) - 1)

    # --- settings ---

    @guarded
    def _on_setting_changed(self) -> None:
        self.view.show_setting_labels()
        entry = self.current_map()
        if entry is None:
            return
        if self.view.heat_map_action.isChecked():
            self._show_map(entry, recolour=False)  # transparency now, colours once the slider rests
        if self._derived_for == self._current or review.pending(self.adapter.shapes()):
            self._derive(entry, " (from the map: no model run)")

    @guarded
    def _set_detect_on_open(self, checked: bool) -> None:
        settings().setValue(DETECT_ON_OPEN_SETTING, checked)
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
        if self.view.model_box.currentIndex() != index:
            self.view.model_box.setCurrentIndex(index)  # re-enters through the signal
            return
        self.model = None
        self.cache.clear()
        self.view.set_ready(False, self._current is not None)
        self.view.model_info.setText(f"Loading {option.title}…")
        self.worker.set_model(option.predictor_factory())

    @guarded
    def _on_model_ready(self, description: ModelDescription) -> None:
        changed = self.model is None or self.model.key != description.key
        self.model = description
        self.view.model_info.setText(describe_model(description))
        normaliser = description.info.normaliser if description.info else None
        self.view.set_model_levels(normaliser.extend_to_by_kind if normaliser else {},
                                   normaliser.min_peak if normaliser else DEFAULT_MIN_PEAK)
        self.view.set_ready(True, self._current is not None)
        if not changed:
            return  # the same weights on another device (GPU out of memory)
        self.cache.clear()
        if self.view.detect_on_open_action.isChecked() and self._current is not None:
            self._detect_on_open(self._current)

    @guarded
    def _on_model_failed(self, message: str) -> None:
        self.model = None
        self.view.set_ready(False, self._current is not None)
        self.view.model_info.setText("No model in use.")
        self.show_message(f"Model: {message}", error=True)

    def _request_maps(self, paths: list[str]) -> None:
        """Anomaly maps for the bulk confirmation's thumbnails: from the cache, else computed behind
        the open image (a look-ahead's priority)."""
        if self.model is None:
            return
        for path in paths:
            entry = self.cache.get(path, self.model.key)
            if entry is not None:
                self.queue.map_ready(path, entry.prediction.score_map)
            else:
                self.worker.submit(Job(path, PRIORITY_LOOKAHEAD))

    def _bulk_confirm_cut(self) -> float | None:
        """The model in use's score below which images may be confirmed in bulk; None: it has none."""
        normaliser = self.model.info.normaliser if self.model is not None and self.model.info else None
        cut = normaliser.statistics.get(BULK_CONFIRM_BELOW) if normaliser is not None else None
        return float(cut) if isinstance(cut, (int, float)) else None

    # --- opening images ---

    @guarded
    def _on_image_closing(self) -> None:
        if self._current is not None:
            self._closed = self._current  # its label file may be saved as it closes: re-read on the next open
        self._current = None
        self._derived_for = None
        self._undo_token = None
        self._waiting_since.clear()
        self._hide_map()

    @guarded
    def _on_image_opened(self, path: str | None) -> None:
        if path is None or self.adapter.image_size() is None:
            # LabelMe could not open the file: nothing of the previous image stays in the panel.
            self.view.show_message("")
            self.view.set_ready(self.model is not None, False)
            self.review.update()
            return
        self.queue.refresh([image for image in (self._closed, path) if image])
        if path == self._current:
            return  # LabelMe's file list re-announcing the same load
        if path != self._last_opened:  # not a reload of the same image (after Detect all)
            self.show_message("")  # what the panel and status bar said was about the image before
        self._current = self._last_opened = path
        self.view.set_ready(self.model is not None, True)
        if self.view.detect_on_open_action.isChecked():
            self._waiting_since[path] = time.perf_counter()  # for the model too, if it is still loading
        # Switching images cancels what was queued for the others.
        self.worker.keep_only({path, self.adapter.next_image_path() or path})
        self._want_suggestions.intersection_update({path})
        self.review.update()
        if self.model is None:
            return
        if self.view.detect_on_open_action.isChecked():
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
        self._waiting_since.setdefault(path, time.perf_counter())
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
        self._waiting_since.setdefault(path, time.perf_counter())  # already waiting if On open asked for it
        self._request(path, PRIORITY_CURRENT)
        if self.view.detect_on_open_action.isChecked():
            self._look_ahead()

    def _request(self, path: str, priority: int) -> None:
        assert self.model is not None  # callers check
        entry = self.cache.get(path, self.model.key)
        if entry is not None and entry.image_shape == self.adapter.image_size():
            self._deliver(entry, fresh=False)
            return
        image_bytes = self.adapter.image_bytes() if path == self._current else None
        self.worker.submit(Job(path, priority, image_bytes))
        self.show_message(f"Detecting defects in {Path(path).name}…")

    @guarded
    def _on_result(self, result: JobResult) -> None:
        self.inference_runs += 1
        if self.model is None or result.model_key != self.model.key:
            return  # computed by a model no longer in use
        height, width = result.image_shape
        # Computed ahead: it arrived while another image was open, so it was ready before this one opened.
        entry = CachedMap(result.job.path, result.model_key, result.prediction, (height, width),
                          ahead=result.job.path != self._current, seconds=result.seconds or result.prediction.seconds)
        self.cache.put(entry)
        self.queue.map_ready(entry.path, entry.prediction.score_map)
        if entry.path != self._current:
            return  # stale or computed ahead: kept for later, never drawn on this image
        if self.batch.running and self.batch.includes_current:
            return  # Detect all writes this image's file (LabelMe's autosave must not race it) and reloads it
        if entry.image_shape != self.adapter.image_size():
            self.show_message(f"{Path(entry.path).name} changed while it was analysed; press Detect again.", error=True)
            return
        self._deliver(entry, fresh=True)

    def _deliver(self, entry: CachedMap, fresh: bool) -> None:
        """Show a map (``fresh``: just computed for this image, else from the cache) and, if asked, its suggestions."""
        self._show_map(entry)
        asked = self._waiting_since.pop(entry.path, None)
        waited = time.perf_counter() - asked if asked is not None else None
        if waited is not None:
            self.last_open_to_shown_ms = waited * 1000
        timing = self._timing_text(entry, fresh, waited)
        if entry.path in self._want_suggestions:
            self._want_suggestions.discard(entry.path)
            self._derive(entry, timing)
        else:
            # The image's file already had suggestions (kept as they were): only the heat map is new.
            self.show_message(f"heat map shown{timing}; the suggestions in the file are kept (Detect suggests again)")

    def _show_map(self, entry: CachedMap, recolour: bool = True) -> None:
        if self.view.heat_map_action.isChecked():
            # One heat map at a time (a 2000 x 2000 one is 32 MB); it owns the overlay's pixels.
            if self._shown_heat is None or self._shown_heat_of is not entry:
                self._shown_heat, self._shown_heat_of = HeatMap(entry.prediction.score_map, self.view.threshold), entry
            image = self._shown_heat.image(self.view.threshold, recolour)
            self.adapter.set_overlay(image, self.view.opacity_slider.value() / 100)
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

    def _derive(self, entry: CachedMap, timing: str) -> None:
        """Turn the cached map into pending suggestions, replacing the pending ones; ``timing``
        follows the count in the message."""
        assert self.model is not None  # a map is only delivered while its model is in use
        shapes = self.adapter.shapes()
        provenance = review.provenance(self.model, self.view.threshold)
        generic = self.model.info.labels[0] if self.model.info is not None else "defect"
        record = self.adapter.file_record(labelfile.RECORD_KEY)
        people, rejections = review.decisions(shapes, record)
        suggestions = [review.suggestion_dict(suggestion.region, suggestion.label, provenance,
                                              suggestion.kind_probability)
                       for suggestion in entry.prediction.suggestions(self.view.suggestion_settings(), generic)]
        kept = labelfile.new_suggestions(suggestions, people, rejections)
        new_shapes = [self.adapter.make_shape(suggestion) for suggestion in kept]
        old = review.pending(shapes)

        def remember() -> None:
            review.remember_suggested(record, new_shapes, rejections)
            record[IMAGE_SCORE_KEY] = round(float(entry.prediction.image_score), 4)  # the review queue's order

        if old or new_shapes:
            self._undo_token = self.adapter.replace_shapes(
                old, new_shapes, amend_top=self._undo_token if self._derived_for == entry.path else None,
                change_file_record=remember,
            )
            self.adapter.mark_dirty()
        else:
            remember()
        self._derived_for = entry.path
        found = plural(len(new_shapes), "suggestion") if new_shapes else "no suggestions"
        self.show_message(found + timing)
        self.review.update()
        self.suggestions_shown.emit(entry.path, len(new_shapes))

    @staticmethod
    def _timing_text(entry: CachedMap, fresh: bool, waited: float | None) -> str:
        """How long the person waited (from opening the image or pressing Detect), then what
        the map cost and when it was made."""
        work = f"{_duration(entry.seconds)} on {entry.prediction.device}"
        made = (f"decoding and model {work}" if fresh else f"computed ahead: {work}" if entry.ahead
                else f"map made earlier: {work}")
        return (f" in {_duration(waited)}" if waited is not None else "") + f" ({made})"

    @guarded
    def _on_job_failed(self, job: Job, message: str) -> None:
        self._want_suggestions.discard(job.path)
        self._waiting_since.pop(job.path, None)
        if job.path == self._current or job.priority == PRIORITY_CURRENT:
            self.show_message(message, error=True)

    def _forget_undo(self) -> None:
        """After a rejection or an undo, the next derivation is a step of its own, not an amendment of the last."""
        self._undo_token = None

    # --- Detect all ---

    @guarded
    def detect_all(self) -> None:
        if self.model is not None:
            self.batch.start(self._current, self.view.suggestion_settings(), self.view.include_reviewed_box.isChecked())

    # --- messages and shutdown ---

    def show_message(self, text: str, error: bool = False) -> None:
        self.view.show_message(text, error)
        self.adapter.show_status(text.splitlines()[0] if text else "")

    def shutdown(self) -> None:
        """Stop the worker thread (waits for a running inference to end)."""
        if self._shut_down:
            return
        self._shut_down = True
        self.batch.cancel()
        self.worker.stop()


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def describe_model(description: ModelDescription) -> str:
    info = description.info
    parts = [f"<b>{description.name}</b> on {description.device}"]
    if info is not None:
        architecture = info.architecture
        parts.append(f"{architecture.preset}, {architecture.input_description()}; labels: {', '.join(info.labels)}")
        if info.created:
            parts.append(f"trained {info.created[:10]}")
        metrics = info.metrics.get("overall", info.metrics) if isinstance(info.metrics, dict) else {}
        # Scores only: a retrained model's metrics also count its held-out images.
        shown = [f"{name.replace('_', ' ')} {value:.3f}" for name, value in metrics.items()
                 if isinstance(value, float)][:4]
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
    scroll.setWidget(panel.view)
    # Scroll only vertically: the dock column is made wide enough for the panel.
    scroll.setMinimumWidth(panel.view.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
    dock.setWidget(scroll)
    adapter.add_dock(dock)
    adapter.add_toolbar_actions([panel.view.detect_action])
    view = panel.view
    actions = [view.detect_action, view.detect_on_open_action, view.detect_all_action, view.heat_map_action,
               view.accept_action, view.reject_action, view.accept_all_action, view.reject_all_action,
               view.next_to_review_action, view.bulk_confirm_action]
    window.addActions(actions)  # shortcuts work wherever the focus is in the window
    adapter.add_canvas_menu_actions([panel.view.accept_action, panel.view.reject_action])
    adapter.add_view_menu_action(dock.toggleViewAction())
    app = QtWidgets.QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(panel.shutdown)
    return panel
