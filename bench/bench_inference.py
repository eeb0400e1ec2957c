"""Per-image CPU latency, batch 1: plain eager PyTorch against our fast paths.

    .venv/bin/python bench/bench_inference.py [--quick] [--presets compact paper]

Baseline: eager PyTorch as the paper's code runs it, with the explicit
16k x 4k attention matrix and unfused BatchNorm. Candidates: our PyTorch path
(BatchNorm folded into the convs, channels-last, SDPA) and the ONNX export in
onnxruntime, the two backends ``Predictor`` chooses between, and for
comparison the same export with the standard MatMul-Softmax-MatMul lowering
of the attention instead of onnxruntime's fused op, and the export of a
retrained model, whose U-Net runs over the four mirror images of its input
(``Architecture.flip_average``; compared with the same network in eager
PyTorch): its cost against the fused export is what the better maps of a
retrained model cost at inference. All take the
same preprocessed 256x256 tensor (a Magnetic Tile image when the data set is
there), so resizing, which all share, is left out. Maps are compared against
the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from dataclasses import replace
from unittest import mock

import numpy as np
import torch
from _common import interleaved, machine_line, magnetic_tile_images, median, print_table, random_model, stderr

from labelme_dsarad.model import export
from labelme_dsarad.model.export import onnx_bytes
from labelme_dsarad.model.images import read_image
from labelme_dsarad.model.inference import OnnxBackend, TorchBackend, inference_threads, resize_for_model, to_tensor
from labelme_dsarad.model.model_file import LoadedModel


def input_tensor(size: int) -> torch.Tensor:
    """A real, dark product image where we have one: denormals show up on those."""
    paths = magnetic_tile_images(1)
    if paths:
        image = read_image(paths[0])
    else:
        image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return to_tensor(resize_for_model(image, size)[None])


def with_flip_average(loaded: LoadedModel) -> LoadedModel:
    """A copy of ``loaded`` that maps as a retrained model does: over the four mirror images."""
    network = copy.deepcopy(loaded.network)
    network.architecture = replace(network.architecture, flip_average=True)
    return replace(loaded, network=network, info=replace(loaded.info, architecture=network.architecture))


def eager(network: torch.nn.Module, tensor: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        raw_map, raw_score = network(tensor)
    return raw_map.numpy(), raw_score.numpy()


def bench_preset(preset: str, size: int, rounds: int) -> list[list[str]]:
    loaded = random_model(preset, size)
    tensor = input_tensor(size)

    baseline = loaded.network
    baseline.set_explicit_attention(True)

    def run_baseline():
        return eager(baseline, tensor)

    fast_torch = TorchBackend(loaded.network, torch.device("cpu"))
    started = time.perf_counter()
    fast_onnx = OnnxBackend(onnx_bytes(loaded), inference_threads())
    export_seconds = time.perf_counter() - started
    with mock.patch.object(export, "fused_attention_export", contextlib.nullcontext):
        standard_onnx = OnnxBackend(onnx_bytes(loaded), inference_threads())
    mirrored = with_flip_average(loaded)
    mirrored_onnx = OnnxBackend(onnx_bytes(mirrored), inference_threads())
    mirror_name = "onnxruntime (fused export), U-Net over 4 mirror images"
    runs = {
        "eager, explicit attention, unfused BN (baseline)": run_baseline,
        "torch: fused BN, channels-last, SDPA": lambda: fast_torch(tensor),
        "onnxruntime (fused export)": lambda: fast_onnx(tensor),
        "onnxruntime, standard attention lowering": lambda: standard_onnx(tensor),
        mirror_name: lambda: mirrored_onnx(tensor),
    }
    reference = run_baseline()[0]
    mirrored.network.set_explicit_attention(True)
    references = {name: eager(mirrored.network, tensor)[0] if name == mirror_name else reference for name in runs}
    differences = {name: float(np.abs(run()[0] - references[name]).max()) for name, run in runs.items()}
    stderr(f"{preset}: ONNX export + session took {export_seconds:.1f} s; timing {rounds} interleaved rounds")
    seconds = interleaved(runs, rounds, log=stderr)
    base = median(seconds[next(iter(runs))])
    return [
        [preset, name, f"{median(values) * 1000:.0f}", f"{min(values) * 1000:.0f}", f"{base / median(values):.2f}x",
         f"{differences[name]:.1e}"]
        for name, values in seconds.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (3 at compact, 2 at paper)")
    parser.add_argument("--presets", nargs="+", default=["compact", "paper"], choices=["tiny", "compact", "paper"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, help="interleaved rounds per preset (default 7 at compact, 3 at paper)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # every path flushes; the comparison is about the networks
    torch.set_num_threads(inference_threads())
    rows = []
    for preset in args.presets:
        rounds = args.rounds or {"paper": 2 if args.quick else 3}.get(preset, 3 if args.quick else 7)
        rows += bench_preset(preset, args.size, rounds)
    print(f"\nCPU inference, {args.size}x{args.size}, batch 1; {machine_line()}")
    print_table(["preset", "path", "median ms", "min ms", "speed-up (medians)", "max |map - baseline|"], rows)


if __name__ == "__main__":
    main()
