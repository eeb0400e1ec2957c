"""Accept and reject on the open image; a suggestion a person edited counts as accepted.

LabelMe replaces shapes with copies on undo, so nothing here holds on to a
shape between events: the pending ones are found on the canvas each time.
Ticking the image reviewed (flag ``ok``) while suggestions are pending asks
what becomes of them: reviewed images are left alone by every later run, so
they would stay pending for good.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from qtpy import QtWidgets

from labelme_dsarad import review
from labelme_dsarad._labelme_adapter import LabelMeAdapter
from labelme_dsarad.guarded import guarded
from labelme_dsarad.model import labelfile
from labelme_dsarad.panel_view import PanelView, plural

PendingAnswer = Literal["accept", "reject", "leave"]


class ReviewActions:
    """The review buttons' behaviour and the counts beside them."""

    def __init__(self, adapter: LabelMeAdapter, view: PanelView, show_message: Callable[..., None],
                 start_new_undo_step: Callable[[], None]):
        self.adapter = adapter
        self.view = view
        self.show_message = show_message
        self.start_new_undo_step = start_new_undo_step
        # Asked when the image is ticked reviewed with N suggestions pending; tests answer for a person.
        self.ask_about_pending: Callable[[int], PendingAnswer] = self._ask_about_pending

    def selected_pending(self) -> list:
        return review.pending(self.adapter.selected_shapes())

    @guarded
    def accept_selected(self) -> None:
        self._accept(self.selected_pending())

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
        self.update()

    @guarded
    def reject_selected(self) -> None:
        self._reject(self.selected_pending())

    @guarded
    def reject_all(self) -> None:
        self._reject(review.pending(self.adapter.shapes()))

    def _reject(self, shapes: list) -> None:
        if not shapes:
            return
        # Remembered in the label file, so neither the sliders nor a later run bring them back;
        # in the same undo step as the deletion, so an undo takes both back.
        record = self.adapter.file_record(labelfile.RECORD_KEY)
        self.adapter.remove_shapes(shapes, change_file_record=lambda: review.remember_rejected(record, shapes))
        self.start_new_undo_step()
        self.adapter.mark_dirty()
        self.show_message(f"rejected {plural(len(shapes), 'suggestion')}")
        self.update()

    def reconcile(self) -> bool:
        """Suggestions a person edited (moved, reshaped, relabelled, unflagged) are accepted;
        rejections of suggestions pending on the canvas are forgotten."""
        shapes = self.adapter.shapes()
        changed = review.accept_edited(shapes)
        for shape in changed:
            self.adapter.restyle(shape)
        if any(review.is_suggestion(shape) for shape in shapes):
            review.settle(self.adapter.file_record(labelfile.RECORD_KEY), shapes)
        if changed:
            self.update()
        return bool(changed)

    @guarded
    def on_shapes_changed(self) -> None:
        self.reconcile()
        self.update()

    @guarded
    def on_undone(self) -> None:
        """LabelMe's undo restored shapes (and we the label file's record): a change to save."""
        self.start_new_undo_step()
        self.adapter.mark_dirty()
        self.update()

    @guarded
    def on_image_flag_changed(self, flag: str, checked: bool) -> None:
        if flag != labelfile.REVIEWED_FLAG or not checked:
            return
        pending = review.pending(self.adapter.shapes())
        if not pending:
            return
        answer = self.ask_about_pending(len(pending))
        if answer == "accept":
            self._accept(pending)
        elif answer == "reject":
            self._reject(pending)
        else:
            self.adapter.set_image_flag(flag, False)
            self.show_message(f"{plural(len(pending), 'suggestion')} left pending: the image is not marked reviewed")

    def _ask_about_pending(self, count: int) -> PendingAnswer:
        box = QtWidgets.QMessageBox(self.view.window())
        box.setIcon(QtWidgets.QMessageBox.Question)
        box.setWindowTitle("Mark the image reviewed")
        box.setText(f"{plural(count, 'suggestion')} {'is' if count == 1 else 'are'} still pending on this image.")
        box.setInformativeText("Reviewed images are left alone by Detect all and 'dsarad predict', so pending "
                               "suggestions would stay pending for good. Left pending, the image is not marked "
                               "reviewed.")
        accept = box.addButton("Accept all", QtWidgets.QMessageBox.AcceptRole)
        reject = box.addButton("Reject all", QtWidgets.QMessageBox.DestructiveRole)
        leave = box.addButton("Leave them pending", QtWidgets.QMessageBox.RejectRole)
        box.setDefaultButton(leave)
        box.setEscapeButton(leave)
        box.exec_()
        clicked = box.clickedButton()
        box.deleteLater()
        return "accept" if clicked is accept else "reject" if clicked is reject else "leave"

    @guarded
    def on_shape_moved(self) -> None:
        # LabelMe's own handler (autosave) ran first with the old state.
        if self.reconcile():
            self.adapter.mark_dirty()

    def update(self) -> None:
        shapes = self.adapter.shapes()
        pending = review.pending(shapes)
        accepted = sum(review.state(shape) == review.ACCEPTED for shape in shapes)
        self.view.show_review_state(len(pending), accepted, len(self.selected_pending()))
