"""Screenshots of LabelMe with the "Defect detection" panel, taken offscreen.

    python bench/screenshots.py OUT_DIR [--model FILE] [--image IMAGE ...] [--size 1400x900]
                                [--threshold T] [--readme PNG] [--predicted]

Copies the images to a temporary folder (LabelMe autosaves next to them),
opens the first in LabelMe with the panel, runs Detect, and saves:

- ``0_opened.png`` (with ``--predicted``, the quick start: the copies
  pre-annotated by ``dsarad predict``, the folder opened as
  ``labelme-dsarad FOLDER`` opens it): its first image as it opens, the
  file list showing each image's state and score; and
  ``0_bulk_confirm.png``, the *Confirm defect-free* grid, where the model
  has a cut for it (a retrained model)
- ``1_suggestions_heat_map.png``: pending suggestions over the heat map
- ``2_suggestions.png``: the same without the heat map
- ``3_reviewed.png``: after accepting one suggestion and rejecting one
- ``4_retrain_dialog.png``: the image ticked reviewed, the retrain dialog open

Without ``--model``, the bundled model is used; if it is missing, a
randomly initialised ``compact`` model (input 128), which shows the UI but
not what a trained model finds.

    python bench/screenshots.py OUT_DIR --retrain-labels DIR [--retrain-minutes 0.5]

saves only the retrain dialog, each picture at the size it takes (it must fit
a 1280 x 800 screen), on the reviewed label files in DIR (at least
``MIN_REVIEWED_DEFECTS`` images with defects and some normal ones), for the
bundled product in a scratch model store:

- ``retrain_dialog_no_normals.png``: the images with defects alone, before
  Start: Start off, and why
- ``retrain_dialog.png``: after a real retrain from DIR of that many minutes,
  with its before/after table
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ["crack_exp1_num_265613.jpg", "blowhole_exp1_num_108719.jpg", "break_exp1_num_194173.jpg"]


def random_model(path: Path) -> Path:
    import torch

    from labelme_dsarad.model.model_file import ModelInfo, preset_architecture, save_model
    from labelme_dsarad.model.networks import DSARAD
    from labelme_dsarad.model.scoring import ScoreNormaliser

    torch.manual_seed(0)
    architecture = preset_architecture("compact", 128)
    info = ModelInfo(architecture=architecture, product="magnetic_tile", labels=["defect"],
                     normaliser=ScoreNormaliser(0.5, 0.5), training={"method": "random weights"},
                     created="2026-01-01T00:00:00+00:00")
    save_model(path, DSARAD(architecture).eval(), info)
    return path


def wait_until(app, condition, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()
    return condition()


def save(window, path: Path) -> None:
    image = window.grab().toImage()
    if not image.save(str(path)):
        raise SystemExit(f"{path}: cannot write the screenshot")
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def save_small(source: Path, target: Path) -> None:
    """A 256-colour copy: a screenshot is mostly flat UI and a grey image, so it barely shows."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, kmeans=2, dither=Image.Dither.NONE).save(
            target, optimize=True)
    print(f"{target} ({target.stat().st_size // 1024} KB)")


