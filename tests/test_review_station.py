"""A review station's install: no PyTorch, inference from the graph a model file carries.

Where PyTorch is installed, ``torch_installed`` is made to say it is not (in a child
process, ``torch`` cannot be imported at all), so both of CI's legs run these.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest

from labelme_dsarad.cli import main
from labelme_dsarad.model import inference
from labelme_dsarad.model.inference import Predictor, onnx_device
from labelme_dsarad.model.model_file import ModelFileError
from labelme_dsarad.resources import SAMPLES_DIR

from .conftest import REPO, TORCH_INSTALLED, make_tiny_model, without_graph

WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; "  # `import torch` then fails, as where it is not installed


@pytest.fixture
def no_torch(monkeypatch):
    monkeypatch.setattr(inference, "torch_installed", lambda: False)


def test_the_model_files_graph_gives_what_the_full_install_gives(tmp_path, no_torch):
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    light = Predictor(model)
    assert light.backend == "onnx" and light.device == "cpu" and light.model.network is None
    prediction = light.predict(image)
    assert prediction.device == "cpu" and prediction.score_map.shape == (50, 70)
    if TORCH_INSTALLED:  # the full install's path (the weights loaded, onnxruntime on the CPU) on the same file
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(inference, "torch_installed", lambda: True)
            full = Predictor(model, device="cpu")
        assert full.backend == "onnx"
        np.testing.assert_array_equal(full.predict(image).score_map, prediction.score_map)


def test_a_model_file_without_a_graph_says_what_to_install(tmp_path, no_torch):
    old = without_graph(make_tiny_model(tmp_path / "tiny.safetensors"), tmp_path / "old.safetensors")
    with pytest.raises(ModelFileError, match=r"no ONNX graph.*pip install 'labelme-dsarad\[train\]'") as raised:
        Predictor(old)
    assert "\n" not in str(raised.value) and str(old) in str(raised.value)


def test_the_device_is_onnxruntimes_cuda_provider_where_there_is_one(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_device("auto") == "cuda" and onnx_device("cpu") == "cpu"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_device("auto") == "cpu"
    with pytest.raises(ValueError, match=r"no CUDA provider.*labelme-dsarad\[gpu\]"):
        onnx_device("cuda")
    with pytest.raises(ValueError, match=r"needs PyTorch.*labelme-dsarad\[train\]"):
        onnx_device("mps")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")  # onnxruntime's word for it
def test_onnxruntime_without_a_working_cuda_provider_runs_on_the_cpu_and_says_so(tmp_path, no_torch, monkeypatch):
    """onnxruntime-gpu offers its provider even where CUDA cannot start; the session then runs on the CPU."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    predictor = Predictor(make_tiny_model(tmp_path / "tiny.safetensors"))
    assert predictor.device == predictor.runner.device == "cpu"  # this machine has no CUDA


def run_without_torch(code: str, tmp_path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DSARAD_MODEL_STORE": str(tmp_path / "store")}
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH + code], capture_output=True, text=True, cwd=REPO,
                          env=environment, timeout=300)


@pytest.mark.parametrize("command", [["train", "--product", "widget", "--images", "."], ["export", "--onnx", "x.onnx"],
                                     ["retrain", "--product", "widget", "--labels", "."]])
def test_commands_that_need_training_say_how_to_add_it_in_one_line(command, tmp_path):
    done = run_without_torch(f"from labelme_dsarad.cli import main; sys.exit(main({command!r}))", tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"dsarad {command[0]}: error: this needs PyTorch, which a review station's install leaves "
                           "out: pip install 'labelme-dsarad[train]'\n")


def test_predict_on_the_bundled_samples_with_the_bundled_model(tmp_path):
    """The bundled model carries its graph: ``dsarad predict`` runs it without PyTorch."""
    samples = sorted(SAMPLES_DIR.glob("*.jpg"))[:2]
    code = (f"from labelme_dsarad.cli import main; "
            f"sys.exit(main(['predict', *{[str(path) for path in samples]!r}, '--out', {str(tmp_path / 'out')!r}]))")
    done = run_without_torch(code, tmp_path)
    assert done.returncode == 0, done.stderr
    for sample in samples:
        written = json.loads((tmp_path / "out" / f"{sample.stem}.json").read_text())
        assert written["imagePath"] and written["dsarad"]["model_sha256"]
    if TORCH_INSTALLED:  # the full install's suggestions are the same, shape for shape
        assert main(["predict", *map(str, samples), "--out", str(tmp_path / "full")]) == 0
        for sample in samples:
            light = json.loads((tmp_path / "out" / f"{sample.stem}.json").read_text())
            full = json.loads((tmp_path / "full" / f"{sample.stem}.json").read_text())
            assert light["shapes"] == full["shapes"]
