"""Masks shaped like real surface defects, beside the Perlin blobs of ``synthesis``.

Pits (small ellipses: blowholes, pitting), scratches and cracks (thin
wandering lines), chips (irregular pieces missing from an edge: breaks,
fray) and bands (a region reaching in from one edge with a ragged border:
uneven brightness, worn zones). Drawn with OpenCV per sample on the CPU,
from a NumPy generator seeded by the training's torch generator, so a seed
gives the same masks on every run; a batch of them costs well under a
millisecond per sample, against the hundreds of a training step.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

SHAPES = ("pits", "scratches", "chips", "bands")
PIT_RADIUS = (0.015, 0.08)  # of the shorter side
SCRATCH_STEP = (0.03, 0.1)  # length of one segment, of the shorter side
SCRATCH_WIDTH = (1, 4)  # pixels
CHIP_RADIUS = (0.04, 0.2)  # of the shorter side
BAND_DEPTH = (0.1, 0.45)  # how far the band reaches in, of the side it spans


def defect_shape_masks(batch: int, height: int, width: int, generator: torch.Generator,
                       device: torch.device | str) -> torch.Tensor:
    """Binary masks (B, 1, H, W), each one of ``SHAPES`` at random."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
    rng = np.random.default_rng(seed)
    masks = np.zeros((batch, height, width), np.uint8)
    draw = (_pits, _scratches, _chips, _bands)
    for mask in masks:
        draw[int(rng.integers(len(draw)))](mask, rng)
    return torch.from_numpy(masks).to(device).float().unsqueeze(1)


def _pits(mask: np.ndarray, rng: np.random.Generator) -> None:
    height, width = mask.shape
    side = min(height, width)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        major = max(1, int(side * rng.uniform(*PIT_RADIUS)))
        minor = max(1, int(major * rng.uniform(0.4, 1.0)))
        cv2.ellipse(mask, centre, (major, minor), float(rng.uniform(0, 180)), 0, 360, 1, -1)


def _scratches(mask: np.ndarray, rng: np.random.Generator) -> None:
    height, width = mask.shape
    side = min(height, width)
    for _ in range(int(rng.integers(1, 3))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle, step = rng.uniform(0, 2 * math.pi), side * rng.uniform(*SCRATCH_STEP)
        points = []
        for _ in range(int(rng.integers(4, 12))):
            points.append((x, y))
            angle += rng.normal(0, 0.5)  # cracks wander, scratches (small turns) hardly
            x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, int(rng.integers(*SCRATCH_WIDTH)))


def _chips(mask: np.ndarray, rng: np.random.Generator) -> None:
    height, width = mask.shape
    along = rng.uniform(0.1, 0.9)
    centre = [(along * width, 0), (along * width, height - 1), (0, along * height), (width - 1, along * height)][
        int(rng.integers(4))]
    angles = np.sort(rng.uniform(0, 2 * math.pi, 9))
    radii = min(height, width) * rng.uniform(*CHIP_RADIUS) * rng.uniform(0.5, 1.2, 9)
    outline = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [outline.astype(np.int32)], 1)


def _bands(mask: np.ndarray, rng: np.random.Generator) -> None:
    """A region from one edge inwards, its inner border a ragged line across the image."""
    height, width = mask.shape
    vertical = bool(rng.integers(2))  # reaching in from the left or right edge, else from the top or bottom
    span, depth_side = (height, width) if vertical else (width, height)
    knots = int(rng.integers(3, 8))
    along = np.linspace(0, span - 1, knots)
    depth = depth_side * rng.uniform(*BAND_DEPTH) * rng.uniform(0.7, 1.3, knots)
    if rng.integers(2):  # from the far edge
        depth = depth_side - 1 - depth
        edge = depth_side - 1
    else:
        edge = 0
    border = np.stack([along, depth], axis=1)
    outline = np.concatenate([border, [[span - 1, edge], [0, edge]]])
    if vertical:
        outline = outline[:, ::-1]
    cv2.fillPoly(mask, [np.ascontiguousarray(outline).astype(np.int32)], 1)
