"""How fast a retraining step runs: ``retrain.Retrainer.step`` on random data.

    .venv/bin/python bench/bench_retrain_step.py [--model FILE] [--rounds 5] [--threads 1]

The step as ``dsarad retrain`` takes it (frozen student, the U-Net alone, in
bf16 autocast where the CPU has bf16 units: ``engine.autocast_for``) on 24
random normal and 24 random defect images at the model's size. Each timed
call takes ``corrections.SYNTHETIC_POOL`` steps, so that the pool of
synthetic images is made once per call, as in a real run. Prints seconds
per step and images per second (medians over the rounds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import interleaved, machine_line, median, print_table, stderr

from labelme_dsarad.model.model_file import load_model
from labelme_dsarad.resources import DEFAULT_MODEL
from labelme_dsarad.train.corrections import SYNTHETIC_POOL, Examples
from labelme_dsarad.train.engine import has_bf16_units
from labelme_dsarad.train.retrain import RetrainConfig, Retrainer

IMAGES = 24  # of each kind, normal and defect


def examples(count: int, size: int, generator: torch.Generator, defects: bool) -> Examples:
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    masks = torch.zeros(count, 1, size, size)
    if defects:
        masks[:, :, size // 3 : size // 3 + size // 8, size // 2 : size // 2 + size // 10] = 1.0
    return Examples(images, masks, torch.zeros_like(masks), torch.where(masks > 0, 0, -1), np.full((count, 2), size))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    base = load_model(args.model or DEFAULT_MODEL)
    size = base.info.architecture.input_size
    generator = torch.Generator().manual_seed(0)
    retrainer = Retrainer(base, RetrainConfig(base.info.product, ".", steps=1), torch.device("cpu"), kinds=("kind",))
    retrainer.set_data(examples(IMAGES, size, generator, defects=False), examples(IMAGES, size, generator, defects=True))
    retrainer.training_mode()

    stderr(machine_line())
    seconds = interleaved({"step": lambda: [retrainer.step() for _ in range(SYNTHETIC_POOL)]}, args.rounds, log=stderr)
    step = median(seconds["step"]) / SYNTHETIC_POOL
    batch = retrainer.config.batch_size
    precision = "bf16 autocast" if has_bf16_units() else "full precision (no bf16 units)"
    print(f"\n{args.threads} thread(s), {base.name}, {size} px, {precision}\n")
    print_table(["retraining step", "seconds", "per second"],
                [[f"{batch} images of {size} px", f"{step:.3f}", f"{batch / step:.1f} images"]])


if __name__ == "__main__":
    main()
