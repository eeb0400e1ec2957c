"""What the benchmarks share: interleaved timing, the machine line, test models.

Timings are only ever compared within one process on the same inputs: the
baseline and the candidates run in turn, round after round, so a load that
comes and goes (another job on the machine) slows all of them alike. Medians
over rounds, and the ratio of medians, are what the tables report.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def machine_line() -> str:
    """CPU model, cores and the load when the benchmark started (so a reader sees it)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"{gpu}; load average {load} (1/5/15 min)")


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each run, calling them in turn ``rounds`` times after a warm-up."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
        if log is not None:
            log(f"  round {index + 1}/{rounds}: " + ", ".join(f"{name} {seconds[name][-1]:.3f}s" for name in runs))
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    print(line.format(*headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line.format(*row))


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def magnetic_tile_images(count: int) -> list[Path]:
    """The first ``count`` train-split Magnetic Tile normals, or [] when the data set is absent.

    Train split only: benchmarks take training steps on these, and the test
    split is never trained on (DATASET.md).
    """
    from dataset_splits import default_mtd_root

    from labelme_dsarad.train.datasets import mtd_train_images

    root = default_mtd_root()
    return mtd_train_images(root)[:count] if root is not None else []


def random_model(preset: str, input_size: int = 256, seed: int = 0):
    """A LoadedModel of the tests' comparison network (tests/comparison_network.py)."""
    from labelme_dsarad.model.model_file import LoadedModel, ModelInfo
    from labelme_dsarad.model.scoring import ScoreNormaliser

    sys.path.insert(0, str(REPO))  # tests/ is a package at the repository root
    from tests.comparison_network import perturbed_network

    network = perturbed_network(preset, input_size, seed)
    info = ModelInfo(architecture=network.architecture, product="bench", labels=["defect"],
                     normaliser=ScoreNormaliser(0.5, 0.5, {"method": "benchmark"}))
    return LoadedModel(network=network, info=info, path=None, sha256="")


CPU_FLAGS = ("avx2", "avx512_f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_flags_line() -> str:
    """The CPU's vector units as PyTorch sees them (``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA``
    limit what PyTorch and oneDNN use, not what this line lists), and whether bf16 autocast is on."""
    import torch

    from labelme_dsarad.train.engine import has_bf16_units

    capabilities = torch.cpu.get_capabilities()
    present = [flag for flag in CPU_FLAGS if capabilities.get(flag)]
    limits = ", ".join(f"{name}={os.environ[name]}" for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
                       if name in os.environ)
    return (f"CPU flags: {' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS)}; "
            f"ATen uses {torch.backends.cpu.get_cpu_capability()}{'; ' + limits if limits else ''}; "
            f"bf16 autocast {'on' if has_bf16_units() else 'off'}")


STEP_PARTS = ("batch: draw, synthesis, reconstructions", "forward and loss", "backward", "optimiser", "weight average")


def step_part_seconds(training, draw_batch: Callable[[], Any], steps: int,
                      forward_parts: dict[str, Any] | None = None) -> dict[str, float]:
    """Seconds per step of each part of ``engine.StudentTraining.step`` (``STEP_PARTS``), taken apart
    as the step takes them, over ``steps`` steps after as many warm-up steps. ``forward_parts``
    (name: module) splits the forward pass further by the modules' own forward time."""
    import torch

    from labelme_dsarad.train.engine import objective

    on_cuda = next(training.segmentation.parameters()).device.type == "cuda"

    def now() -> float:  # CUDA runs asynchronously: time the work, not its launch
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    within: dict[str, float] = {name: 0.0 for name in forward_parts or {}}
    handles = []
    for name, module in (forward_parts or {}).items():
        started: list[float] = []
        handles.append(module.register_forward_pre_hook(lambda *_, s=started: s.append(now())))
        handles.append(module.register_forward_hook(
            lambda *_, s=started, n=name: within.__setitem__(n, within[n] + now() - s.pop())))
    totals = dict.fromkeys(STEP_PARTS, 0.0)
    try:
        for index in range(2 * steps):
            if index == steps:
                totals = dict.fromkeys(STEP_PARTS, 0.0)
                within.update(dict.fromkeys(within, 0.0))
            marks = [now()]
            batch = draw_batch()
            marks.append(now())
            with training.autocast():
                loss, _ = objective(training.student, training.segmentation, training.target_encoder, batch)
            marks.append(now())
            training.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            marks.append(now())
            training.optimizer.step()
            marks.append(now())
            training.average.update_parameters(training.averaged)
            marks.append(now())
            for name, begin, end in zip(STEP_PARTS, marks, marks[1:]):
                totals[name] += end - begin
            del loss
    finally:
        for handle in handles:
            handle.remove()
    parts = {name: value / steps for name, value in totals.items()}
    return {**parts, **{f"  of which {name}": value / steps for name, value in within.items()}}


def print_step_parts(columns: dict[str, dict[str, float]]) -> None:
    """One row per part, one column per configuration: milliseconds and share of the step."""
    names = list(next(iter(columns.values())))
    rows = []
    for name in [*names, "whole step"]:
        row = [name]
        for parts in columns.values():
            whole = sum(value for key, value in parts.items() if not key.startswith("  of which"))
            value = whole if name == "whole step" else parts[name]
            row.append(f"{value * 1000:.0f} ms ({value / whole:.0%})")
        rows.append(row)
    print_table(["part of a step", *columns], rows)
