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
