"""How detection quality grows with training: one recipe, a fixed budget, the test split at regular points.

    .venv/bin/python bench/quality_curve.py --minutes 60 --out runs/curve [--recipe COMMIT] [--threads 1]

Trains the `magnetic_tile` model (or ``--dataset ball_screw``) through
``dsarad train`` with ``--snapshots``, then evaluates every snapshot and the
final model on the data set's test split with the one evaluator (``dsarad
evaluate``'s numbers). ``--recipe COMMIT`` trains with the code of another
commit instead (``git archive``, run in a separate process), so today's recipe
and an older one are compared on the same machine, seeds and evaluation.
Writes ``curve.csv`` (one row per point: seconds, student steps, samples
seen, image AUROC, pixel AUROC, AUPRO, per-type image AUROC) and, with
``--plot`` given earlier curves, ``curve.png`` with all of them.

``--extend EARLIER_OUT`` trains the finished run of an earlier curve
``--minutes`` more (``dsarad train --resume --minutes``: a further round of
the student, its own warm-up and cosine) in a copy under ``--out``; its
points go on counting steps and seconds from where that run ended, so
``--plot EARLIER_OUT/curve.csv --x-axis steps`` draws one curve.

Snapshots of one run share its learning-rate schedule, so an early point
is not what a shorter run would reach (a shorter run would end its schedule
there). Training time includes the snapshot exports, the same for every
recipe.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from _common import REPO, machine_line, stderr
from dataset_splits import default_ball_screw_root, default_mtd_root

from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.model_file import load_model
from labelme_dsarad.train.datasets import load_samples
from labelme_dsarad.train.evaluation import evaluate_predictor

# The plot's x axis: a curve.csv column, its divisor, the axis label.
X_AXES = {"minutes": ("seconds", 60.0, "training minutes (teacher + student)"),
          "steps": ("student_steps", 1.0, "student steps (batches of 8)")}
COLUMNS = ("recipe", "point", "seconds", "student_steps", "samples_seen", "image_auroc", "pixel_auroc", "aupro")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget, setup excluded")
    parser.add_argument("--snapshots", type=int, default=6, help="points evaluated during training")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extend", type=Path, metavar="EARLIER_OUT",
                        help="train the finished run of an earlier curve --minutes more instead of a new one")
    parser.add_argument("--recipe", default="current", help="'current' (this tree) or a git commit")
    parser.add_argument("--dataset", choices=["mtd", "ball_screw"], default="mtd")
    parser.add_argument("--root", type=Path, help="the data set's folder (default: the shared copy)")
    parser.add_argument("--threads", type=int, help="torch threads for training and evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-args", default="--preset compact --input-size 128 --learning-rate 1e-3",
                        help="further 'dsarad train' options, the same for every recipe")
    parser.add_argument("--plot", type=Path, nargs="*", default=[], help="earlier curve.csv files to draw beside this one")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the models already in --out")
    parser.add_argument("--plot-only", action="store_true", help="only draw the --plot curves into --out/curve.png")
    parser.add_argument("--x-axis", choices=sorted(X_AXES), default="minutes",
                        help="what the plot's x axis counts: steps compare runs of different thread counts")
    return parser.parse_args(argv)


def dataset_root(args: argparse.Namespace) -> Path:
    if args.root is not None:
        return args.root
    root = default_mtd_root() if args.dataset == "mtd" else default_ball_screw_root()
    if root is None:
        raise SystemExit(f"no {args.dataset} data set: pass --root")
    return root


def package_of_commit(commit: str, into: Path) -> Path:
    """The package as installed (labelme_dsarad with model/ and train/ inside) from a commit's tree."""
    archive = into / "tree.tar"
    with archive.open("wb") as stream:
        subprocess.run(["git", "-C", str(REPO), "archive", commit], stdout=stream, check=True)
    source = into / "source"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    package = into / "site" / "labelme_dsarad"
    shutil.copytree(source / "labelme_dsarad", package)
    for part in ("model", "train", "resources"):
        shutil.copytree(source / part, package / part)
    return package.parent


