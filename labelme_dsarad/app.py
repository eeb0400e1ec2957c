"""``labelme-dsarad``: LabelMe with the "Defect detection" panel.

Everything but the model options is LabelMe's own command line (config file,
``--output``, ``--labels`` ...): our options are taken out and the rest goes to
``labelme.__main__.main``, which builds the window as ``labelme`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labelme_dsarad.model.labelfile import REVIEWED_FLAG
from labelme_dsarad.panel import IN_USE_MARK, ModelOption

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelme-dsarad",
        usage="labelme-dsarad [PATH] [--model FILE | --product NAME] [--store DIR] [LabelMe options]",
        add_help=False,
        description="LabelMe with DSARAD defect suggestions.",
        epilog="PATH (an image, a label file or a folder) and every other option go to LabelMe "
        "(see 'labelme --help'), e.g. --output DIR, --labels, --config.",
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", type=Path,
                       help="model file (.safetensors); default: the product's current model or the bundled one")
    group.add_argument("--product", help="use the current model of this product from the model store")
    parser.add_argument("--store", type=Path, help="model store folder (default: $DSARAD_MODEL_STORE or the user data folder)")
    return parser


def model_options(model: Path | None, product: str | None, store_root: Path | None) -> list[ModelOption]:
    """The chooser's entries: the one asked for first, then each product's model in use, then the rest."""
    from labelme_dsarad.model.store import ModelStore

    store = ModelStore(store_root)
    options: list[ModelOption] = []
    if model is not None:
        options.append(ModelOption(f"{model.name} (file)", model))
    elif product is not None:
        stored = store.resolve(product)  # ModelFileError when the product has no model
        options.append(ModelOption(title_of(stored), stored.path))
    seen = {option.path.resolve() for option in options if option.path is not None}
    try:
        stored_models = store.all_models()
    except (OSError, ValueError):
        stored_models = []  # an unreadable store must not keep the window from opening
    current_first = sorted(stored_models,
                           key=lambda stored: (not stored.current, stored.bundled, stored.product, -stored.version))
    for stored in current_first:
        if stored.path.resolve() not in seen:
            seen.add(stored.path.resolve())
            options.append(ModelOption(title_of(stored), stored.path))
    return options


def title_of(stored) -> str:
    return stored.name + (IN_USE_MARK if stored.current else "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, labelme_args = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        return 0
    from labelme_dsarad.model.model_file import ModelFileError

    if args.model is not None and not args.model.is_file():
        print(f"labelme-dsarad: error: {args.model}: no such model file", file=sys.stderr)
        return EXIT_ERROR
    try:
        options = model_options(args.model, args.product, args.store)
    except (ModelFileError, ValueError) as problem:
        print(f"labelme-dsarad: error: {problem}", file=sys.stderr)
        return EXIT_ERROR

    from labelme_dsarad._labelme_adapter import run_labelme
    from labelme_dsarad.panel import attach_panel

    if not any(argument == "--flags" or argument.startswith("--flags=") for argument in labelme_args):
        # The image flag 'ok' marks an image as reviewed, which is what
        # 'dsarad retrain' and 'dsarad stats' read; give it a tick box.
        labelme_args += ["--flags", REVIEWED_FLAG]
    panels = []
    try:
        run_labelme(lambda window: panels.append(attach_panel(window, options)), labelme_args)
    except SystemExit as leaving:  # LabelMe ends with sys.exit(app.exec_()), or earlier (--reset-config)
        return leaving.code if isinstance(leaving.code, int) else 0
    finally:
        for panel in panels:
            panel.shutdown()  # a running thread destroyed at exit would abort the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
