"""Images are read exactly as LabelMe 6 shows them, or refused in one line."""

from __future__ import annotations

import io
import os
import pickle
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest

from labelme_dsarad.model import images
from labelme_dsarad.model.images import (
    ImageReadError,
    image_size,
    list_images,
    read_image,
    read_image_reduced,
    reduce,
    reduction_for,
)

# LabelMe's own loading steps, to compare against (private, but the same in 6.3 and 7).
labelme_label_file = pytest.importorskip("labelme._label_file")
from labelme_dsarad._labelme_adapter import decoded_picture  # noqa: E402


def gradient_rgb(width: int, height: int) -> np.ndarray:
    """An image with no symmetry, so any wrong flip or turn shows."""
    ys, xs = np.mgrid[0:height, 0:width]
    channels = [xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1), (xs * 7 + ys * 3) % 256]
    return np.stack(channels, axis=2).astype(np.uint8)


def save(path: Path, image: PIL.Image.Image, format: str | None = None, **options) -> Path:
    image.save(path, format=format, **options)
    return path


def labelme_picture(path: Path) -> np.ndarray:
    """What LabelMe decodes and orients before handing it to Qt."""
    return decoded_picture(path)


def with_exif_orientation(orientation: int) -> PIL.Image.Exif:
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    return exif


def png_with_trailing_exif(path: Path, rgb: np.ndarray, orientation: int) -> Path:
    """A PNG whose eXIf chunk comes after the pixel data (allowed by the spec)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, "PNG", exif=with_exif_orientation(orientation))
    data = buffer.getvalue()
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append(data[offset : offset + 12 + length])
        offset += 12 + length
    exif_chunks = [c for c in chunks if c[4:8] == b"eXIf"]
    others = [c for c in chunks if c[4:8] != b"eXIf"]
    assert len(exif_chunks) == 1
    path.write_bytes(data[:8] + b"".join(others[:-1]) + exif_chunks[0] + others[-1])
    return path


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims another size: tests limits cheaply."""
    buffer = io.BytesIO()
    PIL.Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


# -- what LabelMe shows ------------------------------------------------------


def test_rgb_png_comes_back_exactly(tmp_path):
    rgb = gradient_rgb(13, 7)
    path = save(tmp_path / "a.png", PIL.Image.fromarray(rgb))
    result = read_image(path)
    assert result.dtype == np.uint8 and result.shape == (7, 13, 3)
    np.testing.assert_array_equal(result, rgb)


@pytest.mark.parametrize(
    "name, make",
    [
        ("grey.png", lambda rgb: PIL.Image.fromarray(rgb).convert("L")),
        ("palette.png", lambda rgb: PIL.Image.fromarray(rgb).convert("P", palette=PIL.Image.Palette.ADAPTIVE)),
        ("palette.gif", lambda rgb: PIL.Image.fromarray(rgb).convert("P", palette=PIL.Image.Palette.ADAPTIVE)),
        ("bilevel.png", lambda rgb: PIL.Image.fromarray(rgb).convert("1")),
        ("bilevel.bmp", lambda rgb: PIL.Image.fromarray(rgb).convert("1")),
        ("rgba.png", lambda rgb: PIL.Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]))),
        ("grey_alpha.png", lambda rgb: PIL.Image.fromarray(rgb).convert("LA")),
        ("rgb.bmp", lambda rgb: PIL.Image.fromarray(rgb)),
        ("rgb.tif", lambda rgb: PIL.Image.fromarray(rgb)),
        ("rgb.webp", lambda rgb: PIL.Image.fromarray(rgb)),
        ("rgb.ppm", lambda rgb: PIL.Image.fromarray(rgb)),
        ("grey.pgm", lambda rgb: PIL.Image.fromarray(rgb).convert("L")),
        ("rgb.jpg", lambda rgb: PIL.Image.fromarray(rgb)),
    ],
)
def test_matches_labelme_picture_for_every_mode_it_opens(tmp_path, name, make):
    path = save(tmp_path / name, make(gradient_rgb(17, 9)))
    np.testing.assert_array_equal(read_image(path), labelme_picture(path))


