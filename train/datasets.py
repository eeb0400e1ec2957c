"""Test and training image lists for the data sets we evaluate on.

Four layouts are understood: Magnetic Tile Defects (MTD) and the ball screw
drives (BSData), each with the split rules of its DATASET.md
(``../shared/datasets/<name>/DATASET.md`` beside the checkout), MVTec AD (one
category folder) and a plain folder layout for a user's own images. Every
listing is sorted in plain byte order of the file names, so that a split is
the same on every machine whatever its locale or file system.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from labelme_dsarad.model.images import IMAGE_SUFFIXES, read_image

MTD_NORMAL_FOLDER = "MT_Free"
MTD_DEFECT_FOLDERS = ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven")
MTD_TEST_EVERY = 5  # MT_Free index i is a test image when i % 5 == 0

SAMPLE_KINDS = ("mtd", "mvtec", "folder", "ball_screw")


@dataclass
class Sample:
    """One test image and what is known about it."""

    image_path: Path
    mask_path: Path | None  # None for a normal image: nothing is defective
    defect_type: str  # "good" for a normal image
    is_anomalous: bool

    def read_image(self) -> np.ndarray:
        return read_image(self.image_path)

    def mask(self, height: int, width: int) -> np.ndarray:
        if self.mask_path is not None and self.mask_path.suffix.lower() == ".json":
            return labelme_mask(self.mask_path, height, width)
        return read_mask(self.mask_path, height, width)

    def kinds(self, height: int, width: int) -> np.ndarray:
        """The defect kind of each pixel: the image's defect type inside its mask, "" elsewhere."""
        return np.where(self.mask(height, width), self.defect_type, "").astype(object)


def _byte_sorted(paths) -> list[Path]:
    # Byte order, not locale or natural order: the split in DATASET.md is
    # defined on it and it is the same everywhere.
    return sorted(paths, key=lambda p: p.name.encode())


def _images_in(folder: Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    return _byte_sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes
    )


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"expected {what} folder {path}, which does not exist")
    return path


# --- Magnetic Tile Defects ---------------------------------------------------


def _mtd_jpgs(root: Path, folder: str) -> list[Path]:
    imgs = _require_dir(Path(root) / folder / "Imgs", "MTD")
    return _images_in(imgs, suffixes={".jpg"})


def _mtd_free_split(root: Path) -> tuple[list[Path], list[Path]]:
    """(train, test) of MT_Free, by index in byte order (DATASET.md)."""
    free = _mtd_jpgs(root, MTD_NORMAL_FOLDER)
    train = [p for i, p in enumerate(free) if i % MTD_TEST_EVERY != 0]
    test = [p for i, p in enumerate(free) if i % MTD_TEST_EVERY == 0]
    return train, test


def _mtd_defect_sample(image: Path, folder: str) -> Sample:
    mask = image.with_suffix(".png")
    if not mask.is_file():
        raise FileNotFoundError(f"expected the mask of {image} at {mask}")
    return Sample(image, mask, folder.removeprefix("MT_"), True)


def _mtd_normal_sample(image: Path) -> Sample:
    return Sample(image, None, "good", False)


def mtd_train_images(root: Path) -> list[Path]:
    """The train-split MT_Free images (761 in the full data set)."""
    return _mtd_free_split(root)[0]


def mtd_test_samples(root: Path) -> list[Sample]:
    """The test split: 191 MT_Free images, then all 392 defect images."""
    normals = [_mtd_normal_sample(p) for p in _mtd_free_split(root)[1]]
    defects = [
        _mtd_defect_sample(image, folder)
        for folder in MTD_DEFECT_FOLDERS
        for image in _mtd_jpgs(root, folder)
    ]
    return normals + defects


# --- MVTec AD ----------------------------------------------------------------


def mvtec_train_images(category_dir: Path) -> list[Path]:
    """``train/good/*`` of one MVTec AD category folder (e.g. ``.../bottle``)."""
    return _images_in(_require_dir(Path(category_dir) / "train" / "good", "MVTec AD"))


def mvtec_test_samples(category_dir: Path) -> list[Sample]:
    """``test/<type>/*``; the mask of a defect is ``ground_truth/<type>/<stem>_mask.png``."""
    category_dir = Path(category_dir)
    test = _require_dir(category_dir / "test", "MVTec AD")
    samples = []
    for type_dir in _byte_sorted(p for p in test.iterdir() if p.is_dir()):
        defect_type = type_dir.name
        for image in _images_in(type_dir):
            if defect_type == "good":
                samples.append(Sample(image, None, "good", False))
                continue
            mask = category_dir / "ground_truth" / defect_type / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise FileNotFoundError(f"expected the mask of {image} at {mask}")
            samples.append(Sample(image, mask, defect_type, True))
    return samples