def train(args: argparse.Namespace, root: Path, run_dir: Path) -> None:
    environment = dict(os.environ)
    with tempfile.TemporaryDirectory() as scratch:
        if args.recipe != "current":
            environment["PYTHONPATH"] = str(package_of_commit(args.recipe, Path(scratch)))
        dataset = ["--dataset", args.dataset, "--images", str(root)]
        product = {"mtd": "magnetic_tile", "ball_screw": "ball_screw"}[args.dataset]
        if args.extend:  # the earlier run's recipe and images come with its checkpoint
            run_dir.mkdir(parents=True)
            shutil.copy2(args.extend / "run" / "checkpoint.safetensors", run_dir)
            dataset = ["--resume"]
        command = [sys.executable, "-m", "labelme_dsarad.cli", "train", "--product", product, *dataset,
                   *args.train_args.split(), "--minutes", str(args.minutes), "--snapshots", str(args.snapshots),
                   "--seed", str(args.seed), "--run-dir", str(run_dir), "--output", str(run_dir / "final.safetensors")]
        stderr(" ".join(command))
        subprocess.run(command, env=environment, check=True, cwd=scratch)


def points(run_dir: Path) -> list[Path]:
    snapshots = sorted((run_dir / "snapshots").glob("*.safetensors"), key=lambda path: training_point(path)[1])
    return snapshots + [run_dir / "final.safetensors"]


def training_point(path: Path) -> tuple[float, int]:
    """(seconds of teacher and student training, student steps) when this model was written.

    Snapshot names say both (``student_P_stepN_at_Ss``; older code wrote no
    step, and its header's last history entry, every 20 steps, stands in).
    """
    training = load_model(path).info.training
    seconds, step = re.search(r"_at_(\d+)s$", path.stem), re.search(r"_step(\d+)_", path.stem)
    history_step = int(training.get("final_losses", {}).get("step", 0))
    return (float(seconds.group(1)) if seconds else float(training["seconds"]),
            int(step.group(1)) if step else history_step)


def evaluate_point(path: Path, samples: list, recipe: str, batch_size: int) -> dict:
    seconds, steps = training_point(path)
    metrics = evaluate_predictor(Predictor(path, device="cpu"), samples, show_progress=False)
    overall = metrics["overall"]
    row = {
        "recipe": recipe, "point": path.stem, "seconds": seconds, "student_steps": steps,
        "samples_seen": steps * batch_size,
        "image_auroc": overall["image_auroc"], "pixel_auroc": overall["pixel_auroc"], "aupro": overall["aupro"],
    }
    row.update({f"image_auroc_{name}": values["image_auroc"] for name, values in metrics["per_type"].items()})
    return row


def plot(curves: list[Path], output: Path, x_axis: str = "minutes") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5), layout="constrained")
    axes = figure.subplots(1, 3)
    column, scale, x_label = X_AXES[x_axis]
    for path in curves:
        with path.open() as stream:
            rows = list(csv.DictReader(stream))
        if not rows:
            continue
        xs = [float(row[column]) / scale for row in rows]
        for ax, key in zip(axes, ("image_auroc", "pixel_auroc", "aupro")):
            # The folder names the run: one recipe may be drawn on two data sets.
            ax.plot(xs, [float(row[key]) for row in rows], marker="o", label=f"{rows[0]['recipe']} ({path.parent.name})")
    for ax, title in zip(axes, ("image AUROC", "pixel AUROC", "AUPRO (FPR 0.3)")):
        ax.set(xlabel=x_label, title=title, ylim=(0.2, 1.0))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=min(3, max(1, len(labels))))
    FigureCanvasAgg(figure).print_png(str(output))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.threads:  # training (a child process) and evaluation alike
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        plot(args.plot, args.out / "curve.png", args.x_axis)
        return 0
    root = dataset_root(args)
    # Absolute: training runs in a scratch folder of its own (cwd), where a relative path would vanish.
    args.out = args.out.resolve()
    run_dir = args.out / "run"
    stderr(machine_line())
    if not args.evaluate_only:
        shutil.rmtree(run_dir, ignore_errors=True)
        train(args, root, run_dir)
    samples = load_samples(args.dataset, root)
    batch_size = int(load_model(run_dir / "final.safetensors").info.training.get("batch_size", 8))
    recipe = "this recipe" if args.recipe == "current" else f"the recipe of {args.recipe}"
    rows = []
    for path in points(run_dir):
        rows.append(evaluate_point(path, samples, recipe, batch_size))
        stderr(json.dumps({key: round(value, 4) if isinstance(value, float) else value for key, value in rows[-1].items()}))
    columns = list(COLUMNS) + sorted({key for row in rows for key in row} - set(COLUMNS))
    with (args.out / "curve.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, columns)
        writer.writeheader()
        writer.writerows(rows)
    plot([*args.plot, args.out / "curve.csv"], args.out / "curve.png", args.x_axis)
    stderr(f"written: {args.out / 'curve.csv'}, {args.out / 'curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
