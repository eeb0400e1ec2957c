"""Each lasting tool in bench/ runs end to end on tiny data: the tools stay in step with the code they measure.

Tiny models, a handful of small images made here, the fewest rounds; the numbers they print mean
nothing, only that each tool gets through and writes what it says it writes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import annotation_effort
import bench_inference
import bench_polygons
import bench_predict
import bench_retrain_step
import bench_startup
import bench_training
import cv2
import numpy as np
import pytest
import quality_curve
import retrain_experiment
import screenshots

from labelme_dsarad.model.model_file import load_model, save_model
from labelme_dsarad.train.datasets import MTD_DEFECT_FOLDERS

from .conftest import make_tiny_model


@pytest.fixture(scope="module")
def tiny_mtd(tmp_path_factory) -> Path:
    """A Magnetic Tile folder in miniature: 10 defect-free images, 2 of each defect kind with masks."""
    root = tmp_path_factory.mktemp("magnetic_tile")
    rng = np.random.default_rng(0)

    def write(path: Path, image: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)

    for index in range(10):
        write(root / "MT_Free" / "Imgs" / f"free{index}.jpg", rng.integers(40, 70, (48, 48, 3), dtype=np.uint8))
    for folder in MTD_DEFECT_FOLDERS:
        for index in range(2):
            image = rng.integers(40, 70, (48, 48, 3), dtype=np.uint8)
            mask = np.zeros((48, 48), np.uint8)
            mask[10:20, 12:24] = 255
            image[mask > 0] = 200
            write(root / folder / "Imgs" / f"d{index}.jpg", image)
            write(root / folder / "Imgs" / f"d{index}.png", mask)
    return root


def test_bench_inference_compares_the_paths_on_a_tiny_network(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["bench_inference.py", "--presets", "tiny", "--size", "64", "--rounds", "1"])
    bench_inference.main()
    assert "tiny" in capsys.readouterr().out


def test_bench_predict_runs_the_pipeline_beside_pure_inference(mtd_root, monkeypatch, capsys):
    # mtd_root: the benchmark reads Magnetic Tile images (skipped without the data set).
    monkeypatch.setattr("sys.argv", ["bench_predict.py", "--images", "4", "--chunk", "2", "--preset", "tiny"])
    bench_predict.main()
    assert "4 label files written" in capsys.readouterr().out


def test_bench_polygons_times_the_large_map_against_the_small(capsys):
    bench_polygons.main(["--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("256x256") and lines[2].startswith("2000x2000") and "x the small map" in lines[2]


def test_bench_training_times_a_student_step(capsys):
    bench_training.main(["--preset", "tiny", "--input-size", "64", "--batch-size", "2", "--steps", "1"])
    table = capsys.readouterr().out
    assert "Trainer.student_step" in table and "synthesis from the built-in procedural sources" in table


def test_bench_retrain_step_times_a_retraining_step(tmp_path, capsys, monkeypatch):
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    monkeypatch.setattr(bench_retrain_step, "RECIPES", dict(list(bench_retrain_step.RECIPES.items())[:1]))
    bench_retrain_step.main(["--model", str(model), "--rounds", "1", "--part-steps", "1"])
    assert "8 images of 64 px" in capsys.readouterr().out


def test_bench_startup_starts_the_plugin(tmp_path, tiny_model_path, capsys):
    image = tmp_path / "sample.png"
    cv2.imwrite(str(image), np.full((48, 48, 3), 60, np.uint8))
    assert bench_startup.main(["--model", str(tiny_model_path), "--image", str(image), "--rounds", "1"]) == 0
    table = capsys.readouterr().out
    assert "launch to first suggestions" in table and "LabelMe" in table and "1.00x" in table


def test_quality_curve_evaluates_a_run_and_plots_it(tmp_path, tiny_mtd):
    # Training is ``dsarad train`` in a child process, tested on its own; here the run it leaves is evaluated.
    run = tmp_path / "out" / "run"
    run.mkdir(parents=True)
    loaded = load_model(make_tiny_model(tmp_path / "tiny.safetensors", product="magnetic_tile"))
    info = replace(loaded.info, training={"seconds": 12.0, "batch_size": 2, "final_losses": {"step": 6}})
    save_model(run / "final.safetensors", loaded.network, info)
    arguments = ["--root", str(tiny_mtd), "--out", str(tmp_path / "out"), "--evaluate-only"]
    assert quality_curve.main(arguments) == 0
    with (tmp_path / "out" / "curve.csv").open() as stream:
        (row,) = list(csv.DictReader(stream))
    assert (row["point"], row["student_steps"], row["samples_seen"]) == ("final", "6", "12")
    assert 0.0 <= float(row["pixel_auroc"]) <= 1.0
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0


def test_quality_curve_given_a_relative_out_folder_trains_into_it(tmp_path, tiny_mtd, monkeypatch):
    # Training runs in a scratch folder of its own: a relative path there once lost a 21-minute run.
    model = make_tiny_model(tmp_path / "tiny.safetensors", product="magnetic_tile")
    monkeypatch.chdir(tmp_path)

    def training_writes_its_output(command, env, check, cwd):  # stands for 'dsarad train' in its folder
        output = Path(cwd) / command[command.index("--output") + 1]
        output.parent.mkdir(parents=True, exist_ok=True)
        loaded = load_model(model)
        save_model(output, loaded.network, replace(loaded.info, training={"seconds": 1.0, "batch_size": 2}))

    monkeypatch.setattr(quality_curve.subprocess, "run", training_writes_its_output)
    assert quality_curve.main(["--root", str(tiny_mtd), "--out", "out", "--minutes", "0.1"]) == 0
    assert (tmp_path / "out" / "run" / "final.safetensors").is_file() and (tmp_path / "out" / "curve.csv").is_file()


def test_retrain_experiment_closes_the_loop_on_tiny_data(tmp_path, tiny_mtd, capsys):
    base = make_tiny_model(tmp_path / "base.safetensors", product="magnetic_tile")
    out = tmp_path / "experiment"
    arguments = ["--root", str(tiny_mtd), "--base", str(base), "--minutes", "0.02", "--normals", "3",
                 "--out", str(out), "--device", "cpu"]
    assert retrain_experiment.main(arguments) == 0
    record = json.loads((out / "retrain_experiment.json").read_text())
    assert [row["model"] for row in record["rows"]] == ["before", "retrained_0.02min_all"]
    assert record["rows"][1]["corrections"] == len(MTD_DEFECT_FOLDERS)  # the even half: d0 of each kind
    assert (out / "curves.csv").is_file() and (out / "curves.png").stat().st_size > 0


def test_annotation_effort_counts_the_clicks_on_tiny_data(tmp_path, tiny_mtd, capsys):
    base = make_tiny_model(tmp_path / "base.safetensors", product="magnetic_tile")
    out = tmp_path / "effort"
    assert annotation_effort.main(["--root", str(tiny_mtd), "--model", f"base={base}", "--out", str(out),
                                   "--device", "cpu"]) == 0
    result = json.loads((out / "annotation_effort.json").read_text())["models"]["base"]
    images = result["images_detail"]
    assert result["defective_images"] == sum(image["defective"] for image in images) == len(MTD_DEFECT_FOLDERS)
    assert result["clicks_by_hand"] == sum(image["by_hand"] for image in images)
    assert result["tool_over_hand"] == pytest.approx(result["clicks_with_tool"] / result["clicks_by_hand"])
    # Opening and ticking every image: no image costs less than two clicks either way.
    assert all(image["by_hand"] >= 2 and image["with_tool"] >= 2 for image in images)
    assert 0.0 <= result["queue_share_for_90pc_defective"] <= 1.0
    assert "clicks, tool / by hand" in capsys.readouterr().out


def test_screenshots_are_taken(tmp_path, tiny_model_path, qapp, qsettings_sandbox, monkeypatch):
    monkeypatch.setenv("DSARAD_MODEL_STORE", str(tmp_path / "store"))  # the retrain dialog reads the store
    image = tmp_path / "sample.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 60, np.uint8))
    out = tmp_path / "shots"
    assert screenshots.main([str(out), "--model", str(tiny_model_path), "--image", str(image), "--size", "800x600"]) == 0
    assert sorted(path.name for path in out.glob("*.png")) == [
        "1_suggestions_heat_map.png", "2_suggestions.png", "3_reviewed.png", "4_retrain_dialog.png"]
