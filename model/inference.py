"""From an image to a normalised anomaly map and image score.

One preprocessing function serves training and inference, so the two can
never disagree about what the networks see.

Two backends run the networks. ``torch``: BatchNorm folded into the convs,
channels-last activations (which also hand the attention contiguous
queries, so SDPA takes its flash kernel instead of the slow generic one),
bf16 autocast on CUDA. ``onnx``: the same fused graph exported to ONNX and
run by onnxruntime. ``auto`` picks by measurement (see ``choose_backend``):
onnxruntime on the CPU, torch on a GPU.

Without PyTorch (a review station's install) only onnxruntime runs: the
graph comes from the model file itself (``model_file.read_inference_graph``),
on onnxruntime's CUDA provider where onnxruntime-gpu offers one, else on the
CPU. PyTorch is imported inside what needs it.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import cv2
import numpy as np

from .images import REDUCTIONS
from .metadata_keys import SOURCE_SHA256_KEY
from .model_file import (
    MAX_FILE_BYTES,
    TRAIN_EXTRA_HINT,
    LoadedModel,
    ModelFileError,
    ModelInfo,
    file_sha256,
    load_model,
    parse_header,
    read_inference_graph,
)
from .polygons import DEFAULT_EXTEND_TO, DEFAULT_MIN_PEAK, Region, SuggestionSettings
from .tiles import Tiling, pooled_max, scaled_shape

if TYPE_CHECKING:
    import torch

    from .networks import DSARAD


def resize_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) of any size -> (size, size, 3) uint8, area-averaged: the squash of a model
    without a scale."""
    return resize_to(image, (size, size))


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An image (H, W, 3) resized to ``shape`` (height, width), area-averaged where it shrinks."""
    shrinks = image.shape[0] >= shape[0] and image.shape[1] >= shape[1]
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR)


def map_at_image_size(raw_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A map at the model's size, brought to the image's size, where suggestions are drawn."""
    return cv2.resize(raw_map, (width, height), interpolation=cv2.INTER_LINEAR)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float in [0, 1]: no mean/std normalisation."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_array(images: np.ndarray) -> np.ndarray:
    """``to_tensor`` for onnxruntime, without PyTorch: the same float32 numbers, in NCHW order."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255.0)


def torch_installed() -> bool:
    """Whether PyTorch is there: a review station's install runs without it."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)


# An image is decoded at no fewer than this many pixels per pixel the model sees, along each side:
# the model then sees an area average, and the map its suggestions are drawn from steps by half a
# model pixel at most.
MAP_PIXELS_PER_MODEL_PIXEL = 2


def working_size(input_size: int) -> int:
    """The fewest pixels per side a large photo is decoded at (``images.read_image_reduced``)
    for a model of ``input_size``."""
    return MAP_PIXELS_PER_MODEL_PIXEL * input_size


def largest_reduction(scale: float) -> int:
    """The most a photo may be reduced while decoding for a model with ``scale`` photo pixels per
    model pixel (0: no scale, no limit): the decoded copy keeps ``MAP_PIXELS_PER_MODEL_PIXEL``
    pixels per model pixel."""
    if not scale:
        return REDUCTIONS[0]
    return next((factor for factor in REDUCTIONS if factor * MAP_PIXELS_PER_MODEL_PIXEL <= scale), 1)


# Tiles of one photo run through the networks this many at a time: a large photo at a fine scale
# has hundreds, and one batch of them all would hold every tile's activations at once.
TILE_BATCH = 16
# A photo far larger than the product's, at its scale, would take minutes (a pass per tile): refused.
MAX_TILES = 1024

# Below this probability a region keeps the model's generic label: no kind is better than a wrong one.
KIND_MIN_PROBABILITY = 0.5


