"""The ``dsarad`` command line.

Every expected failure (bad argument, unreadable file, broken model) ends in
one line on stderr naming the file and the problem, and a non-zero exit
status; tracebacks are for bugs.

Why one module of this size: each subcommand is a parser and a short handler
that only turns arguments into calls of the library; kept together, the whole
command line, its options and its one-line errors read in one place.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

from labelme_dsarad.model.polygons import DEFAULT_EXTEND_TO, DEFAULT_MIN_PEAK, MAX_MIN_PEAK, SuggestionSettings

DEFAULT_SUGGESTIONS = SuggestionSettings()
EXIT_OK, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """An expected problem with what the user asked for; printed as one line."""


def threshold_value(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"threshold must be within [0, 1] (normalised score, 0.5 = model's threshold), got {text}")
    return value


def extent_fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1 (a fraction of the threshold), got {text}")
    return value


def peak_multiple(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= MAX_MIN_PEAK:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be at least 1 and at most {MAX_MIN_PEAK:g} (a multiple of the "
                                         f"threshold), got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):  # also refuses nan, which would be written into the JSON
        raise argparse.ArgumentTypeError(f"must be a number, 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", type=Path,
                       help="model file (.safetensors); default: the product's model in use or the bundled one")
    group.add_argument("--product", help="use this product's model in use from the model store (see 'dsarad models')")
    parser.add_argument("--store", type=Path, help="model store folder (default: $DSARAD_MODEL_STORE or the user data folder)")


def resolve_model_path(args) -> Path:
    from labelme_dsarad.model.store import ModelStore

    if args.model is not None:
        if not args.model.exists():
            raise CommandError(f"{args.model}: no such model file")
        return args.model
    stored = ModelStore(args.store).resolve(args.product)
    if not stored.path.is_file():
        raise CommandError(f"{stored.path}: the bundled model is missing; name one with --model")
    return stored.path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsarad", description="DSARAD defect pre-annotation for LabelMe")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="write LabelMe JSON with suggested defect polygons for images or folders")
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="images or folders of images")
    add_model_arguments(predict)
    predict.add_argument("--out", type=Path, help="folder for the JSON files (default: next to each image)")
    predict.add_argument("--threshold", type=threshold_value, default=DEFAULT_SUGGESTIONS.threshold,
                         help=f"normalised score threshold in [0, 1] (default {DEFAULT_SUGGESTIONS.threshold}, the model's)")
    predict.add_argument("--min-area", type=non_negative_int, default=DEFAULT_SUGGESTIONS.min_area,
                         help=f"smallest region in pixels (default {DEFAULT_SUGGESTIONS.min_area})")
    predict.add_argument("--tolerance", type=non_negative_float, default=DEFAULT_SUGGESTIONS.tolerance,
                         help=f"polygon simplification in pixels (default {DEFAULT_SUGGESTIONS.tolerance})")
    predict.add_argument("--extend-to", type=extent_fraction, default=DEFAULT_SUGGESTIONS.extend_to,
                         help="a region reaching the threshold extends over its surroundings down to this fraction "
                              "of it, for every defect kind (1: only where it reaches it; default: the model's own, "
                              f"per kind where a retrain chose it, else {DEFAULT_EXTEND_TO})")
    predict.add_argument("--min-peak", type=peak_multiple, default=DEFAULT_SUGGESTIONS.min_peak,
                         help="suggest only regions whose highest score reaches this multiple of the threshold "
                              f"(1: every region that reaches it; default: the model's own, else {DEFAULT_MIN_PEAK:g})")
    predict.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    predict.add_argument("--save-maps", type=Path, metavar="DIR",
                         help="also write each anomaly map as a PNG: drawn over the photo, with a colour bar")
    predict.add_argument("--bare-maps", action="store_true", help="with --save-maps: the heat maps alone")
    predict.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass (helps on a GPU)")
    predict.add_argument("--include-reviewed", action="store_true",
                         help="also suggest on images a person marked reviewed (image flag 'ok'); left alone by default")
    predict.set_defaults(handler=run_predict)

    train = commands.add_parser("train", help="train a model for one product type from defect-free images")
    train.add_argument("--product", required=True, help="product type name, e.g. magnetic_tile")
    train.add_argument("--images", nargs="+", help="folders, files or glob patterns of defect-free images")
    train.add_argument("--dataset", choices=["mtd", "mvtec", "ball_screw"],
                       help="--images names a Magnetic Tile root, an MVTec AD category or the ball screw (BSData) "
                            "folder: only its train split is used")
    train.add_argument("--preset", choices=["compact", "paper", "tiny"], default="compact")
    train.add_argument("--input-size", type=int, help="square training and inference size (default: the preset's, 256)")
    train.add_argument("--crop-size", type=int,
                       help="train on random windows of this side cut from the images at the input size "
                            "(default: whole images)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_float, help="passes over the images, teacher and student together")
    budget.add_argument("--minutes", type=positive_float,
                        help="wall-clock budget, teacher and student together; with --resume on a finished run, "
                             "a further round of the student of that many minutes")
    train.add_argument("--anomaly-source", type=Path, help="folder of texture images to paste as anomalies (default: built-in)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    train.add_argument("--devices", type=positive_int, default=1, help="GPUs (or CPU processes) for data-parallel training")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--batch-size", type=positive_int, default=8)
    train.add_argument("--learning-rate", type=positive_float, default=1e-3,
                       help="peak learning rate of the warm-up and cosine schedule (default 1e-3)")
    train.add_argument("--snapshots", type=non_negative_int, default=0, help="export this many intermediate models")
    train.add_argument("--run-dir", type=Path, help="checkpoint folder (default: in the model store)")
    train.add_argument("--checkpoint-every", type=positive_float, default=60.0, metavar="SECONDS",
                       help="seconds between checkpoints (default 60)")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --run-dir (or, with --minutes, train a finished one longer)")
    train.add_argument("--output", type=Path, help="write the model here instead of adding it to the store")
    train.add_argument("--storage", choices=["fp32", "fp16", "int8"], default="fp16",
                       help="weights in the model file: fp16 (default) or int8 convolution weights (a quarter of fp32)")
    train.add_argument("--store", type=Path, help="model store folder")
    train.add_argument("--allow-labelled", action="store_true",
                       help="train even on images whose label files hold defect shapes (they are learnt as normal)")
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="measure a model on a labelled test set and write a report")
    add_model_arguments(evaluate)
    evaluate.add_argument("--dataset", nargs=2, metavar=("KIND", "PATH"), required=True,
                          help="mtd ROOT (Magnetic Tile, its test split), ball_screw ROOT (BSData), mvtec CATEGORY_DIR, "
                               "or folder ROOT")
    evaluate.add_argument("--report", type=Path, metavar="DIR", help="write metrics.json, plots, an image grid and report.md")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    evaluate.add_argument("--save-to-model", action="store_true",
                          help="also store the metrics in the model file's header (shown by 'dsarad models' and the plugin)")
    evaluate.set_defaults(handler=run_evaluate)

    models = commands.add_parser("models", help="list the models in the store and the bundled default, and which is in use")
    models.add_argument("--store", type=Path, help="model store folder")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=run_models)

    use = commands.add_parser("use", help="choose the model in use for a product: a stored version or the bundled one")
    use.add_argument("product", metavar="PRODUCT", help="product type name, e.g. magnetic_tile")
    use.add_argument("version", metavar="VERSION", help="a stored version (v2 or 2), or 'bundled'")
    use.add_argument("--store", type=Path, help="model store folder")
    use.set_defaults(handler=run_use)

    export = commands.add_parser("export", help="write a model as ONNX (with its header) for onnxruntime")
    add_model_arguments(export)
    export.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="the ONNX file to write")
    export.set_defaults(handler=run_export)

    retrain = commands.add_parser("retrain", help="warm-start retraining from a folder of corrected LabelMe labels; "
                                               "stores a new version, the model in use stays until 'dsarad use'")
    retrain.add_argument("--product", required=True, help="product type name; its model in use is the start")
    retrain.add_argument("--labels", type=Path, metavar="DIR", required=True,
                         help="folder of LabelMe JSON files; images with the image flag 'ok' count as reviewed")
    retrain.add_argument("--normals", nargs="+", metavar="PATH",
                         help="defect-free images to learn from beside the reviewed ones, e.g. those the first "
                              "training used (folders, files or glob patterns)")
    retrain_budget = retrain.add_mutually_exclusive_group()
    retrain_budget.add_argument("--minutes", type=positive_float, help="wall-clock training budget (default 10)")
    retrain_budget.add_argument("--steps", type=int, help="training steps instead of minutes")
    retrain.add_argument("--store", type=Path, help="model store folder")
    retrain.add_argument("--base", type=Path, metavar="MODEL", help="start from this model file instead of the one in use")
    retrain.add_argument("--holdout", type=float, default=0.25,
                         help="share of the reviewed images held out to report before/after metrics (default 0.25)")
    retrain.add_argument("--batch-size", type=positive_int, help="images per step (default: the recipe's)")
    retrain.add_argument("--learning-rate", type=positive_float, help="peak learning rate (default: the recipe's)")
    retrain.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    retrain.add_argument("--seed", type=int, default=0)
    retrain.add_argument("--progress-json", action="store_true", help="progress as one JSON object per line on stdout")
    retrain.set_defaults(handler=run_retrain)

    stats = commands.add_parser("stats", help="how the suggestions fared against the final labels of a folder")
    stats.add_argument("folder", type=Path, metavar="DIR", help="folder of LabelMe JSON files")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(handler=run_stats)

    return parser


def expand_image_arguments(patterns: list[str]) -> list[Path]:
    from labelme_dsarad.model.images import list_images

    named: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise CommandError(f"{pattern}: no file matches")
        named.extend(Path(match) for match in matches)
    return list_images(named)  # once over all patterns: an image a folder and a glob both name comes once


def without_devices_option(argv: list[str]) -> list[str]:
    result, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--devices":
            skip = True
        elif not argument.startswith("--devices="):
            result.append(argument)
    return result


def dataset_train_images(kind: str, roots: list[str]) -> list[Path]:
    from labelme_dsarad.train.datasets import ball_screw_train_images, mtd_train_images, mvtec_train_images

    if len(roots) != 1:
        raise CommandError("with --dataset, --images names exactly one dataset folder")
    reader = {"mtd": mtd_train_images, "mvtec": mvtec_train_images, "ball_screw": ball_screw_train_images}[kind]
    return reader(Path(roots[0]))


def run_train(args) -> int:
    from labelme_dsarad.model.store import ModelStore, check_product_name
    from labelme_dsarad.train.labels import label_files_with_defects
    from labelme_dsarad.train.trainer import TrainConfig, train_model

    try:
        check_product_name(args.product)
    except ValueError as problem:
        raise CommandError(str(problem)) from None
    store = ModelStore(args.store)
    run_dir = args.run_dir or store.root / args.product / "run"
    if args.resume:
        if not (run_dir / "checkpoint.safetensors").is_file():
            raise CommandError(f"{run_dir}: no checkpoint to resume from")
        if args.epochs is not None:
            raise CommandError("--resume takes --minutes, not --epochs: a finished run trains longer by minutes")
        config = None
    else:
        if not args.images:
            raise CommandError("--images is required (unless --resume)")
        if args.epochs is None and args.minutes is None:
            raise CommandError("give a training budget: --epochs N or --minutes M")
        images = dataset_train_images(args.dataset, args.images) if args.dataset else expand_image_arguments(args.images)
        if not images:
            raise CommandError(f"{' '.join(args.images)}: no images found")
        labelled = label_files_with_defects(images)
        if labelled and not args.allow_labelled:
            raise CommandError(f"{len(labelled)} of {len(images)} training images have defects labelled in their "
                               f"label files (first: {labelled[0]}); train on defect-free images only, or pass "
                               "--allow-labelled")
        config = TrainConfig(
            product=args.product,
            images=[str(path) for path in images],
            preset=args.preset,
            input_size=args.input_size,
            crop_size=args.crop_size,
            epochs=args.epochs,
            minutes=args.minutes,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            anomaly_source=str(args.anomaly_source) if args.anomaly_source else None,
            device=args.device,
            seed=args.seed,
            snapshots=args.snapshots,
            checkpoint_seconds=args.checkpoint_every,
        )
    from labelme_dsarad.train import distributed

    if args.devices > 1 and not distributed.launched_by_torchrun():
        return distributed.launch_distributed(without_devices_option(sys.argv[1:]), args.devices)
    if distributed.launched_by_torchrun():
        device = distributed.join_process_group(args.device)
        if config is not None:
            config.device = device
    product = config.product if config else args.product
    if args.output:
        output, version = args.output, 1
    else:
        version, output = store.next_path(product)
    try:
        train_model(config, run_dir, output, resume=args.resume, version=version, storage=args.storage,
                    started=args.started, further_minutes=args.minutes if args.resume else None,
                    snapshots=args.snapshots)
    except KeyboardInterrupt:
        print(f"\ninterrupted; checkpoint saved in {run_dir}; continue with: dsarad train --product {product} --resume"
              + (f" --run-dir {run_dir}" if args.run_dir else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        distributed.leave_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return EXIT_OK
    print(f"model written to {output} ({(time.monotonic() - args.started) / 60:.1f} min)")
    if not args.output:
        print(in_use_after_storing(store, product, version))
    return EXIT_OK


def in_use_after_storing(store, product: str, version: int) -> str:
    """What a person reads after a new version was stored: which model is in use, and how to switch."""
    in_use, _ = store.in_use(product)
    if in_use.version == version and not in_use.bundled:
        return f"{product}: now using {in_use.name} (its only version)"
    return f"{product}: still using {in_use.name}; use the new one with: dsarad use {product} v{version}"


def run_evaluate(args) -> int:
    from dataclasses import replace

    from labelme_dsarad.model.inference import Predictor
    from labelme_dsarad.model.model_file import rewrite_header
    from labelme_dsarad.train.datasets import SAMPLE_KINDS, load_samples
    from labelme_dsarad.train.evaluation import evaluate_predictor

    kind, root = args.dataset
    if kind not in SAMPLE_KINDS:
        raise CommandError(f"--dataset {kind}: use one of {', '.join(SAMPLE_KINDS)}")
    model_path = resolve_model_path(args)
    samples = load_samples(kind, Path(root))
    predictor = Predictor(model_path, device=args.device)

    metrics = evaluate_predictor(predictor, samples, report_dir=args.report, suggestions=DEFAULT_SUGGESTIONS)
    overall = metrics["overall"]
    print(" ".join(f"{key}={value:.4f}" for key, value in overall.items() if isinstance(value, float)))
    for defect_type, values in sorted(metrics.get("per_type", {}).items()):
        auroc = values.get("image_auroc")
        print(f"  {defect_type:<12} image_auroc={auroc:.4f}" if auroc is not None else f"  {defect_type:<12} image_auroc=-")
    if args.report:
        print(f"report: {args.report / 'report.md'}")
    if args.save_to_model:
        info = predictor.model.info
        stored = {**metrics, "dataset": {"kind": kind, "path": str(Path(root).name), "images": len(samples)}}
        rewrite_header(model_path, replace(info, metrics=stored))
        print(f"metrics stored in {model_path}")
    return EXIT_OK


def run_models(args) -> int:
    from labelme_dsarad.model.model_file import ModelFileError
    from labelme_dsarad.model.store import ModelStore

    store = ModelStore(args.store)
    rows = []
    for stored in store.all_models():
        why = store.in_use(stored.product)[1] if stored.current else None
        try:
            info = stored.info()
            metrics = info.metrics.get("overall", info.metrics)
            rows.append({
                "product": stored.product,
                "version": stored.label,
                "current": stored.current,
                "in_use_because": why,
                "preset": info.architecture.preset,
                "input_size": info.architecture.input_size,
                "created": info.created,
                "image_auroc": metrics.get("image_auroc"),
                "path": str(stored.path),
            })
        except ModelFileError as problem:
            rows.append({"product": stored.product, "version": stored.label, "current": stored.current,
                         "in_use_because": why, "error": problem.problem, "path": str(stored.path)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no models; train one with: dsarad train --product NAME --images DIR --minutes 30")
        return EXIT_OK
    for row in rows:
        marker = "*" if row["current"] else " "
        in_use = f"in use ({row['in_use_because']})  " if row["current"] else ""
        if "error" in row:
            print(f"{marker} {row['product']:<20} {row['version']:<8} BROKEN: {row['error']}  {in_use}{row['path']}")
            continue
        auroc = f"{row['image_auroc']:.3f}" if isinstance(row["image_auroc"], (int, float)) else "-"
        print(f"{marker} {row['product']:<20} {row['version']:<8} {row['preset']:<8} {row['input_size']:>4}px  "
              f"image AUROC {auroc}  {row['created'][:10]}  {in_use}{row['path']}")
    if any(row["current"] for row in rows):
        print("* the model in use for its product (choose another with: dsarad use PRODUCT VERSION)")
    return EXIT_OK


def run_use(args) -> int:
    from labelme_dsarad.model.store import ModelStore, check_product_name, parse_version

    store = ModelStore(args.store)
    version = parse_version(args.version)
    previous = store.in_use(check_product_name(args.product))[0]  # one line when the product has no model at all
    chosen = store.set_current(args.product, version)
    was = "" if previous.path == chosen.path else f" (was {previous.name})"
    print(f"{args.product}: now using {chosen.name}{was}: {chosen.path}")
    return EXIT_OK


def run_export(args) -> int:
    from labelme_dsarad.model.export import export_onnx
    from labelme_dsarad.model.model_file import load_model

    model_path = resolve_model_path(args)
    check_writable_folder(args.onnx.parent)
    export_onnx(load_model(model_path), args.onnx)
    print(f"{model_path} exported to {args.onnx}")
    return EXIT_OK


def run_predict(args) -> int:
    from labelme_dsarad.pipeline import PredictOptions, predict_paths

    model_path = resolve_model_path(args)
    images = expand_image_arguments([str(path) for path in args.paths])
    if not images:
        raise CommandError(f"{' '.join(map(str, args.paths))}: no images found")
    if args.out is not None:
        check_writable_folder(args.out)
    if args.save_maps is not None:
        check_writable_folder(args.save_maps)
    options = PredictOptions(
        suggestions=SuggestionSettings(threshold=args.threshold, min_area=args.min_area, tolerance=args.tolerance,
                                       extend_to=args.extend_to, min_peak=args.min_peak),
        out_dir=args.out,
        maps_dir=args.save_maps,
        bare_maps=args.bare_maps,
        batch_size=args.batch_size,
        include_reviewed=args.include_reviewed,
    )
    try:
        summary = predict_paths(images, model_path, options, device=args.device, show_progress_bar=True)
    except KeyboardInterrupt:
        # Files already written are whole and are skipped next time.
        print("\ndsarad predict: interrupted; run the same command again to do the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary.describe(), file=sys.stderr)
    return EXIT_FAILURES if summary.failures else EXIT_OK


def run_retrain(args) -> int:
    import signal

    from labelme_dsarad.train.progress import TerminalProgress, format_retrain_result, json_progress
    from labelme_dsarad.train.retrain import RetrainConfig, retrain

    if not args.labels.is_dir():
        raise CommandError(f"{args.labels}: no such folder")
    if args.base is not None and not args.base.is_file():
        raise CommandError(f"{args.base}: no such model file")
    config = RetrainConfig(
        product=args.product, labels_dir=str(args.labels), store_root=str(args.store) if args.store else None,
        base_model=str(args.base) if args.base else None,
        normal_images=tuple(str(path) for path in expand_image_arguments(args.normals or [])),
        minutes=args.minutes, steps=args.steps,
        holdout=args.holdout, batch_size=args.batch_size or RetrainConfig.batch_size,
        learning_rate=args.learning_rate or RetrainConfig.learning_rate, device=args.device, seed=args.seed,
    )

    def cancelled(signum, frame):
        raise KeyboardInterrupt  # the plugin's Cancel: unwind, so nothing half-written stays

    signal.signal(signal.SIGTERM, cancelled)
    result = retrain(config, json_progress if args.progress_json else TerminalProgress())
    if args.progress_json:
        json_progress({"event": "done", **result.to_dict()})
    else:
        print(format_retrain_result(result))
    return EXIT_OK


def run_stats(args) -> int:
    from labelme_dsarad.train.stats import format_stats, suggestion_stats

    if not args.folder.is_dir():
        raise CommandError(f"{args.folder}: no such folder")
    groups, problems = suggestion_stats(args.folder)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps({"models": groups, "problems": problems}, indent=2))
    elif groups:
        print(format_stats(groups))
    else:
        print(f"{args.folder}: no label files")
    return EXIT_OK


def check_writable_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"{folder}: is a file, not a folder")  # mkdir would only say "File exists"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".dsarad-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as problem:
        raise CommandError(f"{folder}: cannot write there ({problem.strerror or problem})") from None


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started  # a training budget in minutes counts from here
    from labelme_dsarad.model.images import ImageReadError
    from labelme_dsarad.model.model_file import TRAIN_EXTRA_HINT, TRAINING_MODULES, ModelFileError

    try:
        return args.handler(args)
    # FileNotFoundError: our readers raise it with a one-line message naming the path.
    except (CommandError, ModelFileError, ImageReadError, FileNotFoundError, ValueError) as problem:
        print(f"dsarad {args.command}: error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"dsarad {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as missing:
        if missing.name not in TRAINING_MODULES:
            raise
        print(f"dsarad {args.command}: error: this needs PyTorch, which a review station's install leaves out: "
              f"{TRAIN_EXTRA_HINT}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
