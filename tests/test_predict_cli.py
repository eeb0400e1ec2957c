"""``dsarad predict`` end to end: files written, errors, exit status, kill -9, two runs at once.

Expected problems end in one line on stderr naming the file and exit 2; a
batch with bad images goes on, lists each failure and exits 1. Whatever
happens, every label file is one LabelMe can open, and a person's shapes in
it are never lost.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from labelme_dsarad._labelme_adapter import read_label_file  # LabelMe's own reader, the one that matters
from labelme_dsarad.cli import main
from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.labelfile import load_label_file, shape_fingerprint
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.pipeline import PredictOptions, predict_paths
from labelme_dsarad.review_queue import QUEUE_FILE
from tests.conftest import PERSON_SHAPE, REPO, make_tiny_model

SUMMARY = re.compile(r"(\d+) images: (\d+) predicted, (\d+) already done, (\d+) failed")
# The CLI in a real process; one thread each, the machine is shared.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def save_image(path: Path, height: int = 24, width: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path)
    return path


def write_persons_labels(image: Path, embed_image: bool = False) -> Path:
    """A label file as LabelMe saves it after a person drew a rectangle."""
    width, height = PIL.Image.open(image).size
    data = {
        "version": "6.3.1",
        "flags": {"ok": False},
        "shapes": [PERSON_SHAPE],
        "imagePath": image.name,
        "imageData": base64.b64encode(image.read_bytes()).decode() if embed_image else None,
        "imageHeight": height,
        "imageWidth": width,
        "reviewer": "kim",  # a top-level key only the person's tools know
    }
    path = image.with_suffix(".json")
    path.write_text(json.dumps(data, indent=2))
    return path


def predict(capsys, *args) -> tuple[int | str | None, str]:
    """Exit status and stderr of ``dsarad predict ARGS``, run in this process."""
    status: int | str | None
    try:
        status = main(["predict", *map(str, args)])
    except SystemExit as exit_:  # argparse refusals
        status = exit_.code
    return status, capsys.readouterr().err


def counts(stderr: str) -> tuple[int, ...]:
    match = SUMMARY.search(stderr)
    assert match, stderr
    return tuple(map(int, match.groups()))


def assert_labelme_opens(json_path: Path) -> dict:
    read_label_file(json_path)  # raises on anything LabelMe could not open (also checks image size)
    return load_label_file(json_path)


def dsarad(*args) -> list[str]:
    return [sys.executable, "-m", "labelme_dsarad.cli", *map(str, args)]


# -- files written -------------------------------------------------------------


def test_labels_next_to_images_or_in_out_keep_a_persons_work_and_labelme_opens_them(tmp_path, capsys, model):
    folder = tmp_path / "Linie 2"
    images = [save_image(folder / name, seed=i) for i, name in enumerate(["a.png", "b 2.png", "c.png"])]
    persons = write_persons_labels(images[0], embed_image=True)

    status, stderr = predict(capsys, folder, "--model", model)
    assert status == 0 and counts(stderr) == (3, 3, 0, 0)
    for image in images:
        data = assert_labelme_opens(image.with_suffix(".json"))
        assert data["dsarad"]["model_sha256"] and data["imagePath"] == image.name
    data = load_label_file(persons)
    assert data["shapes"][0] == PERSON_SHAPE and data["reviewer"] == "kim" and data["flags"] == {"ok": False}
    assert data["imageData"] == json.loads(persons.read_text())["imageData"]

    # A rerun with the same model and settings touches nothing.
    written = {image: image.with_suffix(".json").read_bytes() for image in images}
    status, stderr = predict(capsys, folder, "--model", model)
    assert status == 0 and counts(stderr) == (3, 0, 3, 0)
    assert {image: image.with_suffix(".json").read_bytes() for image in images} == written

    out = tmp_path / "labels" / "new"  # made as needed
    status, stderr = predict(capsys, *images[1:], "--model", model, "--out", out)
    assert status == 0 and counts(stderr) == (2, 2, 0, 0)
    for image in images[1:]:
        data = assert_labelme_opens(out / f"{image.stem}.json")  # LabelMe finds the image through imagePath
        assert data["imagePath"] == os.path.join("..", "..", "Linie 2", image.name)
    assert {image: image.with_suffix(".json").read_bytes() for image in images} == written

    # Other polygon settings are another run: done again, and recorded.
    assert load_label_file(images[1].with_suffix(".json"))["dsarad"]["extend_to"] == SuggestionSettings.extend_to
    status, stderr = predict(capsys, folder, "--model", model, "--extend-to", "1")
    assert status == 0 and counts(stderr) == (3, 3, 0, 0)
    assert load_label_file(images[1].with_suffix(".json"))["dsarad"]["extend_to"] == 1.0
    assert "min_peak" not in load_label_file(images[1].with_suffix(".json"))["dsarad"]
    status, stderr = predict(capsys, folder, "--model", model, "--min-peak", "2")  # the top of the scale
    assert status == 0 and counts(stderr) == (3, 3, 0, 0)
    assert load_label_file(images[1].with_suffix(".json"))["dsarad"]["min_peak"] == 2.0


# -- errors that stop the command ----------------------------------------------


def make_input(tmp_path: Path, kind: str) -> tuple[list, str]:
    """Arguments after ``predict`` for one bad input, and the name the message must hold."""
    images = tmp_path / "images"
    save_image(images / "a.png")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    if kind == "missing model":
        return [images, "--model", tmp_path / "gone.safetensors"], "gone.safetensors"
    if kind == "garbage model":
        (tmp_path / "broken.safetensors").write_bytes(b"\x00garbage" * 10)
        return [images, "--model", tmp_path / "broken.safetensors"], "broken.safetensors"
    if kind == "truncated model":
        (tmp_path / "cut.safetensors").write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        return [images, "--model", tmp_path / "cut.safetensors"], "cut.safetensors"
    if kind == "pickle named .safetensors":
        (tmp_path / "evil.safetensors").write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=4))
        return [images, "--model", tmp_path / "evil.safetensors"], "evil.safetensors"
    if kind == "model is a folder":
        return [images, "--model", images], "images"
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return [tmp_path / "empty", "--model", model], "empty"
    if kind == "no such path":
        return [images, tmp_path / "typo", "--model", model], "typo"
    if kind == "--out below a file":
        return [images, "--model", model, "--out", a_file / "labels"], "notes.txt/labels"
    if kind == "--out is a file":
        return [images, "--model", model, "--out", a_file], "notes.txt"
    if kind == "--save-maps below a file":
        return [images, "--model", model, "--save-maps", a_file / "maps"], "notes.txt/maps"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "missing model", "garbage model", "truncated model", "pickle named .safetensors", "model is a folder",
    "empty folder", "no such path", "--out below a file", "--out is a file", "--save-maps below a file",
])
def test_bad_input_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys, kind):
    args, name = make_input(tmp_path, kind)
    status, stderr = predict(capsys, *args)
    assert status == 2
    assert stderr.startswith("dsarad predict: error: ") and stderr.count("\n") == 1, stderr
    assert name in stderr and "Traceback" not in stderr
    assert not list((tmp_path / "images").glob("*.json"))  # nothing written


@pytest.mark.parametrize("option, value", [
    ("--threshold", "1.5"), ("--threshold", "-0.1"), ("--threshold", "nan"), ("--threshold", "high"),
    ("--tolerance", "nan"), ("--tolerance", "-1"), ("--min-area", "-5"), ("--batch-size", "0"),
    ("--extend-to", "0"), ("--extend-to", "1.2"), ("--extend-to", "nan"),
    ("--min-peak", "0.9"), ("--min-peak", "2.1"), ("--min-peak", "nan"),
])
def test_option_out_of_range_is_refused_before_anything_runs(tmp_path, capsys, option, value):
    image = save_image(tmp_path / "a.png")
    status, stderr = predict(capsys, image, "--model", tmp_path / "not even read.safetensors", option, value)
    assert status == 2 and "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith(f"dsarad predict: error: argument {option}: ")
    assert not (tmp_path / "a.json").exists()


# -- a batch with bad files ------------------------------------------------------


def test_bad_files_in_a_batch_are_listed_the_rest_is_done_and_exit_1(tmp_path, capsys, model):
    folder = tmp_path / "batch"
    good = save_image(folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    cut = save_image(folder / "cut.png", height=200, width=200)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    save_image(folder / "kept.png")
    unparsable = b'{"shapes": [{"label": "crack", "points": [[1, 2]'  # LabelMe crashed mid-save, say
    (folder / "kept.json").write_bytes(unparsable)

    status, stderr = predict(capsys, folder, "--model", model)
    assert status == 1 and counts(stderr) == (4, 1, 0, 3)
    failed = [line for line in stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3 and "Traceback" not in stderr
    assert any("empty.png" in line and "empty file" in line for line in failed)
    assert any("cut.png" in line and "truncated" in line for line in failed)
    assert any("kept.json" in line and "invalid JSON" in line for line in failed)
    assert (folder / "kept.json").read_bytes() == unparsable  # reported, never overwritten
    assert_labelme_opens(good.with_suffix(".json"))
    assert not (folder / "empty.json").exists() and not (folder / "cut.json").exists()

    # Failures are not "done": a rerun tries them again and skips the good one.
    status, stderr = predict(capsys, folder, "--model", model)
    assert status == 1 and counts(stderr) == (4, 0, 1, 3)
    assert (folder / "kept.json").read_bytes() == unparsable


def test_ctrl_c_mid_batch_keeps_whole_files_and_says_how_to_finish(tmp_path, capsys, model, monkeypatch):
    folder = tmp_path / "batch"
    for i in range(6):
        save_image(folder / f"part{i}.png", seed=i)
    real_predict_batch = Predictor.predict_batch
    calls = []

    def interrupted_on_the_third(self, batch, photo_shapes=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, here mid-inference
        return real_predict_batch(self, batch, photo_shapes)

    monkeypatch.setattr(Predictor, "predict_batch", interrupted_on_the_third)
    status, stderr = predict(capsys, folder, "--model", model)
    assert status == 130 and stderr.rstrip().splitlines()[-1].endswith("run the same command again to do the rest")
    assert "Traceback" not in stderr
    written = sorted(folder.glob("*.json"))
    assert [path.stem for path in written] == ["part0", "part1"]  # both queued writes finished
    for path in written:
        assert_labelme_opens(path)

    monkeypatch.setattr(Predictor, "predict_batch", real_predict_batch)
    status, stderr = predict(capsys, folder, "--model", model)
    assert status == 0 and counts(stderr) == (6, 4, 2, 0)


# -- real processes: kill -9, two at once ------------------------------------------


def our_files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.suffix in (".png", ".json")} | {".dsarad.lock", QUEUE_FILE}


def labelled_by_us(folder: Path) -> int:
    # Files are replaced atomically, so each read sees a whole file.
    return sum(b'"model_sha256"' in path.read_bytes() for path in folder.glob("*.json"))


def assert_people_survived(folder: Path, persons: dict[Path, bytes], allow_old: bool) -> None:
    for path, old in persons.items():
        data = assert_labelme_opens(path)
        assert data["shapes"][0] == PERSON_SHAPE and data["reviewer"] == "kim"
        assert "dsarad" in data or (allow_old and path.read_bytes() == old)


def start_run(folder: Path, model: Path) -> subprocess.Popen:
    return subprocess.Popen(dsarad("predict", folder, "--model", model), env=SUBPROCESS_ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_labelled(folder: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    assert process.stderr is not None  # started with stderr=PIPE
    while labelled_by_us(folder) < count:
        assert process.poll() is None, f"the run ended first: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.timeout(300)
def test_kill_9_mid_run_leaves_whole_files_and_a_rerun_finishes_the_rest(tmp_path, capsys):
    # The model's input size, not the images', sets the time per image:
    # 128 px makes a run of 30 last long enough to be killed mid-way.
    model = make_tiny_model(tmp_path / "slower.safetensors", input_size=128)
    folder = tmp_path / "batch"
    images = [save_image(folder / f"part{i:02}.png", seed=i) for i in range(30)]
    persons = {path: path.read_bytes() for path in (write_persons_labels(image) for image in images[::4])}

    process = start_run(folder, model)
    try:
        wait_until_labelled(folder, 3, process)
    finally:
        process.kill()  # SIGKILL: no handler, no cleanup
        process.communicate()
    done = labelled_by_us(folder)
    assert 3 <= done < len(images), "the run finished before the kill; make it slower"

    for path in folder.glob("*.json"):
        assert_labelme_opens(path)  # old or new, never partial
    assert_people_survived(folder, persons, allow_old=True)
    # At most a hidden temporary of the file being written: LabelMe lists
    # neither hidden files nor .tmp ones.
    debris = set(os.listdir(folder)) - our_files(folder)
    assert all(name.startswith(".") and name.endswith(".tmp") for name in debris), debris

    # The rerun can be in this process: what matters is the state on disk.
    status, stderr = predict(capsys, folder, "--model", model)
    assert status == 0 and counts(stderr) == (len(images), len(images) - done, done, 0)
    assert labelled_by_us(folder) == len(images)
    assert_people_survived(folder, persons, allow_old=False)
    assert set(os.listdir(folder)) == our_files(folder)  # the rerun tidied the temporary away


@pytest.mark.timeout(300)
def test_two_runs_on_one_folder_at_once_lose_nothing(tmp_path):
    model = make_tiny_model(tmp_path / "slower.safetensors", input_size=128)
    folder = tmp_path / "shared"
    images = [save_image(folder / f"part{i:02}.png", seed=i) for i in range(24)]
    persons = {path: path.read_bytes() for path in (write_persons_labels(image) for image in images[::3])}

    # A real `dsarad predict` process, and this process running the same
    # pipeline. This one loads its model while the other imports torch, and
    # starts the moment the other writes its first file: the two then work
    # through the same files in the same order, side by side.
    other = start_run(folder, model)
    try:
        predictor = Predictor(model, device="cpu")
        wait_until_labelled(folder, 1, other)
        summary = predict_paths(images, None, PredictOptions(), predictor=predictor)
        other_stderr = other.communicate(timeout=240)[1]
    finally:
        other.kill()
    assert other.returncode == 0, other_stderr[-2000:]
    total, predicted, skipped, failed = counts(other_stderr)
    assert (total, predicted + skipped, failed) == (len(images), len(images), 0)
    assert summary.failures == [] and summary.predicted + summary.skipped == len(images)
    assert summary.predicted > 0, "no overlap: the other run had finished"

    assert labelled_by_us(folder) == len(images)
    assert_people_survived(folder, persons, allow_old=False)
    for path in folder.glob("*.json"):
        ours = [shape for shape in assert_labelme_opens(path)["shapes"] if "dsarad" in shape]
        fingerprints = [shape_fingerprint(shape) for shape in ours]
        assert len(fingerprints) == len(set(fingerprints)), f"{path.name}: suggestions doubled"
    assert set(os.listdir(folder)) == our_files(folder)


def test_predict_twice_over_a_reviewed_folder_undoes_no_decision(tmp_path):
    from labelme_dsarad.model.labelfile import is_pending_suggestion, set_state, write_label_file
    from labelme_dsarad.train.stats import suggestion_stats

    from .test_gui_support import FakePredictor, write_sample_images

    images = write_sample_images(tmp_path, 2, squares=2)
    predictor = FakePredictor()
    first = predict_paths(images, None, PredictOptions(), predictor=predictor)
    assert first.suggestions == 4
    for image in images:  # a person rejects one suggestion (LabelMe deletes it), accepts the other, ticks 'ok'
        data = load_label_file(image.with_suffix(".json"))
        kept, _dropped = [shape for shape in data["shapes"] if is_pending_suggestion(shape)]
        set_state(kept, "accepted")
        data["shapes"], data["flags"] = [kept], {"ok": True}
        write_label_file(image.with_suffix(".json"), data)
    reviewed = {image: load_label_file(image.with_suffix(".json"))["shapes"] for image in images}

    second = predict_paths(images, None, PredictOptions(), predictor=predictor)
    assert second.reviewed == 2 and second.predicted == 0
    assert "2 reviewed (left alone)" in second.describe()
    third = predict_paths(images, None, PredictOptions(include_reviewed=True), predictor=predictor)
    assert third.predicted == 2 and third.suggestions == 0  # nothing new: each finding was decided
    assert {image: load_label_file(image.with_suffix(".json"))["shapes"] for image in images} == reviewed
    groups, _ = suggestion_stats(tmp_path)
    assert [(counts["rejected"], counts["accepted_unchanged"]) for counts in groups.values()] == [(2, 2)]
