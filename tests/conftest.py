"""Shared fixtures: tiny models with weights set by the tests, the data set if present.

Without PyTorch (a review station's install, CI's LabelMe 7 leg) models cannot
be made: the tiny model of the default arguments is then the copy kept in
tests/data (test_model_file checks it is still what make_tiny_model makes),
and tests that need another model, or PyTorch itself, are skipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from labelme_dsarad.model.model_file import TRAINING_MODULES

REPO = Path(__file__).resolve().parents[1]
# make_tiny_model() with its default arguments, for runs without PyTorch.
STORED_TINY_MODEL = REPO / "tests" / "data" / "tiny_widget.safetensors"
TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
# Modules that need the [train] extra throughout (TRAINING_MODULES): not collected where it is not
# installed. A module not listed here must run without it.
TRAINING_TEST_MODULES = [
    "test_bench_smoke.py", "test_engine.py", "test_evaluation.py", "test_export.py", "test_inference_fast.py",
    "test_map_correction.py", "test_metrics.py", "test_model_file.py", "test_model_store.py",
    "test_networks.py", "test_retrain.py", "test_retrain_process.py", "test_synthesis.py", "test_trainer.py",
]
TRAINING_INSTALLED = all(importlib.util.find_spec(name) for name in TRAINING_MODULES)
collect_ignore = [] if TRAINING_INSTALLED else TRAINING_TEST_MODULES

# A shape a person drew: merges and reruns must leave it exactly as it is.
PERSON_SHAPE: dict[str, Any] = {
    "label": "scratch",
    "points": [[1.0, 2.0], [9.0, 7.0]],
    "group_id": None,
    "description": "drawn by a person",
    "shape_type": "rectangle",
    "flags": {},
    "mask": None,
}


_made_models: dict[tuple, bytes] = {}


def make_tiny_model(path: Path, seed: int = 0, product: str = "widget", input_size: int = 64,
                    image_threshold: float = 0.5, pixel_threshold: float = 0.5) -> Path:
    """A tiny model with seeded random weights: enough to exercise every code path.

    Saving exports the model's ONNX graph, which takes seconds: each set of
    arguments is made once per session and copied after that.
    """
    arguments = (seed, product, input_size, image_threshold, pixel_threshold)
    if arguments not in _made_models:
        if TRAINING_INSTALLED:  # saving exports the ONNX graph: PyTorch and onnx
            _made_models[arguments] = build_tiny_model(path, *arguments)
        elif arguments == (0, "widget", 64, 0.5, 0.5):
            _made_models[arguments] = STORED_TINY_MODEL.read_bytes()
        else:
            pytest.skip("making a model needs the [train] extra")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_made_models[arguments])
    return path


def build_tiny_model(path: Path, seed: int, product: str, input_size: int, image_threshold: float,
                     pixel_threshold: float) -> bytes:
    import torch

    from labelme_dsarad.model.model_file import ModelInfo, save_model
    from labelme_dsarad.model.networks import DSARAD, PRESETS
    from labelme_dsarad.model.scoring import ScoreNormaliser

    torch.manual_seed(seed)
    base = PRESETS["tiny"]
    architecture = type(base)(base.preset, base.reconstruction_width, base.segmentation_width, input_size)
    network = DSARAD(architecture).eval()
    info = ModelInfo(
        architecture=architecture,
        product=product,
        labels=["defect"],
        normaliser=ScoreNormaliser(image_threshold, pixel_threshold, {"method": "set by the test"}),
        training={"method": "random weights for tests"},
        metrics={},
        created="2026-01-01T00:00:00+00:00",
    )
    save_model(path, network, info)
    return path.read_bytes()


@pytest.fixture
def tiny_model_path(tmp_path) -> Path:
    return make_tiny_model(tmp_path / "tiny.safetensors")


@pytest.fixture(scope="session")
def ball_screw_root() -> Path:
    """The shared ball screw (BSData) folder; the test is skipped when it is absent."""
    from dataset_splits import default_ball_screw_root

    root = default_ball_screw_root()
    if root is None:
        pytest.skip("the ball screw data set is not present")
    return root


@pytest.fixture(scope="session")
def mtd_root() -> Path:
    from dataset_splits import default_mtd_root  # in bench/, which setup.cfg puts on the path

    root = default_mtd_root()
    if root is None:
        pytest.skip("the Magnetic Tile data set is not present")
    return root


@pytest.fixture(autouse=True, scope="session")
def private_onnx_cache(tmp_path_factory):
    """Exports are cached per user between runs; the tests keep theirs apart (subprocesses inherit it)."""
    os.environ["DSARAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def denormals_restored():
    """Inference and training flush denormal floats for speed; hypothesis refuses
    to run in a process left in that mode, so every test ends with it off."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


# GUI fixtures: the test_gui_* modules use them; LabelMe and Qt are imported
# only when a test asks for one.
@pytest.fixture
def qsettings_sandbox(tmp_path):
    from labelme_dsarad._labelme_adapter import install_qsettings_sandbox

    install_qsettings_sandbox(tmp_path / "qsettings")
    return tmp_path / "qsettings"


@pytest.fixture
def no_dialogs(monkeypatch):
    """Modal message boxes would hang an offscreen test: record them instead."""
    from qtpy import QtWidgets

    shown = []

    def record(kind):
        def show(*args, **kwargs):
            shown.append((kind, args[1:3] if len(args) > 2 else args))
            return QtWidgets.QMessageBox.Discard if kind == "question" else QtWidgets.QMessageBox.Ok

        return staticmethod(show)

    for kind in ("critical", "warning", "question", "information"):
        monkeypatch.setattr(QtWidgets.QMessageBox, kind, record(kind))
    return shown


@pytest.fixture
def make_window(qtbot, qsettings_sandbox, no_dialogs):
    """Build a LabelMe window with the panel attached; shuts the worker down afterwards."""
    from labelme_dsarad._labelme_adapter import main_window_class
    from labelme_dsarad.panel import attach_panel

    MainWindow = main_window_class()  # noqa: N806 - a class

    built = []

    def build(models, open_path=None, *, opened_by_labelme=False, **config):
        # opened_by_labelme: LabelMe opens the path itself before the panel is attached, as
        # 'labelme-dsarad PATH' does; otherwise the panel is there first and sees the open.
        window = MainWindow(config_file=None, config_overrides={"auto_save": True, **config},
                            file_or_dir=str(open_path) if opened_by_labelme else None)
        window.resize(900, 600)
        panel = attach_panel(window, models)
        qtbot.addWidget(window)
        built.append(panel)
        if open_path is not None and not opened_by_labelme:
            panel.adapter.open_folder(str(open_path)) if Path(open_path).is_dir() else panel.adapter.open_file(str(open_path))
        return window, panel

    yield build
    for panel in built:
        panel.shutdown()


def without_graph(source: Path, path: Path) -> Path:
    """A copy of a model file as written before model files carried their ONNX graph (format version 1)."""
    import json

    from safetensors.numpy import load_file, save_file

    from labelme_dsarad.model.model_file import GRAPH_TENSOR, HEADER_KEY, read_model_bytes

    _, _, metadata = read_model_bytes(source)
    header = {**json.loads(metadata[HEADER_KEY]), "format_version": 1}
    tensors = {name: tensor for name, tensor in load_file(source).items() if name != GRAPH_TENSOR}
    save_file(tensors, path, metadata={HEADER_KEY: json.dumps(header)})
    return path
