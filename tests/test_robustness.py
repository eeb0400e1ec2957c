"""Faults in a batch run, huge images, odd file names, hostile model headers.

Issue 7: every failure is a one-line message naming the file, the batch goes
on, and no label a person made is lost. Image decoding, label-file parsing and
model-file loading have their own tests (test_images, test_labelfile,
test_model_file); this file covers what happens around them in
``pipeline.predict_paths`` and the fuzzing of the model-header parser.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelme_dsarad._labelme_adapter import read_label_file  # LabelMe's own reader, the one that matters
from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.labelfile import load_label_file
from labelme_dsarad.model.model_file import ModelFileError, ModelInfo, parse_header, read_header
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.pipeline import PredictOptions, predict_paths
from tests.conftest import PERSON_SHAPE, REPO, make_tiny_model


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    # One loaded model for the module: loading costs more than predicting.
    return Predictor(make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors"), device="cpu")


def save_image(path: Path, height: int = 24, width: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path)
    return path


def one_line(message: str, *names: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    for name in names:
        assert name in message, (name, message)


# -- a batch with faults -------------------------------------------------------


def test_folder_that_disappears_mid_batch_is_reported_per_file(tmp_path, predictor):
    folder = tmp_path / "line 3"
    images = [save_image(folder / f"part{i}.png", seed=i) for i in range(10)]

    def delete_folder(done, total, path):
        # Labels are written next to the images, so the writer thread may be
        # creating a file while we delete: repeat until it is gone.
        while folder.exists():
            shutil.rmtree(folder, ignore_errors=True)

    summary = predict_paths(images, None, PredictOptions(), predictor=predictor, progress=delete_folder)
    assert summary.predicted >= 1 and summary.predicted + len(summary.failures) == len(images)
    failed = {Path(path).name for path, _ in summary.failures}
    # Those still queued when the folder went fail by name; decode-ahead
    # means a few later ones were already read, and fail at writing instead.
    assert {"part8.png", "part9.png"} <= failed
    for path, message in summary.failures:
        one_line(message, Path(path).stem)
    assert summary.describe().count("\nfailed: ") == len(summary.failures)


def test_model_that_throws_fails_only_its_images(tmp_path, predictor):
    class ThrowsOnTallImages:
        """Stands for a model that fails on some input (e.g. out of memory on a large one)."""

        def __getattr__(self, name):
            return getattr(predictor, name)

        def predict_batch(self, images, photo_shapes=None):
            if any(image.shape[0] == 40 for image in images):
                raise RuntimeError("kernel failed\non this input")
            return predictor.predict_batch(images, photo_shapes)

    images = [save_image(tmp_path / "a.png"), save_image(tmp_path / "tall.png", height=40), save_image(tmp_path / "c.png")]
    summary = predict_paths(images, None, PredictOptions(), predictor=ThrowsOnTallImages())
    assert summary.predicted == 2 and [Path(path).name for path, _ in summary.failures] == ["tall.png"]
    one_line(summary.failures[0][1], "tall.png", "RuntimeError", "kernel failed on this input")
    assert not (tmp_path / "tall.json").exists() and (tmp_path / "c.json").is_file()


@pytest.mark.parametrize(
    "options",
    [PredictOptions(batch_size=0)] + [PredictOptions(suggestions=SuggestionSettings(**bad)) for bad in (
        {"threshold": float("nan")}, {"threshold": 1.5}, {"tolerance": float("nan")}, {"tolerance": -1.0},
        {"min_area": -1}, {"extend_to": 0.0})],
    ids=["batch 0 (spun for ever)", "threshold nan", "threshold 1.5", "tolerance nan (wrote NaN)", "tolerance -1", "min_area -1",
         "extend_to 0 (the whole image)"],
)
@pytest.mark.timeout(60)  # batch size 0 used to spin for ever
def test_settings_no_run_can_use_are_refused_before_any_work(tmp_path, predictor, options):
    image = save_image(tmp_path / "a.png")
    with pytest.raises(ValueError) as error:
        predict_paths([image], None, options, predictor=predictor)
    one_line(str(error.value))
    assert not (tmp_path / "a.json").exists()


def test_images_sharing_a_label_file_are_reported_never_mixed(tmp_path, predictor):
    png = save_image(tmp_path / "a.png", seed=1)
    jpg = tmp_path / "a.jpg"
    PIL.Image.open(save_image(tmp_path / "other.png", seed=2)).save(jpg)
    summary = predict_paths([png, jpg], None, PredictOptions(), predictor=predictor)
    assert summary.predicted == 1 and [Path(path).name for path, _ in summary.failures] == ["a.jpg"]
    one_line(summary.failures[0][1], "a.json", "a.png", "a.jpg")
    written = (tmp_path / "a.json").read_bytes()
    assert json.loads(written)["imagePath"] == "a.png"

    # A later run on a.jpg alone: a.json's run record is a.png's, not a.jpg's,
    # so it is not "already done", and the merge refuses another image's file.
    summary = predict_paths([jpg], None, PredictOptions(), predictor=predictor)
    assert summary.skipped == 0 and len(summary.failures) == 1
    one_line(summary.failures[0][1], "a.json", "a.png")
    assert (tmp_path / "a.json").read_bytes() == written

    # Same name in two folders, one --out folder.
    first, second = save_image(tmp_path / "d1" / "b.png"), save_image(tmp_path / "d2" / "b.png", seed=3)
    summary = predict_paths([first, second], None, PredictOptions(out_dir=tmp_path / "out"), predictor=predictor)
    assert summary.predicted == 1 and summary.failures[0][0] == str(second)
    assert json.loads((tmp_path / "out" / "b.json").read_text())["imagePath"] == os.path.join("..", "d1", "b.png")


def test_stale_temporaries_of_a_killed_writer_are_removed_and_nothing_else(tmp_path, predictor):
    image = save_image(tmp_path / "x.png")
    stale = [tmp_path / ".x.json.deadbeef.tmp", tmp_path / ".y.json.0123abcd.tmp"]
    foreign = [tmp_path / ".notes.tmp", tmp_path / "x.json.deadbeef.tmp", tmp_path / ".x.json.backup"]
    for path in stale + foreign:
        path.write_text("{")  # as a killed writer leaves it: partial JSON
    summary = predict_paths([image], None, PredictOptions(), predictor=predictor)
    assert summary.predicted == 1
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "{" for path in foreign)


# -- odd names and contents ----------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes; others refuse non-UTF-8 names")
def test_file_name_that_is_not_utf8_is_labelled_and_labelme_reads_it(tmp_path, predictor):
    # Latin-1 "café" from an old share: Python sees it as a surrogate escape,
    # which json.dumps(ensure_ascii=False) could not encode: the whole batch died.
    odd = tmp_path / os.fsdecode(b"caf\xe9 1.png")
    save_image(odd)
    after = save_image(tmp_path / "z.png")
    summary = predict_paths([odd, after], None, PredictOptions(), predictor=predictor)
    assert summary.failures == [] and summary.predicted == 2
    label_path = tmp_path / os.fsdecode(b"caf\xe9 1.json")
    assert load_label_file(label_path)["imagePath"] == odd.name
    assert read_label_file(label_path).image_data == odd.read_bytes()  # LabelMe finds the image from imagePath
    assert predict_paths([odd], None, PredictOptions(), predictor=predictor).skipped == 1


def test_lone_surrogate_escape_in_a_persons_file_survives_the_merge(tmp_path, predictor):
    image = save_image(tmp_path / "a.png")
    person = {**PERSON_SHAPE, "label": "Kratzer \ud800"}  # valid JSON ("\ud800"), not encodable as UTF-8
    (tmp_path / "a.json").write_text(json.dumps({"version": "6.3.1", "flags": {}, "shapes": [person],
                                                 "imagePath": "a.png", "imageData": None}))
    summary = predict_paths([image], None, PredictOptions(), predictor=predictor)
    assert summary.failures == []
    assert load_label_file(tmp_path / "a.json")["shapes"][0] == person


# -- a 20000 x 20000 image -----------------------------------------------------


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG, all black, of any size: a few hundred KB of zlib,
    written in well under a second (decoded, 20000 x 20000 is 1.2 GB as RGB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    rows_per_step = 1000
    data = b"".join(compressor.compress(row * min(rows_per_step, height - start)) for start in range(0, height, rows_per_step))
    data += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory read from Linux's /proc")
def test_20000_by_20000_image_is_refused_with_a_message_and_memory_stays_bounded(tmp_path, predictor):
    huge = write_blank_png(tmp_path / "huge scan.png", 20000, 20000)
    assert PIL.Image.open(huge).size == (20000, 20000)
    normal = save_image(tmp_path / "normal.png")
    summary = predict_paths([huge, normal], None, PredictOptions(), predictor=predictor)
    assert summary.predicted == 1 and [path for path, _ in summary.failures] == [str(huge)]
    one_line(summary.failures[0][1], "huge scan.png", "too large")
    assert not (tmp_path / "huge scan.json").exists()

    # Peak memory of a fresh process that reads it: no decode (which would
    # take at least 400 MB for the 1-bit pixels alone, 1.2 GB as RGB).
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into
    # the child's ru_maxrss across exec.
    probe = (
        "import sys\n"
        "from labelme_dsarad.model.images import ImageReadError, read_image\n"
        "try:\n    read_image(sys.argv[1])\nexcept ImageReadError as error:\n    print(error)\n"
        "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')][0])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(huge)], capture_output=True, text=True, timeout=60, cwd=REPO)
    message, peak_kib = result.stdout.splitlines()
    assert "too large" in message
    assert int(peak_kib) < 250 * 1024, f"peak RSS {int(peak_kib) // 1024} MB"


# -- fuzzing the model-header parser ---------------------------------------------

# allow_subnormal=False: hypothesis refuses subnormal floats while flush-to-zero
# is on, which a Predictor made by an earlier test module may have left on.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**18) | st.floats(allow_subnormal=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


def valid_header() -> dict:
    return {
        "format": "dsarad-model",
        "format_version": 1,
        "architecture": {"preset": "tiny", "reconstruction_width": 4, "segmentation_width": 4, "input_size": 64},
        "preprocessing": {"color": "rgb", "value_range": [0.0, 1.0], "normalisation": "none", "resize": "bilinear"},
        "product": "widget",
        "labels": ["defect"],
        "scores": {"image_threshold": 0.5, "pixel_threshold": 0.4, "statistics": {}},
        "training": {},
        "metrics": {},
        "created": "2026-01-01T00:00:00+00:00",
        "version": 1,
    }


# Where a mutation lands: the top level, or one of the nested objects.
PLACES = [(), ("architecture",), ("scores",), ("preprocessing",)]
KEYS = sorted({*valid_header(), *valid_header()["architecture"], *valid_header()["scores"], "extra"})


@st.composite
def mutated_headers(draw) -> str:
    header = valid_header()
    for _ in range(draw(st.integers(0, 4))):
        place: dict | None = header
        for key in draw(st.sampled_from(PLACES)):
            place = place.get(key) if isinstance(place, dict) else None
        if not isinstance(place, dict):
            continue
        key = draw(st.sampled_from(KEYS))
        if draw(st.booleans()):
            place.pop(key, None)
        else:
            place[key] = draw(json_values)
    return json.dumps(header)  # NaN/Infinity as JS literals, which Python's json reads back


metadata_values = st.one_of(
    mutated_headers(),
    json_values.map(json.dumps),
    st.text(max_size=40),
    st.integers(1, 5000).map(lambda depth: "[" * depth + "]" * depth),  # deep nesting: Python's json recurses
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metadata=st.one_of(st.fixed_dictionaries({"dsarad": metadata_values}),
                          st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)))
def test_fuzz_model_header_gives_a_model_info_or_a_one_line_model_file_error(metadata):
    path = "models/fuzz.safetensors"
    try:
        info = parse_header(path, metadata)
    except ModelFileError as error:
        one_line(str(error), path)
        return
    assert isinstance(info, ModelInfo)
    size = info.architecture.input_size
    assert 32 <= size <= 2048 and size % 32 == 0
    assert info.labels and all(isinstance(label, str) and label for label in info.labels)
    assert 0 < info.normaliser.image_threshold < 1 and 0 < info.normaliser.pixel_threshold < 1


def test_deeply_nested_safetensors_header_is_a_model_file_error(tmp_path):
    # Python's json recurses per nesting level: 100000 levels was a RecursionError traceback.
    nested = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "nested.safetensors"
    path.write_bytes(struct.pack("<Q", len(nested)) + nested)
    with pytest.raises(ModelFileError) as error:
        read_header(path)
    one_line(str(error.value), str(path))
