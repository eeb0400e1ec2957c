"""Map-to-polygon time on a large map with many regions, against a small map.

    .venv/bin/python bench/bench_polygons.py [--rounds 5]

The plugin turns every map into polygons on the GUI's time, so this stays a
small part of a Detect. The large case is a 2000x2000 map with 40 blurred
ellipses (dozens of regions); the baseline is the same kind of map at 256x256,
run in the same process. Times are CPU time (``process_time``), best of the
rounds.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
from _common import machine_line

from labelme_dsarad.model.polygons import mask_to_polygons


def blob_map(side: int, blobs: int, seed: int = 0) -> np.ndarray:
    """A noisy map of ``blobs`` blurred ellipses, the shape of a busy anomaly map."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((side, side), np.float32)
    margin = side // 20
    for _ in range(blobs):
        centre = tuple(int(v) for v in rng.integers(margin, side - margin, 2))
        radius = int(rng.integers(max(1, side // 600), max(2, side * 3 // 40)))
        axes = (radius, int(radius * rng.uniform(0.3, 1)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return cv2.GaussianBlur(canvas, (0, 0), max(1.0, side / 500)) + rng.normal(0, 0.05, canvas.shape).astype(np.float32)


def best_seconds(score_map: np.ndarray, rounds: int) -> tuple[float, int]:
    timings, regions = [], 0
    for _ in range(rounds):
        start = time.process_time()
        regions = len(mask_to_polygons(score_map))
        timings.append(time.process_time() - start)
    return min(timings), regions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(machine_line())
    small, small_regions = best_seconds(blob_map(256, 8), args.rounds)
    large, large_regions = best_seconds(blob_map(2000, 40), args.rounds)
    print(f"256x256, {small_regions} regions: {small * 1000:.1f} ms")
    print(f"2000x2000, {large_regions} regions: {large * 1000:.1f} ms ({large / max(small, 1e-9):.1f}x the small map)")


if __name__ == "__main__":
    main()
