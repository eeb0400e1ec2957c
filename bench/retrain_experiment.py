"""Does retraining from corrected labels help, and how soon? The closed loop, end to end.

    .venv/bin/python bench/retrain_experiment.py --dataset mtd --base resources/models/magnetic_tile_compact.safetensors \\
        --minutes 10 --out runs/retrain/mtd [--minutes 1 3 10 30] [--images 10 25 50 all] [--review]

1. Start from a model trained on train-split defect-free images only (``--base``).
2. Play the person: a LabelMe file with the image flag ``ok`` for every image
   of the data set's "corrections" half (DATASET.md) with its defects as
   polygons labelled with their kind (Magnetic Tile: the mask's regions,
   labelled by defect folder; ball screw: the data set's own LabelMe
   polygons, "Pitting"), and one with ``ok`` and no shapes for each of
   ``--normals`` train-split defect-free images. Nothing is copied: label
   files point at the data set's images.
3. ``retrain`` from that folder into a model store of its own, for each
   budget in ``--minutes`` (with all corrections) and each count in
   ``--images`` (the first N corrections of a seeded shuffle, at the first
   budget): the learning curves.
4. Measure the base and each retrained model on the "measurement" half plus
   the test-split defect-free images, and nothing else, through the one
   evaluator at each model's own threshold and the default polygon settings:
   image and pixel AUROC, and the suggestions as a person meets them (IoU of
   each labelled defect with its best suggestion, share of defects found,
   false suggestions per normal image, kind right).
5. ``--review``: play the reviewer on the measurement images for the base and
   for the first retrained model: ``dsarad predict``, then accept every
   suggestion that overlaps a labelled defect (IoU 0.1 or more with one
   connected region of the mask, as the suggestion metrics count), reject the
   rest, tick ``ok``; ``dsarad stats`` counts what happened.

Nothing of the measurement set is trained or tuned on. Writes
``OUT/retrain_experiment.json``, ``OUT/curves.csv`` and ``OUT/curves.png``.
``--merge A/retrain_experiment.json B/retrain_experiment.json --out C`` draws
the curves of runs made apart (say, the 30-minute budget in another session)
as one, retraining nothing; ``--measure MODEL...`` measures saved models again
(after a change to how suggestions are drawn, say; with ``--review``, it plays
the reviewer on each too; with ``--extend-to F``, at one reach for every kind
instead of each model's own).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine_line, print_table, stderr
from dataset_splits import ball_screw_retrain_halves, default_ball_screw_root, default_mtd_root, mtd_retrain_halves

from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.labelfile import (
    LABELME_VERSION,
    is_pending_suggestion,
    load_label_file,
    set_state,
    write_label_file,
)
from labelme_dsarad.model.model_file import file_sha256, load_model
from labelme_dsarad.model.polygons import SuggestionSettings, mask_to_polygons
from labelme_dsarad.model.store import ModelStore
from labelme_dsarad.pipeline import PredictOptions, predict_paths
from labelme_dsarad.train.datasets import Sample, ball_screw_train_images, mtd_train_images
from labelme_dsarad.train.evaluation import evaluate_predictor
from labelme_dsarad.train.labels import rasterise_shapes
from labelme_dsarad.train.metric_names import REPORTED_METRICS
from labelme_dsarad.train.progress import TerminalProgress
from labelme_dsarad.train.retrain import RetrainConfig, retrain
from labelme_dsarad.train.stats import suggestion_stats
from labelme_dsarad.train.suggestion_metrics import defect_overlaps, labelled_defects

# A person's outline follows the defect closely: half-pixel simplification,
# and every region kept, however small.
LABEL_TOLERANCE = 0.5
# Every correction teaches or calibrates: the measurement half is the holdout.
RETRAIN_HOLDOUT = 0.0
DEFAULT_SUGGESTIONS = SuggestionSettings()  # each model's own reach per kind
REVIEW_ACCEPT_IOU = 0.1  # the simulated reviewer accepts a suggestion this much on a labelled defect
CURVE_METRICS = ("image_auroc", "pixel_auroc", "defect_best_iou", "defects_touched", "false_suggestions_per_normal",
                 "kind_accuracy")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["mtd", "ball_screw"], default="mtd")
    parser.add_argument("--root", type=Path, help="the data set's folder (default: the shared copy)")
    parser.add_argument("--base", type=Path, help="model trained on the train split's normals only")
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0], help="retraining budgets")
    parser.add_argument("--images", nargs="+", default=["all"], help="numbers of corrected images (or 'all')")
    parser.add_argument("--normals", type=int, default=100, help="reviewed defect-free images beside the corrections")
    parser.add_argument("--out", type=Path, default=Path("runs/retrain_experiment"))
    parser.add_argument("--review", action="store_true", help="simulate a reviewer before and after (dsarad stats)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=RetrainConfig.learning_rate)
    parser.add_argument("--real-share", type=float, default=RetrainConfig.real_share)
    parser.add_argument("--synthetic-share", type=float, default=RetrainConfig.synthetic_share)
    parser.add_argument("--batch-size", type=int, default=RetrainConfig.batch_size)
    parser.add_argument("--skip-before", action="store_true", help="do not measure the base model (done in another run)")
    parser.add_argument("--limit", type=int, help="smoke test only: at most this many measurement images per kind")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="retrain nothing: one table and plot in --out from these runs' retrain_experiment.json "
                             "(of one base model; the first run's first budget is the one plotted against images)")
    parser.add_argument("--measure", type=Path, nargs="+", metavar="MODEL",
                        help="retrain nothing: measure these model files as the experiment does, with today's code")
    parser.add_argument("--extend-to", type=float, help="with --measure: one reach for every kind (default: each "
                                                          "model's own)")
    args = parser.parse_args(argv)
    if args.extend_to is not None and not args.measure:
        parser.error("--extend-to goes with --measure")
    if args.base is None and not (args.merge or args.measure):
        parser.error("--base is required (unless --merge or --measure)")
    return args


def halves(args: argparse.Namespace) -> tuple[list[Sample], list[Sample], list[Path]]:
    """(corrections, measurement, train-split normals) of the data set."""
    if args.dataset == "mtd":
        root = args.root or default_mtd_root()
        if root is None:
            raise SystemExit("no Magnetic Tile data set: pass --root")
        corrections, measurement = mtd_retrain_halves(root)
        return corrections, measurement, mtd_train_images(root)
    root = args.root or default_ball_screw_root()
    if root is None:
        raise SystemExit("no ball screw data set: pass --root")
    corrections, measurement = ball_screw_retrain_halves(root)
    return corrections, measurement, ball_screw_train_images(root)


def person_shapes(sample: Sample) -> list[dict]:
    """The defects of a correction as a person would outline them, labelled with their kind."""
    if sample.mask_path is not None and sample.mask_path.suffix == ".json":
        return [{**shape, "flags": {}} for shape in load_label_file(sample.mask_path)["shapes"]]
    image = sample.read_image()
    regions = mask_to_polygons(sample.mask(*image.shape[:2]), min_area=1, tolerance=LABEL_TOLERANCE)
    return [{"label": sample.defect_type, "points": [[round(x, 2), round(y, 2)] for x, y in region.points],
             "group_id": None, "description": "", "shape_type": "polygon", "flags": {}, "mask": None}
            for region in regions]


def write_person_labels(folder: Path, corrections: list[Sample], normals: list[Path]) -> list[str]:
    """Reviewed label files; returns the corrections left out (a defect image whose mask is empty:
    a person would have outlined something we cannot know, and it must not pass for normal)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    left_out = []
    for sample in corrections:
        shapes = person_shapes(sample)
        if not shapes:
            left_out.append(sample.image_path.name)
            continue
        _write(folder / f"{sample.defect_type}_{sample.image_path.stem}.json", sample.image_path, shapes)
    for image in normals:
        _write(folder / f"good_{image.stem}.json", image, [])
    return left_out