def retrain_dialog_screenshots(out_dir: Path, labels: Path, minutes: float, scratch: Path) -> int:
    import json

    from qtpy import QtWidgets

    from labelme_dsarad.model.store import BUNDLED_PRODUCT
    from labelme_dsarad.retrain_process import RetrainDialog

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    app.setStyle("Fusion")
    app.setPalette(QtWidgets.QStyleFactory.create("Fusion").standardPalette())
    store = scratch / "store"
    # The same reviewed images with defects, their normal ones left out (image paths made absolute).
    defects_only = scratch / "defects_only"
    defects_only.mkdir()
    for path in sorted(labels.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("shapes"):
            data["imagePath"] = str((path.parent / data["imagePath"]).resolve())
            (defects_only / path.name).write_text(json.dumps(data))

    blocked = RetrainDialog(None, BUNDLED_PRODUCT, defects_only, store, minutes=minutes)
    blocked.show()
    wait_until(app, lambda: False, 0.3)
    if blocked.start_button.isEnabled():
        raise SystemExit(f"{labels}: Start is on without normal images")
    save(blocked, out_dir / "retrain_dialog_no_normals.png")
    blocked.close()

    dialog = RetrainDialog(None, BUNDLED_PRODUCT, labels, store, minutes=minutes)
    dialog.show()
    if not dialog.start_button.isEnabled():
        raise SystemExit(f"{labels}: cannot start: {dialog.why_not_start()}")
    ended = []
    dialog.retrained.connect(lambda result: ended.append(result))
    dialog.start()
    assert dialog.run is not None  # Start was on
    dialog.run.failed.connect(lambda message: ended.append(message))
    if not wait_until(app, lambda: bool(ended), 60 * minutes + 600) or not isinstance(ended[0], dict):
        raise SystemExit(f"the retrain did not finish: {dialog.status.text()}")
    wait_until(app, lambda: False, 0.3)
    save(dialog, out_dir / "retrain_dialog.png")
    dialog.close()
    return 0


def window_size(text: str) -> tuple[int, int]:
    width, height = (int(value) for value in text.lower().split("x"))
    return width, height


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--image", type=Path, nargs="+",
                        default=[REPO / "resources" / "samples" / name for name in DEFAULT_IMAGES])
    parser.add_argument("--size", type=window_size, default="1400x900", help="window size, WIDTHxHEIGHT")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--retrain-labels", type=Path, metavar="DIR",
                        help="only the retrain dialog's screenshots, on the reviewed labels in DIR")
    parser.add_argument("--retrain-minutes", type=float, default=0.5, help="with --retrain-labels (default 0.5)")
    parser.add_argument("--readme", type=Path, metavar="PNG",
                        help="also write the first screenshot here with a 256-colour palette (small, for the README)")
    parser.add_argument("--predicted", action="store_true",
                        help="pre-annotate the copies with 'dsarad predict' and let LabelMe open the folder, as the "
                             "quick start does; also saves 0_opened.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dsarad-screenshots-"))
    try:
        if args.retrain_labels is not None:
            return retrain_dialog_screenshots(args.out_dir, args.retrain_labels, args.retrain_minutes, scratch)
        model, folder = copied_images(args, scratch)
        return panel_screenshots(args, model, folder, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def copied_images(args: argparse.Namespace, scratch: Path) -> tuple[Path, Path]:
    """The model to show and a folder of copies of the images (pre-annotated with ``--predicted``)."""
    from labelme_dsarad.resources import DEFAULT_MODEL

    model = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None)
    if model is None:
        print("the bundled model is missing: using a randomly initialised compact model", file=sys.stderr)
        model = random_model(scratch / "random_compact.safetensors")
    folder = scratch / "images"
    folder.mkdir()
    for image in args.image:
        shutil.copy(image, folder / image.name)
    if args.predicted:
        from labelme_dsarad.cli import main as dsarad

        if dsarad(["predict", str(folder), "--model", str(model), "--threshold", str(args.threshold)]) != 0:
            raise SystemExit("dsarad predict failed")
    return model, folder


