"""An inspector's effort: the clicks of labelling a folder with the tool, against labelling it by hand.

    .venv/bin/python bench/annotation_effort.py --dataset mtd \\
        --model bundled=resources/models/magnetic_tile_compact.safetensors \\
        --model retrained=STORE/magnetic_tile/v1.safetensors --labels LABELS_OF_THE_RETRAIN [--out runs/effort]

Each model predicts the data set's measurement half plus its test normals
(``dataset_splits``: never trained or tuned on), with the default
suggestion settings at its own threshold, and a simulated inspector works
through the folder. The click model (docs/quality.md#an-inspectors-effort):

- **By hand**: open the image (1), outline each defect (its outline's
  vertices, plus 1 to close it and pick its label), tick it reviewed (1).
- **With the tool**, image by image in the review queue's order: open (1);
  accept a suggestion a person would keep as it is (1: IoU >= 0.5 with a
  defect no accepted suggestion covers yet), plus renaming it when it does
  not name the defect's kind (2; the generic label names none); reject any other suggestion (1); outline by hand each defect
  no accepted suggestion covers (vertices + 1); tick reviewed (1).
- **Bulk confirmation**: the images the model scores below the grid's cut
  and gives no suggestion are shown in pages of ``GRID_PAGE`` thumbnails
  and confirmed a page at a time (open the page, select all, confirm: 3
  clicks a page); a defective image among them passes unseen, and is
  counted.

A defect's outline is its mask region drawn as suggestions are drawn
(``mask_to_polygons`` with the default tolerance and fit, whatever
``--fit`` says): a person's polygon as tight as the tool's. The grid's cut is the lowest image score of a
defective image in the calibration set: the model's own where a retrain
stored it (``scoring.BULK_CONFIRM_BELOW``); else, for a retrained model,
that of the retrain's calibration images (``--labels``: the retrain's
labels folder, split as the retrain split it), and for one that never saw
the data set's corrections half, that half's.

Prints, per model: the clicks with the tool over the clicks by hand on the
folder as it is and projected to ``--defect-share`` defective images (with
and without bulk confirmation), the share of defects whose suggestion is
accepted as it is, the median vertices of a suggestion, false suggestions
per good image, the share of the queue to meet 90% of the defective
images, and the defective test images the grid's cut would pass unseen.
The CPU's flags come first (the reference class: two AVX2 cores, no AVX-512
or AMX). Writes ``OUT/annotation_effort.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from _common import cpu_flags_line, machine_line, print_table, stderr
from dataset_splits import ball_screw_retrain_halves, default_ball_screw_root, default_mtd_root, mtd_retrain_halves

from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.polygons import SuggestionSettings, mask_to_polygons
from labelme_dsarad.model.scoring import BULK_CONFIRM_BELOW
from labelme_dsarad.train.corrections import split_labels
from labelme_dsarad.train.datasets import Sample
from labelme_dsarad.train.labels import LabelledImage, rasterise_shapes, read_label_folder
from labelme_dsarad.train.retrain_config import RetrainConfig
from labelme_dsarad.train.suggestion_metrics import defect_overlaps, labelled_defects

ACCEPT_IOU = 0.5  # a suggestion this close to a defect is accepted as it is
OPEN = TICK = ACCEPT = REJECT = CLOSE_OUTLINE = 1
RENAME = 2  # open the shape's label dialog, pick the kind
GRID_PAGE = 30  # thumbnails a page (6 x 5)
PAGE_CLICKS = 3  # open the page, select all, confirm
QUEUE_SHARE_OF_DEFECTS = 0.9
DEFAULT_SUGGESTIONS = SuggestionSettings()


@dataclass
class ImageEffort:
    """What one image costs and holds, for one model."""

    name: str
    defective: bool
    score: float
    suggestions: int
    by_hand: int
    with_tool: int
    defects: int = 0
    accepted_as_is: int = 0
    false_suggestions: int = 0
    vertices: list[int] = field(default_factory=list)  # of each suggestion
    best_ious: list[float] = field(default_factory=list)  # of each defect with its best suggestion


def outline_vertices(mask: np.ndarray) -> int:
    """The vertices a person clicks to outline the defect ``mask``: as tight as the tool's polygons."""
    regions = mask_to_polygons(mask, min_area=1, tolerance=DEFAULT_SUGGESTIONS.tolerance, fit=DEFAULT_SUGGESTIONS.fit)
    return sum(len(region.points) for region in regions) or 3


