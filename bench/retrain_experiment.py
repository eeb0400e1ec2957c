"""Does retraining from corrected labels help? The closed loop on Magnetic Tile, end to end.

1. Start from a model trained on train-split MT_Free images only (``--base``).
2. Play the person: write a LabelMe file for every image of the "corrections"
   half of the defect folders (DATASET.md) with the ground-truth mask as
   polygons and the image flag ``ok``, and one with ``ok`` and no shapes for
   each train-split MT_Free image (reviewed normals). Label files point at the
   data set's images (relative ``imagePath``); nothing is copied.
3. ``retrain`` from that folder (warm start, real defects three ways) into a
   model store of its own under ``--out``.
4. Measure the base and the retrained model on the "measurement" half plus
   the 191 test-split MT_Free images, and nothing else: image AUROC (overall
   and per defect type), pixel AUROC, AUPRO, best F1, F1 at the model's own
   threshold, and suggestion IoU against the ground truth.

Nothing of the measurement set is trained or tuned on: the retrain sees only
the corrections half and train-split normals (its thresholds come from a
calibration part of those), and ``--holdout`` defaults to 0 because the
measurement set is the report here. Prints a table; writes
``OUT/retrain_experiment.json``.

    .venv/bin/python bench/retrain_experiment.py --base resources/models/magnetic_tile_compact.safetensors \\
        --minutes 10 --out runs/retrain_experiment
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, print_table, stderr  # noqa: E402

from labelme_dsarad.model.images import read_image  # noqa: E402
from labelme_dsarad.model.inference import Predictor  # noqa: E402
from labelme_dsarad.model.labelfile import LABELME_VERSION, write_label_file  # noqa: E402
from labelme_dsarad.model.model_file import file_sha256, load_model  # noqa: E402
from labelme_dsarad.model.polygons import SuggestionSettings, mask_to_polygons  # noqa: E402
from labelme_dsarad.model.store import ModelStore  # noqa: E402
from labelme_dsarad.train.datasets import (  # noqa: E402
    Sample,
    default_mtd_root,
    mtd_retrain_halves,
    mtd_train_images,
    read_mask,
)
from labelme_dsarad.train.evaluation import evaluate_predictor  # noqa: E402
from labelme_dsarad.train.metric_names import REPORTED_METRICS  # noqa: E402
from labelme_dsarad.train.progress import TerminalProgress  # noqa: E402
from labelme_dsarad.train.retrain import RetrainConfig, retrain  # noqa: E402

# A person's outline follows the defect closely: half-pixel simplification,
# and every region kept, however small.
LABEL_TOLERANCE = 0.5


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="model trained on train-split MT_Free images")
    parser.add_argument("--mtd", type=Path, help="Magnetic Tile root (default: $DSARAD_MTD_ROOT or the shared copy)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="retraining budget (default 10)")
    budget.add_argument("--steps", type=int)
    parser.add_argument("--out", type=Path, default=Path("runs/retrain_experiment"))
    parser.add_argument("--holdout", type=float, default=0.0, help="retrain's own holdout of the corrections (default 0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="smoke test only: at most this many images per folder and half")
    return parser.parse_args()


def limited(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def write_person_labels(folder: Path, corrections: list[Sample], normals: list[Path]) -> tuple[int, list[str]]:
    """LabelMe files as a person would leave them after reviewing.

    Returns the number of defect shapes and the defect images left out: a
    few MTD defect images have an empty mask, and a person would have outlined
    something we cannot know, so they get no label file (rather than pass for
    normal images).
    """
    folder.mkdir(parents=True, exist_ok=True)
    shapes_written, left_out = 0, []
    for sample in corrections:
        mask = read_mask(sample.mask_path, *read_image(sample.image_path).shape[:2])
        regions = mask_to_polygons(mask, min_area=1, tolerance=LABEL_TOLERANCE)
        if not regions:
            left_out.append(f"{sample.defect_type}/{sample.image_path.name}")
            continue
        shapes: list[dict] = [{"label": "defect", "points": [[round(x, 2), round(y, 2)] for x, y in region.points],
                   "group_id": None, "description": "", "shape_type": "polygon", "flags": {}, "mask": None}
                  for region in regions]
        shapes_written += len(shapes)
        _write(folder / f"MT_{sample.defect_type}_{sample.image_path.stem}.json", sample.image_path, mask.shape, shapes)
    for image in normals:
        height, width = read_image(image).shape[:2]
        _write(folder / f"MT_Free_{image.stem}.json", image, (height, width), [])
    return shapes_written, left_out


def _write(path: Path, image: Path, shape: tuple[int, int], shapes: list[dict]) -> None:
    write_label_file(path, {
        "version": LABELME_VERSION, "flags": {"ok": True}, "shapes": shapes,
        "imagePath": os.path.relpath(image.resolve(), path.parent.resolve()), "imageData": None,
        "imageHeight": shape[0], "imageWidth": shape[1],
    })


def measure(model: Path, samples: list[Sample], device: str) -> dict:
    metrics = evaluate_predictor(Predictor(model, device=device), samples, suggestions=SuggestionSettings())
    return {**metrics["overall"], "per_type_image_auroc": {name: values["image_auroc"]
                                                           for name, values in metrics["per_type"].items()},
            "images": len(samples), "defect_images": sum(sample.is_anomalous for sample in samples)}


def main() -> int:
    args = parse_arguments()
    root = args.mtd or default_mtd_root()
    if root is None:
        stderr("no Magnetic Tile data set: pass --mtd ROOT or set DSARAD_MTD_ROOT")
        return 2
    started = time.monotonic()
    corrections, measurement = mtd_retrain_halves(root)
    train_normals = mtd_train_images(root)
    if args.limit is not None:
        corrections = [s for folder in sorted({s.defect_type for s in corrections})
                       for s in limited([s for s in corrections if s.defect_type == folder], args.limit)]
        measurement = [s for kind in sorted({s.defect_type for s in measurement})
                       for s in limited([s for s in measurement if s.defect_type == kind], args.limit)]
        train_normals = limited(train_normals, 4 * args.limit)
    trained_on = {s.image_path.resolve() for s in corrections} | {p.resolve() for p in train_normals}
    if any(s.image_path.resolve() in trained_on for s in measurement):
        raise AssertionError("a measurement image is among the labels: the split is broken")

    args.out.mkdir(parents=True, exist_ok=True)
    labels_dir, store_root = args.out / "labels", args.out / "store"
    shutil.rmtree(labels_dir, ignore_errors=True)
    shutil.rmtree(store_root, ignore_errors=True)
    stderr(f"writing {len(corrections)} corrected and {len(train_normals)} normal label files to {labels_dir}")
    shapes, left_out = write_person_labels(labels_dir, corrections, train_normals)
    if left_out:
        stderr(f"left out {len(left_out)} corrections with an empty ground-truth mask: {', '.join(left_out)}")

    base = load_model(args.base)
    product = base.info.product
    store = ModelStore(store_root)
    (store_root / product).mkdir(parents=True)
    shutil.copyfile(args.base, store_root / product / "v1.safetensors")
    store.set_current(product, 1)

    result = retrain(RetrainConfig(
        product=product, labels_dir=str(labels_dir), store_root=str(store_root), minutes=args.minutes,
        steps=args.steps, holdout=args.holdout, batch_size=args.batch_size, device=args.device, seed=args.seed,
    ), TerminalProgress())

    stderr(f"measuring on {len(measurement)} images (measurement half + test-split normals)")
    before = measure(args.base, measurement, args.device)
    after = measure(result.path, measurement, args.device)

    rows = [[title, _fmt(before.get(key)), _fmt(after.get(key))] for key, title in REPORTED_METRICS]
    rows += [[f"image_auroc {name}", _fmt(before["per_type_image_auroc"].get(name)),
              _fmt(after["per_type_image_auroc"].get(name))] for name in after["per_type_image_auroc"]]
    print(f"\nMagnetic Tile, {before['defect_images']} defect + {before['images'] - before['defect_images']} normal "
          f"measurement images; base {args.base.name}, retrained {result.seconds / 60:.1f} min "
          f"({result.to_dict()['counts']['train']['defect']} defect images trained on)\n")
    print_table(["metric", "before", "after"], rows)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_line(),
        "base": {"path": str(args.base), "sha256": file_sha256(args.base), "training": base.info.training},
        "labels": {"corrections": len(corrections) - len(left_out), "defect_shapes": shapes,
                   "left_out_empty_masks": left_out, "reviewed_normals": len(train_normals)},
        "retrain": {k: v for k, v in result.to_dict().items() if k not in ("before", "after")},
        "measurement": {"images": len(measurement), "defect_images": before["defect_images"]},
        "before": before,
        "after": after,
        "seconds": round(time.monotonic() - started, 1),
        "smoke_test_limit": args.limit,
    }
    output = args.out / "retrain_experiment.json"
    output.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten: {output}")
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
