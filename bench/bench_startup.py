"""The plugin's start: from launching the process to the first suggestions on screen.

    .venv/bin/python bench/bench_startup.py [--model FILE] [--rounds 3]

Each round starts two fresh processes that build LabelMe's window with the
panel (offscreen), open a bundled sample and press Detect: one with an empty
export cache (a model's first start: export it to ONNX, then run it) and one
with the export the first round's first start left in its cache. They take
turns, and the table reports medians and their ratio.
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
from labelme.app import MainWindow
from labelme_dsarad._labelme_adapter import install_qsettings_sandbox
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


def one_start(model: Path, image: Path, cache: Path, scratch: Path) -> float:
    environment = {**os.environ, "DSARAD_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", CHILD, str(model), str(image), str(scratch / "qsettings")],
                            env=environment, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "resources" / "models" / "magnetic_tile_compact.safetensors")
    parser.add_argument("--image", type=Path, default=REPO / "resources" / "samples" / "blowhole_exp1_num_108719.jpg")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    stderr(machine_line())
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        warm_cache = folder / "cold0"  # the first start without a cache leaves the export there
        for index in range(args.rounds):
            cold.append(one_start(args.model, args.image, folder / f"cold{index}", folder))
            warm.append(one_start(args.model, args.image, warm_cache, folder))
            stderr(f"round {index + 1}: no cache {cold[-1]:.2f} s, cached export {warm[-1]:.2f} s")
    print_table(["start", "launch to first suggestions (median)", "ratio"],
                [["export made at start (empty cache)", f"{median(cold):.2f} s", "1.00x"],
                 ["export read from the cache", f"{median(warm):.2f} s", f"{median(cold) / median(warm):.2f}x"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