def panel_screenshots(args: argparse.Namespace, model: Path, folder: Path, scratch: Path) -> int:
    from qtpy import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    app.setStyle("Fusion")  # as labelme's own main does
    app.setPalette(QtWidgets.QStyleFactory.create("Fusion").standardPalette())
    from labelme_dsarad._labelme_adapter import install_qsettings_sandbox, main_window_class
    from labelme_dsarad.model.labelfile import REVIEWED_FLAG
    from labelme_dsarad.panel import ModelOption, attach_panel

    install_qsettings_sandbox(scratch / "qsettings")  # leave the user's LabelMe layout alone
    # As 'labelme-dsarad' starts LabelMe: with the image flag 'ok' (reviewed), every dock in place.
    window = main_window_class()(config_file=None, config_overrides={"auto_save": True, "flags": [REVIEWED_FLAG]},
                                 file_or_dir=str(folder) if args.predicted else None)
    panel = attach_panel(window, [ModelOption(model.name, model)])
    # Ticking 'ok' with suggestions pending asks what to do with them; here the person accepts them.
    panel.review.ask_about_pending = lambda count: "accept"
    try:
        window.resize(*args.size)
        window.show()
        if not args.predicted:
            panel.adapter.open_folder(str(folder))
            panel.adapter.open_file(str(folder / args.image[0].name))
        if not wait_until(app, lambda: panel.model is not None or "Model:" in panel.view.message_label.text()):
            raise SystemExit("the model did not load")
        if panel.model is None:
            raise SystemExit(panel.view.message_label.text())
        if args.predicted:
            wait_until(app, lambda: panel.current_map() is not None)  # On open: the heat map of the file's suggestions
            wait_until(app, lambda: False, 0.3)
            save(window, args.out_dir / "0_opened.png")
            queue_screenshot(app, panel, args.out_dir)
        review_screenshots(app, window, panel, args)
    finally:
        panel.shutdown()
        window.close()
    return 0


def queue_screenshot(app, panel, out_dir: Path) -> None:
    """The bulk confirmation's grid, when the model has a cut for it (a retrained model)."""
    dialog = panel.queue.bulk_confirm()
    if dialog is None:
        print(f"no bulk confirmation: {panel.view.message_label.text()}", file=sys.stderr)
        return
    wait_until(app, lambda: dialog.maps_shown >= len(dialog.shown()))  # each thumbnail under its heat map
    wait_until(app, lambda: False, 0.3)
    dialog.grab().save(str(out_dir / "0_bulk_confirm.png"))
    dialog.close()


def review_screenshots(app, window, panel, args: argparse.Namespace) -> None:
    """Detect, the suggestions with and without the heat map, one accepted and one rejected, and
    the retrain dialog once the image is ticked reviewed."""
    from qtpy import QtCore

    from labelme_dsarad.model.labelfile import REVIEWED_FLAG

    panel.view.threshold_slider.setValue(round(args.threshold * 100))
    shown = []
    panel.suggestions_shown.connect(lambda path, count: shown.append(count))
    panel.view.detect_action.trigger()
    if not wait_until(app, lambda: bool(shown)):
        raise SystemExit(f"no result: {panel.view.message_label.text()}")
    wait_until(app, lambda: False, 0.3)  # let the canvas and status bar settle
    save(window, args.out_dir / "1_suggestions_heat_map.png")
    if args.readme is not None:
        save_small(args.out_dir / "1_suggestions_heat_map.png", args.readme)

    panel.view.heat_map_box.setChecked(False)
    wait_until(app, lambda: False, 0.1)
    save(window, args.out_dir / "2_suggestions.png")

    pending = panel.adapter.shapes()
    if pending:
        panel.adapter.select([pending[0]])
        panel.view.accept_action.trigger()
    if len(pending) > 1:
        panel.adapter.select([pending[-1]])
        panel.view.reject_action.trigger()
    panel.view.heat_map_box.setChecked(True)
    wait_until(app, lambda: False, 0.1)
    save(window, args.out_dir / "3_reviewed.png")

    # Tick the image reviewed ('ok'), save, and open the retrain dialog on the folder.
    flags = window._docks.flag_list
    for row in range(flags.count()):
        if flags.item(row).text() == REVIEWED_FLAG:
            flags.item(row).setCheckState(QtCore.Qt.Checked)
    panel.adapter.save()
    dialog = panel.retrain_from_labels()
    if dialog is not None:
        dialog.adjustSize()
        wait_until(app, lambda: False, 0.3)
        save(dialog, args.out_dir / "4_retrain_dialog.png")
        dialog.close()

if __name__ == "__main__":
    sys.exit(main())