@dataclass
class Prediction:
    score_map: np.ndarray  # float32 (H, W) at the size of the image given, normalised: 0.5 = threshold
    image_score: float  # normalised
    raw_image_score: float
    seconds: float
    device: str
    kinds: tuple[str, ...] = ()  # the defect kinds the model names, if any
    kind_map: np.ndarray | None = None  # (kinds, h, w) their probabilities, on the model's map (S x S, or stitched)
    extend_to_by_kind: dict[str, float] = field(default_factory=dict)  # the model's (``ScoreNormaliser``)
    min_peak: float = DEFAULT_MIN_PEAK  # the model's (``ScoreNormaliser``)
    # (height, width) of the photo when the image given was a reduced copy of it (``for_photo``);
    # None when the map is at the photo's own size.
    photo_shape: tuple[int, int] | None = None

    def for_photo(self, shape: tuple[int, int]) -> Prediction:
        """This prediction, made from a reduced copy of a photo of ``shape`` (height, width), standing
        for that photo: its suggestions come in the photo's pixels."""
        return replace(self, photo_shape=None if tuple(shape) == self.score_map.shape else (shape[0], shape[1]))

    def photo_scale(self) -> tuple[float, float]:
        """Photo pixels per map pixel along x and y: (1, 1) unless made from a reduced copy."""
        if self.photo_shape is None:
            return 1.0, 1.0
        (height, width), (map_height, map_width) = self.photo_shape, self.score_map.shape
        return width / map_width, height / map_height

    def suggestions(self, settings: SuggestionSettings, generic: str) -> list[Suggestion]:
        """The suggestions ``settings`` draw on this image, each named (``label_of``), in the photo's pixels."""
        scale = self.photo_scale()
        on_map = settings if scale == (1.0, 1.0) else settings_on_map(settings, scale)
        regions = on_map.regions(self.score_map, self.extend_map() if settings.extend_to is None else None,
                                 self.min_peak)
        return [Suggestion(self._on_photo(region), *self.label_of(region, generic)) for region in regions]

    def _on_photo(self, region: Region) -> Region:
        """``region`` of the map in the photo's pixels: the map covers the photo edge to edge."""
        if self.photo_shape is None:
            return region
        (scale_x, scale_y), (height, width) = self.photo_scale(), self.photo_shape
        x0, y0, x1, y1 = region.bbox
        points = [(min(x * scale_x, width), min(y * scale_y, height)) for x, y in region.points]
        box = (math.floor(x0 * scale_x), math.floor(y0 * scale_y),
               min(math.ceil(x1 * scale_x), width), min(math.ceil(y1 * scale_y), height))
        return replace(region, points=points, area=round(region.area * scale_x * scale_y), bbox=box)

    def extend_map(self) -> np.ndarray | None:
        """The model's ``extend_to`` at each pixel of the image: that of the kind most likely
        there (at least ``KIND_MIN_PROBABILITY``), DEFAULT_EXTEND_TO where none is; None when
        the model has no extent per kind."""
        if self.kind_map is None or not self.extend_to_by_kind:
            return None
        levels = np.array([self.extend_to_by_kind.get(kind, DEFAULT_EXTEND_TO) for kind in self.kinds]
                          + [DEFAULT_EXTEND_TO], np.float32)
        return levels[self.likely_kinds()]

    def likely_kinds(self) -> np.ndarray:
        """Each pixel's most likely kind at the image's size: its index in ``kinds``, or
        ``len(kinds)`` where none reaches ``KIND_MIN_PROBABILITY`` (and for a model that names none)."""
        height, width = self.score_map.shape
        if self.kind_map is None:
            return np.full((height, width), len(self.kinds), np.uint16)
        likely = np.where(self.kind_map.max(axis=0) >= KIND_MIN_PROBABILITY, self.kind_map.argmax(axis=0),
                          len(self.kinds)).astype(np.uint16)
        return cv2.resize(likely, (width, height), interpolation=cv2.INTER_NEAREST)

    def kind_of(self, region: Region) -> tuple[str, float] | None:
        """The most likely kind of the defect in ``region`` and its probability (the mean over the
        region's pixels); None when the model names no kinds."""
        if self.kind_map is None or not self.kinds:
            return None
        height, width = self.score_map.shape
        x0, y0, x1, y1 = region.bbox
        inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(inside, [np.round(np.asarray(region.points) - (x0 + 0.5, y0 + 0.5)).astype(np.int32)], 1)
        ys, xs = np.nonzero(inside)
        if not len(ys):
            ys, xs = np.array([(y1 - y0) // 2]), np.array([(x1 - x0) // 2])
        rows_on_map, columns_on_map = self.kind_map.shape[-2:]
        rows = np.clip(((ys + y0 + 0.5) * rows_on_map / height).astype(int), 0, rows_on_map - 1)
        columns = np.clip(((xs + x0 + 0.5) * columns_on_map / width).astype(int), 0, columns_on_map - 1)
        mean = self.kind_map[:, rows, columns].mean(axis=1)
        best = int(np.argmax(mean))
        return self.kinds[best], float(mean[best])

    def label_of(self, region: Region, generic: str) -> tuple[str, float | None]:
        """What a suggestion for ``region`` is called: its kind when the model is sure enough
        (``KIND_MIN_PROBABILITY``), else the model's generic label; and the kind's probability."""
        kind = self.kind_of(region)
        if kind is None or kind[1] < KIND_MIN_PROBABILITY:
            return generic, None
        return kind


def settings_on_map(settings: SuggestionSettings, scale: tuple[float, float]) -> SuggestionSettings:
    """``settings``, whose lengths and areas are photo pixels, for a map with ``scale`` photo pixels
    per map pixel along x and y."""
    area = scale[0] * scale[1]
    side = math.sqrt(area)
    return replace(settings, min_area=math.ceil(settings.min_area / area - 1e-9),
                   opening=round(settings.opening / side), tolerance=settings.tolerance / side)


@dataclass(frozen=True)
class Suggestion:
    region: Region
    label: str  # its kind, or the model's generic label
    kind_probability: float | None  # None: no kind named


BACKENDS = ("auto", "torch", "onnx")


def physical_core_count() -> int:
    """Cores this process may use, counting hyper-threads once.

    Convolutions saturate a core's vector units, so a second hardware thread
    per core only adds contention. Without Linux's topology files, PyTorch's
    own default stands.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            return max(1, len(allowed))
    return max(1, len(cores))


def inference_threads() -> int:
    """Threads for one forward pass; an explicit OMP_NUM_THREADS wins."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else physical_core_count()


def choose_backend(backend: str, device: torch.device) -> str:
    """``auto``: onnxruntime on the CPU, PyTorch on a GPU.

    On the CPU onnxruntime is the faster of the two and keeps its speed when
    other work competes for the cores, as decoding and writing do in
    ``dsarad predict``, where PyTorch's threads stall; both give the eager
    maps. The measurements are in docs/performance.md ("Why the CPU runs
    onnxruntime").
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnx" and device.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU (onnxruntime), not on {device.type}")
    if backend != "auto":
        return backend
    if device.type != "cpu":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


@contextmanager
def denormals_flushed():
    """Flush denormal floats for one call: on dark images they make CPU
    inference many times slower. Scoped, because the mode belongs to the
    calling thread and would otherwise leak into the application."""
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class TorchBackend:
    """The fused network in PyTorch on any device."""

    name = "torch"

    def __init__(self, network: DSARAD, device: torch.device):
        import torch

        from .export import fuse_batch_norms, inference_network

        self.device = device
        if device.type == "cpu":
            network = inference_network(network)
        else:
            network = fuse_batch_norms(network).to(device)
            network.set_explicit_attention(False)
        # Channels-last pays on the CPU too (oneDNN's blocked kernels, and the
        # attention inputs come out contiguous); MPS has no fast path for it.
        self.channels_last = device.type in ("cpu", "cuda")
        # Module.to(memory_format=...) is valid at runtime; the stubs only list it for Tensor.to.
        self.network = network.to(memory_format=torch.channels_last) if self.channels_last else network  # type: ignore[call-overload]

    def __call__(self, tensor: torch.Tensor) -> tuple[np.ndarray, ...]:
        import torch

        with torch.inference_mode(), denormals_flushed():
            return self.run(tensor)

    def run(self, tensor: torch.Tensor) -> tuple[np.ndarray, ...]:
        """Raw maps (B, S, S), raw scores (B,) and, for a model that names kinds, their probabilities."""
        import torch

        tensor = tensor.to(self.device)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                outputs = self.network(tensor)
        else:
            outputs = self.network(tensor)
        return tuple(output.float().cpu().numpy() for output in outputs)


CUDA_PROVIDER = "CUDAExecutionProvider"
GPU_EXTRA_HINT = "pip install 'labelme-dsarad[gpu]'"


def onnx_device(device: str) -> str:
    """The device onnxruntime is to run on: ``auto`` takes its CUDA provider when
    onnxruntime-gpu offers one, else the CPU."""
    import onnxruntime

    has_cuda = CUDA_PROVIDER in onnxruntime.get_available_providers()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise ValueError(f"--device cuda asked for, but onnxruntime has no CUDA provider here ({GPU_EXTRA_HINT}, "
                         f"or with PyTorch: {TRAIN_EXTRA_HINT})")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device {device} needs PyTorch, which this install lacks: {TRAIN_EXTRA_HINT}")
    return device


class OnnxBackend:
    """The exported graph in onnxruntime, on the CPU or on its CUDA provider."""

    name = "onnx"

    def __init__(self, model: bytes, threads: int, device: str = "cpu"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Dark images drive activations into denormal floats, which x86 CPUs
        # process many times slower; flushing them changes nothing visible.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        providers = [CUDA_PROVIDER, "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.session = onnxruntime.InferenceSession(model, options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        # onnxruntime falls back to the CPU when its CUDA provider cannot start (no driver, no CUDA libraries).
        self.device = "cuda" if CUDA_PROVIDER in self.session.get_providers() else "cpu"

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, batch: np.ndarray | torch.Tensor) -> tuple[np.ndarray, ...]:
        """``batch``: (B, 3, S, S) float32, as ``to_array`` makes it (or a CPU tensor)."""
        # to_tensor's output is NHWC in memory; onnxruntime wants NCHW.
        return tuple(self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}))

    @classmethod
    def from_file(cls, path: os.PathLike | str, threads: int, device: str = "cpu") -> OnnxBackend:
        model = read_onnx_file(path)
        try:
            return cls(model, threads, device)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for every kind of broken file
            raise ModelFileError(path, f"not a usable ONNX model ({one_line(error)})") from None


def read_onnx_file(path: os.PathLike | str) -> bytes:
    """The bytes of an ONNX model file, with the same size guard as model files."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFileError(path, "no such ONNX file") from None
    if size > MAX_FILE_BYTES:
        raise ModelFileError(path, f"file is {size} bytes, larger than any model file ({MAX_FILE_BYTES})")
    return path.read_bytes()


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def graph_fits(runner: OnnxBackend, info: ModelInfo) -> bool:
    """Whether a stored graph computes what the model file's header declares: the header
    written into the graph when it was exported names the same architecture."""
    try:
        return parse_header("graph", runner.metadata()).architecture == info.architecture
    except ModelFileError:
        return False


def is_onnx_path(model) -> TypeGuard[os.PathLike | str]:
    return not isinstance(model, LoadedModel) and Path(model).suffix.lower() == ".onnx"


class Predictor:
    """Owns a loaded model on one device and turns images into predictions.

    ``model`` is a loaded model, a ``.safetensors`` model file, or an ONNX
    file written by ``dsarad export`` (which runs in onnxruntime only).
    ``device`` is the name of the device it runs on: cpu, cuda or mps.
    """

    def __init__(self, model: LoadedModel | os.PathLike | str, device: str = "auto", backend: str = "auto"):
        threads = inference_threads()
        self.runner: OnnxBackend | TorchBackend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if is_onnx_path(model) or not torch_installed():
            if backend == "torch":
                raise ValueError(f"{model}: the torch backend needs PyTorch and a .safetensors model "
                                 f"({TRAIN_EXTRA_HINT})")
            self.backend = "onnx"
            self.runner, self.model = self._onnx_model(model, threads, onnx_device(device))
            self.device = self.runner.device
        else:
            import torch

            torch.set_num_threads(threads)
            torch_device = resolve_device(device)
            self.device = torch_device.type
            self.model = model if isinstance(model, LoadedModel) else load_model(Path(model))
            self.backend = choose_backend(backend, torch_device)
            if self.backend == "onnx":
                self.runner = self._onnx_runner(threads)
                if not isinstance(model, LoadedModel):
                    # Nobody else holds these weights and onnxruntime has its
                    # own copy: dropping ours frees the weights' memory.
                    self.model.network = None  # type: ignore[assignment]  # as above: the ONNX runner has no torch network
            else:
                self.runner = TorchBackend(self.model.network, torch_device)
        self.input_size = self.model.info.architecture.input_size
        self.normaliser = self.model.info.normaliser

    @staticmethod
    def _onnx_model(model, threads: int, device: str) -> tuple[OnnxBackend, LoadedModel]:
        """Without PyTorch: an ONNX file, or the graph a model file carries."""
        if isinstance(model, LoadedModel):
            raise ValueError(f"a loaded model needs PyTorch ({TRAIN_EXTRA_HINT}); pass its file")
        path = Path(model)
        if is_onnx_path(path):
            runner = OnnxBackend.from_file(path, threads, device)
            # No torch network behind an ONNX file; everything else of a
            # loaded model (header, path, hash) is there.
            return runner, LoadedModel(network=None, info=parse_header(path, runner.metadata()), path=path,  # type: ignore[arg-type]
                                       sha256=file_sha256(path),
                                       source_sha256=runner.metadata().get(SOURCE_SHA256_KEY, ""))
        info, graph, sha256 = read_inference_graph(path)
        try:
            runner = OnnxBackend(graph, threads, device)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for every kind of broken graph
            raise ModelFileError(path, f"its ONNX graph is not usable ({one_line(error)})") from None
        if not graph_fits(runner, info):
            raise ModelFileError(path, f"its ONNX graph was made for another architecture than its header declares; "
                                       f"re-save it where PyTorch is installed ({TRAIN_EXTRA_HINT})")
        return runner, LoadedModel(network=None, info=info, path=path, sha256=sha256, graph=graph)  # type: ignore[arg-type]

    def _onnx_runner(self, threads: int) -> OnnxBackend:
        """With PyTorch on the CPU: the graph the model file carries, else an export (cached between runs)."""
        from .export import cached_onnx_bytes

        if self.model.graph is not None:
            try:
                runner = OnnxBackend(self.model.graph, threads)
                if graph_fits(runner, self.model.info):
                    return runner
            except Exception:  # noqa: BLE001 - a damaged graph: export the weights instead
                pass
        try:
            return OnnxBackend(cached_onnx_bytes(self.model), threads)
        except Exception:  # noqa: BLE001 - a damaged cached export: make it again
            return OnnxBackend(cached_onnx_bytes(self.model, rebuild=True), threads)

    @property
    def name(self) -> str:
        return self.model.name

    def raw_maps(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """(B, S, S, 3) uint8 at the model's size -> raw maps (B, S, S), raw scores (B,) and, for a
        model that names defect kinds, their probabilities (B, kinds, S, S)."""
        if isinstance(self.runner, OnnxBackend):
            return self.runner(to_array(batch))
        return self.runner(to_tensor(batch))

    def predict_batch(self, images: list[np.ndarray],
                      photo_shapes: list[tuple[int, int]] | None = None) -> list[Prediction]:
        """Predictions for ``images``; ``photo_shapes``: (height, width) of the photos they are reduced
        copies of (``images.read_image_reduced``), which a model with a scale needs; by default each
        image is its photo."""
        started = time.perf_counter()
        architecture = self.model.info.architecture
        if architecture.scale:
            shapes = photo_shapes or [image.shape[:2] for image in images]
            outputs = [self._tiled(image, shape) for image, shape in zip(images, shapes)]
        else:
            batch = np.stack([resize_for_model(image, self.input_size) for image in images])
            raw_maps, raw_scores, *kind_maps = self.raw_maps(batch)
            outputs = [(raw_map, float(raw_score), kind_maps[0][index] if kind_maps else None)
                       for index, (raw_map, raw_score) in enumerate(zip(raw_maps, raw_scores))]
        elapsed = (time.perf_counter() - started) / len(images)
        predictions = []
        for image, (raw_map, raw_score, kind_map) in zip(images, outputs):
            height, width = image.shape[:2]
            full_size = map_at_image_size(raw_map, height, width)
            predictions.append(
                Prediction(
                    score_map=self.normaliser.pixel(full_size).astype(np.float32),
                    image_score=float(self.normaliser.image(raw_score)),
                    raw_image_score=raw_score,
                    seconds=elapsed,
                    device=self.device,
                    kinds=architecture.kinds,
                    kind_map=kind_map,
                    extend_to_by_kind=self.normaliser.extend_to_by_kind,
                    min_peak=self.normaliser.min_peak,
                )
            )
        return predictions

    def _tiled(self, image: np.ndarray, photo_shape: tuple[int, int]) -> tuple[np.ndarray, float, np.ndarray | None]:
        """The raw map of ``image`` at the model's scale (stitched from tiles), its raw image score
        and, for a model that names kinds, their probabilities there."""
        architecture = self.model.info.architecture
        shape = scaled_shape(photo_shape, architecture.scale)
        tiling = Tiling.of(shape, self.input_size)
        if len(tiling) > MAX_TILES:
            raise ValueError(f"a {photo_shape[1]} x {photo_shape[0]} photo at the model's scale "
                             f"({architecture.scale:g} photo pixels per model pixel) needs {len(tiling)} tiles, more "
                             f"than {MAX_TILES}: the model was trained on smaller photos")
        tiles = tiling.cut(resize_to(image, shape))
        parts = [self.raw_maps(tiles[start : start + TILE_BATCH]) for start in range(0, len(tiles), TILE_BATCH)]
        raw_map = tiling.stitch(np.concatenate([part[0] for part in parts]))
        kind_map = tiling.stitch(np.concatenate([part[2] for part in parts])) if architecture.kinds else None
        return raw_map, pooled_max(raw_map, architecture.score_window), kind_map

    def predict(self, image: np.ndarray, photo_shape: tuple[int, int] | None = None) -> Prediction:
        return self.predict_batch([image], None if photo_shape is None else [photo_shape])[0]
