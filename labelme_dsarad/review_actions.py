"""Accept and reject on the open image; a suggestion a person edited counts as accepted.

LabelMe replaces shapes with copies on undo, so nothing here holds on to a
shape between events: the pending ones are found on the canvas each time.
"""

from __future__ import annotations

from collections.abc import Callable

from labelme_dsarad import review
from labelme_dsarad._labelme_adapter import LabelMeAdapter
from labelme_dsarad.guarded import guarded
from labelme_dsarad.model import labelfile
from labelme_dsarad.panel_view import PanelView, plural


class ReviewActions:
    """The review buttons' behaviour and the counts beside them."""

    def __init__(self, adapter: LabelMeAdapter, view: PanelView, show_message: Callable[..., None],
                 after_reject: Callable[[], None]):
        self.adapter = adapter
        self.view = view
        self.show_message = show_message
        self.after_reject = after_reject

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
        # Remembered in the label file, so neither the sliders nor a later run bring them back.
        review.remember_rejected(self.adapter.file_record(labelfile.RECORD_KEY), shapes)
        self.adapter.remove_shapes(shapes)
        self.after_reject()
        self.adapter.mark_dirty()
        self.show_message(f"rejected {plural(len(shapes), 'suggestion')}")
        self.update()

    def reconcile(self) -> bool:
        """Suggestions a person edited (moved, reshaped, relabelled, unflagged) are accepted."""
        changed = review.accept_edited(self.adapter.shapes())
        for shape in changed:
            self.adapter.restyle(shape)
        if changed:
            self.update()
        return bool(changed)

    @guarded
    def on_shapes_changed(self) -> None:
        self.reconcile()
        self.update()

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
