"""A smaller copy of a data set's folder, for the GPU machine (which gets at most 64 MiB of files).

    .venv/bin/python bench/shrink_dataset.py ../shared/datasets/magnetic_tile .gpu_data/magnetic_tile [--side 256]

Every image is scaled down (aspect kept) so that its longer side is at most
``--side``, JPEG quality 95; masks (PNG) the same way, nearest-neighbour so
they stay binary. Names, folders and so every split of DATASET.md are kept.
The models train and infer at 128 px and the pixel metrics run on maps of
at most 256 px a side, so the numbers are those of the full-size folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--side", type=int, default=256)
    args = parser.parse_args()
    shutil.rmtree(args.target, ignore_errors=True)
    for path in sorted(args.source.rglob("*")):
        target = args.target / path.relative_to(args.source)
        if path.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix not in (".jpg", ".png"):
            shutil.copyfile(path, target)
            continue
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SystemExit(f"{path}: cannot read the image")
        scale = args.side / max(image.shape[:2])
        if scale < 1:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if suffix == ".jpg" else cv2.INTER_NEAREST)
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else [])
    size = sum(path.stat().st_size for path in args.target.rglob("*") if path.is_file())
    print(f"{args.target}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
