"""The ``dsarad`` command line.

Every expected failure (bad argument, unreadable file, broken model) ends in
one line on stderr naming the file and the problem, and a non-zero exit
status; tracebacks are for bugs.

Each command is a short handler here that only turns arguments into calls of
the library, and its options in ``cli_arguments``; ``COMMANDS`` pairs them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from labelme_dsarad.cli_arguments import (
    add_evaluate_arguments,
    add_export_arguments,
    add_models_arguments,
    add_predict_arguments,
    add_retrain_arguments,
    add_stats_arguments,
    add_train_arguments,
    add_use_arguments,
)
from labelme_dsarad.model.polygons import SuggestionSettings

if TYPE_CHECKING:
    from labelme_dsarad.train.trainer import TrainConfig

EXIT_OK, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """An expected problem with what the user asked for; printed as one line."""


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command``, of that command's options alone: ``main``
    builds only the one asked for, as some take their defaults from modules that load PyTorch."""
    parser = argparse.ArgumentParser(prog="dsarad", description="DSARAD defect pre-annotation for LabelMe")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments, handler) in COMMANDS.items():
        command_parser = commands.add_parser(name, help=summary)
        if command is None or command == name:
            add_arguments(command_parser)
            command_parser.set_defaults(handler=handler)
    return parser


def named_command(argv: list[str]) -> str:
    """The command ``argv`` names: its first word that is not an option ("" when none is)."""
    return next((word for word in argv if not word.startswith("-")), "")


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
    from labelme_dsarad.train.datasets import TRAIN_IMAGES

    if len(roots) != 1:
        raise CommandError("with --dataset, --images names exactly one dataset folder")
    return TRAIN_IMAGES[kind](Path(roots[0]))


