"""Where a retraining step's time goes: today's step (frozen student, U-Net only) against the earlier ones.

    .venv/bin/python bench/bench_retrain_step.py [--model FILE] [--rounds 5] [--threads 1]

All run in this process on the same random data, in turn, round after round
(``_common.interleaved``); each U-Net-only call takes ``SYNTHETIC_POOL``
steps, so that the pool of synthetic images is made once per call, as in a
real run:

- ``student and U-Net, 8 images``: the earlier retraining step, which trained
  the student too (distilled toward a frozen copy of its starting encoder)
  on 8 whole images at the model's size;
- ``U-Net only, NCHW``: ``retrain.Retrainer``'s step, 8 whole images with
  the student frozen, its U-Net in PyTorch's default memory layout, in full
  precision, the synthetic image of each step made and reconstructed alone;
- ``channels-last``: the same with the U-Net in channels-last;
- ``+ synthetic images pooled``: made and reconstructed ``SYNTHETIC_POOL``
  steps' worth at a time;
- ``+ bf16 autocast``: ``engine.autocast_for``: bf16 on CPUs with bf16
  units (AMX or AVX-512 BF16); elsewhere it is full precision, and this row
  equals the one above;
- ``+ the U-Net's weights alone averaged, all at once``: the
  exported moving average (``engine.StudentTraining``) follows the U-Net
  only, in a few fused operations (``engine.average_step``); the rows above
  average the whole network each step, the frozen student's weights too,
  tensor by tensor.
- ``+ the student's reconstructions in channels-last and the step's
  precision``: ``corrections.reconstruct`` under the step's autocast,
  the student in channels-last; the rows above reconstruct in full
  precision and PyTorch's default layout.
- ``+ fused Adam, each synthetic image used twice (today)``: one Adam kernel
  for all the U-Net's tensors, and ``corrections.SYNTHETIC_USES``; the rows
  above step Adam tensor by tensor and use each synthetic image once.

Then the parts of the earlier step, timed alone: the student's forward and
backward pass, the anchor's forward pass, the U-Net's forward and backward
pass. Prints seconds per step, images per second, and the ratio.
"""

from __future__ import annotations

import argparse
import copy
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from _common import interleaved, machine_line, median, print_table, stderr
from torch.optim.swa_utils import AveragedModel

from labelme_dsarad.model.model_file import load_model
from labelme_dsarad.resources import DEFAULT_MODEL
from labelme_dsarad.train.corrections import SYNTHETIC_POOL, SYNTHETIC_USES, Examples
from labelme_dsarad.train.engine import StudentTraining, TrainingBatch, average_decay, has_bf16_units
from labelme_dsarad.train.retrain import RetrainConfig, Retrainer

EARLIER_BATCH = 8