def _write(path: Path, image: Path, shapes: list[dict]) -> None:
    height, width = Sample(image, None, "good", False).read_image().shape[:2]
    write_label_file(path, {
        "version": LABELME_VERSION, "flags": {"ok": True}, "shapes": shapes,
        "imagePath": os.path.relpath(image.resolve(), path.parent.resolve()), "imageData": None,
        "imageHeight": height, "imageWidth": width,
    })


def measure(model: Path, samples: list[Sample], device: str,
            suggestions: SuggestionSettings = DEFAULT_SUGGESTIONS) -> dict:
    metrics = evaluate_predictor(Predictor(model, device=device), samples, suggestions=suggestions)
    return {**metrics["overall"], "per_type_image_auroc": {name: values["image_auroc"]
                                                           for name, values in metrics["per_type"].items()}}


def simulated_review(model: Path, samples: list[Sample], folder: Path, device: str,
                     suggestions: SuggestionSettings = DEFAULT_SUGGESTIONS) -> dict:
    """Predict, accept what lies on a labelled defect, reject the rest, tick ok; then dsarad stats."""
    shutil.rmtree(folder, ignore_errors=True)
    predict_paths([sample.image_path for sample in samples], model, PredictOptions(suggestions, out_dir=folder), device=device)
    for sample in samples:
        path = folder / f"{sample.image_path.stem}.json"
        data = load_label_file(path)
        truth = sample.mask(data["imageHeight"], data["imageWidth"])
        defects, areas = labelled_defects(truth)
        kept = []
        for shape in data["shapes"]:
            if not is_pending_suggestion(shape):
                kept.append(shape)
                continue
            _, ious = defect_overlaps(rasterise_shapes([shape], *truth.shape), defects, areas)
            if ious.max() >= REVIEW_ACCEPT_IOU:
                set_state(shape, "accepted")
                kept.append(shape)  # a rejected one is deleted, as LabelMe does
        data["shapes"], data["flags"] = kept, {"ok": True}
        write_label_file(path, data)
    groups, _ = suggestion_stats(folder)
    return next(iter(groups.values()), {})


