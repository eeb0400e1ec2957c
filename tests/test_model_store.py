"""Which model is in use: the bundled one until a person chooses another with ``dsarad use``.

Retraining and training store a new version and leave the model in use as it
was; label files and the plugin name a model by product and version, the
bundled one as ``bundled``, so that no two models share a name.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from labelme_dsarad.cli import main
from labelme_dsarad.model import model_file
from labelme_dsarad.model import store as store_module
from labelme_dsarad.model.export import export_onnx
from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.model_file import ModelFileError, file_sha256, load_model
from labelme_dsarad.model.store import (
    CHOSEN,
    DEFAULT_BUNDLED,
    DEFAULT_FIRST,
    ONLY_VERSION,
    ModelStore,
    parse_version,
)
from labelme_dsarad.train.stats import format_stats

from .conftest import make_tiny_model
from .test_retrain import write_tiny_labels

BUNDLED = "magnetic_tile"


@pytest.fixture
def tiny_bundled(tmp_path, monkeypatch) -> Path:
    """A tiny model standing in for the bundled one (same product, same header version 1)."""
    path = make_tiny_model(tmp_path / "bundled" / "magnetic_tile_compact.safetensors", product=BUNDLED, input_size=32)
    monkeypatch.setattr(store_module, "DEFAULT_MODEL", path)
    sha = file_sha256(path)
    monkeypatch.setattr(model_file, "bundled_sha256", lambda: sha)
    return path


def stored_copy(store: ModelStore, product: str, seed: int) -> Path:
    """A new version of ``product``, numbered as the store numbers them, its header saying version 1."""
    _, path = store.next_path(product)
    return make_tiny_model(path, seed=seed, product=product, input_size=32)


def in_use(store: ModelStore, product: str) -> tuple[str, str]:
    stored, why = store.in_use(product)
    return stored.name, why


def test_the_bundled_model_stays_in_use_beside_stored_versions_until_one_is_chosen(tmp_path, tiny_bundled):
    store = ModelStore(tmp_path / "store")
    assert in_use(store, BUNDLED) == ("magnetic_tile bundled", DEFAULT_BUNDLED)
    # A product's first stored version is v1: the bundled model is never numbered like one.
    assert stored_copy(store, BUNDLED, seed=1).name == "v1.safetensors"
    assert in_use(store, BUNDLED) == ("magnetic_tile bundled", DEFAULT_BUNDLED)
    assert store.resolve(BUNDLED).path == tiny_bundled
    assert [(m.name, m.current) for m in store.all_models()] == [("magnetic_tile v1", False),
                                                                 ("magnetic_tile bundled", True)]

    store.set_current(BUNDLED, 1)
    assert in_use(store, BUNDLED) == ("magnetic_tile v1", CHOSEN)
    assert [(m.name, m.current) for m in store.all_models()] == [("magnetic_tile v1", True),
                                                                 ("magnetic_tile bundled", False)]
    store.set_current(BUNDLED, "bundled")
    assert in_use(store, BUNDLED) == ("magnetic_tile bundled", CHOSEN)
    assert (store.root / BUNDLED / "current").read_text() == "bundled\n"


def test_a_product_without_a_bundled_model_uses_its_first_version_until_one_is_chosen(tmp_path):
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelFileError, match="no model for product 'widget'"):
        store.in_use("widget")
    stored_copy(store, "widget", seed=1)
    assert in_use(store, "widget") == ("widget v1", ONLY_VERSION)
    stored_copy(store, "widget", seed=2)
    assert in_use(store, "widget") == ("widget v1", DEFAULT_FIRST)  # a second training switches nothing
    store.set_current("widget", 2)
    assert in_use(store, "widget") == ("widget v2", CHOSEN)
    (store.root / "widget" / "current").write_text("7\n")  # a version since deleted by hand
    assert in_use(store, "widget") == ("widget v1", DEFAULT_FIRST)
    with pytest.raises(ModelFileError, match=r"no version bundled \(it has: v1, v2\)"):
        store.set_current("widget", "bundled")
    with pytest.raises(ModelFileError, match=r"no version v9"):
        store.set_current("widget", 9)


@pytest.mark.parametrize(("text", "version"), [("v2", 2), ("2", 2), ("bundled", "bundled"), ("V12", 12)])
def test_versions_are_written_as_people_write_them(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["0", "v0", "x", "-1", "v"])
def test_a_version_that_is_none_is_refused(text):
    with pytest.raises(ValueError, match="give a stored version like v2"):
        parse_version(text)


def test_label_files_and_the_plugin_never_give_two_models_one_name(tmp_path, tiny_bundled):
    store = ModelStore(tmp_path / "store")
    first = stored_copy(store, BUNDLED, seed=1)
    bundled, stored = load_model(tiny_bundled), load_model(first)
    assert bundled.info.version == stored.info.version == 1  # the headers alone would not tell them apart
    assert (bundled.name, stored.name) == ("magnetic_tile bundled", "magnetic_tile v1")
    assert [m.name for m in store.all_models()] == [stored.name, bundled.name]
    # An ONNX export names the model it was made from.
    export_onnx(bundled, tmp_path / "bundled.onnx")
    assert Predictor(tmp_path / "bundled.onnx").name == "magnetic_tile bundled"


def models_output(capsys, store_root: Path) -> list[str]:
    assert main(["models", "--store", str(store_root)]) == 0
    return capsys.readouterr().out.splitlines()


def test_dsarad_models_says_which_model_is_in_use_and_why(tmp_path, tiny_bundled, capsys):
    store = ModelStore(tmp_path / "store")
    lines = models_output(capsys, store.root)
    assert len(lines) == 2 and lines[0].startswith("* magnetic_tile        bundled")
    assert f"in use ({DEFAULT_BUNDLED})" in lines[0] and lines[1].startswith("* the model in use")
    stored_copy(store, BUNDLED, seed=1)
    stored_copy(store, "widget", seed=2)
    assert main(["use", BUNDLED, "v1", "--store", str(store.root)]) == 0
    assert capsys.readouterr().out.startswith("magnetic_tile: now using magnetic_tile v1 (was magnetic_tile bundled)")
    rows = {" ".join(line[2:].split()[:2]): line for line in models_output(capsys, store.root)[:-1]}
    assert rows["magnetic_tile v1"].startswith("*") and f"in use ({CHOSEN})" in rows["magnetic_tile v1"]
    assert rows["magnetic_tile bundled"].startswith(" ") and "in use" not in rows["magnetic_tile bundled"]
    assert f"in use ({ONLY_VERSION})" in rows["widget v1"]
    listed = json.loads((main(["models", "--store", str(store.root), "--json"]), capsys.readouterr().out)[1])
    assert {(row["product"], row["version"], row["in_use_because"]) for row in listed if row["current"]} == \
        {(BUNDLED, "v1", CHOSEN), ("widget", "v1", ONLY_VERSION)}


def test_without_any_model_there_is_no_footnote(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(store_module, "DEFAULT_MODEL", tmp_path / "missing.safetensors")
    assert models_output(capsys, tmp_path / "store") == [
        "no models; train one with: dsarad train --product NAME --images DIR --minutes 30"]


@pytest.mark.parametrize("version", ["v3", "0", "bundled"])
def test_dsarad_use_of_a_version_that_is_not_there_is_one_line(tmp_path, capsys, version):
    store = ModelStore(tmp_path / "store")
    stored_copy(store, "widget", seed=1)
    assert main(["use", "widget", version, "--store", str(store.root)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("dsarad use: error: ")
    assert not (store.root / "widget" / "current").exists()


def predicted_by(capsys, image: Path, store_root: Path) -> tuple[str, str]:
    """The model a label file written now by 'dsarad predict --product magnetic_tile' names, and its checksum."""
    assert main(["predict", str(image), "--product", BUNDLED, "--store", str(store_root)]) == 0, \
        capsys.readouterr().err
    record = json.loads(image.with_suffix(".json").read_text())["dsarad"]
    return record["model"], record["model_sha256"]


def test_a_retrain_from_a_fresh_store_leaves_the_bundled_model_in_use_until_dsarad_use(tmp_path, tiny_bundled,
                                                                                      capsys, monkeypatch):
    """And label files written afterwards say so, by name and checksum, until a person switches."""
    store_root = tmp_path / "store"
    monkeypatch.setenv("DSARAD_MODEL_STORE", str(store_root))
    labels = write_tiny_labels(tmp_path / "labels")
    image = tmp_path / "later" / "tile.png"
    image.parent.mkdir()
    shutil.copy(labels / "tile_01.png", image)
    bundled = ("magnetic_tile bundled", file_sha256(tiny_bundled))

    # Nothing held out: no before/after to measure (the other retrain tests measure), a faster test.
    assert main(["retrain", "--product", BUNDLED, "--labels", str(labels), "--steps", "2", "--batch-size", "4",
                 "--holdout", "0"]) == 0
    out, err = capsys.readouterr()
    # 4 reviewed images with defects: enough to run, too few to expect better outlines.
    assert "warning: only 4 reviewed images with defects; from fewer than 25" in err
    assert out.splitlines()[0].startswith("magnetic_tile v1 stored in ") and \
        out.splitlines()[0].endswith("; still using magnetic_tile bundled")
    assert out.splitlines()[1].startswith("before and after: 0 held-out images (0 with defects, 0 normal): too few")
    assert out.splitlines()[-1] == "use it with: dsarad use magnetic_tile v1"
    store = ModelStore()
    assert in_use(store, BUNDLED) == ("magnetic_tile bundled", DEFAULT_BUNDLED)
    assert load_model(store.resolve(BUNDLED, 1).path).info.training["base"]["version"] == "bundled"
    assert predicted_by(capsys, image, store_root) == bundled

    assert main(["use", BUNDLED, "v1"]) == 0
    assert predicted_by(capsys, image, store_root) == ("magnetic_tile v1", file_sha256(store.resolve(BUNDLED, 1).path))
    assert main(["use", BUNDLED, "bundled"]) == 0
    assert predicted_by(capsys, image, store_root) == bundled


def test_dsarad_train_stores_a_version_and_leaves_the_model_in_use(tmp_path, tiny_bundled, capsys):
    from .test_trainer import textured_images

    images = textured_images(tmp_path / "images", count=4)
    store = ModelStore(tmp_path / "store")
    assert main(["train", "--product", BUNDLED, "--images", *images, "--preset", "tiny", "--input-size", "32",
                 "--epochs", "1", "--batch-size", "2", "--store", str(store.root)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines()[-1] == \
        "magnetic_tile: still using magnetic_tile bundled; use the new one with: dsarad use magnetic_tile v1"
    assert in_use(store, BUNDLED) == ("magnetic_tile bundled", DEFAULT_BUNDLED)


@pytest.mark.parametrize(("keep", "says"), [
    ("normal", "no reviewed image with defects; outline the defects"),
    ("defect", "no defect-free image to learn from; tick the image flag 'ok' on reviewed images without defects, "
               "or name defect-free images with --normals"),
])
def test_a_retrain_missing_a_kind_of_image_is_one_line_and_stores_nothing(tmp_path, capsys, keep, says):
    labels = write_tiny_labels(tmp_path / "labels")
    for path in labels.glob("*.json"):  # only the normal images reviewed, or only those with defects
        data = json.loads(path.read_text())
        if bool(data["shapes"]) != (keep == "defect"):
            data["flags"] = {}
            path.write_text(json.dumps(data))
    store = ModelStore(tmp_path / "store")
    stored_copy(store, "widget", seed=1)

    assert main(["retrain", "--product", "widget", "--labels", str(labels), "--store", str(store.root),
                 "--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(f"dsarad retrain: error: {labels}: {says}")
    assert sorted(path.name for path in (store.root / "widget").iterdir()) == ["v1.safetensors"]


def test_stats_shows_the_iou_of_edited_suggestions_only_where_it_is_known():
    counts = {"images": 2, "reviewed_images": 2, "suggestions": 3, "accepted_unchanged": 0, "edited": 1,
              "edited_mean_iou": None, "edited_with_iou": 0, "rejected": 0, "rejections_known_in_images": 2,
              "pending": 0, "drawn_by_people": 0, "missed": 0}
    groups = {"widget v1": counts, "widget v2": {**counts, "edited": 3, "edited_mean_iou": 0.8, "edited_with_iou": 2},
              "widget v3": {**counts, "edited_mean_iou": 0.5, "edited_with_iou": 1}}
    header, _, *rows = (re.split(r"\s{2,}", line) for line in format_stats(groups).splitlines())
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert [(table[name]["edited"], table[name]["edited IoU"]) for name in groups] == \
        [("1", "-"), ("3", "0.80 (2 of 3)"), ("1", "0.50")]


def test_the_plugin_opens_on_the_model_in_use(tmp_path, tiny_bundled):
    from labelme_dsarad.app import model_options

    store = ModelStore(tmp_path / "store")
    stored_copy(store, BUNDLED, seed=1)
    assert [option.title for option in model_options(None, None, store.root)] == \
        ["magnetic_tile bundled (current)", "magnetic_tile v1"]
    store.set_current(BUNDLED, 1)
    assert [option.title for option in model_options(None, None, store.root)] == \
        ["magnetic_tile v1 (current)", "magnetic_tile bundled"]
