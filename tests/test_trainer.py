import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from labelme_dsarad.cli import main
from labelme_dsarad.model.inference import Predictor
from labelme_dsarad.model.model_file import load_model, preset_architecture
from labelme_dsarad.model.networks import DSARAD
from labelme_dsarad.train.calibration import HELD_OUT, choose_score_window, normal_floor, normal_thresholds, raw_outputs
from labelme_dsarad.train.engine import learning_rate_at
from labelme_dsarad.train.sources import AnomalySources
from labelme_dsarad.train.trainer import TrainConfig, Trainer, decode_images, split_validation, train_model


def textured_images(folder: Path, count: int = 12, size: int = 48) -> list[str]:
    """Defect-free 'product' images: the same stripes with a little noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = np.arange(size)
    base = (128 + 60 * np.sin(x / 3.0))[None, :].repeat(size, axis=0)
    paths = []
    for index in range(count):
        image = np.clip(base + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)
        path = folder / f"normal_{index:02d}.png"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
    return paths


def config(images, **overrides) -> TrainConfig:
    settings = dict(product="widget", images=images, preset="tiny", input_size=32, epochs=40, batch_size=4,
                    learning_rate=1e-3, seed=0)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_tiny_training_lowers_losses_and_writes_a_usable_model(tmp_path):
    images = textured_images(tmp_path / "images")
    output = train_model(config(images), tmp_path / "run", tmp_path / "model.safetensors")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    teacher = [entry for entry in history if entry["phase"] == "teacher"]
    student = [entry for entry in history if entry["phase"] == "student"]
    assert teacher[-1]["teacher"] < teacher[0]["teacher"]
    first, last = student[0], student[-1]
    assert last["reconstruction"] + last["segmentation"] < first["reconstruction"] + first["segmentation"]
    loaded = load_model(output)
    assert loaded.info.product == "widget" and loaded.info.architecture.input_size == 32
    assert loaded.info.training["images"] + loaded.info.training["validation_images"] == len(images)
    statistics = loaded.info.normaliser.statistics
    assert statistics["validation_images"] == loaded.info.training["validation_images"]
    assert not statistics["map_correction"]["fitted"]  # 11 training images are too few to fit it on
    prediction = Predictor(loaded).predict(cv2.imread(images[0])[:, :, ::-1])
    assert prediction.score_map.shape == (48, 48) and np.isfinite(prediction.score_map).all()


def test_training_fits_the_map_correction_on_its_training_images(tmp_path):
    images = textured_images(tmp_path / "images", count=40)
    loaded = load_model(train_model(config(images, epochs=2), tmp_path / "run", tmp_path / "model.safetensors"))
    correction = loaded.info.normaliser.statistics["map_correction"]
    assert correction["fitted"] and correction["images"] == loaded.info.training["images"] == 36
    assert correction["border_to_interior_level"] > 0


@pytest.mark.parametrize(("override", "problem"), [
    ({"batch_size": 0}, "batch size must be 1 or more, got 0"),
    ({"input_size": 100}, "input size must be a multiple of 32 (five 2x poolings), got 100"),
    ({"input_size": 0}, "input size must be a multiple of 32 (five 2x poolings), got 0"),
])
def test_settings_no_run_can_use_are_refused_before_training(override, problem):
    with pytest.raises(ValueError) as refusal:
        config(["unused.png"], **override)
    assert str(refusal.value) == problem


def test_train_command_refuses_a_zero_batch_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["train", "--product", "widget", "--images", str(tmp_path), "--epochs", "1", "--batch-size", "0"])
    assert exit_status.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == "dsarad train: error: argument --batch-size: must be 1 or more, got 0"


def test_validation_split_is_deterministic_and_disjoint():
    paths = [f"img_{i}.png" for i in range(50)]
    train, validation = split_validation(paths, 0.1, seed=0)
    assert (train, validation) == split_validation(paths, 0.1, seed=0)
    assert len(validation) == 5 and not set(train) & set(validation) and len(train) + len(validation) == 50


def test_learning_rate_warms_up_then_follows_a_cosine_to_a_hundredth():
    rates = [learning_rate_at(1.0, p / 100) for p in range(101)]
    assert rates[0] == pytest.approx(0.1) and max(rates) == pytest.approx(1.0, abs=1e-3)
    peak = rates.index(max(rates))
    assert 0 < peak <= 5 and all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :]))
    assert learning_rate_at(1.0, 0.515) == pytest.approx(0.505, abs=0.01)  # half way down the cosine
    assert rates[-1] == pytest.approx(0.01) and learning_rate_at(1.0, 1.5) == pytest.approx(0.01)


def checkpoint_step(path: Path) -> int:
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["checkpoint"])["step"]


def test_resume_after_kill_continues_from_the_checkpoint(tmp_path):
    images = textured_images(tmp_path / "images")
    run_dir, output = tmp_path / "run", tmp_path / "model.safetensors"
    command = [sys.executable, "-m", "labelme_dsarad.cli", "train", "--product", "widget", "--images", *images,
               "--preset", "tiny", "--input-size", "32", "--epochs", "40", "--batch-size", "4",
               "--run-dir", str(run_dir), "--output", str(output), "--checkpoint-every", "0.3"]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run_dir / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (checkpoint.exists() and checkpoint_step(checkpoint) > 5):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "no checkpoint was written before the kill"
    killed_at = checkpoint_step(checkpoint)
    assert killed_at > 5 and not output.exists()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")], "a half-written checkpoint was left"
    resumed = subprocess.run(
        [sys.executable, "-m", "labelme_dsarad.cli", "train", "--product", "widget", "--resume",
         "--run-dir", str(run_dir), "--output", str(output)],
        env=environment, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = json.loads((run_dir / "history.json").read_text())
    assert history[0]["step"] == 1 and history[0]["phase"] == "teacher", "history before the kill was lost"
    assert load_model(output).info.training["images"] > 0


def test_a_finished_run_trains_longer_in_a_further_round_of_the_student(tmp_path, capsys):
    images = textured_images(tmp_path / "images", count=8)
    run_dir, first, longer = tmp_path / "run", tmp_path / "first.safetensors", tmp_path / "longer.safetensors"
    common = ["--product", "widget", "--run-dir", str(run_dir), "--batch-size", "4"]
    assert main(["train", *common, "--images", *images, "--preset", "tiny", "--input-size", "32", "--epochs", "4",
                 "--output", str(first)]) == 0
    ended_at = checkpoint_step(run_dir / "checkpoint.safetensors")
    teacher_weights = load_checkpoint_tensors(run_dir, "teacher.")
    # 18 s: writing the model (its ONNX graph included) is reserved out of them.
    assert main(["train", *common, "--resume", "--minutes", "0.3", "--snapshots", "3", "--output", str(longer)]) == 0

    history = json.loads((run_dir / "history.json").read_text())
    further = [entry for entry in history if entry["phase"] == "student2"]
    # The history records every 20th step: the round goes on counting from where the run ended.
    assert further and ended_at < further[0]["step"] <= ended_at + 20 < further[-1]["step"]
    assert history[0]["phase"] == "teacher" and any(entry["phase"] == "student" for entry in history)
    snapshots = sorted(path.name for path in (run_dir / "snapshots").glob("*.safetensors"))
    assert len(snapshots) == 2 and all(name.startswith("student2_") for name in snapshots)
    assert all(torch.equal(teacher_weights[key], value) for key, value in load_checkpoint_tensors(run_dir, "teacher.").items())
    training = load_model(longer).info.training
    assert training["further_minutes"] == [0.3] and training["epochs"] == 4
    assert training["seconds"] > load_model(first).info.training["seconds"] + 5
    capsys.readouterr()

    # A run that has not finished is resumed first; asking it for more minutes says so in one line.
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    Trainer(config(images), unfinished).save_checkpoint()
    resume = ["train", "--product", "widget", "--resume", "--output", str(tmp_path / "x.safetensors")]
    assert main([*resume, "--run-dir", str(unfinished), "--minutes", "0.1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "the run has not finished" in error[0] and str(unfinished) in error[0]
    assert main([*resume, "--run-dir", str(run_dir), "--epochs", "1"]) == 2
    assert "--resume takes --minutes, not --epochs" in capsys.readouterr().err


def load_checkpoint_tensors(run_dir: Path, prefix: str) -> dict:
    with safe_open(str(run_dir / "checkpoint.safetensors"), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}


def test_data_parallel_training_with_two_cpu_processes(tmp_path):
    images = textured_images(tmp_path / "images")
    output = tmp_path / "ddp.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "labelme_dsarad.cli", "train", "--product", "widget", "--images", *images,
         "--preset", "tiny", "--input-size", "32", "--epochs", "4", "--batch-size", "2", "--device", "cpu",
         "--devices", "2", "--run-dir", str(tmp_path / "run"), "--output", str(output)],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    training = load_model(output).info.training
    assert training["devices"] == 2
    # Two processes of batch 2 over 11 images: 3 steps an epoch, not 6.
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["phase"] == "student" and history[-1]["step"] == round(4 * 0.75 * 3)


def test_a_minutes_budget_ends_close_to_it_setup_and_export_included(tmp_path, capsys):
    images = textured_images(tmp_path / "images", count=8)
    started = time.monotonic()
    code = main(["train", "--product", "widget", "--images", *images, "--preset", "tiny", "--input-size", "32",
                 "--minutes", "0.25", "--batch-size", "4", "--output", str(tmp_path / "m.safetensors"),
                 "--run-dir", str(tmp_path / "run")])
    elapsed = time.monotonic() - started
    assert code == 0, capsys.readouterr().err
    assert 15 - 5 < elapsed < 15 + 5, elapsed
    err = capsys.readouterr().err
    assert "validation:" in err and "raw image scores" in err


def test_training_on_too_few_images_to_hold_out_warns_that_thresholds_are_optimistic(tmp_path, capsys):
    images = textured_images(tmp_path / "images", count=3)
    code = main(["train", "--product", "widget", "--images", *images, "--preset", "tiny", "--input-size", "32",
                 "--epochs", "1", "--batch-size", "2", "--output", str(tmp_path / "m.safetensors"),
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: too few images to hold any out" in err
    assert load_model(tmp_path / "m.safetensors").info.training["validation_images"] == 0


def test_training_refuses_images_with_labelled_defects_unless_allowed(tmp_path, capsys):
    images = textured_images(tmp_path / "images", count=6)
    Path(images[0]).with_suffix(".json").write_text(json.dumps(
        {"version": "6.3.1", "flags": {}, "shapes": [{"label": "crack", "points": [[1, 1], [5, 1], [5, 5]],
                                                      "shape_type": "polygon", "flags": {}}],
         "imagePath": Path(images[0]).name, "imageData": None, "imageHeight": 48, "imageWidth": 48}))
    arguments = ["train", "--product", "widget", "--images", *images, "--preset", "tiny", "--input-size", "32",
                 "--epochs", "1", "--batch-size", "4", "--output", str(tmp_path / "m.safetensors"),
                 "--run-dir", str(tmp_path / "run")]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "1 of 6 training images have defects labelled" in error[0]
    assert "normal_00.json" in error[0] and "--allow-labelled" in error[0]
    assert main([*arguments, "--allow-labelled"]) == 0


def test_training_on_crops_infers_on_whole_images_at_the_input_size(tmp_path):
    images = textured_images(tmp_path / "images", count=8, size=64)
    output = train_model(config(images, input_size=64, crop_size=32, epochs=2), tmp_path / "run",
                         tmp_path / "model.safetensors")
    loaded = load_model(output)
    assert loaded.info.architecture.input_size == 64 and loaded.info.training["crop_size"] == 32
    assert loaded.info.architecture.score_window % 2 == 1
    assert set(loaded.info.normaliser.statistics["score_window_aurocs"]) >= {"1", "3", "5"}
    with pytest.raises(ValueError, match="crop size 128 is larger than the input size"):
        config(images, input_size=64, crop_size=128)


def test_the_score_window_choice_gives_the_normals_maps_and_scores_the_exported_network_gives():
    generator = torch.Generator().manual_seed(0)
    normals = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=generator)
    torch.manual_seed(0)
    network = DSARAD(preset_architecture("tiny", 32))
    window, aurocs, maps, scores = choose_score_window(network, normals, AnomalySources(32, None, normals),
                                                       torch.device("cpu"), seed=0)
    assert str(window) in aurocs
    network.architecture = replace(network.architecture, score_window=window)
    expected_maps, expected_scores = raw_outputs(network, normals, torch.device("cpu"))
    np.testing.assert_array_equal(maps, expected_maps)
    np.testing.assert_array_equal(scores, expected_scores)


@pytest.mark.parametrize("storage", ["int8", "fp16"])
def test_thresholds_are_set_on_the_weights_as_stored(tmp_path, storage):
    images = textured_images(tmp_path / "images")
    output = train_model(config(images, epochs=4), tmp_path / "run", tmp_path / "model.safetensors", storage=storage)
    loaded = load_model(output)
    _, validation = split_validation(images, 0.1, 0)
    _, scores = raw_outputs(loaded.network, decode_images(validation, 32), torch.device("cpu"))
    # The image threshold follows from the validation scores: the stored model must give them exactly.
    assert normal_floor(scores) == pytest.approx(loaded.info.normaliser.image_threshold, abs=1e-6)


def test_two_bright_validation_normals_do_not_set_the_thresholds():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0.0, 0.3, (76, 32, 32)).astype(np.float32)
    scores = rng.uniform(0.2, 0.4, 76)
    maps[:2, :8, :8], scores[:2] = 0.9, 0.9  # two images far above the rest, as on Magnetic Tile
    normaliser = normal_thresholds(maps, scores, HELD_OUT)
    assert 0.4 * 0.95 < normaliser.image_threshold < 0.4
    assert 0.3 * 0.95 < normaliser.pixel_threshold < 0.3
    # With fewer than 20 images a quantile means little: the highest is the threshold.
    few = normal_thresholds(maps[:10], scores[:10], HELD_OUT)
    assert (few.image_threshold, few.pixel_threshold) == pytest.approx((0.9, 0.9))