def print_review(names: list[str], reviews: list[dict]) -> None:
    print("\nsimulated review (dsarad stats):")
    print_table(["", *names], [[key, *(_fmt(review.get(key)) for review in reviews)]
                               for key in ("suggestions", "accepted_unchanged", "rejected", "missed")])


def retrained(args: argparse.Namespace, base, corrections: list[Sample], normals: list[Path], minutes: float,
              count: str, name: str) -> tuple[Path, dict]:
    chosen = corrections if count == "all" else \
        [corrections[i] for i in np.random.default_rng(args.seed).permutation(len(corrections))[:int(count)]]
    labels_dir, store_root = args.out / name / "labels", args.out / name / "store"
    left_out = write_person_labels(labels_dir, chosen, normals)
    shutil.rmtree(store_root, ignore_errors=True)
    product = base.info.product
    (store_root / product).mkdir(parents=True)
    shutil.copyfile(args.base, store_root / product / "v1.safetensors")
    ModelStore(store_root).set_current(product, 1)
    result = retrain(RetrainConfig(product=product, labels_dir=str(labels_dir), store_root=str(store_root),
                                   minutes=minutes, holdout=RETRAIN_HOLDOUT, device=args.device, seed=args.seed,
                                   learning_rate=args.learning_rate, real_share=args.real_share,
                                   synthetic_share=args.synthetic_share, batch_size=args.batch_size),
                     TerminalProgress())
    return result.path, {"corrections": len(chosen) - len(left_out), "left_out_empty": left_out,
                         "steps": load_model(result.path).info.training["steps"], "seconds": result.seconds}


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.merge:
        return merge(args)
    if args.measure:
        _, measurement, _ = halves(args)
        suggestions = SuggestionSettings(extend_to=args.extend_to)
        rows = [{"model": str(path), **measure(path, measurement, args.device, suggestions)} for path in args.measure]
        print(f"\n{args.dataset}: {len(measurement)} measurement images\n")
        print_metrics(rows)
        if args.review:
            reviews = [simulated_review(path, measurement, args.out / f"review_{index}", args.device, suggestions)
                       for index, path in enumerate(args.measure)]
            print_review([path.name for path in args.measure], reviews)
        return 0
    started = time.monotonic()
    corrections, measurement, train_normals = halves(args)
    if args.limit is not None:
        kinds = sorted({sample.defect_type for sample in measurement})
        measurement = [s for kind in kinds for s in [s for s in measurement if s.defect_type == kind][:args.limit]]
    normals = [train_normals[i] for i in sorted(np.random.default_rng(args.seed).permutation(len(train_normals))
                                                 [:args.normals])]
    trained_on = {s.image_path.resolve() for s in corrections} | {p.resolve() for p in normals}
    if any(s.image_path.resolve() in trained_on for s in measurement):
        raise AssertionError("a measurement image is among the labels: the split is broken")
    args.out.mkdir(parents=True, exist_ok=True)
    base = load_model(args.base)
    rows = [{"model": "before", "minutes": 0.0, "corrected_images": 0}]
    if not args.skip_before:
        stderr(f"measuring the base model on {len(measurement)} images")
        rows[0].update(measure(args.base, measurement, args.device))
    runs = [(minutes, "all") for minutes in args.minutes] + [(args.minutes[0], count) for count in args.images
                                                             if count != "all"]
    paths = {}
    for minutes, count in runs:
        name = f"retrained_{minutes:g}min_{count}"
        stderr(f"{name}: retraining from {count} corrections and {len(normals)} normals")
        path, about = retrained(args, base, corrections, normals, minutes, count, name)
        paths[name] = path
        rows.append({"model": name, "minutes": minutes, "corrected_images": about["corrections"], **about,
                     **measure(path, measurement, args.device)})
    review = {}
    if args.review:
        first = f"retrained_{args.minutes[0]:g}min_all"
        review = {"before": simulated_review(args.base, measurement, args.out / "review_before", args.device),
                  "after": simulated_review(paths[first], measurement, args.out / "review_after", args.device)}
    print(f"\n{args.dataset}: {len(measurement)} measurement images; base {args.base.name}\n")
    write_curves(rows, args.out, args.dataset)
    if review:
        print_review(list(review), list(review.values()))
    (args.out / "retrain_experiment.json").write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_line(),
        "base": {"path": str(args.base), "sha256": file_sha256(args.base), "training": base.info.training},
        "measurement_images": len(measurement), "reviewed_normals": len(normals), "rows": rows, "review": review,
        "seconds": round(time.monotonic() - started, 1)}, indent=2, default=str))
    stderr(f"written: {args.out / 'retrain_experiment.json'}, curves.csv, curves.png")
    return 0


