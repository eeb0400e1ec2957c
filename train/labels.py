"""A folder annotated in LabelMe, read back as training data, and how our suggestions fared in it.

**Which images count.** An image is *reviewed* if and only if its label file's
image-level LabelMe flag ``ok`` is true (``"flags": {"ok": true}`` at the top
of the JSON; LabelMe shows it as a tick box when started with ``--flags ok``
or ``flags: [ok]`` in its config). Nothing else makes an image reviewed: not
accepting every suggestion, not saving, not the absence of suggestions. Only
reviewed images are used; the others are skipped, with the reason.

A reviewed image's shapes fall into two kinds:

- *people's shapes*: everything that is not a still-pending suggestion
  (``labelfile.is_pending_suggestion``): shapes a person drew, suggestions
  they accepted, and suggestions they moved, reshaped or relabelled. These are
  real defects; they are rasterised (polygons, rectangles, circles, LabelMe
  masks, lines and points) into the image's defect mask.
- *pending suggestions*: neither defect nor evidence of normal. Beside
  people's shapes they become an *ignore* region (not trained or measured on);
  a reviewed image whose only shapes are pending suggestions is skipped,
  since ``ok`` with untouched suggestions does not say whether they were right.

So a reviewed image is **normal** when it has no shapes at all, and a
**defect** image when it has at least one person's shape. A label file that
cannot be read or rasterised is reported in one line and skipped.

How our suggestions fared in such a folder (``dsarad stats``) is counted in
``stats``.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import cv2
import numpy as np
from matplotlib.path import Path as MplPath
from PIL import Image

from labelme_dsarad.model.images import IMAGE_SUFFIXES, read_image
from labelme_dsarad.model.labelfile import (
    REVIEWED_FLAG,
    LabelFileError,
    is_pending_suggestion,
    is_reviewed,
    label_path_for,
    load_label_file,
)

# Lines (a crack drawn as a line strip) and points have no area of their own;
# these give them one. LabelMe's own shape_to_mask uses 10 px lines, far
# wider than the hairline cracks a person traces.
LINE_WIDTH = 3
POINT_RADIUS = 3
_SUBPIXEL_BITS = 4  # cv2 fixed-point vertices: 1/16 px



# -- rasterising shapes ----------------------------------------------------------


def rasterise_shapes(shapes: list[dict], height: int, width: int) -> np.ndarray:
    """(height, width) bool: the union of the shapes' areas.

    LabelMe's coordinates: pixel (x, y) spans [x, x + 1) x [y, y + 1) and a
    shape covers it when it contains the pixel's centre, as in
    ``model/polygons.py``. Raises ValueError for a shape that cannot be drawn.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    for index, shape in enumerate(shapes):
        try:
            _draw_shape(mask, shape)
        except (ValueError, TypeError, KeyError) as problem:
            raise ValueError(f"shapes[{index}] ({shape.get('shape_type') or 'polygon'}): {problem}") from None
    return mask.astype(bool)


def _draw_shape(mask: np.ndarray, shape: dict) -> None:
    kind = shape.get("shape_type") or "polygon"
    points = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
    if kind in ("polygon", "oriented_rectangle"):
        if len(points) < 3:
            raise ValueError(f"a polygon needs 3 or more points, has {len(points)}")
        _fill_polygon(mask, points)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = _two_points(points)
        _fill_polygon(mask, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    elif kind == "circle":
        centre, rim = _two_points(points)
        _fill_disc(mask, centre, float(np.hypot(*(rim - centre))))
    elif kind in ("line", "linestrip"):
        if len(points) < 2:
            raise ValueError(f"a line needs 2 or more points, has {len(points)}")
        cv2.polylines(mask, [_fixed_point(points)], False, 1, thickness=LINE_WIDTH, shift=_SUBPIXEL_BITS)
    elif kind == "point":
        if len(points) != 1:
            raise ValueError(f"a point needs exactly 1 point, has {len(points)}")
        _fill_disc(mask, points[0], POINT_RADIUS)
    elif kind == "mask":
        _paste_mask(mask, shape.get("mask"), points)
    else:
        raise ValueError(f"unsupported shape_type {kind!r}")


def _two_points(points: np.ndarray) -> np.ndarray:
    if len(points) != 2:
        raise ValueError(f"needs exactly 2 points, has {len(points)}")
    return points


def _fill_polygon(mask: np.ndarray, points: np.ndarray) -> None:
    """Set the pixels whose centres the ring contains (cv2.fillPoly also takes edge pixels)."""
    height, width = mask.shape
    x0, y0 = np.clip(np.floor(points.min(axis=0)).astype(int), 0, None)
    x1, y1 = np.minimum(np.ceil(points.max(axis=0)).astype(int), (width, height))
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1]
    centres = np.column_stack([xs.ravel() + 0.5, ys.ravel() + 0.5])
    inside = MplPath(points).contains_points(centres).reshape(ys.shape)
    mask[y0:y1, x0:x1] |= inside.astype(np.uint8)


