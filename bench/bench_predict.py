"""`dsarad predict` over a folder, end to end, against the pure inference rate; or a large photo's
time to suggestions against a normal image's.

    .venv/bin/python bench/bench_predict.py [--images 200] [--quick]
    .venv/bin/python bench/bench_predict.py --large-photo [--rounds 5] [--no-gui] [--scale auto]

Copies Magnetic Tile normals into a temporary folder and runs
``pipeline.predict_paths`` (decoding, inference, polygons, JSON writing) over
them, and ``Predictor.predict`` over the same images already decoded in
memory. Both use one Predictor, built beforehand and not timed. The two
alternate chunk by chunk, so a load that comes and goes hits both alike. The
ratio of the rates says how well the rest of the pipeline hides behind
inference (target: at least 0.9).

``--large-photo`` makes a 6000 x 4000 photo from a bundled Magnetic Tile
sample (upscaled, so the defect is still there), as JPEG and as PNG, and times
what happens between a request and the suggestions on screen with the bundled
model: the worker's decoding, the model and its map, the heat map and the
suggestions, for the sample and the large photo in turn in one process;
"before" decodes in full and draws the map at full size, as the plugin did
before reduced decoding. The ratio large / sample is the table's point
(target: the large photo within 1 s of the sample). Peak memory (ru_maxrss)
comes from a fresh process per row. Then, unless ``--no-gui``, the plugin
itself: LabelMe's window (offscreen) with the panel, Detect on open, opening
the sample and the large JPEG in turn, from the open to the suggestions shown.
``--scale`` gives the bundled model's weights a scale (``auto``: the large
photo's, which ``dsarad train --scale auto`` would choose for a product photographed
at that size), so the photos are covered by tiles at it (model/tiles.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, interleaved, machine_line, magnetic_tile_images, median, print_table, random_model, stderr

from labelme_dsarad.model.images import read_image
from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.model_file import save_model
from labelme_dsarad.pipeline import PredictOptions, predict_paths

BUNDLED_MODEL = REPO / "resources" / "models" / "magnetic_tile_compact.safetensors"
SAMPLE = REPO / "resources" / "samples" / "blowhole_exp1_num_108719.jpg"
LARGE_SIZE = (6000, 4000)  # width, height


def main() -> None:
    if "--large-photo" in sys.argv or "--memory-child" in sys.argv:
        large_photo_main()
        return
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


# --- a large photo against a normal image ---


def make_large_photos(folder: Path) -> tuple[Path, Path]:
    """The sample upscaled to LARGE_SIZE, as JPEG (quality 92, as cameras write) and as PNG."""
    import cv2

    sample = cv2.cvtColor(read_image(SAMPLE), cv2.COLOR_RGB2BGR)
    photo = cv2.resize(sample, LARGE_SIZE, interpolation=cv2.INTER_CUBIC)
    jpeg, png = folder / "large.jpg", folder / "large.png"
    cv2.imwrite(str(jpeg), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(str(png), photo)
    return jpeg, png


def to_suggestions(predictor: Predictor, path: Path, reduced: bool) -> int:
    """What the plugin does from a request to the suggestions: the worker's decoding and model run,
    then the panel's heat map and suggestions. Returns the number of suggestions."""
    from labelme_dsarad.heat_map import HeatMap
    from labelme_dsarad.model.inference import largest_reduction, working_size
    from labelme_dsarad.model.polygons import SuggestionSettings
    from labelme_dsarad.worker import Job, decode_image

    if reduced:
        architecture = predictor.model.info.architecture
        image = decode_image(Job(str(path)), working_size(architecture.input_size), largest_reduction(architecture.scale))
        prediction = predictor.predict(image.pixels, image.shape).for_photo(image.shape)
    else:  # as the plugin did before: decoded in full, the map at full size
        prediction = predictor.predict(read_image(path))
    HeatMap(prediction.score_map, 0.5).image(0.5)
    return len(prediction.suggestions(SuggestionSettings(), predictor.model.info.labels[0]))


def reset_peak_rss() -> None:
    """Start the peak RSS (VmHWM) afresh: loading the model peaks above what any image costs."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(model: Path, path: Path, reduced: bool) -> tuple[float, float]:
    """RSS (MB) of a fresh process after loading ``model`` and one run on the sample, and its peak
    during one run on ``path``."""
    command = [sys.executable, __file__, "--memory-child", str(model), str(path), "reduced" if reduced else "full"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    loaded, peak = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded, peak


def memory_child(model: Path, path: Path, variant: str) -> None:
    predictor = Predictor(model)
    to_suggestions(predictor, SAMPLE, variant == "reduced")
    reset_peak_rss()
    loaded = peak_rss_mb()
    to_suggestions(predictor, path, variant == "reduced")
    print(json.dumps([loaded, peak_rss_mb()]))


GUI_CHILD = r"""
import json, os, shutil, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from pathlib import Path
from qtpy import QtWidgets
app = QtWidgets.QApplication([])
from labelme_dsarad._labelme_adapter import install_qsettings_sandbox, main_window_class
MainWindow = main_window_class()
from labelme_dsarad.panel import ModelOption, attach_panel
import labelme_dsarad.model.inference as inference
model, sample, large, scratch, variant, rounds = sys.argv[1:7]
if variant == "full":  # as the plugin did before: no reduction ever pays
    inference.working_size = lambda input_size: 1 << 30
