"""The widgets of the "Defect detection" dock: built and laid out here, driven by ``panel.DefectPanel``.

The view holds no state of its own beyond its widgets: what the settings
are (``suggestion_settings``), what to show. It knows nothing of LabelMe or
of the model.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy import QtCore, QtGui, QtWidgets

from labelme_dsarad.model.polygons import DEFAULT_EXTEND_TO, DEFAULT_MIN_PEAK, SuggestionSettings

# Douglas-Peucker tolerance (pixels, the CLI's --tolerance) per step of its slider:
# left follows the map pixel by pixel, right simplifies outlines most.
TOLERANCES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
DEFAULT_TOLERANCE_STEP = TOLERANCES.index(SuggestionSettings.tolerance)
THRESHOLD_STEPS = 100  # slider units per 1.0 of normalised score
EXTEND_STEPS = 20  # slider units per 1.0 of the extension fraction: steps of 0.05
EXTEND_LOWEST = 0.5  # below, a region spreads over much of a map that is high in places
DEFAULT_OPACITY = 60  # percent


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


class WheelOnlyWhenFocused(QtCore.QObject):
    """Sliders, spin boxes and drop-downs take the mouse wheel only once clicked into: scrolling
    the panel past them must not move a threshold."""

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QtCore.QEvent.Wheel and isinstance(watched, QtWidgets.QWidget) and not watched.hasFocus():
            event.ignore()  # goes on to the scroll area around the panel
            return True
        return False


class PanelView(QtWidgets.QWidget):
    """Actions, controls and labels of the dock."""

    def __init__(self, model_titles: list[str], parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self._wheel_guard = WheelOnlyWhenFocused(self)
        self._build_actions()
        self._build_widgets(model_titles)
        for control in (self.model_box, self.threshold_slider, self.extend_slider, self.min_area_box,
                        self.tolerance_slider, self.opacity_slider):
            control.setFocusPolicy(QtCore.Qt.StrongFocus)  # not focused by the wheel either
            control.installEventFilter(self._wheel_guard)

    # --- building ---

    def _action(self, text: str, shortcut: str | None = None, tip: str | None = None, checkable: bool = False,
                checked: bool = False) -> QtWidgets.QAction:
        created = QtWidgets.QAction(text, self)
        if shortcut:
            created.setShortcut(QtGui.QKeySequence(shortcut))
        if tip:
            created.setToolTip(f"{tip} ({shortcut})" if shortcut else tip)
            created.setStatusTip(tip)
        created.setCheckable(checkable)
        created.setChecked(checked)
        return created

    def _build_actions(self) -> None:
        action = self._action
        self.detect_action = action("Detect", "Ctrl+I", "Find defects in this image")
        self.detect_action.setIcon(self.style().standardIcon(QtWidgets.QStyle.SP_FileDialogContentsView))
        self.detect_action.setIconText("Detect\nDefects")
        self.detect_on_open_action = action(
            "Detect on open", None, "Detect defects in every image you open, and compute the next one ahead",
            checkable=True,
        )
        self.detect_all_action = action(
            "Detect all…", None, "Detect defects in every image of the folder and write their label files"
        )
        self.heat_map_action = action("Heat map", "Ctrl+Shift+H", "Show the anomaly map over the image (never saved)",
                                      checkable=True, checked=True)
        self.accept_action = action("Accept", "Ctrl+Return", "Accept the selected suggestions")
        self.reject_action = action("Reject", "Ctrl+Shift+Return", "Reject (delete) the selected suggestions")
        self.accept_all_action = action("Accept all", None, "Accept every pending suggestion on this image")
        self.reject_all_action = action("Reject all", None, "Reject (delete) every pending suggestion on this image")
        self.retrain_action = action(
            "Retrain from labels…", None,
            "Retrain this product's model from the reviewed images (image flag 'ok') of the open folder",
        )
        self.dismiss_summary_action = action("Dismiss", None, "Hide the summary of the last Detect all")
        self.next_to_review_action = action(
            "Next to review", "N", "Open the unreviewed image most likely to hold a defect (the file list shows "
            "each image's state and score)")
        self.bulk_confirm_action = action(
            "Confirm defect-free…", None, "Thumbnails of the unreviewed images the model scores lowest: confirm "
            "those with no defect in one go")

    def _build_widgets(self, model_titles: list[str]) -> None:
        self._build_model_box(model_titles)
        self._build_threshold_slider()
        self._build_extend_controls()
        self._build_min_area_box()
        self._build_tolerance_slider()
        self._build_opacity_slider()
        self._build_messages()
        self.include_reviewed_box = QtWidgets.QCheckBox("Reviewed too")
        self.include_reviewed_box.setToolTip("Detect all also suggests on images ticked 'ok' (reviewed); they are "
                                             "left alone by default, so no review is undone")
        self.heat_map_box = self._mirror_box("Heat map", self.heat_map_action)
        self.detect_on_open_box = self._mirror_box("On open", self.detect_on_open_action)
        self._lay_out()
        self.show_setting_labels()

    def _build_model_box(self, model_titles: list[str]) -> None:
        self.model_box = QtWidgets.QComboBox()
        # Long model titles must not widen the dock: they elide instead.
        self.model_box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_box.setMinimumContentsLength(16)
        self.model_box.addItems(model_titles)
        self.model_info = QtWidgets.QLabel("Loading the model…")
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)

    def _build_threshold_slider(self) -> None:
        self.threshold_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.threshold_slider.setRange(1, THRESHOLD_STEPS - 1)
        self.threshold_slider.setValue(round(SuggestionSettings.threshold * THRESHOLD_STEPS))
        self.threshold_slider.setToolTip("Normalised anomaly score; 0.50 (the middle mark) is the model's own threshold")
        self.threshold_slider.setTickPosition(QtWidgets.QSlider.TicksBelow)
        self.threshold_slider.setTickInterval(THRESHOLD_STEPS // 2)
        self.threshold_label = QtWidgets.QLabel()

    def _build_extend_controls(self) -> None:
        self.extend_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.extend_slider.setRange(round(EXTEND_LOWEST * EXTEND_STEPS), EXTEND_STEPS)
        self.extend_slider.setValue(round(DEFAULT_EXTEND_TO * EXTEND_STEPS))
        self.extend_slider.setToolTip("How far a suggestion reaches: a region that reaches the threshold takes in "
                                      "its surroundings down to this fraction of it; 1.00 draws only where the "
                                      "threshold is reached")
        self.extend_label = QtWidgets.QLabel()
        self.model_extend_to_by_kind: dict[str, float] = {}
        self.model_min_peak = DEFAULT_MIN_PEAK
        # The model's own reach, per defect kind where a retrain chose it; moving the slider sets
        # one reach for every kind instead.
        self.extend_by_model_box = QtWidgets.QCheckBox("Model's")
        self.extend_by_model_box.setChecked(True)
        self.extend_by_model_box.setToolTip("The model's own reach: per defect kind where a retrain from corrected "
                                            f"labels chose it, {DEFAULT_EXTEND_TO:.2f} elsewhere. Moving the slider "
                                            "sets one reach for every kind instead")
        self.extend_slider.valueChanged.connect(lambda _value: self.extend_by_model_box.setChecked(False))

    def _build_min_area_box(self) -> None:
        self.min_area_box = QtWidgets.QSpinBox()
        self.min_area_box.setRange(0, 10_000_000)
        self.min_area_box.setValue(SuggestionSettings.min_area)
        self.min_area_box.setSuffix(" px")
        self.min_area_box.setToolTip("Smallest region that becomes a suggestion, in image pixels")

    def _build_tolerance_slider(self) -> None:
        self.tolerance_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.tolerance_slider.setRange(0, len(TOLERANCES) - 1)
        self.tolerance_slider.setValue(DEFAULT_TOLERANCE_STEP)
        self.tolerance_slider.setToolTip("How far an outline may be simplified, in image pixels (dsarad predict "
                                         "--tolerance): 0 follows the map pixel by pixel")
        self.tolerance_label = QtWidgets.QLabel()

    def _build_opacity_slider(self) -> None:
        self.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(DEFAULT_OPACITY)
        self.opacity_slider.setToolTip("Heat-map opacity")

    def _build_messages(self) -> None:
        self.review_label = QtWidgets.QLabel()
        self.message_label = QtWidgets.QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        # A Detect-all summary (its failed files) stays until the person dismisses it or runs it again.
        self.summary_label = QtWidgets.QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.summary_label.hide()
        self.dismiss_summary_button = QtWidgets.QToolButton()
        self.dismiss_summary_button.setDefaultAction(self.dismiss_summary_action)
        self.dismiss_summary_button.hide()
        self.dismiss_summary_action.triggered.connect(lambda: self.show_summary(""))

    def _lay_out(self) -> None:
        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.AllNonFixedFieldsGrow)
        form.setVerticalSpacing(2)
        form.addRow("Threshold", _row(self.threshold_slider, self.threshold_label))
        form.addRow("Extend to", _row(self.extend_by_model_box, self.extend_slider, self.extend_label))
        form.addRow("Min. area", self.min_area_box)
        form.addRow("Tolerance", _row(self.tolerance_slider, self.tolerance_label))
        form.addRow(self.heat_map_box, self.opacity_slider)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setSpacing(3)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.model_box)
        layout.addWidget(self.model_info)
        layout.addLayout(_row(_button(self.detect_action), _button(self.detect_all_action)))
        layout.addLayout(_row(self.detect_on_open_box, self.include_reviewed_box))
        layout.addLayout(form)
        layout.addWidget(self.review_label)
        layout.addLayout(_row(_button(self.accept_action), _button(self.reject_action)))
        layout.addLayout(_row(_button(self.accept_all_action), _button(self.reject_all_action)))
        layout.addLayout(_row(_button(self.next_to_review_action), _button(self.bulk_confirm_action)))
        layout.addWidget(_button(self.retrain_action))
        layout.addWidget(self.message_label)
        summary = _row(self.summary_label, self.dismiss_summary_button)
        summary.setAlignment(self.dismiss_summary_button, QtCore.Qt.AlignTop)
        layout.addLayout(summary)
        layout.addStretch(1)

    def _mirror_box(self, text: str, action: QtWidgets.QAction) -> QtWidgets.QCheckBox:
        """A tick box that follows a checkable action both ways."""
        box = QtWidgets.QCheckBox(text)
        box.setToolTip(action.toolTip())
        box.setChecked(action.isChecked())
        box.toggled.connect(action.setChecked)
        action.toggled.connect(box.setChecked)
        return box

    # --- reading the controls ---

    @property
    def threshold(self) -> float:
        return self.threshold_slider.value() / THRESHOLD_STEPS

    def suggestion_settings(self) -> SuggestionSettings:
        return SuggestionSettings(threshold=self.threshold, min_area=self.min_area_box.value(),
                                  tolerance=TOLERANCES[self.tolerance_slider.value()],
                                  extend_to=None if self.extend_by_model_box.isChecked()
                                  else self.extend_slider.value() / EXTEND_STEPS)

    def on_settings_changed(self, slot: Callable[[], None]) -> None:
        for signal in (self.threshold_slider.valueChanged, self.extend_slider.valueChanged,
                       self.extend_by_model_box.toggled,
                       self.min_area_box.valueChanged, self.tolerance_slider.valueChanged):
            signal.connect(lambda _value: slot())

    # --- showing ---

    def show_setting_labels(self) -> None:
        settings = self.suggestion_settings()
        self.threshold_label.setText(f"{settings.threshold:.2f}")
        self.threshold_label.setToolTip(
            "" if self.model_min_peak == DEFAULT_MIN_PEAK else
            f"The model suggests only regions that peak at {self.model_min_peak:.2f} times the threshold or higher "
            f"(now {min(self.model_min_peak * settings.threshold, 1.0):.2f})")
        self.tolerance_label.setText(f"{settings.tolerance:g} px")
        if settings.extend_to is not None:
            self.extend_label.setText(f"{settings.extend_to:.2f}")
            self.extend_label.setToolTip("")
        elif self.model_extend_to_by_kind:
            self.extend_label.setText("by kind")
            self.extend_label.setToolTip(", ".join(f"{kind} {value:.2f}" for kind, value in
                                                   self.model_extend_to_by_kind.items())
                                         + f"; {DEFAULT_EXTEND_TO:.2f} elsewhere")
        else:
            self.extend_label.setText(f"{DEFAULT_EXTEND_TO:.2f}")
            self.extend_label.setToolTip("")

    def set_model_levels(self, extend_to_by_kind: dict[str, float], min_peak: float = DEFAULT_MIN_PEAK) -> None:
        """The model in use's reach per defect kind, shown while **Model's** is ticked, and the
        peak its suggestions reach (``ScoreNormaliser``)."""
        self.model_extend_to_by_kind = dict(extend_to_by_kind)
        self.model_min_peak = min_peak
        self.show_setting_labels()

    def set_ready(self, model_ready: bool, image_open: bool) -> None:
        self.detect_action.setEnabled(model_ready and image_open)
        self.detect_all_action.setEnabled(model_ready)

    def show_review_state(self, pending: int, accepted: int, selected: int) -> None:
        self.accept_action.setEnabled(bool(selected))
        self.reject_action.setEnabled(bool(selected))
        self.accept_all_action.setEnabled(bool(pending))
        self.reject_all_action.setEnabled(bool(pending))
        self.review_label.setText(f"Suggestions: {pending} pending, {accepted} accepted")

    def show_message(self, text: str, error: bool = False) -> None:
        self.message_label.setStyleSheet("color: #b00020;" if error else "")
        self.message_label.setText(text)

    def show_summary(self, text: str, error: bool = False) -> None:
        """Show a summary that stays (hidden when ``text`` is empty)."""
        self.summary_label.setStyleSheet("color: #b00020;" if error else "")
        self.summary_label.setText(text)
        self.summary_label.setVisible(bool(text))
        self.dismiss_summary_button.setVisible(bool(text))


def _button(action: QtWidgets.QAction) -> QtWidgets.QPushButton:
    """A push button mirroring the action: one line of text, the action's state."""
    created = QtWidgets.QPushButton(action.text())
    created.setToolTip(action.toolTip())
    created.setEnabled(action.isEnabled())
    created.clicked.connect(action.trigger)
    action.changed.connect(lambda: created.setEnabled(action.isEnabled()))
    return created


def _row(*widgets: QtWidgets.QWidget) -> QtWidgets.QHBoxLayout:
    layout = QtWidgets.QHBoxLayout()
    for widget in widgets:
        layout.addWidget(widget)
    return layout
