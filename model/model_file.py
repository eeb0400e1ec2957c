"""The model file: one ``.safetensors`` file, weights plus a JSON header.

Model files are data, not code: only safetensors is read, the header is JSON,
and every tensor is checked against the architecture the header declares
before any of it reaches a network. Pickle-based files are refused.

Since format version 2 a model file also carries its inference graph: the
ONNX export of its own weights as stored (``export.onnx_bytes``), zlib-
compressed (fp32 weights, fused, take several times the stored ones; of the
bundled int8 model's, compression saves more than half), as the uint8 tensor
``GRAPH_TENSOR``. A review station without PyTorch runs that
graph in onnxruntime (``read_inference_graph``); where PyTorch is installed
the weights load as before, and files written before the graph existed keep
loading. PyTorch is imported inside the functions that need it, so that
headers and graphs are read without it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .architecture import PRESETS, Architecture, check_input_size
from .atomic_write import write_atomically
from .errors import FileProblem
from .metadata_keys import HEADER_KEY
from .scoring import ScoreNormaliser

if TYPE_CHECKING:
    import torch

    from .networks import DSARAD

FORMAT_NAME = "dsarad-model"
# 2: the file carries its ONNX graph (GRAPH_TENSOR); 1: weights only, still read.
FORMAT_VERSION = 2
# Far above any real header or model, far below what would exhaust memory.
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_FILE_BYTES = 2 * 1024**3
WIDTH_RANGE = (1, 512)
INPUT_SIZE_RANGE = (32, 2048)
SCORE_WINDOW_RANGE = (1, 255)
# Photo pixels per model pixel: from an enlargement to a photo of a million pixels a side.
SCALE_RANGE = (0.01, 10_000.0)
MAX_KINDS = 64
FLOAT_DTYPE_NAMES = ("float32", "float16", "bfloat16")
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}


class ModelFileError(FileProblem):
    """A model file that cannot be used."""


GRAPH_TENSOR = "inference_graph.onnx.zlib"
TRAIN_EXTRA_HINT = "pip install 'labelme-dsarad[train]'"
# What the [train] extra adds (as imported): without one of them, training and evaluation cannot run.
TRAINING_MODULES = frozenset({"torch", "kornia", "onnx", "sklearn", "matplotlib"})


@dataclass
class ModelInfo:
    """The header: everything a model file says about itself besides weights."""

    architecture: Architecture
    product: str
    labels: list[str]
    normaliser: ScoreNormaliser
    preprocessing: dict = field(default_factory=lambda: dict(DEFAULT_PREPROCESSING))
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = ""
    version: int = 1

    def to_header(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture.to_dict(),
            "preprocessing": self.preprocessing,
            "product": self.product,
            "labels": self.labels,
            "scores": self.normaliser.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
            "created": self.created,
            "version": self.version,
        }


DEFAULT_PREPROCESSING: dict[str, Any] = {
    "color": "rgb",
    "value_range": [0.0, 1.0],
    "normalisation": "none",
    "resize": "bilinear",
}


@dataclass
class LoadedModel:
    network: DSARAD
    info: ModelInfo
    path: Path | None
    sha256: str
    source_sha256: str = ""  # an ONNX export's: the model file it was exported from
    graph: bytes | None = None  # the ONNX graph the file carries (files of format version 2)

    @property
    def name(self) -> str:
        """Product and version, as label files and the plugin name it: "magnetic_tile v2", or
        "magnetic_tile bundled" for the model that comes with the program, whose header says
        version 1 like a product's first stored version (its checksum tells them apart)."""
        bundled = bundled_sha256()
        is_bundled = bundled is not None and bundled in (self.sha256, self.source_sha256)
        return f"{self.info.product} {'bundled' if is_bundled else f'v{self.info.version}'}"


@functools.cache
def bundled_sha256() -> str | None:
    from labelme_dsarad.resources import DEFAULT_MODEL

    return file_sha256(DEFAULT_MODEL) if DEFAULT_MODEL.is_file() else None


