import json
import pickle
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import save_file

from labelme_dsarad.model.model_file import (
    FORMAT_VERSION,
    GRAPH_TENSOR,
    ModelFileError,
    file_sha256,
    load_model,
    parse_header,
    read_header,
    read_inference_graph,
    read_safetensors,
    rewrite_header,
    save_model,
)
from labelme_dsarad.model.networks import DSARAD
from tests.conftest import STORED_TINY_MODEL, make_tiny_model, without_graph


def one_line(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_round_trip_keeps_weights_and_header(tmp_path):
    path = make_tiny_model(tmp_path / "m.safetensors", seed=3, pixel_threshold=0.3)
    loaded = load_model(path)
    torch.manual_seed(3)
    reference = DSARAD(loaded.info.architecture).eval()
    for (name, value), (_, expected) in zip(loaded.network.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(value, expected, msg=name)
    assert loaded.info.normaliser.pixel_threshold == pytest.approx(0.3)
    assert loaded.info.labels == ["defect"] and len(loaded.sha256) == 64


def test_half_storage_loads_as_float32(tmp_path):
    full = load_model(make_tiny_model(tmp_path / "full.safetensors"))
    half_path = tmp_path / "half.safetensors"
    save_model(half_path, full.network, full.info, storage="fp16")
    half = load_model(half_path)
    assert half_path.stat().st_size < (tmp_path / "full.safetensors").stat().st_size
    for value in half.network.state_dict().values():
        assert value.dtype in (torch.float32, torch.int64)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickle_suffixes_are_refused_without_reading(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"anything")
    with pytest.raises(ModelFileError, match="pickle") as error:
        load_model(path)
    one_line(error, path)


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle code ran')",))


def test_pickle_renamed_safetensors_is_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom(), protocol=4))
    with pytest.raises(ModelFileError) as error:
        load_model(path)
    one_line(error, path)


def test_torch_zip_renamed_safetensors_is_refused(tmp_path):
    path = tmp_path / "zip.safetensors"
    torch.save({"a": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match="pickle or zip") as error:
        load_model(path)
    one_line(error, path)


def header_with(tmp_path, mutate) -> Path:
    path = make_tiny_model(tmp_path / "base.safetensors")
    metadata, tensors = read_safetensors(path)
    header = json.loads(metadata["dsarad"])
    mutate(header)
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, broken, metadata={"dsarad": json.dumps(header)})
    return broken


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda h: h.update(format_version=FORMAT_VERSION + 1), "newer than this program"),
        (lambda h: h["architecture"].update(reconstruction_width=10**9), "reconstruction_width"),
        (lambda h: h["architecture"].update(input_size=100), "multiple of 32"),
        (lambda h: h["architecture"].update(flip_average="yes"), "flip_average must be true or false"),
        (lambda h: h.pop("labels"), "missing 'labels'"),
        (lambda h: h.update(labels=[]), "labels"),
        (lambda h: h["scores"].update(pixel_threshold=1.5), "pixel_threshold"),
        (lambda h: h["scores"].update(image_threshold="high"), "image_threshold"),
        (lambda h: h.update(preprocessing={"normalisation": "imagenet"}), "preprocessing"),
        (lambda h: h.update(format="something-else"), "not a DSARAD model header"),
    ],
)
def test_invalid_headers_give_one_line_errors(tmp_path, mutate, expected):
    path = header_with(tmp_path, mutate)
    with pytest.raises(ModelFileError, match=expected) as error:
        load_model(path)
    one_line(error, path)


def test_flip_average_round_trips_and_older_files_read_as_without(tmp_path):
    assert not load_model(make_tiny_model(tmp_path / "older.safetensors")).info.architecture.flip_average
    flipping = header_with(tmp_path, lambda h: h["architecture"].update(flip_average=True))
    loaded = load_model(flipping)
    assert loaded.info.architecture.flip_average and loaded.network.architecture.flip_average


def test_header_that_is_not_json(tmp_path):
    path = make_tiny_model(tmp_path / "base.safetensors")
    _, tensors = read_safetensors(path)
    save_file(tensors, tmp_path / "bad.safetensors", metadata={"dsarad": "{not json"})
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(tmp_path / "bad.safetensors")


