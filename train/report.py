"""The evaluation report: metrics.json, ROC and PRO curves, the worst and best cases, report.md."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from sklearn.metrics import roc_curve

from labelme_dsarad.model.atomic_write import write_atomically
from labelme_dsarad.model.scoring import NORMALISED_THRESHOLD

from .evaluated import Evaluated
from .metrics import METRIC_KEYS, PixelCurves, pixel_curves

GRID_ROWS_PER_KIND = 4  # worst and best normals and defects: 16 rows at most
CURVE_POINTS = 2000  # curves are drawn through this many points, not millions


def write_report(report_dir: Path, evaluated: list[Evaluated], metrics: dict, has_polygons: bool) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    curves = pixel_curves([e.score_map for e in evaluated], [e.mask for e in evaluated])
    write_atomically(report_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False).encode())
    _save_figure(_roc_figure(evaluated, metrics, curves), report_dir / "roc.png")
    _save_figure(_pro_figure(evaluated, metrics, curves), report_dir / "pro.png")
    _save_figure(_grid_figure(evaluated, has_polygons), report_dir / "grid.png")
    write_atomically(report_dir / "report.md", _markdown(evaluated, metrics).encode())


def _save_figure(figure: Figure, path: Path) -> None:
    # Figure + Agg canvas, not pyplot: no global backend switch inside the GUI.
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    write_atomically(path, buffer.getvalue())


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _thinned(x: np.ndarray, y: np.ndarray, x_max: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """CURVE_POINTS points along the curve for x up to x_max, for drawing only.

    Evenly spaced along the curve's length, not along x, so that the steep
    start of a good curve keeps its shape.
    """
    end = min(int(np.searchsorted(x, x_max, side="right")) + 1, len(x))
    x, y = x[:end], y[:end]
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x) / x_max, np.diff(y)))])
    along = np.linspace(0.0, length[-1], CURVE_POINTS)
    return np.interp(along, length, x), np.interp(along, length, y)


def _pixel_rates_at(evaluated: list[Evaluated], threshold: float) -> tuple[float, float]:
    """(pixel FPR, pixel TPR) at a score threshold."""
    flagged_normal = sum(int(np.count_nonzero((e.score_map >= threshold) & ~e.mask)) for e in evaluated)
    flagged_defect = sum(int(np.count_nonzero((e.score_map >= threshold) & e.mask)) for e in evaluated)
    normal = sum(int(np.count_nonzero(~e.mask)) for e in evaluated)
    defect = sum(int(np.count_nonzero(e.mask)) for e in evaluated)
    return flagged_normal / max(normal, 1), flagged_defect / max(defect, 1)


def _pro_at(curves: PixelCurves, threshold: float) -> float:
    """PRO at a score threshold: that of the lowest vertex still >= it."""
    above = int(np.searchsorted(-curves.thresholds, -threshold, side="right"))
    return float(curves.pro[above - 1]) if above else 0.0


def _both_pixel_classes(curves: PixelCurves) -> bool:
    return curves.positives > 0 and curves.negatives > 0


def _roc_figure(evaluated: list[Evaluated], metrics: dict, curves: PixelCurves) -> Figure:
    figure = Figure(figsize=(12, 5.5), layout="constrained")
    image_ax, pixel_ax = figure.subplots(1, 2)
    scores = np.array([e.score for e in evaluated])
    labels = np.array([e.sample.is_anomalous for e in evaluated])
    types = np.array([e.sample.defect_type for e in evaluated])
    overall = metrics["overall"]
    threshold_label = f"model threshold ({NORMALISED_THRESHOLD})"
    if overall["image_auroc"] is not None:
        fpr, tpr, _ = roc_curve(labels, scores)
        label = f"all defects (AUROC {_fmt(overall['image_auroc'])})"
        image_ax.plot(fpr, tpr, color="black", linewidth=2.5, label=label)
        per_type = metrics["per_type"] if len(metrics["per_type"]) > 1 else {}  # else the same curve
        for defect_type, values in per_type.items():
            chosen = ~labels | (types == defect_type)
            if values["image_auroc"] is not None:
                fpr, tpr, _ = roc_curve(labels[chosen], scores[chosen])
                label = f"{defect_type} (AUROC {_fmt(values['image_auroc'])})"
                image_ax.plot(fpr, tpr, linewidth=1.2, label=label)
        normal_rate = float(np.mean(scores[~labels] >= NORMALISED_THRESHOLD))
        defect_rate = float(np.mean(scores[labels] >= NORMALISED_THRESHOLD))
        image_ax.plot(normal_rate, defect_rate, "o", color="red", markersize=8, label=threshold_label)
    else:
        image_ax.text(0.5, 0.5, "needs normal and defective images", ha="center", transform=image_ax.transAxes)
    image_ax.set_title("Image-level ROC (one score per image)")

    if _both_pixel_classes(curves):
        label = f"all pixels (AUROC {_fmt(overall['pixel_auroc'])})"
        pixel_ax.plot(*_thinned(*curves.roc()), color="black", linewidth=2.5, label=label)
        rates = _pixel_rates_at(evaluated, NORMALISED_THRESHOLD)
        pixel_ax.plot(*rates, "o", color="red", markersize=8, label=threshold_label)
    else:
        pixel_ax.text(0.5, 0.5, "needs defect and normal pixels", ha="center", transform=pixel_ax.transAxes)
    pixel_ax.set_title("Pixel-level ROC (every pixel of every map)")

    for ax in (image_ax, pixel_ax):
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=9)
    return figure


def _pro_figure(evaluated: list[Evaluated], metrics: dict, curves: PixelCurves) -> Figure:
    fpr_limit = metrics["fpr_limit"]
    figure = Figure(figsize=(7, 5.5), layout="constrained")
    ax = figure.subplots()
    if _both_pixel_classes(curves):
        label = f"all defects (AUPRO@{fpr_limit:g} {_fmt(metrics['overall']['aupro'])})"
        ax.plot(*_thinned(*curves.pro_curve(), x_max=fpr_limit), color="black", linewidth=2.5, label=label)
        fpr_at_threshold, _ = _pixel_rates_at(evaluated, NORMALISED_THRESHOLD)
        if fpr_at_threshold <= fpr_limit:
            pro = _pro_at(curves, NORMALISED_THRESHOLD)
            ax.plot(fpr_at_threshold, pro, "o", color="red", markersize=8, label=f"model threshold ({NORMALISED_THRESHOLD})")
        ax.plot([0, fpr_limit], [0, fpr_limit], linestyle="--", color="gray", linewidth=1, label="chance")
    else:
        ax.text(0.5, 0.5, "needs defect and normal pixels", ha="center", transform=ax.transAxes)
    ax.set(
        xlim=(0, fpr_limit),
        ylim=(0, 1.01),
        xlabel="false positive rate (normal pixels)",
        ylabel="per-region overlap (mean over defect regions)",
    )
    ax.set_title(f"PRO curve up to FPR {fpr_limit:g}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return figure


def _grid_rows(evaluated: list[Evaluated]) -> list[tuple[int, str]]:
    """(index, why shown): worst cases first, then best, each at most once."""
    normals = [i for i, e in enumerate(evaluated) if not e.sample.is_anomalous]
    defects = [i for i, e in enumerate(evaluated) if e.sample.is_anomalous]
    normals.sort(key=lambda i: -evaluated[i].score)
    defects.sort(key=lambda i: evaluated[i].score)
    # With one kind only, it gets all the rows.
    per_kind = GRID_ROWS_PER_KIND if normals and defects else 2 * GRID_ROWS_PER_KIND
    candidates = (
        [(i, "worst: highest-scoring normal") for i in normals[:per_kind]]
        + [(i, "worst: lowest-scoring defect") for i in defects[:per_kind]]
        + [(i, "best: highest-scoring defect") for i in defects[::-1][:per_kind]]
        + [(i, "best: lowest-scoring normal") for i in normals[::-1][:per_kind]]
    )
    rows, shown = [], set()
    for index, why in candidates:
        if index not in shown:
            shown.add(index)
            rows.append((index, why))
    return rows


def _grid_figure(evaluated: list[Evaluated], has_polygons: bool) -> Figure:
    rows = _grid_rows(evaluated)
    figure = Figure(figsize=(12, 3.2 * len(rows) + 0.6), layout="constrained")
    figure.suptitle(
        f"Worst cases first, then best  ·  green: our polygons  ·  cyan: score {NORMALISED_THRESHOLD} (model threshold)",
        fontsize=12,
    )
    for subfigure, (index, why) in zip(figure.subfigures(len(rows), 1, squeeze=False)[:, 0], rows):
        item = evaluated[index]
        flagged = "flagged" if item.score >= NORMALISED_THRESHOLD else "passed"
        name, defect_type = item.sample.image_path.name, item.sample.defect_type
        subfigure.suptitle(
            f"{name}  ·  {defect_type}  ·  score {item.score:.3f} ({flagged})  ·  {why}", fontsize=10, x=0.01, ha="left"
        )
        image_ax, map_ax, truth_ax = subfigure.subplots(1, 3)
        image = item.sample.read_image()
        height, width = image.shape[:2]
        # Draw everything in the image's frame, whatever size the maps are.
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)
        scale = np.array([width / item.map_shape[1], height / item.map_shape[0]])

        image_ax.imshow(image)
        for points in item.polygons or []:
            # LabelMe corners to imshow's frame, where pixel centres are integers.
            xy = np.asarray(points, dtype=float).reshape(-1, 2) * scale - 0.5
            image_ax.add_patch(Polygon(xy, closed=True, fill=False, edgecolor="lime", linewidth=1.5))
        polygons_title = f"image + our polygons ({len(item.polygons or [])})"
        image_ax.set_title(polygons_title if has_polygons else "image (no suggestions asked for)", fontsize=9)

        heat = map_ax.imshow(item.score_map, cmap="inferno", vmin=0.0, vmax=1.0, extent=extent)
        crosses = item.score_map.min() < NORMALISED_THRESHOLD <= item.score_map.max()
        if crosses and min(item.score_map.shape) >= 2:
            map_ax.contour(
                item.score_map, levels=[NORMALISED_THRESHOLD], colors="cyan", linewidths=1, extent=extent, origin="upper"
            )
        subfigure.colorbar(heat, ax=map_ax, fraction=0.046, pad=0.02, label=f"score ({NORMALISED_THRESHOLD} = threshold)")
        map_ax.set_title("anomaly map", fontsize=9)

        truth_ax.imshow(image)
        overlay = np.zeros((*item.mask.shape, 4))
        overlay[item.mask] = (1.0, 0.0, 0.0, 0.55)
        truth_ax.imshow(overlay, extent=extent)
        truth_ax.set_title("ground truth (red)" if item.mask.any() else "ground truth: no defect", fontsize=9)
        for ax in (image_ax, map_ax, truth_ax):
            ax.set(xlim=(extent[0], extent[1]), ylim=(extent[2], extent[3]), xticks=[], yticks=[])
    return figure


_COLUMN_NAMES = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "pixel_ap": "pixel AP",
    "image_best_f1": "image best F1",
    "pixel_best_f1": "pixel best F1",
}


def _markdown(evaluated: list[Evaluated], metrics: dict) -> str:
    scores = np.array([e.score for e in evaluated])
    labels = np.array([e.sample.is_anomalous for e in evaluated])
    counts = ", ".join(f"{name} {count}" for name, count in metrics["num_images"].items())
    side = metrics.get("max_pixels_side")
    header = "| | " + " | ".join(_COLUMN_NAMES[k] for k in METRIC_KEYS) + " | images |"
    rule = "|---" * (len(METRIC_KEYS) + 2) + "|"
    table = [header, rule, _table_row("**all**", metrics["overall"], len(evaluated))]
    normal_count = int(np.count_nonzero(~labels))
    for defect_type, values in metrics["per_type"].items():
        table.append(_table_row(defect_type, values, metrics["num_images"][defect_type] + normal_count))
    flagged_defects = int(np.count_nonzero(scores[labels] >= NORMALISED_THRESHOLD))
    flagged_normals = int(np.count_nonzero(scores[~labels] >= NORMALISED_THRESHOLD))
    lines = [
        "# Evaluation report",
        "",
        f"{len(evaluated)} images ({counts}).",
        f"At the model's threshold ({NORMALISED_THRESHOLD}): {flagged_defects} of {int(labels.sum())} defective"
        f" images flagged, {flagged_normals} of {normal_count} normal images flagged.",
        "",
        "## Metrics",
        "",
        *table,
        "",
        "A defect type's row is that type's images against all normal images. "
        f"AUPRO integrates up to FPR {metrics['fpr_limit']:g}. Best F1 uses the best threshold on this "
        "very set: a ceiling, not a deployable number. Pixel metrics: "
        + (f"maps downsampled to at most {side} px per side." if side else "maps at full size."),
        "",
        "All numbers: [metrics.json](metrics.json).",
        "",
        "## Curves",
        "",
        "![Image and pixel ROC curves](roc.png)",
        "",
        "![PRO curve](pro.png)",
        "",
        "## Worst and best cases",
        "",
        "![Worst cases first, then best](grid.png)",
        "",
    ]
    return "\n".join(lines)


def _table_row(name: str, values: dict, images: int) -> str:
    return f"| {name} | " + " | ".join(_fmt(values[k]) for k in METRIC_KEYS) + f" | {images} |"
