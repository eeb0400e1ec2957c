"""An inference-ready network, and its ONNX export for onnxruntime.

The ONNX file holds student + U-Net + map correction + scoring: ``image``
(B, 3, S, S) float in [0, 1] gives ``raw_map`` (B, S, S) and
``raw_image_score`` (B,), the same two outputs as ``DSARAD.forward``. The
attention is onnxruntime's fused ``com.microsoft.MultiHeadAttention``, so
the file is for onnxruntime. Its ``metadata_props`` carry the model file's
JSON header under the same key, so an ONNX file describes itself
(thresholds, labels, input size) and is read without unpickling anything.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .atomic_write import write_atomically
from .metadata_keys import HEADER_KEY, SOURCE_SHA256_KEY
from .networks import DSARAD, SIDE_MULTIPLE, SpatialAttention, check_input_size

# 17 is the newest opset the TorchScript exporter covers fully and that every
# onnxruntime since 1.11 runs on the CPU.
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("raw_map", "raw_image_score")
KIND_OUTPUT_NAME = "kind_probabilities"  # a third output, of models that name defect kinds

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class LoadedModel(Protocol):
    """What export needs of a ``model_file.LoadedModel`` (model_file writes graphs through this
    module, so this one does not import it)."""

    network: DSARAD
    info: Any  # a ModelInfo
    sha256: str


def fuse_batch_norms(network: ModuleT) -> ModuleT:
    """An eval-mode copy with every BatchNorm folded into the conv before it.

    Inference then runs one conv instead of conv + normalisation + a pass over
    memory; the numbers differ from the unfused network only by rounding.
    """
    fused = copy.deepcopy(network).eval()
    for module in list(fused.modules()):
        if isinstance(module, nn.Sequential):
            for index in range(len(module) - 1):
                conv, norm = module[index], module[index + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module[index] = fuse_conv_bn_eval(conv, norm)
                    module[index + 1] = nn.Identity()
        elif isinstance(module, SpatialAttention) and isinstance(module.out_norm, nn.BatchNorm2d):
            module.out = fuse_conv_bn_eval(module.out, module.out_norm)
            module.out_norm = nn.Identity()
    return fused


def inference_network(network: DSARAD) -> DSARAD:
    """A fused fp32 CPU copy with the memory-light attention; ``network`` is untouched."""
    fused = fuse_batch_norms(network).float().cpu()
    fused.set_explicit_attention(False)
    return fused


@contextlib.contextmanager
def fused_attention_export():
    """Export SDPA as onnxruntime's fused MultiHeadAttention while the block runs.

    The standard ONNX lowering is MatMul, Softmax, MatMul: onnxruntime then
    materialises the 16k x 4k attention matrix (256 MB at 256 px) and the
    whole network runs slower (docs/performance.md); the contrib op never
    holds the matrix whole.
    """
    from torch.onnx import symbolic_helper

    @symbolic_helper.parse_args("v", "v", "v", "v", "f", "b", "v", "b")
    def multi_head_attention(g, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
        if not symbolic_helper._is_none(attn_mask) or is_causal or dropout_p or enable_gqa:
            raise ValueError("the fused ONNX attention covers plain attention only (no mask, dropout or grouping)")
        # SpatialAttention passes one head as (B, 1, L, C); the contrib op takes (B, L, C).
        query, key, value = (symbolic_helper._squeeze_helper(g, tensor, [1]) for tensor in (query, key, value))
        # With no scale given, both default to 1/sqrt(channels).
        scaling = {} if symbolic_helper._is_none(scale) else {"scale_f": symbolic_helper._maybe_get_const(scale, "f")}
        attended = g.op("com.microsoft::MultiHeadAttention", query, key, value, num_heads_i=1, **scaling)
        return symbolic_helper._unsqueeze_helper(g, attended, [1])

    torch.onnx.register_custom_op_symbolic("aten::scaled_dot_product_attention", multi_head_attention, ONNX_OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::scaled_dot_product_attention", ONNX_OPSET)


def onnx_bytes(loaded: LoadedModel, input_size: int | None = None) -> bytes:
    """Serialised ONNX model of ``loaded`` with its header in the metadata.

    The batch axis is dynamic; the declared square side is ``input_size``
    (default: the header's), so onnxruntime can plan for it. The graph itself
    is size-generic, which lets the exporter trace at the smallest valid
    size: tracing runs the network once, and at full size that forward pass
    was most of the export time.
    """
    import onnx

    size = input_size or loaded.info.architecture.input_size
    check_input_size(size)
    network = inference_network(loaded.network)
    output_names = (*OUTPUT_NAMES, KIND_OUTPUT_NAME) if loaded.info.architecture.kinds else OUTPUT_NAMES
    buffer = io.BytesIO()
    with warnings.catch_warnings(), fused_attention_export():
        # The TorchScript exporter is the one that needs no extra packages;
        # its deprecation notice and tracer warnings say nothing about our graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (torch.zeros(1, 3, SIDE_MULTIPLE, SIDE_MULTIPLE),),
            buffer,  # type: ignore[arg-type]  # the stubs say path only; the TorchScript exporter writes to file objects
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes={
                INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAMES[0]: {0: "batch", 1: "height", 2: "width"},
                OUTPUT_NAMES[1]: {0: "batch"},
                **({KIND_OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}} if loaded.info.architecture.kinds else {}),
            },
        )
    proto = onnx.load_from_string(buffer.getvalue())
    input_dims = proto.graph.input[0].type.tensor_type.shape.dim[2:]
    output_dims = proto.graph.output[0].type.tensor_type.shape.dim[1:]
    for dimension in (*input_dims, *output_dims):
        dimension.dim_value = size
    header = loaded.info.to_header()
    if size != loaded.info.architecture.input_size:
        # The header tells a reader what size to feed; a graph exported at
        # another size must say that size, or every run would fail.
        header["architecture"] = {**header["architecture"], "input_size": size}
    # A graph stored inside its own model file (model_file.GRAPH_TENSOR) has no source hash to name.
    set_metadata(proto, {HEADER_KEY: json.dumps(header), **({SOURCE_SHA256_KEY: loaded.sha256} if loaded.sha256 else {})})
    proto.producer_name = "labelme-dsarad"
    return proto.SerializeToString()


def set_metadata(proto, values: dict[str, str]) -> None:
    kept = [entry for entry in proto.metadata_props if entry.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def export_onnx(loaded: LoadedModel, path: os.PathLike | str, input_size: int | None = None) -> Path:
    """Write ``loaded`` as a self-describing ONNX file, atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, onnx_bytes(loaded, input_size))
    return path


