"""The canvas side: suggestions' colours, the heat-map overlay, clicks on small suggestions, scrolling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy import QtCore, QtGui

from labelme_dsarad._labelme_adapter._required import LABELME_7, WIDGETS_MODULE, _safely, _WindowPart

PENDING_COLOUR = (255, 140, 0)  # amber: unlike LabelMe's label colours, reads as "not final"


class _CanvasSide(_WindowPart):
    """The adapter's methods over LabelMe's canvas (mixed into ``LabelMeAdapter``)."""

    # Set by LabelMeAdapter.__init__.
    _overlay: QtGui.QImage | None
    _overlay_opacity: float

    def _centre_on_list_selection(self) -> None:
        """A shape chosen in the annotation list is scrolled into the middle of the canvas."""
        from labelme_dsarad.review import points_of

        shapes = list(self.canvas.selected_shapes)
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


def move_vertex(shape, index: int, dx: float, dy: float) -> None:
    """Move one vertex of a shape as a drag would (tests; on a canvas, it then says ``shape_moved``)."""
    if LABELME_7:
        shape.move_vertex(i=index, pos=shape.points[index] + (dx, dy))
    else:
        shape.points[index] = shape.points[index] + QtCore.QPointF(dx, dy)