def image_effort(sample: Sample, predictor: Predictor, generic: str, settings: SuggestionSettings) -> ImageEffort:
    image = sample.read_image()
    prediction = predictor.predict(image)
    truth = sample.mask(*image.shape[:2])
    labels, areas = labelled_defects(truth)
    defect_ids = range(1, len(areas))
    drawing = {index: outline_vertices(labels == index) + CLOSE_OUTLINE for index in defect_ids}
    suggestions = prediction.suggestions(settings, generic)
    covered: set[int] = set()
    best_ious = np.zeros(len(areas))
    clicks = OPEN + TICK
    effort = ImageEffort(sample.image_path.name, bool(truth.any()), float(prediction.image_score), len(suggestions),
                         OPEN + TICK + sum(drawing.values()), 0, len(drawing),
                         vertices=[len(s.region.points) for s in suggestions])
    for suggestion in suggestions:
        suggested = rasterise_shapes([{"points": suggestion.region.points}], *truth.shape)
        overlaps, ious = defect_overlaps(suggested, labels, areas)
        best_ious = np.maximum(best_ious, ious)
        best = int(np.argmax(ious))
        if best and ious[best] >= ACCEPT_IOU and best not in covered:
            covered.add(best)
            effort.accepted_as_is += 1
            clicks += ACCEPT + (RENAME if suggestion.label != sample.defect_type else 0)
        else:
            clicks += REJECT
            effort.false_suggestions += not overlaps.any()
    clicks += sum(cost for index, cost in drawing.items() if index not in covered)
    effort.with_tool = clicks
    effort.best_ious = best_ious[1:].tolist()
    return effort


def grid_cut(predictor: Predictor, calibration: Iterable[tuple[np.ndarray, bool]]) -> float:
    """The lowest image score of a defective calibration image: the grid shows only images below it."""
    scores = [predictor.predict(image).image_score for image, defective in calibration if defective]
    return min(scores) if scores else 0.0


def retrain_calibration(labels_dir: Path) -> list[LabelledImage]:
    """The calibration images of the retrain that read ``labels_dir``, split as it split them."""
    folder = read_label_folder(labels_dir)
    defaults = RetrainConfig("effort", str(labels_dir))
    return split_labels(folder.images, 0.0, defaults.calibration, defaults.seed).calibration


def summary(efforts: list[ImageEffort], cut: float, defect_share: float) -> dict:
    defective = [e for e in efforts if e.defective]
    good = [e for e in efforts if not e.defective]
    def shown_in_grid(effort: ImageEffort) -> bool:
        return effort.score < cut and not effort.suggestions

    in_grid = [e for e in efforts if shown_in_grid(e)]
    queue = sorted(efforts, key=lambda e: -e.score)
    met, needed = 0, len(queue)
    for position, effort in enumerate(queue, 1):
        met += effort.defective
        if met >= QUEUE_SHARE_OF_DEFECTS * len(defective):
            needed = position
            break

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    def with_grid(part: list[ImageEffort]) -> float:
        """Mean clicks an image of ``part`` costs when the grid confirms those below the cut."""
        return mean([PAGE_CLICKS / GRID_PAGE if shown_in_grid(e) else e.with_tool for e in part])

    hand = {kind: mean([e.by_hand for e in part]) for kind, part in (("defective", defective), ("good", good))}
    tool = {kind: mean([e.with_tool for e in part]) for kind, part in (("defective", defective), ("good", good))}
    grid = {"defective": with_grid(defective), "good": with_grid(good)}

    def projected(costs: dict) -> float:
        return defect_share * costs["defective"] + (1 - defect_share) * costs["good"]

    vertices = [v for e in efforts for v in e.vertices]
    defects = sum(e.defects for e in defective)
    grid_pages = math.ceil(len(in_grid) / GRID_PAGE)
    return {
        "images": len(efforts), "defective_images": len(defective), "defects": defects,
        "clicks_by_hand": sum(e.by_hand for e in efforts),
        "clicks_with_tool": sum(e.with_tool for e in efforts),
        "tool_over_hand": sum(e.with_tool for e in efforts) / sum(e.by_hand for e in efforts),
        "tool_over_hand_with_grid": (sum(e.with_tool for e in efforts if not shown_in_grid(e)) + PAGE_CLICKS * grid_pages)
        / sum(e.by_hand for e in efforts),
        "projected_tool_over_hand": projected(tool) / projected(hand),
        "projected_with_grid_over_hand": projected(grid) / projected(hand),
        "accepted_as_is": sum(e.accepted_as_is for e in defective) / defects if defects else None,
        "median_vertices": float(np.median(vertices)) if vertices else None,
        "defect_best_iou": float(np.mean([iou for e in defective for iou in e.best_ious])) if defects else None,
        "false_suggestions_per_good_image": mean([e.suggestions for e in good]),
        "queue_share_for_90pc_defective": needed / len(queue),
        "grid_cut": cut, "grid_images": len(in_grid),
        "good_images_in_grid": sum(not e.defective for e in in_grid) / max(len(good), 1),
        "defective_passed_unseen": sum(e.defective for e in in_grid) / max(len(defective), 1),
    }