def run_train(args) -> int:
    from labelme_dsarad.model.store import ModelStore, check_product_name
    from labelme_dsarad.train import distributed
    from labelme_dsarad.train.trainer import train_model

    try:
        check_product_name(args.product)
    except ValueError as problem:
        raise CommandError(str(problem)) from None
    store = ModelStore(args.store)
    run_dir = args.run_dir or store.root / args.product / "run"
    if args.resume:
        check_resumable(args, run_dir)
        config = None
    else:
        config = new_training(args)
    if args.devices > 1 and not distributed.launched_by_torchrun():
        return distributed.launch_distributed(without_devices_option(sys.argv[1:]), args.devices)
    if distributed.launched_by_torchrun():
        device = distributed.join_process_group(args.device)
        if config is not None:
            config.device = device
    version, output = (1, args.output) if args.output else store.next_path(args.product)
    try:
        train_model(config, run_dir, output, resume=args.resume, version=version, storage=args.storage,
                    started=args.started, further_minutes=args.minutes if args.resume else None,
                    snapshots=args.snapshots)
    except KeyboardInterrupt:
        print(f"\ninterrupted; checkpoint saved in {run_dir}; continue with: dsarad train --product {args.product} "
              "--resume" + (f" --run-dir {run_dir}" if args.run_dir else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        distributed.leave_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return EXIT_OK
    print(f"model written to {output} ({(time.monotonic() - args.started) / 60:.1f} min)")
    if not args.output:
        print(in_use_after_storing(store, args.product, version))
    return EXIT_OK


def check_resumable(args, run_dir: Path) -> None:
    from labelme_dsarad.train.trainer import CHECKPOINT_NAME

    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise CommandError(f"{run_dir}: no checkpoint to resume from")
    if args.epochs is not None:
        raise CommandError("--resume takes --minutes, not --epochs: a finished run trains longer by minutes")


def new_training(args) -> TrainConfig:
    """The settings of a new training run, once its images are found and checked."""
    from labelme_dsarad.train.labels import label_files_with_defects
    from labelme_dsarad.train.trainer import TrainConfig

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
    return TrainConfig(
        product=args.product,
        images=[str(path) for path in images],
        preset=args.preset,
        input_size=args.input_size,
        crop_size=args.crop_size,
        scale=args.scale,
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

    metrics = evaluate_predictor(predictor, samples, report_dir=args.report, suggestions=SuggestionSettings())
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
                "scale": info.architecture.scale,
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
        scale = f" tiles at {row['scale']:g} photo px a pixel" if row["scale"] else ""
        print(f"{marker} {row['product']:<20} {row['version']:<8} {row['preset']:<8} {row['input_size']:>4}px{scale}  "
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
    print_review_queues(images, args.out)
    return EXIT_FAILURES if summary.failures else EXIT_OK


def print_review_queues(images: list[Path], out_dir: Path | None) -> None:
    """Write each label folder's review queue and say where, with how many images score above
    the model's threshold."""
    from labelme_dsarad.model.scoring import NORMALISED_THRESHOLD
    from labelme_dsarad.review_queue import QUEUE_FILE, write_queues

    try:
        queues = write_queues(images, out_dir)
    except OSError as problem:
        print(f"{QUEUE_FILE}: not written ({problem.strerror or problem})", file=sys.stderr)
        return
    for path, entries in queues:
        above = sum(entry.score is not None and entry.score >= NORMALISED_THRESHOLD for entry in entries)
        waiting = sum(not entry.reviewed for entry in entries)
        print(f"review queue: {path}: {above} of {len(entries)} images score above the model's threshold; "
              f"{waiting} to review, most likely defective first", file=sys.stderr)


def run_retrain(args) -> int:
    import signal

    from labelme_dsarad.train.progress import TerminalProgress, format_retrain_result, json_progress
    from labelme_dsarad.train.retrain import retrain
    from labelme_dsarad.train.retrain_config import RetrainConfig

    if not args.labels.is_dir():
        raise CommandError(f"{args.labels}: no such folder")
    if args.base is not None and not args.base.is_file():
        raise CommandError(f"{args.base}: no such model file")
    config = RetrainConfig(
        product=args.product, labels_dir=str(args.labels), store_root=str(args.store) if args.store else None,
        base_model=str(args.base) if args.base else None,
        normal_images=tuple(str(path) for path in expand_image_arguments(args.normals or [])),
        minutes=args.minutes, steps=args.steps,
        holdout=args.holdout, batch_size=args.batch_size, learning_rate=args.learning_rate, device=args.device,
        seed=args.seed,
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


Handler = Callable[[argparse.Namespace], int]
# Each command: what it does (its line in 'dsarad --help'), its options, and what runs it.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "predict": ("write LabelMe JSON with suggested defect polygons for images or folders",
                add_predict_arguments, run_predict),
    "train": ("train a model for one product type from defect-free images", add_train_arguments, run_train),
    "evaluate": ("measure a model on a labelled test set and write a report", add_evaluate_arguments, run_evaluate),
    "models": ("list the models in the store and the bundled default, and which is in use",
               add_models_arguments, run_models),
    "use": ("choose the model in use for a product: a stored version or the bundled one", add_use_arguments, run_use),
    "export": ("write a model as ONNX (with its header) for onnxruntime", add_export_arguments, run_export),
    "retrain": ("warm-start retraining from a folder of corrected LabelMe labels; stores a new version, the model in "
                "use stays until 'dsarad use'", add_retrain_arguments, run_retrain),
    "stats": ("how the suggestions fared against the final labels of a folder", add_stats_arguments, run_stats),
}


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    command = named_command(argv)
    from labelme_dsarad.model.images import ImageReadError
    from labelme_dsarad.model.model_file import TRAIN_EXTRA_HINT, TRAINING_MODULES, ModelFileError

    try:
        # Within the try: a command's options load the modules their defaults live in.
        args = build_parser(command).parse_args(argv)
        args.started = started  # a training budget in minutes counts from here
        return args.handler(args)
    # FileNotFoundError: our readers raise it with a one-line message naming the path.
    except (CommandError, ModelFileError, ImageReadError, FileNotFoundError, ValueError) as problem:
        print(f"dsarad {command}: error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"dsarad {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as missing:
        if missing.name not in TRAINING_MODULES:
            raise
        print(f"dsarad {command}: error: this needs PyTorch, which a review station's install leaves out: "
              f"{TRAIN_EXTRA_HINT}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
