"""`dsarad predict` over a folder, end to end, against the pure inference rate.

    .venv/bin/python bench/bench_predict.py [--images 200] [--quick]

Copies Magnetic Tile normals into a temporary folder and runs
``pipeline.predict_paths`` (decoding, inference, polygons, JSON writing) over
them, and ``Predictor.predict`` over the same images already decoded in
memory. Both use one Predictor, built beforehand and not timed. The two
alternate chunk by chunk, so a load that comes and goes hits both alike. The
ratio of the rates says how well the rest of the pipeline hides behind
inference (target: at least 0.9).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import machine_line, magnetic_tile_images, print_table, random_model, stderr

from labelme_dsarad.model.images import read_image
from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.model_file import save_model
from labelme_dsarad.pipeline import PredictOptions, predict_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=50, help="images per alternation")
    parser.add_argument("--quick", action="store_true", help="40 images in chunks of 20")
    parser.add_argument("--preset", default="compact", choices=["tiny", "compact", "paper"])
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    count, chunk = (40, 20) if args.quick else (args.images, args.chunk)
    sources = magnetic_tile_images(count)
    if len(sources) < count:
        raise SystemExit(f"need {count} Magnetic Tile images, found {len(sources)}; set DSARAD_MTD_ROOT")

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        folder = scratch / "images"
        folder.mkdir()
        paths = [Path(shutil.copy(source, folder / source.name)) for source in sources]
        loaded = random_model(args.preset)
        model_path = scratch / "model.safetensors"
        save_model(model_path, loaded.network, loaded.info)
        started = time.perf_counter()
        predictor = Predictor(model_path, backend=args.backend)
        stderr(f"predictor ({predictor.backend}) ready in {time.perf_counter() - started:.1f} s")
        decoded = [read_image(path) for path in paths]

        pure_seconds = pipeline_seconds = 0.0
        for start in range(0, count, chunk):
            started = time.perf_counter()
            for index in range(start, min(start + chunk, count), args.batch_size):
                predictor.predict_batch(decoded[index : min(index + args.batch_size, start + chunk, count)])
            pure_seconds += time.perf_counter() - started

            out_dir = scratch / f"labels_{start}"
            options = PredictOptions(out_dir=out_dir, batch_size=args.batch_size, skip_done=False)
            out_dir.mkdir()
            summary = predict_paths(paths[start : start + chunk], None, options, predictor=predictor)
            if summary.failures or summary.predicted != len(paths[start : start + chunk]):
                raise SystemExit(f"pipeline failed: {summary.describe()}")
            pipeline_seconds += summary.seconds
            last = min(start + chunk, count) - 1
            stderr(f"  images {start}-{last}: pure {pure_seconds:.1f} s, pipeline {pipeline_seconds:.1f} s so far")
        written = sum(1 for _ in scratch.glob("labels_*/*.json"))

    pure_rate, pipeline_rate = count / pure_seconds, count / pipeline_seconds
    print(f"\n{count} Magnetic Tile images, {args.preset}, backend {predictor.backend}, batch {args.batch_size}; "
          f"{written} label files written; {machine_line()}")
    print_table(
        ["what", "seconds", "images/s", "vs pure inference"],
        [
            ["pure inference (Predictor.predict on decoded images)", f"{pure_seconds:.1f}", f"{pure_rate:.2f}", "1.00"],
            ["dsarad predict pipeline (decode, infer, polygons, JSON)", f"{pipeline_seconds:.1f}", f"{pipeline_rate:.2f}",
             f"{pipeline_rate / pure_rate:.2f}"],
        ],
    )


if __name__ == "__main__":
    main()
