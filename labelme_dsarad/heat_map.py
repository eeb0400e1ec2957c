"""The anomaly maps the panel keeps and draws: a small per-image cache and the heat-map overlay.

Plain NumPy and Qt images: nothing here knows LabelMe.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from qtpy import QtGui

from labelme_dsarad.model.inference import Prediction
from labelme_dsarad.model.scoring import NORMALISED_THRESHOLD

CACHE_SIZE = 6  # anomaly maps kept; a 2000 x 2000 map is 16 MB
# The heat map is clear below this fraction of the slider's threshold and
# opaque from the threshold up, which leaves normal surface (scoring far
# lower) readable under it.
HEAT_CLEAR_BELOW = 0.5


@dataclass
class CachedMap:
    path: str
    model_key: str
    prediction: Prediction
    image_shape: tuple[int, int]
    ahead: bool  # arrived while another image was open: ready before this one was opened
    seconds: float = 0.0  # what the worker spent on it: decoding, the model and its map


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


class HeatMap:
    """RGBA overlay of a normalised map, drawn relative to the threshold.

    Colours put the threshold at the middle of the jet scale (red: well
    beyond it) and alpha ramps up to it, so the overlay shows what is near
    the cut being made whatever the slider says. Both come from 256-entry
    lookup tables over the map's 8-bit levels: the alpha channel is cheap
    enough to follow the slider live; the colours cost more and are redone
    when the slider rests (``recolour``). The
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
        relative = np.clip(np.round(np.arange(256) * (NORMALISED_THRESHOLD / threshold)), 0, 255).astype(np.intp)
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
