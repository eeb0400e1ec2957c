"""Per-sample NumPy/OpenCV anomaly synthesis, as the DSARAD (and DRAEM) reference code does it.

The baseline for bench_training.py: one image at a time, Perlin noise in
NumPy on a tiled gradient lattice, three of ten image augmentations on the
uint8 source, a rotated threshold mask, blending, and a stack into a batch at
the end. The operations mirror ``train/synthesis.py`` so both sides do the
same work; only the way they do it (a Python loop over samples on the CPU
against whole batches as tensors on the device) differs.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PERLIN_SCALE_EXPONENTS = 6  # 2^0 .. 2^5 per axis, as in train/synthesis.py
INPUT_ROTATION_PROBABILITY = 0.3
ANOMALY_PROBABILITY = 0.5
BLEND_BETA_MAX = 0.8


def perlin_noise(shape: tuple[int, int], resolution: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin noise by tiling a gradient lattice, the reference code's way."""
    height, width = shape
    step = (resolution[0] / height, resolution[1] / width)
    tile = (height // resolution[0], width // resolution[1])
    grid = np.mgrid[0 : resolution[0] : step[0], 0 : resolution[1] : step[1]].transpose(1, 2, 0) % 1
    angles = 2 * math.pi * rng.random((resolution[0] + 1, resolution[1] + 1))
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tiled(rows: slice, columns: slice) -> np.ndarray:
        return np.repeat(np.repeat(gradients[rows, columns], tile[0], axis=0), tile[1], axis=1)

    def dot(gradient: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
        offsets = np.stack((grid[:height, :width, 0] + shift[0], grid[:height, :width, 1] + shift[1]), axis=-1)
        return (offsets * gradient[:height, :width]).sum(axis=-1)

    n00 = dot(tiled(slice(0, -1), slice(0, -1)), (0, 0))
    n10 = dot(tiled(slice(1, None), slice(0, -1)), (-1, 0))
    n01 = dot(tiled(slice(0, -1), slice(1, None)), (0, -1))
    n11 = dot(tiled(slice(1, None), slice(1, None)), (-1, -1))
    fade = 6 * grid**5 - 15 * grid**4 + 10 * grid**3
    fade = fade[:height, :width]
    top = n00 + fade[..., 0] * (n10 - n00)
    bottom = n01 + fade[..., 0] * (n11 - n01)
    return math.sqrt(2) * (top + fade[..., 1] * (bottom - top))


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    smooth = cv2.filter2D(image, -1, np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13)
    factor = rng.uniform(0.5, 2.0)
    return np.clip(smooth + factor * (image.astype(np.float32) - smooth), 0, 255).astype(np.uint8)


def _hue_saturation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-22, 23)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycrcb[..., 0] = np.clip(ycrcb[..., 0] * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30), 0, 255)
    return cv2.cvtColor(ycrcb.astype(np.uint8), cv2.COLOR_YCrCb2RGB)


AUGMENTATIONS = [
    lambda x, rng: (255 * (x / 255.0) ** rng.uniform(0.5, 2.0, size=3)).astype(np.uint8),  # gamma, per channel
    _brightness,
    _sharpness,
    _hue_saturation,
    lambda x, rng: np.where(x >= rng.integers(32, 129), 255 - x, x).astype(np.uint8),  # solarize
    lambda x, rng: (x & np.uint8((0xFF << (8 - rng.integers(4, 9))) & 0xFF)).astype(np.uint8),  # posterize
    lambda x, rng: 255 - x,  # invert
    # autocontrast; the stubs want a dst array, None makes a new one
    lambda x, rng: cv2.normalize(x, None, 0, 255, cv2.NORM_MINMAX),  # type: ignore[call-overload]
    lambda x, rng: np.dstack([cv2.equalizeHist(np.ascontiguousarray(x[..., c])) for c in range(3)]),
    lambda x, rng: rotate(x, rng.uniform(-45, 45)),
]


def synthesise_sample(normal: np.ndarray, source: np.ndarray, rng: np.random.Generator):
    """One training triple (clean, augmented, mask), float32 HWC in [0, 1]."""
    height, width = normal.shape[:2]
    clean = normal
    if rng.random() < INPUT_ROTATION_PROBABILITY:
        clean = rotate(clean, rng.uniform(-90, 90))
    augmented_source = source
    for index in rng.permutation(len(AUGMENTATIONS))[:3]:
        augmented_source = AUGMENTATIONS[index](augmented_source, rng)
    resolution = (2 ** rng.integers(0, PERLIN_SCALE_EXPONENTS), 2 ** rng.integers(0, PERLIN_SCALE_EXPONENTS))
    noise = rotate(perlin_noise((height, width), resolution, rng).astype(np.float32), rng.uniform(-90, 90))
    mask = (noise > 0.5).astype(np.float32)[..., None]
    if rng.random() >= ANOMALY_PROBABILITY:
        mask = np.zeros_like(mask)
    beta = rng.random() * BLEND_BETA_MAX
    pasted = augmented_source.astype(np.float32) / 255.0
    augmented = clean * (1 - mask) + (1 - beta) * pasted * mask + beta * clean * mask
    return clean, augmented.astype(np.float32), mask


def synthesise_batch(normals: np.ndarray, sources: list[np.ndarray], rng: np.random.Generator):
    """Loop over samples, then stack: (clean, augmented, mask) as (B, H, W, C) arrays."""
    triples = [synthesise_sample(normal, source, rng) for normal, source in zip(normals, sources)]
    return tuple(np.stack(parts) for parts in zip(*triples))