# --- Ball screw drives (BSData) ------------------------------------------------

BALL_SCREW_IMAGES = "01_*_crop_2.jpg"  # the product "ball_screw" of DATASET.md
BALL_SCREW_TEST_EVERY = 5


def _ball_screw_images(root: Path) -> tuple[list[Path], list[Path]]:
    """(defect-free, with pitting) images of the product, byte-sorted: pitting is what has a label file."""
    images = _byte_sorted(_require_dir(Path(root) / "data", "ball screw").glob(BALL_SCREW_IMAGES))
    labelled = {path.stem for path in (Path(root) / "label").glob("*.json")}
    return [p for p in images if p.stem not in labelled], [p for p in images if p.stem in labelled]


def _ball_screw_defect_sample(root: Path, image: Path) -> Sample:
    return Sample(image, Path(root) / "label" / f"{image.stem}.json", "Pitting", True)


def ball_screw_train_images(root: Path) -> list[Path]:
    """The train-split defect-free images (550 in the full data set)."""
    normals, _ = _ball_screw_images(root)
    return [p for i, p in enumerate(normals) if i % BALL_SCREW_TEST_EVERY != 0]


def ball_screw_test_samples(root: Path) -> list[Sample]:
    """The test split: 138 defect-free images, then the 167 with pitting (masks from their LabelMe files)."""
    normals, pitted = _ball_screw_images(root)
    return ([Sample(p, None, "good", False) for i, p in enumerate(normals) if i % BALL_SCREW_TEST_EVERY == 0]
            + [_ball_screw_defect_sample(root, p) for p in pitted])


# --- Plain folders -----------------------------------------------------------


def folder_test_samples(root: Path) -> list[Sample]:
    """Test samples from a plain folder layout::

        root/normal/<any name>.<png|jpg|jpeg|bmp|tif|tiff>   defect-free images
        root/defect/<stem>.<png|jpg|...>                     defective images
        root/masks/<stem>.png                                one mask per defect image,
                                                             same stem, white = defect

    Every defect image needs its mask (pixel metrics would be wrong without
    it); defect_type is "defect" for all of them. ``root/normal`` may be
    missing when there are only defects, and the other way round.
    """
    root = Path(root)
    normal_dir, defect_dir, mask_dir = root / "normal", root / "defect", root / "masks"
    if not normal_dir.is_dir() and not defect_dir.is_dir():
        raise FileNotFoundError(f"expected folder {normal_dir} or {defect_dir}, found neither")
    samples = []
    if normal_dir.is_dir():
        samples += [Sample(p, None, "good", False) for p in _images_in(normal_dir)]
    if defect_dir.is_dir():
        for image in _images_in(defect_dir):
            mask = mask_dir / f"{image.stem}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"expected the mask of {image} at {mask}")
            samples.append(Sample(image, mask, "defect", True))
    return samples


def load_samples(kind: str, path: Path) -> list[Sample]:
    """The test samples of a data set of the given kind (SAMPLE_KINDS)."""
    readers = {"mtd": mtd_test_samples, "mvtec": mvtec_test_samples, "folder": folder_test_samples,
               "ball_screw": ball_screw_test_samples}
    if kind not in readers:
        raise ValueError(f"unknown data set kind {kind!r}; expected one of {', '.join(SAMPLE_KINDS)}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"expected a {kind} data set folder at {path}, which does not exist")
    samples = readers[kind](path)
    if not samples:
        raise ValueError(f"no images found in the {kind} data set at {path}")
    return samples


# --- Masks -------------------------------------------------------------------


def read_mask(path: Path | None, height: int, width: int) -> np.ndarray:
    """A (height, width) bool mask: pixel > 127, resized (nearest) if needed.

    ``None`` (a normal image) gives an all-False mask.
    """
    if path is None:
        return np.zeros((height, width), dtype=bool)
    # imdecode instead of imread: imread cannot open non-ASCII paths on Windows.
    data = np.fromfile(str(path), dtype=np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if mask is None:
        raise ValueError(f"cannot read mask image {path}")
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask > 127


def labelme_mask(path: Path, height: int, width: int) -> np.ndarray:
    """A (height, width) bool mask: the shapes of a LabelMe file, drawn at the image's size."""
    from labelme_dsarad.model.labelfile import load_label_file

    from .labels import rasterise_shapes

    data = load_label_file(path)
    stored = (data.get("imageHeight"), data.get("imageWidth"))
    mask = rasterise_shapes(data["shapes"], *(stored if None not in stored else (height, width)))
    if mask.shape != (height, width):
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return mask