def test_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    path = save(tmp_path / "a.png", PIL.Image.fromarray(rgba))
    np.testing.assert_array_equal(read_image(path), rgba[:, :, :3])


def test_16bit_png_is_stretched_from_its_own_min_to_max_like_labelme(tmp_path):
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000) + 500
    path = save(tmp_path / "deep.png", PIL.Image.fromarray(values))
    assert PIL.Image.open(path).mode.startswith("I")
    expected = labelme_label_file._normalize_to_uint8(values)
    result = read_image(path)
    np.testing.assert_array_equal(result, np.dstack([expected] * 3))
    assert result.min() == 0 and result.max() == 255


def test_16bit_tiff_matches_labelme_picture(tmp_path):
    values = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3001) % 65535
    path = save(tmp_path / "deep.tif", PIL.Image.fromarray(values))
    np.testing.assert_array_equal(read_image(path), labelme_picture(path))


def test_constant_16bit_image_is_black_like_labelme(tmp_path):
    path = save(tmp_path / "flat.png", PIL.Image.fromarray(np.full((2, 3), 4000, dtype=np.uint16)))
    np.testing.assert_array_equal(read_image(path), np.zeros((2, 3, 3), dtype=np.uint8))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = PIL.Image.fromarray(gradient_rgb(8, 6)).convert("CMYK")
    path = save(tmp_path / "print.jpg", cmyk)
    expected = np.asarray(PIL.Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


def test_png_named_jpg_is_decoded_by_content(tmp_path):
    rgb = gradient_rgb(5, 4)
    path = save(tmp_path / "liar.jpg", PIL.Image.fromarray(rgb), format="PNG")
    np.testing.assert_array_equal(read_image(path), rgb)


def test_non_ascii_path_with_spaces(tmp_path):
    folder = tmp_path / "Prüfung 画像"
    folder.mkdir()
    rgb = gradient_rgb(3, 2)
    path = save(folder / "défaut n°1 ß.png", PIL.Image.fromarray(rgb))
    np.testing.assert_array_equal(read_image(str(path)), rgb)
    assert image_size(path) == (3, 2)


@pytest.mark.parametrize("width, height", [(1, 1), (10, 10_000), (10_000, 10)])
def test_extreme_aspect_and_tiny_images(tmp_path, width, height):
    path = save(tmp_path / "thin.png", PIL.Image.new("L", (width, height), 7))
    result = read_image(path)
    assert result.shape == (height, width, 3) and (result == 7).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_matches_labelme(tmp_path, orientation):
    path = save(tmp_path / "turned.jpg", PIL.Image.fromarray(gradient_rgb(6, 4)), exif=with_exif_orientation(orientation))
    expected = labelme_picture(path)
    np.testing.assert_array_equal(read_image(path), expected)
    assert image_size(path) == (expected.shape[1], expected.shape[0])


def test_png_exif_before_pixels_is_honoured_like_labelme(tmp_path):
    path = save(tmp_path / "turned.png", PIL.Image.fromarray(gradient_rgb(6, 4)), exif=with_exif_orientation(6))
    expected = labelme_picture(path)
    assert expected.shape == (6, 4, 3)
    np.testing.assert_array_equal(read_image(path), expected)
    assert image_size(path) == (4, 6)


def test_png_exif_after_pixels_is_honoured_like_labelme(tmp_path):
    path = png_with_trailing_exif(tmp_path / "late.png", gradient_rgb(6, 4), orientation=8)
    assert "exif" not in PIL.Image.open(path).info  # really after the pixels
    expected = labelme_picture(path)
    assert expected.shape == (6, 4, 3)
    np.testing.assert_array_equal(read_image(path), expected)
    assert image_size(path) == (4, 6)


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_tiff_orientation_matches_labelme(tmp_path, orientation):
    # Pillow's TIFF reader turns the image itself while decoding.
    path = save(tmp_path / "turned.tif", PIL.Image.fromarray(gradient_rgb(6, 4)), exif=with_exif_orientation(orientation))
    expected = labelme_picture(path)
    np.testing.assert_array_equal(read_image(path), expected)
    assert image_size(path) == (expected.shape[1], expected.shape[0])


def test_16bit_tiff_orientation_is_ignored_like_labelme(tmp_path):
    # LabelMe reads it with tifffile, which does not turn images.
    values = np.arange(24, dtype=np.uint16).reshape(4, 6) * 2000
    path = save(tmp_path / "deep.tif", PIL.Image.fromarray(values), exif=with_exif_orientation(6))
    expected = labelme_picture(path)
    assert expected.shape == (4, 6, 3)
    np.testing.assert_array_equal(read_image(path), expected)
    assert image_size(path) == (6, 4)


@pytest.mark.parametrize("orientation", [1, 6])
def test_cmyk_tiff_matches_labelme_picture(tmp_path, orientation):
    cmyk = PIL.Image.fromarray(gradient_rgb(8, 6)).convert("CMYK")
    path = save(tmp_path / "print.tif", cmyk, exif=with_exif_orientation(orientation))
    expected = labelme_picture(path)
    np.testing.assert_array_equal(read_image(path), expected)
    assert image_size(path) == (expected.shape[1], expected.shape[0])


def test_image_size_does_not_decode_pixels(tmp_path, monkeypatch):
    path = save(tmp_path / "a.jpg", PIL.Image.fromarray(gradient_rgb(9, 5)), exif=with_exif_orientation(6))

    def refuse_to_decode(self):
        raise AssertionError("image_size decoded the pixels")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", refuse_to_decode)
    assert image_size(path) == (5, 9)


# -- reduced decoding --------------------------------------------------------


@pytest.mark.parametrize("width, height, at_least, expected", [
    (6000, 4000, 256, 8), (6000, 4000, 512, 4), (2047, 4000, 256, 4), (2048, 4000, 256, 8),
    (600, 400, 256, 1), (255, 10_000, 128, 1), (1024, 1024, 256, 4),
])
def test_reduction_is_the_largest_leaving_both_sides_at_least_the_size(width, height, at_least, expected):
    assert reduction_for(width, height, at_least) == expected
    assert reduction_for(height, width, at_least) == expected


def smooth_rgb(width: int, height: int) -> np.ndarray:
    """Smooth, so JPEG keeps it well at any scale; no symmetry, so a wrong turn shows."""
    ys, xs = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [xs * 250, ys * 250, 128 + 100 * np.sin(3 * xs + 5 * ys * ys)]
    return np.stack(channels, axis=2).astype(np.uint8)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_large_jpeg_is_reduced_while_decoding_and_matches_the_shrunk_labelme_picture(tmp_path, orientation):
    path = save(tmp_path / "large.jpg", PIL.Image.fromarray(smooth_rgb(1203, 805)), quality=95,
                exif=with_exif_orientation(orientation))
    full = labelme_picture(path)
    reduced = read_image_reduced(path, 100)
    assert reduced.reduced_while_decoding and reduced.reduction == 8
    assert reduced.shape == full.shape[:2] == (image_size(path)[1], image_size(path)[0])
    assert reduced.pixels.shape[:2] == (-(-full.shape[0] // 8), -(-full.shape[1] // 8))  # rounded up
    shrunk = reduce(full, 100)
    assert shrunk.pixels.shape == reduced.pixels.shape and not shrunk.reduced_while_decoding
    difference = np.abs(reduced.pixels.astype(int) - shrunk.pixels.astype(int))
    assert difference.mean() < 2 and difference.max() < 8


def test_format_the_decoder_cannot_scale_is_decoded_in_full_then_shrunk(tmp_path):
    rgb = smooth_rgb(1203, 805)
    path = save(tmp_path / "large.png", PIL.Image.fromarray(rgb))
    reduced = read_image_reduced(path, 200)
    assert not reduced.reduced_while_decoding and reduced.reduction == 4 and reduced.shape == (805, 1203)
    np.testing.assert_array_equal(reduced.pixels, reduce(rgb, 200).pixels)
    assert reduced.pixels.shape == (202, 301, 3)


def test_image_smaller_than_twice_the_size_is_not_reduced(tmp_path):
    path = save(tmp_path / "small.jpg", PIL.Image.fromarray(smooth_rgb(300, 200)))
    reduced = read_image_reduced(path, 101)
    assert reduced.reduction == 1 and reduced.shape == (200, 300) and not reduced.reduced_while_decoding
    np.testing.assert_array_equal(reduced.pixels, read_image(path))


def test_reduced_decoding_refuses_a_truncated_jpeg(tmp_path):
    data = encoded(smooth_rgb(1200, 800), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image_reduced(path, 100)


# -- refusals ----------------------------------------------------------------


def assert_refused(path, *words: str) -> str:
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for word in words:
        assert word in message
    return message


def encoded(rgb: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, format)
    return buffer.getvalue()


def test_refusal_survives_pickling_for_worker_processes(tmp_path):
    error = ImageReadError(tmp_path / "a.png", "not an image")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is ImageReadError and str(restored) == str(error) and restored.path == error.path


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_refused(path, "empty")


@pytest.mark.parametrize("format, suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_image_is_refused_not_returned_partially(tmp_path, format, suffix, keep):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encoded(noise, format)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * keep)])
    assert_refused(path, "truncated")
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    assert_refused(path, "not an image")


def test_missing_file_is_refused(tmp_path):
    assert_refused(tmp_path / "gone.png", "no such file")
    with pytest.raises(ImageReadError, match="no such file"):
        image_size(tmp_path / "gone.png")


def test_folder_is_refused(tmp_path):
    assert_refused(tmp_path, "folder")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome = []
    # Opening a pipe blocks until a writer comes; a thread keeps a regression from hanging the suite.
    reader = threading.Thread(target=lambda: outcome.append(refusal(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # let the blocked open return
        pytest.fail("reading a named pipe blocked")
    assert outcome == [f"{fifo}: not a regular file (a pipe, socket or device)"]


def refusal(path: Path) -> str:
    try:
        read_image(path)
    except ImageReadError as error:
        return str(error)
    return "read"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_refused(tmp_path):
    path = save(tmp_path / "secret.png", PIL.Image.new("L", (2, 2)))
    path.chmod(0)
    assert_refused(path, "permission denied")


def test_permission_error_becomes_one_line_refusal(tmp_path, monkeypatch):
    # Runs even as root, where chmod cannot make a file unreadable.
    path = save(tmp_path / "secret.png", PIL.Image.new("L", (2, 2)))
    real_open = open

    def deny(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    assert_refused(path, "permission denied")


def test_too_many_pixels_is_refused_from_the_header(tmp_path):
    path = png_claiming_size(tmp_path / "huge.png", 10_001, 10_000)
    assert_refused(path, "too large", "10001 x 10000")
    assert image_size(path) == (10_001, 10_000)


def test_exactly_max_pixels_passes_the_size_check(tmp_path):
    path = png_claiming_size(tmp_path / "edge.png", 10_000, 10_000)
    # The header is fine; the pixel data is not, so decoding is what fails.
    message = assert_refused(path, "truncated or corrupt")
    assert "too large" not in message


def test_pil_decompression_bomb_guard_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 10)
    path = save(tmp_path / "bomb.png", PIL.Image.new("L", (10, 10)))
    assert_refused(path, "too large")


# -- listing -----------------------------------------------------------------


def test_suffixes_cover_what_labelme_opens():
    assert {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".gif"} <= images.IMAGE_SUFFIXES
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in images.IMAGE_SUFFIXES)


def test_list_images_expands_folders_sorted_and_skips_label_files(tmp_path):
    for name in ["b.png", "a.JPG", "c.tiff", "a.json", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(b"x")
    assert [p.name for p in list_images([tmp_path])] == ["a.JPG", "b.png", "c.tiff"]


def test_list_images_keeps_named_files_in_order_once(tmp_path):
    for name in ["a.png", "b.png", "scan.raw", "b.json"]:
        (tmp_path / name).write_bytes(b"x")
    named = [tmp_path / "scan.raw", tmp_path / "b.json", tmp_path, tmp_path / "a.png"]
    assert [p.name for p in list_images(named)] == ["scan.raw", "a.png", "b.png"]


def test_list_images_refuses_missing_path_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        list_images([tmp_path / "nowhere"])
    assert "\n" not in str(caught.value) and "nowhere" in str(caught.value)