install_qsettings_sandbox(Path(scratch) / "qsettings")
window = MainWindow(config_file=None, config_overrides={"auto_save": False})
panel = attach_panel(window, [ModelOption("model", Path(model))])
panel.view.detect_on_open_action.setChecked(True)
shown = []
panel.suggestions_shown.connect(lambda path, count: shown.append(time.perf_counter()))
while panel.model is None:
    app.processEvents(); time.sleep(0.002)
times = {"sample": [], "large": []}
def peak_mb():
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
for index in range(int(rounds) + 1):  # the first round warms up
    if index == 1:  # loading the model peaks above what any image costs
        open("/proc/self/clear_refs", "w").write("5")
    for name, source in (("sample", sample), ("large", large)):
        path = Path(scratch) / f"{name}_{variant}_{index}{Path(source).suffix}"  # a new name: no cached map
        shutil.copy(source, path)
        shown.clear()
        started = time.perf_counter()
        panel.adapter.open_file(str(path))
        opened = time.perf_counter()
        while not shown:
            app.processEvents(); time.sleep(0.002)
        if index:
            times[name].append([opened - started, shown[0] - opened])
print(json.dumps({"times": times, "peak_mb": peak_mb()}))
panel.shutdown()
"""


def gui_run(model: Path, large: Path, scratch: Path, variant: str, rounds: int) -> dict:
    command = [sys.executable, "-c", GUI_CHILD, str(model), str(SAMPLE), str(large), str(scratch), variant,
               str(rounds)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def scaled_copy(scale: str, path: Path) -> Path:
    """The bundled model with a scale (``auto``: the large photo's shorter side fills a tile), saved at ``path``."""
    from dataclasses import replace

    from labelme_dsarad.model.model_file import load_model
    from labelme_dsarad.model.tiles import scale_for

    loaded = load_model(BUNDLED_MODEL)
    architecture = loaded.info.architecture
    value = scale_for([LARGE_SIZE[::-1]], architecture.input_size) if scale == "auto" else float(scale)
    loaded.info.architecture = loaded.network.architecture = replace(architecture, scale=value)
    save_model(path, loaded.network, loaded.info)
    return path


def large_photo_main() -> None:
    parser = argparse.ArgumentParser(description="a large photo's time to suggestions against a normal image's")
    parser.add_argument("--large-photo", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-gui", action="store_true", help="skip the plugin's own measurement")
    parser.add_argument("--scale", help="the model's scale: photo pixels per model pixel, or 'auto' (the large photo's)")
    parser.add_argument("--memory-child", nargs=3, metavar=("MODEL", "PATH", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(Path(args.memory_child[0]), Path(args.memory_child[1]), args.memory_child[2])
        return
    stderr(machine_line())
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        jpeg, png = make_large_photos(scratch)
        model = BUNDLED_MODEL if args.scale is None else scaled_copy(args.scale, scratch / "scaled.safetensors")
        predictor = Predictor(model)
        stderr(f"{model.name}: backend {predictor.backend}, input "
               f"{predictor.model.info.architecture.input_description()}; "
               f"{SAMPLE.name} {read_image(SAMPLE).shape[1]}x{read_image(SAMPLE).shape[0]}")
        cases: dict[str, tuple[Path, bool]] = {  # name: (path, reduced)
            "sample, before": (SAMPLE, False), "6000x4000 JPEG, before": (jpeg, False),
            "sample, now": (SAMPLE, True), "6000x4000 JPEG, now": (jpeg, True), "6000x4000 PNG, now": (png, True),
        }

        def run(path: Path, reduced: bool) -> Callable[[], int]:
            return lambda: to_suggestions(predictor, path, reduced)

        seconds = interleaved({name: run(*case) for name, case in cases.items()}, args.rounds, log=stderr)
        memory = {name: peak_memory(model, *case) for name, case in cases.items()}
        rows = []
        for name in cases:
            baseline = median(seconds[f"sample, {name.split(', ')[1]}"])
            rows.append([name, f"{median(seconds[name]) * 1000:.0f}", f"{median(seconds[name]) / baseline:.1f}x",
                         f"{(median(seconds[name]) - baseline) * 1000:+.0f}", f"{memory[name][1]:.0f}",
                         f"{memory[name][1] - memory[name][0]:+.0f}"])
        print(f"\nRequest to suggestions (decode, model, heat map, suggestions), median of {args.rounds} interleaved "
              f"rounds; {machine_line()}")
        print_table(["image", "ms", "vs sample", "ms more than sample", "peak RSS MB", "MB over the model's"], rows)
        if not args.no_gui:
            print("\nThe plugin (LabelMe offscreen, Detect on open): opening the image, then its suggestions")
            gui_rows = []
            for variant in ("full", "reduced"):
                result = gui_run(model, jpeg, scratch, variant, args.rounds)
                times = {name: [median([run[i] for run in runs]) for i in range(2)] for name, runs in result["times"].items()}
                for name in ("sample", "large"):
                    loaded, after = times[name]
                    gui_rows.append([f"{'6000x4000 JPEG' if name == 'large' else 'sample'}, "
                                     f"{'before' if variant == 'full' else 'now'}", f"{loaded * 1000:.0f}",
                                     f"{after * 1000:.0f}", f"{(loaded + after) * 1000:.0f}",
                                     f"{result['peak_mb']:.0f}" if name == "large" else ""])  # of all opens
                gui_rows[-1].append(f"{(times['large'][1] - times['sample'][1]) * 1000:+.0f}")
                gui_rows[-2].append("")
            print_table(["image", "LabelMe opens it, ms", "then suggestions, ms", "total ms", "peak RSS MB",
                         "suggestions: large - sample, ms"], gui_rows)


if __name__ == "__main__":
    main()