def _fixed_point(points: np.ndarray) -> np.ndarray:
    # cv2 puts pixel centres at integers, LabelMe at +0.5: shift by half a pixel.
    return np.round((points - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)


def _fill_disc(mask: np.ndarray, centre: np.ndarray, radius: float) -> None:
    height, width = mask.shape
    ys, xs = np.ogrid[:height, :width]
    inside = (xs + 0.5 - centre[0]) ** 2 + (ys + 0.5 - centre[1]) ** 2 <= radius**2
    mask[inside] = 1


def _paste_mask(mask: np.ndarray, encoded, points: np.ndarray) -> None:
    """LabelMe 6 mask shape: a PNG of the box, placed at its first point."""
    if not isinstance(encoded, str) or len(points) < 1:
        raise ValueError("a mask shape needs a base64 PNG 'mask' and its box in 'points'")
    try:
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
    except Exception as problem:  # noqa: BLE001 - PIL and base64 fail with many types
        raise ValueError(f"cannot decode its mask ({problem})") from None
    crop = (crop if crop.ndim == 2 else crop[..., 0]) > 0
    # As LabelMe's Shape.contains_point places it: origin at the rounded first point.
    x0, y0 = (int(round(v)) for v in points[0])
    height, width = mask.shape
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + crop.shape[0], height), min(x0 + crop.shape[1], width)
    if bottom > top and right > left:
        mask[top:bottom, left:right] |= crop[top - y0 : bottom - y0, left - x0 : right - x0]


# -- reading a folder --------------------------------------------------------------


