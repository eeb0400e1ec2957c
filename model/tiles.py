"""Photos at a product's scale, covered by tiles at the model's size, and the tiles' maps stitched back.

A model trained with a scale (``Architecture.scale``: photo pixels per model pixel, the same across
and along) sees every photo resized by that factor, whatever its shape, instead of squashed to a
square: a thin defect keeps its width and its shape. The scaled photo is covered by overlapping
square tiles at the model's input size (a side shorter than a tile is padded by reflection), each
tile's map is weighted by a tent that is highest at its centre, where its convolutions see the most
context, and the weighted maps are summed and divided by the summed weights: no seams, and one tile
that covers the whole scaled photo gives its own map back. Numpy and OpenCV only: inference without
PyTorch uses it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Neighbouring tiles overlap by at least this share of a tile, so that every pixel of the scaled
# photo lies well inside some tile, away from the border that zero padding disturbs.
MIN_OVERLAP = 0.25


def scaled_shape(photo_shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """(height, width) of a photo of ``photo_shape`` at ``scale`` photo pixels per model pixel."""
    return max(1, round(photo_shape[0] / scale)), max(1, round(photo_shape[1] / scale))


def tile_starts(length: int, size: int) -> list[int]:
    """Where tiles of ``size`` start along a side of ``length`` (at least ``size``): evenly spread
    from 0 to ``length - size``, neighbours overlapping by at least ``MIN_OVERLAP`` of a tile."""
    if length <= size:
        return [0]
    stride = size * (1.0 - MIN_OVERLAP)
    count = math.ceil((length - size) / stride) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class Tiling:
    """How one scaled photo of ``shape`` is covered: tile corners on a canvas of ``canvas`` (the photo
    padded up to a tile where it is shorter)."""

    shape: tuple[int, int]  # (height, width) of the scaled photo
    size: int  # tile side: the model's input size
    starts: tuple[tuple[int, int], ...]  # (y, x) of each tile on the canvas

    @classmethod
    def of(cls, shape: tuple[int, int], size: int) -> Tiling:
        canvas = canvas_shape(shape, size)
        return cls(shape, size, tuple((y, x) for y in tile_starts(canvas[0], size) for x in tile_starts(canvas[1], size)))

    @property
    def canvas(self) -> tuple[int, int]:
        return canvas_shape(self.shape, self.size)

    def __len__(self) -> int:
        return len(self.starts)

    def cut(self, scaled: np.ndarray) -> np.ndarray:
        """The tiles (N, size, size, ...) of a scaled photo (H, W, ...) of this tiling's shape."""
        if tuple(scaled.shape[:2]) != self.shape:
            raise ValueError(f"expected an image of {self.shape}, got {scaled.shape[:2]}")
        canvas = pad_to(scaled, self.canvas)
        return np.stack([canvas[y : y + self.size, x : x + self.size] for y, x in self.starts])

    def stitch(self, maps: np.ndarray) -> np.ndarray:
        """The tiles' maps (N, ..., size, size) as one map (..., H, W) of the scaled photo."""
        if len(maps) != len(self.starts):
            raise ValueError(f"expected {len(self.starts)} tile maps, got {len(maps)}")
        weight = tent(self.size)
        total = np.zeros((*maps.shape[1:-2], *self.canvas), np.float32)
        weights = np.zeros(self.canvas, np.float32)
        for (y, x), tile_map in zip(self.starts, maps):
            total[..., y : y + self.size, x : x + self.size] += tile_map * weight
            weights[y : y + self.size, x : x + self.size] += weight
        return (total / weights)[..., : self.shape[0], : self.shape[1]]


def canvas_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(height, width) of a scaled photo of ``shape`` once padded to at least one tile of ``size``."""
    return max(shape[0], size), max(shape[1], size)


def pad_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` (H, W, ...) padded at the bottom and right by reflection up to ``shape``."""
    bottom, right = max(shape[0] - image.shape[0], 0), max(shape[1] - image.shape[1], 0)
    if not bottom and not right:
        return image
    widths = [(0, bottom), (0, right)] + [(0, 0)] * (image.ndim - 2)
    # numpy reflects as often as a thin photo needs; a side of one pixel can only be repeated.
    return np.pad(image, widths, mode="reflect" if min(image.shape[:2]) > 1 else "edge")


def tent(size: int) -> np.ndarray:
    """(size, size) weights: 1 at the centre, falling linearly to 1/size at the border, never 0."""
    ramp = np.minimum(np.arange(size) + 0.5, size - 0.5 - np.arange(size)) / (size / 2.0)
    return np.outer(ramp, ramp).astype(np.float32)


def pooled_max(raw_map: np.ndarray, window: int) -> float:
    """The image score of a stitched map: its maximum after ``window`` x ``window`` mean pooling,
    zero padding counted, as ``networks.image_score`` computes it on one tile."""
    kernel = np.full((window, window), 1.0 / (window * window), np.float32)
    pooled = cv2.filter2D(raw_map.astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
    return float(pooled.max())


def scale_for(photo_shapes: list[tuple[int, int]], input_size: int) -> float:
    """A product's scale chosen from its photos: the median photo's shorter side fills one tile, so
    that photo is covered by one row of tiles along its length at the same scale across and along."""
    if not photo_shapes:
        raise ValueError("no images to choose a scale from")
    shorter = float(np.median([min(shape) for shape in photo_shapes]))
    return round(max(shorter / input_size, 1e-3), 3)