def examples(count: int, size: int, generator: torch.Generator, defects: bool) -> Examples:
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    masks = torch.zeros(count, 1, size, size)
    if defects:
        masks[:, :, size // 3 : size // 3 + size // 8, size // 2 : size // 2 + size // 10] = 1.0
    return Examples(images, masks, torch.zeros_like(masks), torch.where(masks > 0, 0, -1), np.full((count, 2), size))


def earlier_average(averaged: torch.Tensor, current: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
    """The moving average as it was: tensor by tensor, over the whole network, the frozen student too."""
    decay = average_decay(steps)
    return decay * averaged + (1.0 - decay) * current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cpu")
    base = load_model(args.model or DEFAULT_MODEL)
    size = base.info.architecture.input_size
    generator = torch.Generator().manual_seed(0)

    normals, defects = examples(24, size, generator, defects=False), examples(24, size, generator, defects=True)
    def full_precision():
        return torch.autocast("cpu", enabled=False)

    variants = {}
    for name, layout, pooled, autocast in (("nchw", torch.contiguous_format, False, full_precision),
                                           ("channels_last", torch.channels_last, False, full_precision),
                                           ("pooled", torch.channels_last, True, full_precision),
                                           ("bf16", torch.channels_last, True, None),
                                           ("averaged", torch.channels_last, True, None),
                                           ("reconstructed", torch.channels_last, True, None),
                                           ("today", torch.channels_last, True, None)):
        retrainer = Retrainer(base, RetrainConfig(base.info.product, ".", steps=1), device, kinds=("kind",))
        retrainer.network.segmentation.to(memory_format=layout)  # type: ignore[call-overload]
        if name != "today":
            retrainer.optimizer = torch.optim.Adam(retrainer.network.segmentation.parameters(),
                                                   lr=retrainer.config.learning_rate)
            retrainer.training = StudentTraining(retrainer.network, None, retrainer.optimizer,
                                                 autocast or retrainer.autocast)
        if name not in ("reconstructed", "today"):
            retrainer.network.student.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
            retrainer.autocast = nullcontext
        if name not in ("averaged", "reconstructed", "today"):
            retrainer.training.averaged = retrainer.network
            retrainer.training.average = AveragedModel(retrainer.network, avg_fn=earlier_average, use_buffers=True)
        retrainer.set_data(normals, defects)
        retrainer.batches.pool_steps = SYNTHETIC_POOL if pooled else 1
        retrainer.batches.synthetic_uses = SYNTHETIC_USES if name == "today" else 1
        retrainer.training_mode()
        variants[name] = retrainer

    earlier = copy.deepcopy(base.network).float().train()
    anchor = copy.deepcopy(base.network.student.encoder).eval()
    optimizer = torch.optim.Adam([*earlier.student.parameters(), *earlier.segmentation.parameters()], lr=1e-4)
    earlier_training = StudentTraining(earlier, anchor, optimizer, full_precision)
    earlier_training.average = AveragedModel(earlier, avg_fn=earlier_average, use_buffers=True)
    images = torch.rand(EARLIER_BATCH, 3, size, size, generator=generator)
    masks = (torch.rand(EARLIER_BATCH, 1, size, size, generator=generator) > 0.99).float()
    earlier_batch = TrainingBatch(inputs=images, masks=masks, clean=images[: EARLIER_BATCH * 3 // 4])

    def student_pass() -> None:
        reconstruction, _ = earlier.student(images)
        reconstruction.mean().backward()

    def anchor_pass() -> None:
        with torch.no_grad():
            anchor(images[: EARLIER_BATCH * 3 // 4])

    def u_net_pass() -> None:
        earlier.segmentation(torch.cat([images, images], dim=1)).mean().backward()

    def pool_of_steps(retrainer: Retrainer):
        return lambda: [retrainer.step() for _ in range(SYNTHETIC_POOL)]

    stderr(machine_line())
    steps = interleaved({"earlier": lambda: earlier_training.step(earlier_batch),
                         **{name: pool_of_steps(retrainer) for name, retrainer in variants.items()}},
                        args.rounds, log=stderr)
    parts = interleaved({"student": student_pass, "anchor": anchor_pass, "u_net": u_net_pass}, args.rounds, log=stderr)
    earlier_seconds = median(steps["earlier"])
    batch = variants["today"].config.batch_size
    rows = [[f"student and U-Net, {EARLIER_BATCH} images of {size} px", f"{earlier_seconds:.3f}",
             f"{EARLIER_BATCH / earlier_seconds:.1f} images", "1.00x"]]
    for name, title in (("nchw", f"U-Net only, {batch} images of {size} px, NCHW"),
                        ("channels_last", "channels-last"), ("pooled", "+ synthetic images pooled"),
                        ("bf16", "+ bf16 autocast where the CPU has bf16 units"),
                        ("averaged", "+ the U-Net's weights alone averaged, all at once"),
                        ("reconstructed", "+ the student's reconstructions in channels-last at the step's precision"),
                        ("today", "+ fused Adam, each synthetic image used twice (today)")):
        seconds = median(steps[name]) / SYNTHETIC_POOL
        rows.append([title, f"{seconds:.3f}", f"{batch / seconds:.1f} images", f"{earlier_seconds / seconds:.2f}x"])
    bf16 = "bf16 autocast" if has_bf16_units() else "no bf16 units: full precision"
    print(f"\n{args.threads} thread(s), {base.name}, today: {bf16}\n")
    print_table(["retraining step", "seconds", "per second", "steps per minute vs earlier"], rows)
    print("\nparts of the earlier step:")
    print_table(["part", "seconds", "share of the step"],
                [[name, f"{median(values):.3f}", f"{median(values) / earlier_seconds:.0%}"]
                 for name, values in (("student forward + backward", parts["student"]),
                                      ("anchor forward", parts["anchor"]),
                                      ("U-Net forward + backward", parts["u_net"]))])


if __name__ == "__main__":
    main()