def merge(args: argparse.Namespace) -> int:
    """The curves of several runs as one: budgets and image counts measured in separate sessions."""
    runs = [json.loads(path.read_text()) for path in args.merge]
    if len({run["base"]["sha256"] for run in runs}) != 1:
        raise SystemExit("--merge: the runs start from different base models")
    rows = [runs[0]["rows"][0]] + [row for run in runs for row in run["rows"][1:]]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"\n{args.dataset}: {runs[0]['measurement_images']} measurement images; base {runs[0]['base']['path']}\n")
    write_curves(rows, args.out, args.dataset)
    stderr(f"written: {args.out / 'curves.csv'}, curves.png")
    return 0


def write_curves(rows: list[dict], out: Path, dataset: str) -> None:
    """The table on the terminal, ``out/curves.csv`` and ``out/curves.png``."""
    print_metrics(rows)
    with (out / "curves.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, ["model", "minutes", "corrected_images", *CURVE_METRICS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "curves.png", dataset)


def print_metrics(rows: list[dict]) -> None:
    print_table(["metric", *[row["model"] for row in rows]],
                [[title, *[_fmt(row.get(key)) for row in rows]] for key, title in REPORTED_METRICS])


def plot(rows: list[dict], output: Path, dataset: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    before = rows[0]
    by_minutes = sorted((row for row in rows[1:] if row["model"].endswith("_all")), key=lambda row: row["minutes"])
    by_images = sorted((row for row in rows[1:] if row["minutes"] == rows[1]["minutes"]),
                       key=lambda row: row["corrected_images"])
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, series, x_key, x_label in ((figure.add_subplot(1, 2, 1), by_minutes, "minutes", "retraining minutes"),
                                       (figure.add_subplot(1, 2, 2), by_images, "corrected_images",
                                        f"corrected images ({rows[1]['minutes']:g} min)")):
        for key in CURVE_METRICS:
            values = [before.get(key)] + [row.get(key) for row in series]
            xs = [0] + [row[x_key] for row in series]
            points = [(x, value) for x, value in zip(xs, values) if value is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=key.replace("_", " "))
        ax.set(xlabel=x_label, title=f"{dataset}: measurement half + test normals")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    FigureCanvasAgg(figure).print_png(str(output))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