ROWS = [
    ("tool_over_hand", "clicks, tool / by hand (folder as it is)"),
    ("tool_over_hand_with_grid", "the same, with bulk confirmation"),
    ("projected_tool_over_hand", "projected to the defect share, tool / by hand"),
    ("projected_with_grid_over_hand", "the same, with bulk confirmation"),
    ("accepted_as_is", "defects with a suggestion accepted as it is"),
    ("median_vertices", "median vertices of a suggestion"),
    ("defect_best_iou", "mean IoU of a defect with its best suggestion"),
    ("false_suggestions_per_good_image", "false suggestions per good image"),
    ("queue_share_for_90pc_defective", "queue share to meet 90% of defective images"),
    ("good_images_in_grid", "good images confirmed in bulk"),
    ("defective_passed_unseen", "defective images passed unseen by the grid"),
]


def data(dataset: str, root: Path | None) -> tuple[list[Sample], list[Sample]]:
    """(corrections half, measurement half + test normals)."""
    root = root or (default_mtd_root() if dataset == "mtd" else default_ball_screw_root())
    if root is None:
        raise SystemExit(f"no {dataset} data set: pass --root")
    return mtd_retrain_halves(root) if dataset == "mtd" else ball_screw_retrain_halves(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["mtd", "ball_screw"], default="mtd")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FILE")
    parser.add_argument("--labels", type=Path, help="the labels folder a retrained model learnt from (its "
                                                    "calibration images set the grid's cut)")
    parser.add_argument("--defect-share", type=float, default=0.05)
    parser.add_argument("--fit", type=float, default=DEFAULT_SUGGESTIONS.fit,
                        help="the outlines' fit (SuggestionSettings.fit; 1: as traced)")
    parser.add_argument("--limit", type=int, help="smoke test only: the first N images of each half")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/annotation_effort"))
    args = parser.parse_args(argv)
    corrections, folder = data(args.dataset, args.root)
    if args.limit:
        folder = folder[: args.limit // 2] + folder[-(args.limit - args.limit // 2):]
        corrections = corrections[: args.limit]
    stderr(machine_line())
    stderr(cpu_flags_line())
    results = {}
    for given in args.model:
        name, _, path = given.partition("=")
        predictor = Predictor(Path(path), device=args.device)
        cut = predictor.normaliser.statistics.get(BULK_CONFIRM_BELOW)
        if cut is None:
            trained_on_corrections = bool(predictor.model.info.training) and "base" in predictor.model.info.training
            if trained_on_corrections and args.labels is None:
                parser.error(f"{name}: a retrained model without a stored grid cut needs its --labels")
            calibration = ((item.read_image(), item.is_defect) for item in retrain_calibration(args.labels)) \
                if trained_on_corrections else ((s.read_image(), s.is_anomalous) for s in corrections)
            stderr(f"{name}: the grid's cut from the calibration images")
            cut = grid_cut(predictor, calibration)
        stderr(f"{name}: {len(folder)} images")
        generic = predictor.model.info.labels[0]
        settings = replace(DEFAULT_SUGGESTIONS, fit=args.fit)
        efforts = [image_effort(sample, predictor, generic, settings) for sample in folder]
        results[name] = {"model": path, **summary(efforts, cut, args.defect_share),
                         "images_detail": [asdict(e) for e in efforts]}
    print(f"\n{args.dataset}: measurement half + test normals; outlines' fit {args.fit:g}; {machine_line()}\n"
          f"{cpu_flags_line()}\n")
    print_table(["", *results], [[title, *(_fmt(result[key]) for result in results.values())] for key, title in ROWS])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "annotation_effort.json").write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_line(),
        "cpu": cpu_flags_line(), "defect_share": args.defect_share, "models": results}, indent=1))
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
