"""Reading images the way LabelMe 6 shows them.

LabelMe 6.3 opens an image with PIL (``labelme/_label_file.py``,
``read_image_file``), turns it by its EXIF orientation with
``labelme.utils.apply_exif_orientation`` and hands the bytes to Qt. Predictions
must line up with that picture, so this module copies those steps without
importing LabelMe (which would pull in Qt and onnxruntime):

- EXIF orientation is applied exactly where LabelMe ends up applying it: for
  formats whose PIL reader has ``_getexif`` (JPEG, MPO, PNG, WebP, including a
  PNG's EXIF stored after the pixels), and for TIFF, which Pillow's TIFF
  reader turns by itself while decoding. LabelMe reads TIFFs in modes it
  cannot show (16-bit, CMYK...) with ``tifffile`` instead, which ignores the
  orientation; so do we.
- Alpha is dropped; the colour channels are used as stored. LabelMe paints
  transparent pixels over the canvas background, which depends on the desktop
  theme, so there is no single composite to copy.
- 16-bit and other high-depth grey images (PIL modes I;16, I, F) are stretched
  from their own minimum to maximum onto 0..255, truncating, like LabelMe's
  ``_normalize_to_uint8``: not by 257, not by the format's maximum. LabelMe
  6.3 only opens them as TIFF (a 16-bit PNG fails there); we open both alike.
- A CMYK (or other non-displayable multi-channel) TIFF is shown by LabelMe as
  its first three raw channels, each stretched the same way; we copy that.
  Other palette, 1-bit, grey and CMYK images take PIL's RGB conversion (LabelMe
  cannot open a CMYK JPEG at all).

The format is taken from the content, never the file name, and a truncated
file is an error, never a partial image: this module does not touch PIL's
``LOAD_TRUNCATED_IMAGES``, which must stay False.

A model that sees a few hundred pixels needs no 6000 x 4000 photo:
``read_image_reduced`` lets a JPEG decoder scale by 1/2, 1/4 or 1/8 while it
decodes (DCT scaling, PIL's ``draft``), which skips most of the work and the
memory. Other formats are decoded in full and then shrunk by the same rule.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import PIL.Image

from .errors import FileProblem

MAX_PIXELS = 10_000 * 10_000

# What LabelMe lists in its file dialog and folder scan (Qt's readable formats,
# app.py ``_scan_image_files``) and can also decode, since LabelMe decodes with
# PIL first. Left out: svg (PIL cannot read it), wbmp, and icon formats.
IMAGE_SUFFIXES = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tga", ".tif", ".tiff", ".webp"}
)

_EXIF_ORIENTATION_TAG = 0x0112

# PIL.Image.transpose steps for EXIF orientations 2..8; the same pictures as
# labelme.utils.apply_exif_orientation (mirror = FLIP_LEFT_RIGHT, flip =
# FLIP_TOP_BOTTOM, mirror after ROTATE_270 = TRANSPOSE, mirror after
# ROTATE_90 = TRANSVERSE).
_ORIENTATION_TRANSPOSE = {
    2: PIL.Image.Transpose.FLIP_LEFT_RIGHT,
    3: PIL.Image.Transpose.ROTATE_180,
    4: PIL.Image.Transpose.FLIP_TOP_BOTTOM,
    5: PIL.Image.Transpose.TRANSPOSE,
    6: PIL.Image.Transpose.ROTATE_270,
    7: PIL.Image.Transpose.TRANSVERSE,
    8: PIL.Image.Transpose.ROTATE_90,
}
_ORIENTATION_UNDO = {
    **_ORIENTATION_TRANSPOSE,
    6: PIL.Image.Transpose.ROTATE_90,
    8: PIL.Image.Transpose.ROTATE_270,
}
_ORIENTATIONS_SWAPPING_AXES = {5, 6, 7, 8}

_HIGH_DEPTH_GREY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}

# labelme/_label_file.py ``_DISPLAYABLE_MODES``: LabelMe decodes these with PIL
# and any other mode, if the file is a TIFF, with tifffile.
_LABELME_PIL_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA"}

# The factors a JPEG decoder can scale by while decoding, largest first.
REDUCTIONS = (8, 4, 2)
# PIL formats whose reader scales while decoding (``draft``); MPO is JPEG with extra frames.
_DECODER_REDUCED_FORMATS = {"JPEG", "MPO"}


class ImageReadError(FileProblem):
    """An image that cannot be used."""


@dataclass(frozen=True)
class ReducedImage:
    """A picture at a fraction of its size, for a model that needs no more.

    ``pixels`` covers the whole picture: each side is the picture's divided by
    ``reduction`` and rounded up, so a pixel of ``pixels`` stands for
    ``shape / pixels.shape`` pixels of the picture along each side.
    """

    pixels: np.ndarray  # (height, width, 3) uint8 RGB
    shape: tuple[int, int]  # (height, width) of the picture as LabelMe shows it
    reduction: int  # 1 (full size) or one of REDUCTIONS
    reduced_while_decoding: bool  # the decoder scaled (JPEG); else decoded in full, then shrunk


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image as LabelMe shows it: (height, width, 3) uint8 RGB."""
    return _read(path, at_least=None).pixels


