"""What an evaluation reads of each test image and what it keeps: shared by ``evaluation`` and ``report``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class EvaluationSample(Protocol):
    """A test image and what is known about it (``datasets.Sample``, ``labels.LabelledImage``)."""

    @property
    def image_path(self) -> Path: ...

    @property
    def defect_type(self) -> str: ...  # "good" for a normal image

    @property
    def is_anomalous(self) -> bool: ...

    def read_image(self) -> np.ndarray: ...

    def mask(self, height: int, width: int) -> np.ndarray: ...

    def kinds(self, height: int, width: int) -> np.ndarray: ...  # the defect kind of each pixel, "" where none


@dataclass
class Evaluated:
    """One sample after prediction, at the (downsampled) metric resolution."""

    sample: EvaluationSample
    score: float
    score_map: np.ndarray
    mask: np.ndarray
    polygons: list | None  # point lists, LabelMe coordinates of the full-size map
    map_shape: tuple[int, int]  # the full-size map's (height, width)