STORAGES = ("fp32", "fp16", "int8")
INT8_SCALE_SUFFIX = ".int8_scale"


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one fp32 scale per output channel."""
    import torch

    scale = weight.detach().float().flatten(1).abs().amax(dim=1).clamp(min=1e-12) / 127.0
    quantized = torch.round(weight.float() / scale.view(-1, *[1] * (weight.dim() - 1))).clamp(-127, 127)
    return quantized.to(torch.int8), scale


def stored_tensor(value: torch.Tensor, storage: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """How a model file of ``storage`` holds one tensor: the tensor, and its int8 scale (or None)."""
    if storage == "int8" and value.is_floating_point() and value.dim() == 4:
        return quantize_per_channel(value)
    if storage != "fp32" and value.is_floating_point():
        return value.half(), None
    return value, None


def save_model(path: os.PathLike | str, network: DSARAD, info: ModelInfo, storage: str = "fp32",
               graph: bool = True) -> str:
    """Write atomically; return the file's SHA-256.

    ``storage``: ``fp16`` halves the file; ``int8`` stores convolution weights
    as int8 with a per-output-channel scale (everything else fp16), a quarter
    of the size, for the bundled model. Inference always runs in fp32.
    ``graph=False`` leaves the ONNX graph out (training snapshots, measured
    with PyTorch): the export takes seconds.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}")
    tensors = {}
    for prefix, module in stored_modules(network):
        for key, value in module.state_dict().items():
            name = f"{prefix}.{key}"
            tensors[name], scale = stored_tensor(value.detach().cpu().contiguous(), storage)
            if scale is not None:
                tensors[name + INT8_SCALE_SUFFIX] = scale
    return write_model_file(Path(path), tensors, info, graph)


def as_stored(network: DSARAD, storage: str) -> DSARAD:
    """A copy of ``network`` with the weights a model file of ``storage`` gives back when loaded,
    so that thresholds are set on the maps the stored model will give, not on finer weights."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}")
    import torch

    stored = copy.deepcopy(network)
    with torch.no_grad():
        for _, module in stored_modules(stored):
            for key, value in module.state_dict().items():  # these share memory with the module's tensors
                if value.is_floating_point():
                    held, scale = stored_tensor(value, storage)
                    value.copy_(held.float() if scale is None else dequantize(None, key, held, scale))
    return stored


def rewrite_header(path: os.PathLike | str, info: ModelInfo) -> str:
    """Replace a model file's header (new metrics, thresholds), keeping its weights as stored.

    The graph stays when the architecture does; a new score window or the
    like is in the graph, which is then exported again (as it is for a file
    written before graphs were stored).
    """
    path = Path(path)
    metadata, tensors = read_safetensors(path)
    if parse_header(path, metadata).architecture != info.architecture:
        tensors.pop(GRAPH_TENSOR, None)
    return write_model_file(path, tensors, info)


def write_model_file(path: Path, tensors: dict[str, torch.Tensor], info: ModelInfo, graph: bool = True) -> str:
    """Tensors plus the header as one safetensors file, written atomically; returns its SHA-256.

    Without a ``GRAPH_TENSOR`` among ``tensors``, the graph of these weights is exported and added
    (unless ``graph`` is false).
    """
    from safetensors.torch import save as save_safetensors_bytes

    if graph and GRAPH_TENSOR not in tensors:
        tensors = {**tensors, GRAPH_TENSOR: graph_tensor(path, tensors, info)}
    payload = save_safetensors_bytes(tensors, metadata={HEADER_KEY: json.dumps(info.to_header())})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, payload)
    return hashlib.sha256(payload).hexdigest()


def graph_tensor(path: Path, tensors: dict[str, torch.Tensor], info: ModelInfo) -> torch.Tensor:
    """The ONNX graph of the network these tensors load into, as a uint8 tensor."""
    import torch

    from .export import onnx_bytes

    network = network_from_tensors(path, tensors, info)
    graph = zlib.compress(onnx_bytes(LoadedModel(network=network, info=info, path=None, sha256="")), 9)
    return torch.frombuffer(bytearray(graph), dtype=torch.uint8)


def decompress_graph(path: os.PathLike | str, stored: bytes) -> bytes:
    """The ONNX graph from ``GRAPH_TENSOR``'s bytes; no larger than any model file may be."""
    inflate = zlib.decompressobj()
    try:
        graph = inflate.decompress(stored, MAX_FILE_BYTES)
    except zlib.error:
        raise ModelFileError(path, f"tensor '{GRAPH_TENSOR}' is not a compressed ONNX graph (corrupt file?)") from None
    if inflate.unconsumed_tail or not inflate.eof:
        raise ModelFileError(path, f"tensor '{GRAPH_TENSOR}' is truncated or larger than any model ({MAX_FILE_BYTES} bytes)")
    return graph


