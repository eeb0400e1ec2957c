"""Does an int8 onnxruntime model pay on the CPU? fp32 export against static int8.

    .venv/bin/python bench/bench_int8.py [--model FILE] [--size 256] [--rounds 5]

Quantises the model's ONNX export with onnxruntime's static quantisation
(QDQ, per-channel int8 weights, uint8 activations calibrated on train-split
Magnetic Tile normals; the fused attention stays fp32), then times both
graphs on the same image and compares their maps. We ship int8 only if it is
clearly faster; this benchmark is how that was decided.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import interleaved, machine_line, magnetic_tile_images, median, print_table, stderr

from labelme_dsarad.model.export import onnx_bytes
from labelme_dsarad.model.images import read_image
from labelme_dsarad.model.inference import OnnxBackend, inference_threads, resize_for_model, to_tensor
from labelme_dsarad.model.model_file import load_model
from labelme_dsarad.resources import DEFAULT_MODEL

CALIBRATION_IMAGES = 32
COMPARISON_IMAGES = 16


def main() -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the bundled model)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    paths = magnetic_tile_images(CALIBRATION_IMAGES + COMPARISON_IMAGES)
    if len(paths) < CALIBRATION_IMAGES + COMPARISON_IMAGES:
        raise SystemExit("needs the Magnetic Tile data set for calibration; set DSARAD_MTD_ROOT")
    torch.set_flush_denormal(True)
    loaded = load_model(args.model or DEFAULT_MODEL)
    inputs = [to_tensor(resize_for_model(read_image(path), args.size)[None]) for path in paths]
    calibration, comparison = inputs[:CALIBRATION_IMAGES], inputs[CALIBRATION_IMAGES:]

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(calibration)

        def get_next(self):
            tensor = next(self.remaining, None)
            return None if tensor is None else {"image": tensor.numpy().copy()}

    with tempfile.TemporaryDirectory() as scratch:
        fp32_path, prepared_path, int8_path = (Path(scratch) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32_path.write_bytes(onnx_bytes(loaded, args.size))
        quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)
        stderr(f"calibrating on {CALIBRATION_IMAGES} train-split images")
        quantize_static(str(prepared_path), str(int8_path), Calibration(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        fp32 = OnnxBackend(fp32_path.read_bytes(), inference_threads())
        int8 = OnnxBackend(int8_path.read_bytes(), inference_threads())

    differences = np.array([np.abs(fp32(tensor)[0] - int8(tensor)[0]) for tensor in comparison])
    seconds = interleaved({"onnxruntime fp32": lambda: fp32(comparison[0]),
                           "onnxruntime static int8": lambda: int8(comparison[0])}, args.rounds, log=stderr)
    base = median(seconds["onnxruntime fp32"])
    print(f"\n{loaded.info.architecture.preset} at {args.size}x{args.size}, batch 1; {machine_line()}")
    print_table(["path", "median ms", "speed-up"],
                [[name, f"{median(values) * 1000:.0f}", f"{base / median(values):.2f}x"] for name, values in seconds.items()])
    print(f"int8 against fp32 over {COMPARISON_IMAGES} train-split images: max |map difference| "
          f"{differences.max():.3f}, mean {differences.mean():.4f}")


if __name__ == "__main__":
    main()
