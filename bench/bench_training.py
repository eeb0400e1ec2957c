"""Training steps per second: the first training's student step, and the anomaly synthesis alone.

    .venv/bin/python bench/bench_training.py [--preset compact] [--input-size 256] [--steps 3] [--batch-size 8] [--compile]

Times ``Trainer.student_step`` (the networks, losses, optimizer and image
draw of ``dsarad train``) in interleaved rounds, with ``--compile`` the same
step under torch.compile beside it; then the synthesis alone, drawing from a
pool of source images (what ``--anomaly-source`` gives) and from the
built-in procedural sources; then the student step taken apart
(``_common.step_part_seconds``: the batch with its synthesis, the forward
pass split by network, the backward pass, the optimiser, the weight
average). The images are Magnetic Tile train-split
normals (dark) when the data set is there, else dark noisy textures.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import (
    cpu_flags_line,
    interleaved,
    machine_line,
    magnetic_tile_images,
    median,
    print_step_parts,
    print_table,
    stderr,
    step_part_seconds,
)

from labelme_dsarad.train.sources import AnomalySources
from labelme_dsarad.train.synthesis import synthesise
from labelme_dsarad.train.trainer import TrainConfig, Trainer

TRAINING_IMAGES = 32


def training_images(folder: Path, size: int) -> list[str]:
    paths = magnetic_tile_images(TRAINING_IMAGES)
    if paths:
        return [str(path) for path in paths]
    rng = np.random.default_rng(0)  # no data set: dark noisy textures stand in
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(TRAINING_IMAGES):
        path = folder / f"normal_{index:02d}.png"
        cv2.imwrite(str(path), rng.integers(10, 60, (size, size), dtype=np.uint8))
        written.append(str(path))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="interleaved timed student steps per row")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--preset", default="compact", choices=["tiny", "compact", "paper"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="PyTorch threads (default: PyTorch's); 1 is steadier on a shared machine")
    parser.add_argument("--compile", action="store_true",
                        help="add a row with the networks under torch.compile (compiling takes minutes)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as train_model runs the steps it times

    def student_trainer(scratch: str) -> Trainer:
        config = TrainConfig(product="bench", images=training_images(Path(scratch) / "images", args.input_size),
                             preset=args.preset, input_size=args.input_size, epochs=1, batch_size=args.batch_size,
                             device=args.device, validation_fraction=0.0)
        built = Trainer(config, Path(scratch) / "run")
        built.prepare_data()
        built.phase = "student"
        built.set_mode()
        return built

    with tempfile.TemporaryDirectory() as scratch:
        trainer = student_trainer(scratch)
        compiled = student_trainer(scratch) if args.compile else None
    if compiled is not None:
        training = compiled.student_training
        # torch.compile returns a Module for a Module; its stubs say Callable.
        training.student = torch.compile(training.student)  # type: ignore[assignment]
        training.segmentation = torch.compile(training.segmentation)  # type: ignore[assignment]
        training.target_encoder = torch.compile(training.target_encoder)  # type: ignore[assignment]

    steps: dict[str, Callable[[], object]] = {"Trainer.student_step": trainer.student_step}
    if compiled is not None:
        steps["the same under torch.compile (first call, which compiles, not timed)"] = compiled.student_step
    stderr(f"student steps: batch {args.batch_size}, {args.input_size}px, {args.preset}; {args.steps} interleaved rounds")
    step_seconds = interleaved(steps, args.steps, log=stderr)

    # A pool of source images (what --anomaly-source gives), then the built-in
    # procedural sources the trainer uses when no folder is given.
    pool = AnomalySources(trainer.architecture.input_size, trainer.images.flip(-1, -2), trainer.images)

    def synthesis_from(anomaly_sources: AnomalySources):
        drawn = anomaly_sources.sample(args.batch_size, trainer.generator, trainer.device)
        return synthesise(trainer.batch(), drawn, trainer.generator, trainer.sources.chroma)

    def finished(run):
        # CUDA runs asynchronously: time the work, not its launch.
        def timed():
            run()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
        return timed

    synthesis = {
        "synthesis from a pool of source images": finished(lambda: synthesis_from(pool)),
        "synthesis from the built-in procedural sources": finished(lambda: synthesis_from(trainer.sources)),
    }
    synthesis_seconds = interleaved(synthesis, max(5, 3 * args.steps))

    rows = [[name, f"{median(values):.3f}", f"{1 / median(values):.3f}"]
            for name, values in {**step_seconds, **synthesis_seconds}.items()]
    print(f"\nTraining on {args.device}, {args.preset}, batch {args.batch_size}, {args.input_size}px; {machine_line()}")
    print(cpu_flags_line())
    print_table(["what (batch of the student step)", "median s", "per second"], rows)
    training = trainer.student_training
    print()
    print_step_parts({"Trainer.student_step": step_part_seconds(
        training, trainer.synthetic_batch, args.steps,
        {"the student": training.student, "the teacher's encoder": training.target_encoder,
         "the U-Net": training.segmentation})})


if __name__ == "__main__":
    main()
