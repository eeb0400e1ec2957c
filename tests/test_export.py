"""ONNX export: same maps as PyTorch in onnxruntime, and a self-describing file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from labelme_dsarad.cli import main
from labelme_dsarad.model.export import SOURCE_SHA256_KEY, export_onnx
from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.model_file import HEADER_KEY, LoadedModel, ModelFileError, ModelInfo, load_model, save_model
from labelme_dsarad.model.scoring import ScoreNormaliser

from .comparison_network import perturbed_network
from .conftest import without_graph

MAP_TOLERANCE = 1e-4  # fp32, from the issue


def perturbed_model(path: Path, preset: str = "compact", input_size: int = 64, seed: int = 0,
                    flip_average: bool = False) -> LoadedModel:
    """A saved and reloaded model of the shared comparison network."""
    network = perturbed_network(preset, input_size, seed)
    network.architecture = replace(network.architecture, flip_average=flip_average)
    info = ModelInfo(
        architecture=network.architecture,
        product="widget",
        labels=["defect"],
        normaliser=ScoreNormaliser(0.4, 0.6, {"method": "set by the test"}),
        created="2026-01-01T00:00:00+00:00",
    )
    save_model(path, network, info)
    return load_model(path)


def eager_reference(loaded: LoadedModel, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Plain eager PyTorch with the explicit attention matrix: what every fast path must match."""
    loaded.network.set_explicit_attention(True)
    try:
        with torch.inference_mode():
            raw_map, raw_score = loaded.network(images)
    finally:
        loaded.network.set_explicit_attention(False)
    return raw_map.numpy(), raw_score.numpy()


@pytest.fixture(scope="module")
def compact(tmp_path_factory) -> LoadedModel:
    return perturbed_model(tmp_path_factory.mktemp("compact") / "compact.safetensors")


@pytest.fixture(scope="module")
def exported(compact, tmp_path_factory) -> Path:
    return export_onnx(compact, tmp_path_factory.mktemp("onnx") / "compact.onnx")


def test_onnxruntime_maps_equal_pytorch(compact, exported):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    expected_map, expected_score = eager_reference(compact, images)
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    raw_map, raw_score = session.run(None, {"image": images.numpy()})  # batch 3 through the dynamic batch axis
    assert raw_map.shape == (3, 64, 64) and raw_score.shape == (3,)
    assert expected_map.std() > 1e-3  # a flat map would make the comparison vacuous
    np.testing.assert_allclose(raw_map, expected_map, atol=MAP_TOLERANCE, rtol=0)
    np.testing.assert_allclose(raw_score, expected_score, atol=MAP_TOLERANCE, rtol=0)


def test_onnxruntime_maps_equal_pytorch_with_the_flip_average(tmp_path):
    loaded = perturbed_model(tmp_path / "flipping.safetensors", flip_average=True)
    assert loaded.info.architecture.flip_average
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    expected_map, _ = eager_reference(loaded, images)
    session = onnxruntime.InferenceSession(str(export_onnx(loaded, tmp_path / "flipping.onnx")),
                                           providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": images.numpy()})[0], expected_map, atol=MAP_TOLERANCE,
                               rtol=0)


def test_the_attention_is_exported_fused(exported):
    """The standard lowering would make onnxruntime hold the whole attention matrix."""
    operators = [node.op_type for node in onnx.load(str(exported)).graph.node]
    assert operators.count("MultiHeadAttention") == 1
    assert "MatMul" not in operators


def test_onnx_metadata_carries_the_model_header(compact, exported):
    metadata = {entry.key: entry.value for entry in onnx.load(str(exported)).metadata_props}
    assert json.loads(metadata[HEADER_KEY]) == compact.info.to_header()
    assert metadata[SOURCE_SHA256_KEY] == compact.sha256


def test_export_at_another_size_declares_that_size(compact, tmp_path):
    path = export_onnx(compact, tmp_path / "small.onnx", input_size=32)
    model = onnx.load(str(path))
    header = json.loads({entry.key: entry.value for entry in model.metadata_props}[HEADER_KEY])
    assert header["architecture"]["input_size"] == 32
    assert [dimension.dim_value for dimension in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]


def test_predictor_runs_an_exported_file_like_the_model_file(compact, exported):
    image = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    from_onnx = Predictor(exported)
    from_model = Predictor(compact, backend="torch").predict(image)
    prediction = from_onnx.predict(image)
    assert from_onnx.backend == "onnx" and from_onnx.model.info.to_header() == compact.info.to_header()
    np.testing.assert_allclose(prediction.score_map, from_model.score_map, atol=2 * MAP_TOLERANCE, rtol=0)
    assert prediction.image_score == pytest.approx(from_model.image_score, abs=2 * MAP_TOLERANCE)


def test_an_onnx_file_without_our_header_is_refused(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["raw_map"])],
        "foreign",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("raw_map", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelFileError, match="no 'dsarad' header"):
        Predictor(path)


def test_a_broken_onnx_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError, match="not a usable ONNX model") as raised:
        Predictor(path)
    assert "\n" not in str(raised.value)


def test_an_onnx_model_runs_on_a_gpu_only_through_onnxruntimes_cuda_provider(exported, monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match=r"no CUDA provider.*labelme-dsarad\[gpu\]"):
        Predictor(exported, device="cuda")
    with pytest.raises(ValueError, match="needs PyTorch"):
        Predictor(exported, backend="torch")


def test_cli_export_writes_a_file_with_our_header(tiny_model_path, tmp_path, capsys):
    output = tmp_path / "out" / "tiny.onnx"
    assert main(["export", "--model", str(tiny_model_path), "--onnx", str(output)]) == 0
    metadata = {entry.key: entry.value for entry in onnx.load(str(output)).metadata_props}
    assert json.loads(metadata[HEADER_KEY]) == load_model(tiny_model_path).info.to_header()
    assert str(output) in capsys.readouterr().out


def test_cli_export_of_a_missing_model_is_an_error(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "none.safetensors"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_the_export_is_cached_by_the_model_files_hash_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    from labelme_dsarad.model import export
    from labelme_dsarad.model.inference import Predictor

    monkeypatch.setenv("DSARAD_CACHE_DIR", str(tmp_path / "cache"))
    perturbed_model(tmp_path / "new.safetensors", preset="tiny")
    # Only a file from before model files carried their graph is exported when it is used.
    loaded = load_model(without_graph(tmp_path / "new.safetensors", tmp_path / "m.safetensors"))
    exports = []
    real_export = export.onnx_bytes
    monkeypatch.setattr(export, "onnx_bytes", lambda *args: exports.append(1) or real_export(*args))
    image = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)

    first = Predictor(tmp_path / "m.safetensors", backend="onnx").predict(image)
    assert len(exports) == 1 and export.cached_onnx_path(loaded).is_file()
    second = Predictor(tmp_path / "m.safetensors", backend="onnx").predict(image)
    assert len(exports) == 1  # the second start exports nothing
    np.testing.assert_array_equal(first.score_map, second.score_map)

    export.cached_onnx_path(loaded).write_bytes(b"not an onnx model")  # a damaged cache file
    third = Predictor(tmp_path / "m.safetensors", backend="onnx").predict(image)
    assert len(exports) == 2  # made again ...
    np.testing.assert_array_equal(first.score_map, third.score_map)
    assert export.cached_onnx_path(loaded).read_bytes() != b"not an onnx model"  # ... and the cache mended
    assert not list((tmp_path / "cache").rglob("*.tmp"))