def test_wrong_shape_and_dtype_are_named(tmp_path):
    path = make_tiny_model(tmp_path / "base.safetensors")
    metadata, tensors = read_safetensors(path)
    name = "student.encoder.block1.0.weight"
    reshaped = dict(tensors, **{name: torch.zeros(1, 2, 3)})
    save_file(reshaped, tmp_path / "shape.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match=f"'{name}' has shape"):
        load_model(tmp_path / "shape.safetensors")
    retyped = dict(tensors, **{name: tensors[name].to(torch.int32)})
    save_file(retyped, tmp_path / "dtype.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="dtype"):
        load_model(tmp_path / "dtype.safetensors")
    missing = {k: v for k, v in tensors.items() if k != name}
    save_file(missing, tmp_path / "missing.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="missing"):
        load_model(tmp_path / "missing.safetensors")


def test_non_finite_weights_are_refused(tmp_path):
    path = make_tiny_model(tmp_path / "base.safetensors")
    metadata, tensors = read_safetensors(path)
    name = "segmentation.to_logits.bias"
    poisoned = dict(tensors, **{name: torch.full_like(tensors[name], float("nan"))})
    save_file(poisoned, tmp_path / "nan.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(tmp_path / "nan.safetensors")


def test_truncated_file(tmp_path):
    path = make_tiny_model(tmp_path / "base.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError) as error:
        load_model(truncated)
    one_line(error, truncated)


def test_header_declaring_absurd_size_is_refused_before_allocation(tmp_path):
    path = tmp_path / "absurd.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(ModelFileError, match="declares") as error:
        load_model(path)
    one_line(error, path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "nope.safetensors")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="too short"):
        load_model(empty)


def test_parse_header_rejects_non_dsarad_safetensors(tmp_path):
    with pytest.raises(ModelFileError, match="no 'dsarad' header"):
        parse_header(tmp_path / "x.safetensors", {})


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = make_tiny_model(tmp_path / "m.safetensors")
    make_tiny_model(path, seed=1)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    load_model(path)


def weight_bytes(path) -> int:
    """The stored weights' bytes, without the inference graph beside them."""
    _, tensors = read_safetensors(path)
    return sum(tensor.numel() * tensor.element_size() for name, tensor in tensors.items() if name != GRAPH_TENSOR)


def test_int8_storage_is_a_quarter_and_keeps_maps_close(tmp_path):
    full_path = make_tiny_model(tmp_path / "full.safetensors", seed=2)
    full = load_model(full_path)
    int8_path = tmp_path / "int8.safetensors"
    save_model(int8_path, full.network, full.info, storage="int8")
    quantized = load_model(int8_path)
    assert weight_bytes(int8_path) < 0.4 * weight_bytes(full_path)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference, _ = full.network(image)
        approximate, _ = quantized.network(image)
    assert 0 < float((reference - approximate).abs().max()) < 0.02


def test_int8_tensor_without_its_scale_is_refused(tmp_path):
    full = load_model(make_tiny_model(tmp_path / "full.safetensors"))
    path = tmp_path / "int8.safetensors"
    save_model(path, full.network, full.info, storage="int8")
    metadata, tensors = read_safetensors(path)
    name = "student.encoder.block1.0.weight"
    del tensors[name + ".int8_scale"]
    save_file(tensors, tmp_path / "noscale.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="int8_scale"):
        load_model(tmp_path / "noscale.safetensors")
    tensors[name + ".int8_scale"] = torch.ones(3)
    save_file(tensors, tmp_path / "badscale.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="one float per output channel"):
        load_model(tmp_path / "badscale.safetensors")


def test_the_map_correction_round_trips_and_older_files_load_without_one(tmp_path):
    loaded = load_model(make_tiny_model(tmp_path / "m.safetensors"))
    gain, offset = torch.rand(64, 64) + 0.5, torch.rand(64, 64) * 0.2 - 0.1
    loaded.network.map_correction.set(gain, offset)
    for storage in ("fp32", "int8"):
        save_model(tmp_path / f"{storage}.safetensors", loaded.network, loaded.info, storage=storage)
        again = load_model(tmp_path / f"{storage}.safetensors").network.map_correction
        torch.testing.assert_close(again.gain, gain, atol=2e-3, rtol=0)
        torch.testing.assert_close(again.offset, offset, atol=2e-3, rtol=0)
    metadata, tensors = read_safetensors(tmp_path / "fp32.safetensors")
    older = {name: value for name, value in tensors.items() if not name.startswith("map_correction.")}
    save_file(older, tmp_path / "older.safetensors", metadata=metadata)
    identity = load_model(tmp_path / "older.safetensors").network.map_correction
    assert torch.equal(identity.gain, torch.ones(64, 64)) and torch.equal(identity.offset, torch.zeros(64, 64))
    half = {name: value for name, value in tensors.items() if name != "map_correction.offset"}
    save_file(half, tmp_path / "half.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="'map_correction.offset' is missing"):
        load_model(tmp_path / "half.safetensors")


def graph_outputs(graph: bytes, images: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})


def test_a_saved_model_carries_its_onnx_graph_which_gives_the_networks_maps(tmp_path):
    path = make_tiny_model(tmp_path / "m.safetensors", seed=4)
    info, graph, sha256 = read_inference_graph(path)
    loaded = load_model(path)
    assert info == read_header(path) == loaded.info and sha256 == file_sha256(path) and loaded.graph == graph
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected_map, expected_score = loaded.network(images)
    raw_map, raw_score = graph_outputs(graph, images.numpy())
    np.testing.assert_allclose(raw_map, expected_map.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(raw_score, expected_score.numpy(), atol=1e-4, rtol=0)


def test_a_file_from_before_the_graph_loads_with_torch_and_says_what_it_needs_without(tmp_path):
    old = without_graph(make_tiny_model(tmp_path / "m.safetensors"), tmp_path / "old.safetensors")
    loaded = load_model(old)
    assert loaded.graph is None and loaded.info.to_header()["architecture"] == read_header(old).to_header()["architecture"]
    with pytest.raises(ModelFileError, match=r"carries no ONNX graph.*labelme-dsarad\[train\]") as raised:
        read_inference_graph(old)
    one_line(raised, old)


def test_a_header_rewrite_keeps_the_graph_unless_the_architecture_changes(tmp_path):
    path = make_tiny_model(tmp_path / "m.safetensors")
    info, graph, _ = read_inference_graph(path)
    rewrite_header(path, replace(info, metrics={"image_auroc": 0.5}))
    assert read_inference_graph(path)[1] == graph and read_header(path).metrics == {"image_auroc": 0.5}
    wider = replace(info, architecture=replace(info.architecture, score_window=5))
    rewrite_header(path, wider)
    session = onnxruntime.InferenceSession(read_inference_graph(path)[1], providers=["CPUExecutionProvider"])
    assert parse_header(path, session.get_modelmeta().custom_metadata_map).architecture == wider.architecture
    old = without_graph(path, tmp_path / "old.safetensors")
    rewrite_header(old, read_header(old))  # re-saving a file from before the graph adds one
    assert read_header(old).to_header()["format_version"] == FORMAT_VERSION and read_inference_graph(old)[1]


def test_a_damaged_graph_is_a_one_line_error(tmp_path):
    path = make_tiny_model(tmp_path / "m.safetensors")
    metadata, tensors = read_safetensors(path)
    tensors[GRAPH_TENSOR] = torch.zeros(100, dtype=torch.uint8)
    save_file(tensors, tmp_path / "damaged.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="not a compressed ONNX graph") as raised:
        read_inference_graph(tmp_path / "damaged.safetensors")
    one_line(raised, tmp_path / "damaged.safetensors")
    tensors[GRAPH_TENSOR] = torch.zeros(2, 2, dtype=torch.uint8)
    save_file(tensors, tmp_path / "shaped.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match="byte string"):
        read_inference_graph(tmp_path / "shaped.safetensors")
    with pytest.raises(ModelFileError, match="must be bytes"):
        load_model(tmp_path / "shaped.safetensors")


def test_the_stored_tiny_model_is_what_make_tiny_model_makes(tmp_path):
    made = make_tiny_model(tmp_path / "m.safetensors")
    assert made.read_bytes() == STORED_TINY_MODEL.read_bytes(), (
        "tests/data/tiny_widget.safetensors is out of date: copy make_tiny_model()'s file there")