def read_image_reduced(path: str | os.PathLike, at_least: int, most: int = REDUCTIONS[0]) -> ReducedImage:
    """The image as LabelMe shows it, reduced by the largest of REDUCTIONS, up to ``most``, that
    leaves both sides at least ``at_least`` pixels (``reduction_for``)."""
    return _read(path, at_least, most)


def reduction_for(width: int, height: int, at_least: int, most: int = REDUCTIONS[0]) -> int:
    """The largest of REDUCTIONS, up to ``most``, leaving both sides at least ``at_least`` pixels;
    1 when none does.

    The rule PIL's JPEG ``draft`` follows, so decoder and caller agree."""
    return next((factor for factor in REDUCTIONS if factor <= most and min(width, height) // factor >= at_least), 1)


def reduce(pixels: np.ndarray, at_least: int, most: int = REDUCTIONS[0]) -> ReducedImage:
    """An image already decoded in full, area-averaged down as ``read_image_reduced`` would decode it."""
    height, width = pixels.shape[:2]
    factor = reduction_for(width, height, at_least, most)
    if factor > 1:
        size = (-(-width // factor), -(-height // factor))  # rounded up, as a JPEG decoder does
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return ReducedImage(pixels, (height, width), factor, reduced_while_decoding=False)


def _read(path: str | os.PathLike, at_least: int | None, most: int = REDUCTIONS[0]) -> ReducedImage:
    """The picture LabelMe shows, reduced when ``at_least`` is given (see ``read_image_reduced``)."""
    with _open_file(path) as file:
        image = _open_image(path, file)
        _check_pixel_count(path, image)
        try:
            shown_orientation = _labelme_orientation(image)
            uses_tifffile = _labelme_uses_tifffile(image)
            stored_width, stored_height = image.size
            factor = 1
            if at_least is not None and image.format in _DECODER_REDUCED_FORMATS:
                factor = reduction_for(stored_width, stored_height, at_least, most)
                if factor > 1 and image.draft(image.mode, (stored_width // factor, stored_height // factor)) is None:
                    factor = 1  # a layout the decoder cannot scale: decoded in full, shrunk below
            image = _turn(_load(image), shown_orientation)
            pixels = _channels_stretched_like_tifffile_path(image) if uses_tifffile else _to_rgb(image)
        except MemoryError:
            raise
        except Exception as exc:
            # PIL reports corrupt data with many exception types.
            raise ImageReadError(path, f"truncated or corrupt image (cannot decode: {exc})") from exc
    if factor > 1:
        swapped = shown_orientation in _ORIENTATIONS_SWAPPING_AXES
        shape = (stored_width, stored_height) if swapped else (stored_height, stored_width)
        return ReducedImage(pixels, shape, factor, reduced_while_decoding=True)
    return ReducedImage(pixels, pixels.shape[:2], 1, False) if at_least is None else reduce(pixels, at_least, most)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as LabelMe shows the image, read from the header only."""
    with _open_file(path) as file:
        image = _open_image(path, file)
        width, height = image.size
        try:
            if image.format == "TIFF":
                # Pillow reports a TIFF's size already turned by its
                # orientation tag; LabelMe's tifffile path shows it unturned.
                swapped = _labelme_uses_tifffile(image) and _tiff_orientation_tag(image) in _ORIENTATIONS_SWAPPING_AXES
            else:
                swapped = _header_orientation(image, file) in _ORIENTATIONS_SWAPPING_AXES
        except MemoryError:
            raise
        except Exception as exc:
            raise ImageReadError(path, f"truncated or corrupt image (cannot read header: {exc})") from exc
    return (height, width) if swapped else (width, height)


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The images named by ``paths``: files as given, folders expanded.

    A folder contributes its files with an image suffix (not its subfolders,
    not hidden files), sorted by name. A file named directly is kept whatever
    its suffix, since decoding goes by content, except label files (.json).
    Each image appears once, at its first mention.
    """
    images: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            candidates = sorted((entry for entry in path.iterdir() if _is_listed_image(entry)), key=lambda entry: entry.name)
        elif path.exists():
            candidates = [] if path.suffix.lower() == ".json" else [path]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                images.append(candidate)
    return images


def _is_listed_image(entry: Path) -> bool:
    return entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".") and entry.is_file()


def _open_file(path: str | os.PathLike) -> BinaryIO:
    try:
        # Opening a pipe or device would wait for a writer forever; stat does not.
        if not stat.S_ISDIR(mode := os.stat(path).st_mode) and not stat.S_ISREG(mode):
            raise ImageReadError(path, "not a regular file (a pipe, socket or device)")
        file = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError as exc:
        raise ImageReadError(path, "no such file") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(path, "is a folder, not an image") from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot open ({exc.strerror or exc})") from exc
    if os.fstat(file.fileno()).st_size == 0:
        file.close()
        raise ImageReadError(path, "empty file (0 bytes)")
    return file


def _open_image(path: str | os.PathLike, file: BinaryIO) -> PIL.Image.Image:
    """Parse the header only; PIL decodes pixels later, in ``load``."""
    try:
        return PIL.Image.open(file)
    except PIL.Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"too large to read safely (limit {MAX_PIXELS:,} pixels)") from exc
    except PIL.UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image, or a format that cannot be read") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"truncated or corrupt image (cannot read header: {exc})") from exc


def _check_pixel_count(path: str | os.PathLike, image: PIL.Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageReadError(path, f"too large: {width} x {height} pixels, limit is {MAX_PIXELS:,} pixels")


def _labelme_orientation(image: PIL.Image.Image) -> int:
    """EXIF orientation (1 = upright) of the picture LabelMe shows.

    May decode a PNG whose EXIF follows the pixel data, as LabelMe does.
    """
    if image.format == "TIFF":
        return 1 if _labelme_uses_tifffile(image) else _tiff_orientation_tag(image)
    # labelme.utils.apply_exif_orientation: only readers with _getexif count.
    getexif = getattr(image, "_getexif", None)
    if getexif is None:
        return 1
    exif = getexif()
    if not exif:
        return 1
    return _valid_orientation(exif.get(_EXIF_ORIENTATION_TAG, 1))


def _header_orientation(image: PIL.Image.Image, file: BinaryIO) -> int:
    """``_labelme_orientation`` without decoding pixels.

    PIL's PNG ``_getexif`` decodes the whole image to look for EXIF stored
    after the pixel data. A cheap walk over the chunk headers tells whether
    there is any; only then is the slow path taken.
    """
    if image.format == "PNG" and "exif" not in image.info and not _png_has_trailing_exif(file):
        return 1
    return _labelme_orientation(image)


def _labelme_uses_tifffile(image: PIL.Image.Image) -> bool:
    return image.format == "TIFF" and image.mode not in _LABELME_PIL_MODES


def _tiff_orientation_tag(image: PIL.Image.Image) -> int:
    # TIFF tags are parsed with the header: reading them decodes nothing.
    return _valid_orientation(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))


def _valid_orientation(value: object) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _load(image: PIL.Image.Image) -> PIL.Image.Image:
    """Decode the pixels, undoing the turn Pillow's TIFF reader applies.

    Pillow turns a TIFF by its orientation tag while decoding (and then drops
    the tag); ``_turn`` applies orientations itself, so it needs the pixels as
    stored.
    """
    turned_by_pil = _tiff_orientation_tag(image) if image.format == "TIFF" else 1
    image.load()
    if turned_by_pil != 1 and _EXIF_ORIENTATION_TAG not in image.getexif():
        return image.transpose(_ORIENTATION_UNDO[turned_by_pil])
    return image


def _turn(image: PIL.Image.Image, orientation: int) -> PIL.Image.Image:
    if orientation in _ORIENTATION_TRANSPOSE:
        return image.transpose(_ORIENTATION_TRANSPOSE[orientation])
    return image


def _png_has_trailing_exif(file: BinaryIO) -> bool:
    """Whether a PNG holds EXIF anywhere: an eXIf chunk, or the "Raw profile
    type exif" text chunk that ImageMagick writes."""
    position = file.tell()
    try:
        chunk_start = 8  # after the PNG signature
        while True:
            file.seek(chunk_start)
            header = file.read(8)
            if len(header) < 8:
                return False
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                return True
            if kind in (b"tEXt", b"zTXt", b"iTXt") and file.read(22) == b"Raw profile type exif\0":
                return True
            if kind == b"IEND":
                return False
            chunk_start += 8 + length + 4  # header, data, CRC
    finally:
        file.seek(position)


def _to_rgb(image: PIL.Image.Image) -> np.ndarray:
    if image.mode == "RGB":
        return np.array(image)
    if image.mode in _HIGH_DEPTH_GREY_MODES:
        grey = _normalize_to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    # Alpha is dropped; palette, 1-bit, grey and CMYK take PIL's conversion.
    return np.array(image.convert("RGB"))


def _channels_stretched_like_tifffile_path(image: PIL.Image.Image) -> np.ndarray:
    """labelme/_label_file.py ``_imread_tiff``: each of the first three
    channels (or the only one) stretched on its own."""
    values = np.asarray(image)
    if values.ndim == 2:
        values = values[:, :, np.newaxis]
    channels = [values[:, :, i] for i in range(3)] if values.shape[2] >= 3 else [values[:, :, 0]] * 3
    return np.stack([_normalize_to_uint8(channel) for channel in channels], axis=2)


def _normalize_to_uint8(values: np.ndarray) -> np.ndarray:
    """LabelMe's ``_normalize_to_uint8``: own min..max to 0..255, truncated."""
    values = values.astype(np.float64)
    low, high = np.nanmin(values), np.nanmax(values)
    if np.isnan(low) or high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.nan_to_num((values - low) / (high - low) * 255)
    return np.clip(scaled, 0, 255).astype(np.uint8)
