"""Fakes and helpers shared by the GUI tests (imported by the test_gui_* modules; the
GUI fixtures, make_window and the ones it uses, are in conftest.py).

The fake predictor makes the anomaly map from the image itself (bright
pixels are defects), so a test knows exactly where each image's suggestions
belong, and can be made slow or failing on purpose.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from labelme_dsarad.model.architecture import PRESETS  # noqa: E402
from labelme_dsarad.model.inference import Prediction  # noqa: E402

# (x0, y0, size) of the bright squares drawn in sample image i: each image
# has its own places, so a suggestion on the wrong image is detectable.
SQUARE = 14


def square_origins(index: int, count: int = 1) -> list[tuple[int, int]]:
    return [(6 + 7 * ((index + 3 * k) % 6), 6 + 20 * k) for k in range(count)]


def write_sample_images(folder: Path, count: int, squares: int = 1) -> list[Path]:
    """Dark noisy images, each with its own bright squares and its own size."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        height, width = 72 + 2 * index, 80 + index  # sizes differ: a stale map cannot fit another image
        image = rng.integers(20, 60, size=(height, width, 3), dtype=np.uint8)
        for x0, y0 in square_origins(index, squares):
            image[y0 : y0 + SQUARE, x0 : x0 + SQUARE] = 240
        path = folder / f"image_{index:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def inside_squares(points, index: int, squares: int = 1) -> bool:
    """Whether a polygon lies on one of image ``index``'s squares."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    for x0, y0 in square_origins(index, squares):
        if min(xs) >= x0 - 1 and max(xs) <= x0 + SQUARE + 1 and min(ys) >= y0 - 1 and max(ys) <= y0 + SQUARE + 1:
            return True
    return False


@dataclass
class FakePredictor:
    """Predictor look-alike: map = red channel / 255 * 0.9 (squares 0.85, background < 0.25)."""

    delay: float = 0.0
    fail_with: Exception | None = None
    device_name: str = "cpu"
    calls: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        info = SimpleNamespace(
            product="widget", labels=["defect"], architecture=PRESETS["tiny"], metrics={"image_auroc": 0.5},
            created="2026-01-01T00:00:00+00:00", training={}, version=1, normaliser=None,
        )
        self.model = SimpleNamespace(info=info, sha256="f" * 64, name="widget v1")
        self.name = "widget v1"
        self.device = self.device_name

    def predict(self, image: np.ndarray, photo_shape: tuple[int, int] | None = None) -> Prediction:
        with self.lock:
            self.calls.append(image.shape)
        started = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        score_map = image[..., 0].astype(np.float32) / 255.0 * 0.9
        return Prediction(score_map, float(score_map.max()), float(score_map.max()),
                          time.perf_counter() - started, self.device_name)

    def predict_batch(self, images, photo_shapes=None):
        return [self.predict(image) for image in images]


def fake_factory(predictor: FakePredictor):
    return lambda device: predictor
