"""Training steps per second at `compact` on the CPU: the reference code's step against ours.

    .venv/bin/python bench/bench_training.py [--input-size 256] [--steps 3] [--batch-size 8] [--compile]

Every variant runs ``Trainer.student_step`` (same networks, same losses, same
optimizer, same image draw); they differ in what the DSARAD reference code
does another way:
- baseline: per-sample NumPy/OpenCV synthesis (bench/_reference_synthesis.py)
  stacked into a batch, the explicit attention matrix (at 256 px, 16k x 4k
  per image, kept for the backward pass), and denormal floats left on;
- then each of our changes added in turn, so the table says where the gain
  comes from: denormal flushing, the fused attention (SDPA), and last
  ``Trainer`` as it is, with batched synthesis on the device.
The table also times synthesis alone. The images are Magnetic Tile normals
(dark) when the data set is there. Every variant starts from images already
decoded at the training size; the reference code also decodes from disk
every step, which is left out here (it would only slow the baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import _reference_synthesis as reference
import cv2
import numpy as np
import torch
from _common import interleaved, machine_line, magnetic_tile_images, median, print_table, stderr

from labelme_dsarad.train import trainer as trainer_module
from labelme_dsarad.train.sources import AnomalySources
from labelme_dsarad.train.synthesis import SyntheticBatch, synthesise
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


class ReferenceSources:
    """Stands in for ``AnomalySources``: a NumPy pool of source images drawn per sample."""

    def __init__(self, images: torch.Tensor, seed: int):
        # The product's own normals, flipped, as ours use when no folder is given.
        self.pool = [np.ascontiguousarray(image.permute(1, 2, 0).numpy()[::-1, ::-1]) for image in images.cpu()]
        self.rng = np.random.default_rng(seed)
        self.chroma = 0.0  # read by the trainer, unused by the reference synthesis
    def sample(self, batch: int, generator, device) -> list[np.ndarray]:
        return [self.pool[index] for index in self.rng.integers(0, len(self.pool), batch)]


def reference_synthesise(normal: torch.Tensor, sources: list[np.ndarray], generator, rng: np.random.Generator) -> SyntheticBatch:
    normals = normal.permute(0, 2, 3, 1).cpu().numpy()
    clean, augmented, mask = reference.synthesise_batch(normals, sources, rng)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(normal.device)

    return SyntheticBatch(clean=tensor(clean), augmented=tensor(augmented), mask=tensor(mask))


def set_explicit_attention(trainer: Trainer, explicit: bool) -> None:
    trainer.network.set_explicit_attention(explicit)
    trainer.teacher.encoder.attention.explicit_attention = explicit


@contextlib.contextmanager
def reference_style(trainer: Trainer, sources: ReferenceSources, flush_denormal: bool, explicit_attention: bool):
    """Run the trainer's own step with the reference code's synthesis, attention and float mode swapped in."""
    rng = np.random.default_rng(1)
    saved_sources, saved_synthesise = trainer.sources, trainer_module.synthesise
    # Deliberate stand-ins: the reference's sources and synthesis, duck-typed for the trainer's.
    trainer.sources = sources  # type: ignore[assignment]

    def synthesise_as_reference(normal: torch.Tensor, drawn, generator, chroma: float) -> SyntheticBatch:
        return reference_synthesise(normal, drawn, generator, rng)

    trainer_module.synthesise = synthesise_as_reference  # type: ignore[assignment]
    torch.set_flush_denormal(flush_denormal)
    set_explicit_attention(trainer, explicit_attention)
    try:
        yield
    finally:
        trainer.sources, trainer_module.synthesise = saved_sources, saved_synthesise
        torch.set_flush_denormal(True)
        set_explicit_attention(trainer, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="interleaved timed student steps per variant")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--preset", default="compact", choices=["tiny", "compact", "paper"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the GPU comparison at paper")
    parser.add_argument("--threads", type=int, help="PyTorch threads (default: PyTorch's); 1 is steadier on a shared machine")
    parser.add_argument("--compile", action="store_true",
                        help="add a row with the networks under torch.compile (compiling takes minutes)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

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
    sources = ReferenceSources(trainer.images, seed=2)

    def reference_step(flush_denormal: bool, explicit_attention: bool):
        def step():
            with reference_style(trainer, sources, flush_denormal, explicit_attention):
                trainer.student_step()
        return step

    steps = {
        "baseline: per-sample NumPy synthesis, explicit attention, no denormal flush": reference_step(False, True),
        "baseline + denormal flush": reference_step(True, True),
        "baseline + denormal flush + fused attention (SDPA)": reference_step(True, False),
        "ours: Trainer (all that, and batched synthesis on the device)": trainer.student_step,
    }
    if compiled is not None:
        steps["ours + torch.compile (first call, which compiles, not timed)"] = compiled.student_step
    stderr(f"student steps: batch {args.batch_size}, {args.input_size}px, {args.preset}; {args.steps} interleaved rounds")
    step_seconds = interleaved(steps, args.steps, log=stderr)

    rng = np.random.default_rng(3)
    # Like for like: ours drawing from the same pool of source images as the
    # baseline (what --anomaly-source gives), then with the built-in
    # procedural sources it uses when no folder is given.
    pool = AnomalySources(trainer.architecture.input_size, trainer.images.flip(-1, -2), trainer.images)

    def ours(anomaly_sources: AnomalySources):
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
        "reference synthesis (per sample, NumPy/OpenCV)": finished(lambda: reference_synthesise(
            trainer.batch(), sources.sample(args.batch_size, None, None), None, rng)),
        "ours, same source pool (batched)": finished(lambda: ours(pool)),
        "ours, built-in procedural sources (batched)": finished(lambda: ours(trainer.sources)),
    }
    synthesis_seconds = interleaved(synthesis, max(5, 3 * args.steps))

    rows = []
    for table in (step_seconds, synthesis_seconds):
        base = median(next(iter(table.values())))
        for name, values in table.items():
            rows.append([name, f"{median(values):.3f}", f"{1 / median(values):.3f}", f"{base / median(values):.2f}x"])
    print(f"\nTraining on {args.device}, {args.preset}, batch {args.batch_size}, {args.input_size}px; {machine_line()}")
    print_table(["what (student step, then synthesis alone)", "median s", "per second", "vs first row of its kind"], rows)


if __name__ == "__main__":
    main()