def read_model_bytes(path: os.PathLike | str) -> tuple[bytes, dict, dict]:
    """A model file's bytes, its safetensors header and its metadata, refusing anything else.

    Checks the 8-byte header length against the file size before anything
    parses it, so a header that declares absurd sizes is a message, not an
    allocation.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelFileError(
            path, "pickle-based model files are refused: loading them can run arbitrary code; use a .safetensors model"
        )
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelFileError(path, f"file is {size} bytes, larger than any model file ({MAX_FILE_BYTES})")
        payload = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(path, "no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(path, "is a folder, not a model file") from None
    except PermissionError:
        raise ModelFileError(path, "permission denied") from None
    if payload[:2] == b"\x80\x02" or payload[:2] in (b"\x80\x03", b"\x80\x04", b"\x80\x05") or payload[:2] == b"PK":
        raise ModelFileError(path, "this is a pickle or zip (PyTorch) file, not safetensors; it is refused and not run")
    if len(payload) < 8:
        raise ModelFileError(path, "file is too short to be a safetensors model (truncated?)")
    (header_length,) = struct.unpack("<Q", payload[:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > len(payload):
        raise ModelFileError(path, f"safetensors header declares {header_length} bytes; file is truncated or corrupt")
    try:
        raw_header = json.loads(payload[8 : 8 + header_length])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # Python's json recurses per nesting level
        raise ModelFileError(path, "safetensors header is not valid JSON (corrupt file?)") from None
    if not isinstance(raw_header, dict):
        raise ModelFileError(path, "safetensors header is not a JSON object")
    metadata = raw_header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ModelFileError(path, "safetensors metadata is not a JSON object")
    return payload, raw_header, metadata


def read_safetensors(path: os.PathLike | str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return (metadata, tensors) of a safetensors file as PyTorch tensors, refusing anything else."""
    from safetensors.torch import load as load_safetensors_bytes

    payload, _, metadata = read_model_bytes(path)
    try:
        tensors = load_safetensors_bytes(payload)
    except Exception as error:  # noqa: BLE001 - the library's errors are many types; all mean a broken file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(path, f"corrupt safetensors data ({first_line})") from None
    return metadata, tensors


