"""How far should a suggestion extend below the threshold? Suggestion quality at several ``extend_to``.

    .venv/bin/python bench/extend_to_sweep.py --dataset mtd --model MODEL \\
        --labels runs/curve_mtd/retrained_10min_all/labels [--extend-to 1 0.8 0.7 0.6 0.5]

Measured on images that neither a retrain from ``--labels`` (a folder
``bench/retrain_experiment.py`` wrote) trained on nor the experiments report
on: that retrain's calibration part (``split_labels`` as the experiment
calls it, with no holdout), which holds corrections-half defects and
reviewed train-split normals. The same images serve for the base model,
which never saw a correction. Each image is predicted once; the settings
differ only in ``extend_to``, at the model's own threshold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import machine_line, print_table  # noqa: E402
from retrain_experiment import RETRAIN_HOLDOUT, halves  # noqa: E402

from labelme_dsarad.model.inference import Prediction, Predictor  # noqa: E402
from labelme_dsarad.model.polygons import SuggestionSettings  # noqa: E402
from labelme_dsarad.train.corrections import split_labels  # noqa: E402
from labelme_dsarad.train.datasets import Sample  # noqa: E402
from labelme_dsarad.train.evaluation import evaluate  # noqa: E402
from labelme_dsarad.train.labels import read_label_folder  # noqa: E402
from labelme_dsarad.train.retrain import RetrainConfig  # noqa: E402

SHOWN = (("defect_best_iou", "IoU of each defect with its best suggestion"), ("defects_touched", "defects touched"),
         ("false_suggestions_per_normal", "false suggestions per normal image"), ("kind_accuracy", "kind right"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["mtd", "ball_screw"], default="mtd")
    parser.add_argument("--root", type=Path, help="the data set's folder (default: the shared copy)")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True, help="a retrain experiment's labels folder")
    parser.add_argument("--extend-to", type=float, nargs="+", default=[1.0, 0.8, 0.7, 0.6, 0.5])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    corrections, _, _ = halves(args)
    by_path = {sample.image_path.resolve(): sample for sample in corrections}
    defaults = RetrainConfig(product="sweep", labels_dir=str(args.labels), minutes=1)
    split = split_labels(read_label_folder(args.labels).images, RETRAIN_HOLDOUT, defaults.calibration, defaults.seed)
    samples = [by_path[item.image_path.resolve()] if item.is_defect else Sample(item.image_path, None, "good", False)
               for item in split.calibration]
    predictor = Predictor(args.model, device=args.device)
    predictions = [predictor.predict(sample.read_image()) for sample in samples]
    rows = []
    for extend_to in args.extend_to:
        overall = evaluate(replay(predictions), samples,
                           suggestions=SuggestionSettings(extend_to=extend_to), show_progress=False,
                           generic=predictor.model.info.labels[0])["overall"]
        rows.append([f"{extend_to:g}", *[_fmt(overall.get(key)) for key, _ in SHOWN]])
    print(f"{machine_line()}\n{args.model}: {len(samples)} images, {sum(s.is_anomalous for s in samples)} with defects\n")
    print_table(["extend_to", *[title for _, title in SHOWN]], rows)
    return 0


def replay(predictions: list[Prediction]) -> Callable[[np.ndarray], Prediction]:
    """A stand-in for the model that hands back the predictions made before, in order."""
    remaining = iter(predictions)

    def predict(image: np.ndarray) -> Prediction:
        return next(remaining)

    return predict


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