@dataclass
class LabelledImage:
    """One reviewed image: normal (no people's shapes) or defect."""

    label_path: Path
    image_path: Path
    defects: list[dict]  # people's shapes: the real defects
    pending: list[dict]  # suggestions still pending: ignored
    embedded: str | None = None  # LabelMe's base64 imageData, used when the image file is gone

    @property
    def is_defect(self) -> bool:
        return bool(self.defects)

    @property
    def name(self) -> str:
        return self.image_path.name

    @property
    def is_anomalous(self) -> bool:
        return self.is_defect

    @property
    def defect_type(self) -> str:
        """The kind people gave the defects (the most common label), "good" for a normal image."""
        if not self.defects:
            return "good"
        labels = [str(shape.get("label") or "defect") for shape in self.defects]
        return max(dict.fromkeys(labels), key=labels.count)

    def read_image(self) -> np.ndarray:
        """The image, (H, W, 3) uint8 RGB, as LabelMe shows it."""
        if self.image_path.is_file() or self.embedded is None:
            return read_image(self.image_path)
        image = Image.open(io.BytesIO(base64.b64decode(self.embedded)))
        return np.asarray(image.convert("RGB"))

    def masks(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(defect, ignore) bool masks at the image's size; ignore excludes the defect pixels."""
        defect = rasterise_shapes(self.defects, height, width)
        ignore = rasterise_shapes(self.pending, height, width) & ~defect
        return defect, ignore

    def mask(self, height: int, width: int) -> np.ndarray:
        return self.masks(height, width)[0]

    def kinds(self, height: int, width: int) -> np.ndarray:
        """The kind people gave each pixel (a shape's label), "" where they drew nothing."""
        kinds = np.full((height, width), "", dtype=object)
        for shape in self.defects:
            kinds[rasterise_shapes([shape], height, width)] = str(shape.get("label") or "")
        return kinds


@dataclass
class LabelFolder:
    """What ``read_label_folder`` found."""

    folder: Path
    images: list[LabelledImage] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (label file, why): not reviewed etc.
    problems: list[str] = field(default_factory=list)  # one line each: file and problem

    @property
    def normals(self) -> list[LabelledImage]:
        return [image for image in self.images if not image.is_defect]

    @property
    def defects(self) -> list[LabelledImage]:
        return [image for image in self.images if image.is_defect]

    def describe(self) -> str:
        return (f"{self.folder}: {len(self.images)} reviewed images ({len(self.normals)} normal, "
                f"{len(self.defects)} with defects); {len(self.skipped)} skipped, {len(self.problems)} unreadable")


def label_files(folder: Path) -> list[Path]:
    """The ``.json`` files of a folder, byte-sorted so that every split is the same everywhere."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".json" and p.is_file()),
                  key=lambda p: p.name.encode())


def read_label_folder(folder: os.PathLike | str) -> LabelFolder:
    """Every reviewed image of ``folder`` (its ``*.json``, not sub-folders); see the module docstring."""
    result = LabelFolder(Path(folder))
    for path in label_files(result.folder):
        try:
            data = load_label_file(path)
        except LabelFileError as problem:
            result.problems.append(str(problem))
            continue
        if not is_reviewed(data):
            result.skipped.append((path, f"not reviewed (image flag '{REVIEWED_FLAG}' not set)"))
            continue
        defects = [shape for shape in data["shapes"] if not is_pending_suggestion(shape)]
        pending = [shape for shape in data["shapes"] if is_pending_suggestion(shape)]
        if pending and not defects:
            result.skipped.append((path, f"reviewed, but its only shapes are {len(pending)} pending suggestions"))
            continue
        try:
            image = _labelled_image(path, data, defects, pending)
            # Drawn once here, so a shape that cannot be drawn is reported with its file.
            rasterise_shapes(defects + pending, 8, 8)
        except ValueError as problem:
            result.problems.append(str(LabelFileError(path, str(problem))))
            continue
        result.images.append(image)
    return result


def _labelled_image(path: Path, data: dict, defects: list[dict], pending: list[dict]) -> LabelledImage:
    embedded = data.get("imageData") if isinstance(data.get("imageData"), str) else None
    image_path = _image_path(path, data.get("imagePath"))
    if image_path is None and embedded is None:
        raise ValueError(f"image {data.get('imagePath')!r} not found (imagePath is relative to the label file)")
    return LabelledImage(path, image_path or path.with_suffix(".png"), defects, pending, embedded)


def _image_path(label_path: Path, stored) -> Path | None:
    """``imagePath`` relative to the label file (written on Windows too), else an image of the same stem."""
    candidates = []
    if isinstance(stored, str) and stored:
        relative = Path(*PureWindowsPath(stored).parts) if "\\" in stored else Path(stored)
        candidates.append(relative if relative.is_absolute() else label_path.parent / relative)
    candidates += [label_path.with_suffix(suffix) for suffix in sorted(IMAGE_SUFFIXES)]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def label_files_with_defects(images: list[Path]) -> list[Path]:
    """The label files next to ``images`` (same stem) that hold people's shapes: images showing defects.

    A folder of "defect-free" training images that has such files mixes in
    defects the model would learn as normal. Unreadable label files and
    files with only pending suggestions do not count.
    """
    found = []
    for image in images:
        label_path = label_path_for(image)
        if not label_path.is_file():
            continue
        try:
            shapes = load_label_file(label_path)["shapes"]
        except LabelFileError:
            continue
        if any(not is_pending_suggestion(shape) for shape in shapes):
            found.append(label_path)
    return found