def parse_header(path: os.PathLike | str, metadata: dict) -> ModelInfo:
    """Validate the JSON header; every problem is a ModelFileError naming the file."""
    if HEADER_KEY not in metadata:
        raise ModelFileError(path, "not a DSARAD model: the safetensors metadata has no 'dsarad' header")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except (TypeError, json.JSONDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ModelFileError(path, "the 'dsarad' header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelFileError(path, "the 'dsarad' header is not a DSARAD model header")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path, f"model format version {version} is newer than this program reads ({FORMAT_VERSION}); upgrade labelme-dsarad"
        )
    try:
        arch = header["architecture"]
        architecture = Architecture(
            preset=str(arch["preset"]),
            reconstruction_width=_bounded_int(arch["reconstruction_width"], WIDTH_RANGE, "reconstruction_width"),
            segmentation_width=_bounded_int(arch["segmentation_width"], WIDTH_RANGE, "segmentation_width"),
            input_size=_bounded_int(arch["input_size"], INPUT_SIZE_RANGE, "input_size"),
            # Files written before the window was chosen per product used the paper's.
            score_window=_bounded_int(arch.get("score_window", Architecture.score_window), SCORE_WINDOW_RANGE,
                                      "score_window"),
            kinds=_kind_names(arch.get("kinds", [])),
            flip_average=_boolean(arch.get("flip_average", False), "flip_average"),
            scale=_scale(arch.get("scale", Architecture.scale)),
        )
        if architecture.score_window % 2 == 0:
            raise ValueError(f"score_window must be odd, got {architecture.score_window}")
        check_input_size(architecture.input_size)
        labels = header["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(label, str) and label for label in labels):
            raise ValueError("labels must be a non-empty list of names")
        preprocessing = header.get("preprocessing", DEFAULT_PREPROCESSING)
        if preprocessing != DEFAULT_PREPROCESSING:
            raise ValueError(f"unsupported preprocessing {preprocessing}")
        info = ModelInfo(
            architecture=architecture,
            product=_string(header["product"], "product"),
            labels=labels,
            normaliser=ScoreNormaliser.from_dict(header["scores"]),
            preprocessing=preprocessing,
            training=_mapping(header.get("training", {}), "training"),
            metrics=_mapping(header.get("metrics", {}), "metrics"),
            created=str(header.get("created", "")),
            version=_bounded_int(header.get("version", 1), (1, 10**6), "version"),
        )
    except KeyError as missing:
        raise ModelFileError(path, f"header is missing {missing}") from None
    except (TypeError, ValueError) as problem:
        raise ModelFileError(path, f"invalid header: {problem}") from None
    return info


def _bounded_int(value, bounds: tuple[int, int], name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be an integer in [{bounds[0]}, {bounds[1]}], got {value!r}")
    return value


def _kind_names(value) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_KINDS or not all(isinstance(kind, str) and kind for kind in value):
        raise ValueError(f"kinds must be a list of at most {MAX_KINDS} names")
    if len(set(value)) != len(value):
        raise ValueError("kinds must be different names")
    return tuple(value)


def _scale(value) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (value == 0 or SCALE_RANGE[0] <= value <= SCALE_RANGE[1]):
        raise ValueError(f"scale must be 0 or a number in [{SCALE_RANGE[0]}, {SCALE_RANGE[1]}], got {value!r}")
    return float(value)


def _boolean(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _string(value, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _mapping(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object")
    return value


def read_header(path: os.PathLike | str) -> ModelInfo:
    """A model file's validated header, without reading its tensors (nor PyTorch)."""
    _, _, metadata = read_model_bytes(path)
    return parse_header(path, metadata)


def read_inference_graph(path: os.PathLike | str) -> tuple[ModelInfo, bytes, str]:
    """Header, ONNX graph and SHA-256 of a model file, without PyTorch.

    The graph is cut from the file's bytes by the offsets its safetensors
    header gives: the weights beside it are not needed to run it.
    """
    path = Path(path)
    payload, raw_header, metadata = read_model_bytes(path)
    info = parse_header(path, metadata)
    entry = raw_header.get(GRAPH_TENSOR)
    if entry is None:
        raise ModelFileError(path, f"this model file carries no ONNX graph (files written before model files held one, and "
                                   f"training snapshots, do not), "
                                   f"so it runs only with PyTorch: {TRAIN_EXTRA_HINT}")
    start = 8 + struct.unpack("<Q", payload[:8])[0]
    try:
        first, last = entry["data_offsets"]
        valid = entry["dtype"] == "U8" and entry["shape"] == [last - first] and 0 <= first < last <= len(payload) - start
    except (TypeError, KeyError, ValueError):
        valid = False
    if not valid:
        raise ModelFileError(path, f"tensor '{GRAPH_TENSOR}' is not a byte string within the file (corrupt file?)")
    return info, decompress_graph(path, payload[start + first : start + last]), hashlib.sha256(payload).hexdigest()


def load_model(path: os.PathLike | str, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load and validate a model file; float weights come back as fp32."""
    path = Path(path)
    metadata, tensors = read_safetensors(path)
    info = parse_header(path, metadata)
    network = network_from_tensors(path, tensors, info)
    network.eval().to(map_location)
    graph = tensors.get(GRAPH_TENSOR)
    return LoadedModel(network=network, info=info, path=path, sha256=file_sha256(path),
                       graph=None if graph is None else decompress_graph(path, graph.numpy().tobytes()))


def network_from_tensors(path: os.PathLike | str, tensors: dict[str, torch.Tensor], info: ModelInfo) -> DSARAD:
    """The network ``info`` declares with ``tensors`` as its weights, every one checked first."""
    import torch

    from .networks import DSARAD

    network = DSARAD(info.architecture)
    float_dtypes = tuple(getattr(torch, name) for name in FLOAT_DTYPE_NAMES)
    expected_names: set[str] = set()
    graph = tensors.get(GRAPH_TENSOR)
    if graph is not None:
        if graph.dtype != torch.uint8 or graph.dim() != 1:
            raise ModelFileError(path, f"tensor '{GRAPH_TENSOR}' must be bytes (uint8, one dimension)")
        expected_names.add(GRAPH_TENSOR)
    for prefix, module in stored_modules(network):
        expected = module.state_dict()
        expected_names.update(f"{prefix}.{key}" for key in expected)
        if prefix in OPTIONAL_MODULES and not any(f"{prefix}.{key}" in tensors for key in expected):
            continue  # a file from before the module existed: its default stands
        state = {}
        for key, reference in expected.items():
            name = f"{prefix}.{key}"
            if name not in tensors:
                raise ModelFileError(path, f"tensor '{name}' is missing")
            tensor = tensors[name]
            if tensor.dtype == torch.int8 and reference.is_floating_point():
                tensor = dequantize(path, name, tensor, tensors.get(name + INT8_SCALE_SUFFIX))
                expected_names.add(name + INT8_SCALE_SUFFIX)
            if tuple(tensor.shape) != tuple(reference.shape):
                raise ModelFileError(
                    path, f"tensor '{name}' has shape {tuple(tensor.shape)}, expected {tuple(reference.shape)}"
                )
            if reference.is_floating_point():
                if tensor.dtype not in float_dtypes:
                    raise ModelFileError(path, f"tensor '{name}' has dtype {tensor.dtype}, expected a float type")
                if not torch.isfinite(tensor).all():
                    raise ModelFileError(path, f"tensor '{name}' contains NaN or infinite values")
                tensor = tensor.float()
            elif tensor.dtype != reference.dtype:
                raise ModelFileError(path, f"tensor '{name}' has dtype {tensor.dtype}, expected {reference.dtype}")
            state[key] = tensor
        module.load_state_dict(state)
    unexpected = sorted(set(tensors) - expected_names)
    if unexpected:
        raise ModelFileError(path, f"unexpected tensor '{unexpected[0]}' ({len(unexpected)} in all)")
    return network


# Files written before the map correction existed have none; their maps are used as they come.
OPTIONAL_MODULES = ("map_correction",)


def stored_modules(network: DSARAD) -> tuple[tuple[str, torch.nn.Module], ...]:
    """The parts of a network a model file holds, by tensor-name prefix."""
    return (("student", network.student), ("segmentation", network.segmentation),
            ("map_correction", network.map_correction))


def dequantize(path, name: str, quantized: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    if scale is None:
        raise ModelFileError(path, f"int8 tensor '{name}' has no '{name}{INT8_SCALE_SUFFIX}'")
    if (quantized.dim() < 2 or tuple(scale.shape) != (quantized.shape[0],)
            or str(scale.dtype).removeprefix("torch.") not in FLOAT_DTYPE_NAMES):
        raise ModelFileError(path, f"'{name}{INT8_SCALE_SUFFIX}' must be one float per output channel of '{name}'")
    return quantized.float() * scale.float().view(-1, *[1] * (quantized.dim() - 1))


def file_sha256(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def preset_architecture(preset: str, input_size: int | None = None) -> Architecture:
    base = PRESETS[preset]
    if input_size is None:
        return base
    return Architecture(base.preset, base.reconstruction_width, base.segmentation_width, input_size)
