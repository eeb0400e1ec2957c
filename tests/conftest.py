"""Shared fixtures: tiny models with weights set by the tests, the data set if present."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path
from typing import Any

import pytest
import torch

from labelme_dsarad.model.model_file import ModelInfo, save_model
from labelme_dsarad.model.networks import DSARAD, PRESETS
from labelme_dsarad.model.scoring import ScoreNormaliser

REPO = Path(__file__).resolve().parents[1]

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


def make_tiny_model(path: Path, seed: int = 0, product: str = "widget", input_size: int = 64,
                    image_threshold: float = 0.5, pixel_threshold: float = 0.5) -> Path:
    """A tiny model with seeded random weights: enough to exercise every code path."""
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
    return path


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
    torch.set_flush_denormal(False)


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
    from labelme.app import MainWindow

    from labelme_dsarad.panel import attach_panel

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
