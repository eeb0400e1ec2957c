"""The plugin's start: from launching the process to the first suggestions on screen.

    .venv/bin/python bench/bench_startup.py [--model FILE] [--rounds 3] [--python OTHER_PYTHON ...]

Each round starts a fresh process per Python (this one first, then each
``--python``, e.g. a review station's venv without PyTorch) that builds
LabelMe's window with the panel (offscreen), opens a bundled sample and
presses Detect, with an empty export cache; they take turns, and the table
reports medians and their ratio to the first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, machine_line, median, print_table, stderr

CHILD = r"""
import time
started = time.perf_counter()
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qtpy import QtWidgets
app = QtWidgets.QApplication([])
from labelme_dsarad._labelme_adapter import install_qsettings_sandbox, main_window_class
MainWindow = main_window_class()
from labelme_dsarad.panel import ModelOption, attach_panel
install_qsettings_sandbox(sys.argv[3])
window = MainWindow(config_file=None, config_overrides={"auto_save": False})
panel = attach_panel(window, [ModelOption("model", sys.argv[1])])
shown = []
panel.suggestions_shown.connect(lambda path, count: shown.append(count))
panel.adapter.open_file(sys.argv[2])
while panel.model is None:
    app.processEvents(); time.sleep(0.005)
panel.view.detect_action.trigger()
while not shown:
    app.processEvents(); time.sleep(0.005)
print(f"{time.perf_counter() - started:.3f}")
panel.shutdown()
"""


def one_start(python: str, model: Path, image: Path, cache: Path, scratch: Path) -> float:
    environment = {**os.environ, "DSARAD_CACHE_DIR": str(cache)}
    result = subprocess.run([python, "-c", CHILD, str(model), str(image), str(scratch / "qsettings")],
                            env=environment, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


DESCRIBE = ("import importlib.util, platform; from importlib.metadata import version; "
            "print(f'Python {platform.python_version()}, LabelMe {version(\"labelme\")}, ' + "
            "(f'torch {version(\"torch\")}' if importlib.util.find_spec('torch') else 'no torch'))")


def describe(python: str) -> str:
    return subprocess.run([python, "-c", DESCRIBE], capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "resources" / "models" / "magnetic_tile_compact.safetensors")
    parser.add_argument("--image", type=Path, default=REPO / "resources" / "samples" / "blowhole_exp1_num_108719.jpg")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", nargs="*", default=[], help="other interpreters to start the plugin with")
    args = parser.parse_args(argv)
    stderr(machine_line())
    pythons = [sys.executable, *args.python]
    names = [describe(python) for python in pythons]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for index in range(args.rounds):
            for python, name in zip(pythons, names):
                seconds[name].append(one_start(python, args.model, args.image, folder / f"cache{index}", folder))
                stderr(f"round {index + 1}: {name}: {seconds[name][-1]:.2f} s")
    first = median(seconds[names[0]])
    print_table(["install", "launch to first suggestions (median)", "ratio"],
                [[name, f"{median(values):.2f} s", f"{median(values) / first:.2f}x"] for name, values in seconds.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
