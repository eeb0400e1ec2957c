"""How fast a retraining step runs, and where its time goes: ``retrain.Retrainer.step`` on random data.

    .venv/bin/python bench/bench_retrain_step.py [--model FILE] [--rounds 5] [--threads 2]

The step as ``dsarad retrain`` takes it (frozen student, the U-Net alone,
in bf16 autocast where the CPU has bf16 units: ``engine.autocast_for``) on
24 random normal and 24 random defect images at the model's size, for each
recipe in ``RECIPES``: today's and its candidates. Each timed call takes
``corrections.SYNTHETIC_POOL`` steps, so that the pool of synthetic images
is made once per call, as in a real run.
Prints seconds per step and images per second (medians over interleaved
rounds), then each recipe's step taken apart (``_common.step_part_seconds``)
and the synthetic pool's two costs, synthesis and the student's
reconstructions. The CPU's flags come first: the reference class is two
AVX2 cores with no AVX-512 or AMX (on other CPUs, run it under
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, which also turns the
bf16 path off: ``engine.has_bf16_units``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import cpu_flags_line, interleaved, machine_line, median, print_step_parts, print_table, stderr, step_part_seconds

from labelme_dsarad.model.model_file import LoadedModel, load_model
from labelme_dsarad.resources import DEFAULT_MODEL
from labelme_dsarad.train.corrections import SYNTHETIC_POOL, SYNTHETIC_USES, Examples, reconstruct
from labelme_dsarad.train.retrain import RetrainConfig, Retrainer
from labelme_dsarad.train.synthesis import synthesise

IMAGES = 24  # of each kind, normal and defect

# name: what differs from ``RetrainConfig``'s defaults
RECIPES = {
    "today: batch 8": {},
    "batch 4": {"batch_size": 4},
}


def examples(count: int, size: int, generator: torch.Generator, defects: bool) -> Examples:
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    masks = torch.zeros(count, 1, size, size)
    if defects:
        masks[:, :, size // 3 : size // 3 + size // 8, size // 2 : size // 2 + size // 10] = 1.0
    return Examples(images, masks, torch.zeros_like(masks), torch.where(masks > 0, 0, -1), np.full((count, 2), size),
                    np.full(count, defects))


def retrainer(base: LoadedModel, changes: dict) -> Retrainer:
    generator = torch.Generator().manual_seed(0)
    size = base.info.architecture.input_size
    built = Retrainer(base, replace(RetrainConfig(base.info.product, ".", steps=1), **changes), torch.device("cpu"),
                      kinds=("kind",))
    built.set_data(examples(IMAGES, size, generator, defects=False), examples(IMAGES, size, generator, defects=True))
    built.training_mode()
    return built


def pool_seconds(built: Retrainer, rounds: int) -> tuple[float, float]:
    """Seconds to synthesise one pool of synthetic images, and for the student to reconstruct it."""
    batches, device = built.batches, built.device
    count = max(batches.synthetic_count * SYNTHETIC_POOL // SYNTHETIC_USES, 1)
    normal = batches.normals[:count].float() / 255.0
    made: list = []

    def synthesis() -> None:
        drawn = batches.sources.sample(count, built.generator, device)
        made[:] = [synthesise(normal, drawn, built.generator, batches.sources.chroma, anomaly_probability=1.0)]

    synthesis()
    seconds = interleaved({"synthesis": synthesis,
                           "reconstructions": lambda: reconstruct(batches.student, made[0].augmented, batches.autocast)},
                          rounds)
    return median(seconds["synthesis"]), median(seconds["reconstructions"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (a retrain uses all the cores)")
    parser.add_argument("--part-steps", type=int, default=16, help="steps timed for the table of parts")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    base = load_model(args.model or DEFAULT_MODEL)
    size = base.info.architecture.input_size
    built = {name: retrainer(base, changes) for name, changes in RECIPES.items()}

    stderr(machine_line())
    stderr(cpu_flags_line())
    def pool_of_steps(recipe: Retrainer) -> Callable[[], object]:
        return lambda: [recipe.step() for _ in range(SYNTHETIC_POOL)]

    seconds = interleaved({name: pool_of_steps(recipe) for name, recipe in built.items()}, args.rounds, log=stderr)
    print(f"\n{machine_line()}\n{cpu_flags_line()}\n{args.threads} thread(s), {base.name}, {size} px\n")
    rows = []
    for name, r in built.items():
        step = median(seconds[name]) / SYNTHETIC_POOL
        batch = r.config.batch_size
        rows.append([name, f"{batch} images of {size} px", f"{step:.3f}", f"{1 / step:.2f}", f"{batch / step:.1f}"])
    print_table(["retraining step", "batch", "seconds", "steps per second", "images per second"], rows)
    print()
    print_step_parts({name: step_part_seconds(r.training, r.batches, args.part_steps) for name, r in built.items()})
    today = next(iter(built.values()))
    synthesis, reconstructions = pool_seconds(today, args.rounds)
    count = max(today.batches.synthetic_count * SYNTHETIC_POOL // SYNTHETIC_USES, 1)
    print(f"\nthe batch's synthetic pool of {count} images ({SYNTHETIC_POOL} steps' worth): synthesis "
          f"{synthesis * 1000:.0f} ms, the student's reconstructions {reconstructions * 1000:.0f} ms")


if __name__ == "__main__":
    main()