# Bumped whenever onnx_bytes would write another graph for the same weights,
# so that cached exports of older code are not reused.
EXPORT_REVISION = 1


def onnx_cache_folder() -> Path:
    """Where exports are kept between runs: ``$DSARAD_CACHE_DIR``, else the user's cache folder."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("DSARAD_CACHE_DIR") or user_cache_dir("labelme-dsarad")) / "onnx"


def cached_onnx_path(loaded: LoadedModel) -> Path | None:
    """The cache file of ``loaded``'s export, keyed by the model file's hash (None: a model with no file)."""
    if not loaded.sha256:
        return None
    key = hashlib.sha256(f"{loaded.sha256}:{torch.__version__}:{ONNX_OPSET}:{EXPORT_REVISION}".encode()).hexdigest()
    return onnx_cache_folder() / f"{key[:32]}.onnx"


def cached_onnx_bytes(loaded: LoadedModel, rebuild: bool = False) -> bytes:
    """``onnx_bytes(loaded)``, from the cache when an earlier run exported the same model file.

    Exporting takes seconds (about 2 at ``compact``, 9 at ``paper``) on every
    start otherwise. The cache is written atomically and is only an
    optimisation: when it cannot be read or written, the export is made here.
    ``rebuild`` ignores a cached copy (one that onnxruntime refused).
    """
    path = cached_onnx_path(loaded)
    if path is not None and not rebuild:
        try:
            return path.read_bytes()
        except OSError:
            pass
    exported = onnx_bytes(loaded)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, exported)
        except OSError:
            pass  # a read-only cache: export again next time
    return exported
