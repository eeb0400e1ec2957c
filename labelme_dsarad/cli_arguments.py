"""The options of every ``dsarad`` command (``cli.COMMANDS`` pairs them with their handlers).

Choices and defaults come from where they are defined: the settings dataclasses'
fields, the devices, presets and storage formats; an option never retypes a
value. A bad value is refused by argparse in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from labelme_dsarad.model.devices import DEFAULT_DEVICE, DEVICES
from labelme_dsarad.model.polygons import DEFAULT_EXTEND_TO, DEFAULT_MIN_PEAK, MAX_MIN_PEAK, SuggestionSettings

DEFAULT_SUGGESTIONS = SuggestionSettings()


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


def scale_argument(text: str) -> float | str:
    """``--scale``: a positive number, or ``auto``."""
    from labelme_dsarad.train.trainer import AUTO_SCALE

    return AUTO_SCALE if text == AUTO_SCALE else positive_float(text)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", type=Path,
                       help="model file (.safetensors); default: the product's model in use or the bundled one")
    group.add_argument("--product", help="use this product's model in use from the model store (see 'dsarad models')")
    parser.add_argument("--store", type=Path, help="model store folder (default: $DSARAD_MODEL_STORE or the user data folder)")


def default_of(settings: type, name: str) -> Any:
    """The default of a field of a settings dataclass: the command line offers it, never retypes it."""
    return next(field.default for field in dataclasses.fields(settings) if field.name == name)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE)


def add_predict_arguments(predict: argparse.ArgumentParser) -> None:
    from labelme_dsarad.pipeline import PredictOptions

    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="images or folders of images")
    add_model_arguments(predict)
    predict.add_argument("--out", type=Path, help="folder for the JSON files (default: next to each image)")
    add_suggestion_arguments(predict)
    add_device_argument(predict)
    predict.add_argument("--save-maps", type=Path, metavar="DIR",
                         help="also write each anomaly map as a PNG: drawn over the photo, with a colour bar")
    predict.add_argument("--bare-maps", action="store_true", help="with --save-maps: the heat maps alone")
    predict.add_argument("--batch-size", type=positive_int, default=default_of(PredictOptions, "batch_size"),
                         help="images per forward pass (helps on a GPU)")
    predict.add_argument("--include-reviewed", action="store_true",
                         help="also suggest on images a person marked reviewed (image flag 'ok'); left alone by default")


def add_suggestion_arguments(predict: argparse.ArgumentParser) -> None:
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


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    from labelme_dsarad.model.architecture import PRESETS
    from labelme_dsarad.model.model_file import STORAGES
    from labelme_dsarad.train.datasets import TRAIN_IMAGES
    from labelme_dsarad.train.engine import TRAINED_STORAGE
    from labelme_dsarad.train.trainer import TrainConfig

    train.add_argument("--product", required=True, help="product type name, e.g. magnetic_tile")
    train.add_argument("--images", nargs="+", help="folders, files or glob patterns of defect-free images")
    train.add_argument("--dataset", choices=list(TRAIN_IMAGES),
                       help="--images names a Magnetic Tile root, an MVTec AD category or the ball screw (BSData) "
                            "folder: only its train split is used")
    train.add_argument("--preset", choices=sorted(PRESETS), default=default_of(TrainConfig, "preset"))
    sizes = ", ".join(f"{name} {PRESETS[name].input_size}" for name in sorted(PRESETS))
    train.add_argument("--input-size", type=int, help=f"square training and inference size (default: the preset's: {sizes})")
    train.add_argument("--crop-size", type=int,
                       help="train on random windows of this side cut from the images at the input size "
                            "(default: whole images)")
    train.add_argument("--scale", type=scale_argument,
                       help="photo pixels per model pixel: photos keep their shape and are covered by tiles of the "
                            "input size, so thin defects keep their width; 'auto': the median photo's shorter side "
                            "fills one tile (default: every photo squashed to one square)")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_float, help="passes over the images, teacher and student together")
    budget.add_argument("--minutes", type=positive_float,
                        help="wall-clock budget, teacher and student together; with --resume on a finished run, "
                             "a further round of the student of that many minutes")
    train.add_argument("--anomaly-source", type=Path, help="folder of texture images to paste as anomalies (default: built-in)")
    add_device_argument(train)
    train.add_argument("--devices", type=positive_int, default=1, help="GPUs (or CPU processes) for data-parallel training")
    train.add_argument("--seed", type=int, default=default_of(TrainConfig, "seed"))
    train.add_argument("--batch-size", type=positive_int, default=default_of(TrainConfig, "batch_size"))
    learning_rate = default_of(TrainConfig, "learning_rate")
    train.add_argument("--learning-rate", type=positive_float, default=learning_rate,
                       help=f"peak learning rate of the warm-up and cosine schedule (default {learning_rate:g})")
    train.add_argument("--snapshots", type=non_negative_int, default=default_of(TrainConfig, "snapshots"),
                       help="export this many intermediate models")
    train.add_argument("--run-dir", type=Path, help="checkpoint folder (default: in the model store)")
    every = default_of(TrainConfig, "checkpoint_seconds")
    train.add_argument("--checkpoint-every", type=positive_float, default=every, metavar="SECONDS",
                       help=f"seconds between checkpoints (default {every:g})")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --run-dir (or, with --minutes, train a finished one longer)")
    train.add_argument("--output", type=Path, help="write the model here instead of adding it to the store")
    train.add_argument("--storage", choices=STORAGES, default=TRAINED_STORAGE,
                       help=f"weights in the model file (default {TRAINED_STORAGE}); int8: convolution weights as "
                            "int8 (a quarter of fp32)")
    train.add_argument("--store", type=Path, help="model store folder")
    train.add_argument("--allow-labelled", action="store_true",
                       help="train even on images whose label files hold defect shapes (they are learnt as normal)")


def add_evaluate_arguments(evaluate: argparse.ArgumentParser) -> None:
    add_model_arguments(evaluate)
    evaluate.add_argument("--dataset", nargs=2, metavar=("KIND", "PATH"), required=True,
                          help="mtd ROOT (Magnetic Tile, its test split), ball_screw ROOT (BSData), mvtec CATEGORY_DIR, "
                               "or folder ROOT")
    evaluate.add_argument("--report", type=Path, metavar="DIR", help="write metrics.json, plots, an image grid and report.md")
    add_device_argument(evaluate)
    evaluate.add_argument("--save-to-model", action="store_true",
                          help="also store the metrics in the model file's header (shown by 'dsarad models' and the plugin)")


def add_models_arguments(models: argparse.ArgumentParser) -> None:
    models.add_argument("--store", type=Path, help="model store folder")
    models.add_argument("--json", action="store_true", help="machine-readable output")


def add_use_arguments(use: argparse.ArgumentParser) -> None:
    use.add_argument("product", metavar="PRODUCT", help="product type name, e.g. magnetic_tile")
    use.add_argument("version", metavar="VERSION", help="a stored version (v2 or 2), or 'bundled'")
    use.add_argument("--store", type=Path, help="model store folder")


def add_export_arguments(export: argparse.ArgumentParser) -> None:
    add_model_arguments(export)
    export.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="the ONNX file to write")


def add_retrain_arguments(retrain: argparse.ArgumentParser) -> None:
    from labelme_dsarad.train.retrain_config import DEFAULT_MINUTES, RetrainConfig

    retrain.add_argument("--product", required=True, help="product type name; its model in use is the start")
    retrain.add_argument("--labels", type=Path, metavar="DIR", required=True,
                         help="folder of LabelMe JSON files; images with the image flag 'ok' count as reviewed")
    retrain.add_argument("--normals", nargs="+", metavar="PATH",
                         help="defect-free images to learn from beside the reviewed ones, e.g. those the first "
                              "training used (folders, files or glob patterns)")
    budget = retrain.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=positive_float, help=f"wall-clock training budget (default {DEFAULT_MINUTES:g})")
    budget.add_argument("--steps", type=int, help="training steps instead of minutes")
    retrain.add_argument("--store", type=Path, help="model store folder")
    retrain.add_argument("--base", type=Path, metavar="MODEL", help="start from this model file instead of the one in use")
    holdout = default_of(RetrainConfig, "holdout")
    retrain.add_argument("--holdout", type=float, default=holdout,
                         help=f"share of the reviewed images held out to report before/after metrics (default {holdout:g})")
    retrain.add_argument("--batch-size", type=positive_int, default=default_of(RetrainConfig, "batch_size"),
                         help="images per step (default: %(default)s, the recipe's)")
    retrain.add_argument("--learning-rate", type=positive_float, default=default_of(RetrainConfig, "learning_rate"),
                         help="peak learning rate (default: %(default)g, the recipe's)")
    add_device_argument(retrain)
    retrain.add_argument("--seed", type=int, default=default_of(RetrainConfig, "seed"))
    retrain.add_argument("--progress-json", action="store_true", help="progress as one JSON object per line on stdout")


def add_stats_arguments(stats: argparse.ArgumentParser) -> None:
    stats.add_argument("folder", type=Path, metavar="DIR", help="folder of LabelMe JSON files")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
