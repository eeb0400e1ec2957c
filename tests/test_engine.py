"""The one training engine: first training and retraining step through the same code."""

from __future__ import annotations

import pytest
import torch

from labelme_dsarad.cli import main
from labelme_dsarad.train import engine
from labelme_dsarad.train.trainer import Trainer, train_model

from .test_retrain import noise_retrainer, tiny_store, write_tiny_labels
from .test_trainer import config, textured_images


def test_first_training_and_retraining_call_the_same_objective_and_schedule(tmp_path, monkeypatch):
    objective_calls: list[str] = []
    schedule_calls: list[float] = []
    objective, schedule = engine.objective, engine.learning_rate_at

    def counting_objective(student, segmentation, target_encoder, batch):
        objective_calls.append(type(target_encoder).__name__)
        return objective(student, segmentation, target_encoder, batch)

    def counting_schedule(base, progress):
        schedule_calls.append(progress)
        return schedule(base, progress)

    monkeypatch.setattr(engine, "objective", counting_objective)
    monkeypatch.setattr(engine, "learning_rate_at", counting_schedule)

    train_model(config(textured_images(tmp_path / "images"), epochs=4), tmp_path / "run", tmp_path / "model.safetensors")
    assert not flushes_denormals()  # flushed while it trained, as before once done
    trained_steps, scheduled_steps = len(objective_calls), len(schedule_calls)
    assert trained_steps > 0 and scheduled_steps > trained_steps  # the teacher's steps are scheduled too

    labels = write_tiny_labels(tmp_path / "labels")
    store = tiny_store(tmp_path / "store")
    assert main(["retrain", "--product", "widget", "--labels", str(labels), "--store", str(store.root),
                 "--steps", "3", "--batch-size", "4"]) == 0
    assert not flushes_denormals()
    assert len(objective_calls) == trained_steps + 3
    assert len(schedule_calls) == scheduled_steps + 3
    # The first training distils toward the teacher's encoder; retraining freezes the student.
    assert objective_calls == ["ReconstructionEncoder"] * trained_steps + ["NoneType"] * 3


def flushes_denormals() -> bool:
    """Whether this thread flushes denormal floats to zero (PyTorch has no getter): 1e-39 is one in float32."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


def test_first_training_and_retraining_take_one_optimiser_fused_where_the_device_has_a_kernel(tmp_path):
    trainer = Trainer(config(textured_images(tmp_path / "images")), tmp_path / "run")
    _, retrainer = noise_retrainer(tmp_path, normals=1, defects=1, seed=0)
    fused = engine.has_fused_adam(torch.device("cpu"))
    optimisers = (trainer.teacher_optimizer, trainer.student_optimizer, retrainer.optimizer)
    assert [(type(optimiser), optimiser.defaults["fused"]) for optimiser in optimisers] == [(torch.optim.Adam, fused)] * 3
    assert not engine.has_fused_adam(torch.device("meta"))  # no kernel there: plain Adam


def test_run_steps_spends_a_step_budget_reports_progress_and_records_history():
    parameter = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    events: list[dict] = []
    seen_rates: list[float] = []

    def step() -> dict[str, float]:
        seen_rates.append(optimizer.param_groups[0]["lr"])
        return {"loss": 1.0}

    state = engine.run_steps(step, optimizer, 0.5, engine.Budget(steps=45), engine.LoopState("phase"), events.append)
    assert state.step == 45 and state.running == pytest.approx({"loss": 1.0})
    assert seen_rates == [engine.learning_rate_at(0.5, index / 45) for index in range(45)]
    assert events[-1]["fraction"] == 1.0 and events[-1]["step"] == 45 and events[-1]["phase"] == "phase"
    assert [entry["step"] for entry in state.history] == [1, 20, 40, 45]
    # Resumed from where it stood, a finished phase takes no further step.
    assert engine.run_steps(step, optimizer, 0.5, engine.Budget(steps=45), state, events.append).step == 45


def test_a_budget_is_steps_or_seconds():
    assert engine.Budget(steps=10).progress(5, 1000.0) == 0.5
    assert engine.Budget(seconds=10.0).progress(1000, 5.0) == 0.5
    with pytest.raises(ValueError):
        engine.Budget(steps=1, seconds=1.0)


def test_the_exported_network_is_the_average_of_the_weights():
    from labelme_dsarad.model.networks import DSARAD, PRESETS

    network = DSARAD(PRESETS["tiny"])
    optimizer = torch.optim.SGD(list(network.parameters()), lr=0.1)
    training = engine.StudentTraining(network, network.student.encoder, optimizer, engine.autocast_for(torch.device("cpu")))
    assert training.result() is network  # no step taken: nothing to average yet
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        clean = torch.rand(2, 3, 64, 64, generator=generator)
        masks = (torch.rand(2, 1, 64, 64, generator=generator) > 0.9).float()
        training.step(engine.TrainingBatch(inputs=clean, masks=masks, clean=clean))
    averaged = training.result()
    assert averaged is not network
    live = dict(network.named_parameters())
    with torch.no_grad():
        differences = [float((parameter - live[name]).abs().max()) for name, parameter in averaged.named_parameters()]
    assert max(differences) > 0  # it lags behind the live weights ...
    first = dict(averaged.named_parameters())["segmentation.to_logits.weight"]
    assert torch.isfinite(first).all()  # ... and is a whole, usable model


def test_the_dice_term_counts_a_small_defect_as_much_as_a_large_one():
    from labelme_dsarad.train.losses import dice_loss

    masks = torch.zeros(3, 1, 32, 32)
    masks[0, 0, :20, :20] = 1  # 400 pixels
    masks[1, 0, :5, :5] = 1  # 25 pixels
    confident = 20.0 * (2 * masks - 1)  # logit of "defect" minus logit of "normal"
    logits = torch.cat([torch.zeros_like(masks), confident], dim=1)
    assert float(dice_loss(logits, masks)) < 0.01  # both found; the defect-free third adds nothing
    missed_small, missed_large = logits.clone(), logits.clone()
    missed_small[1, 1] = -20.0
    missed_large[0, 1] = -20.0
    # Each missed defect costs about half (its share of the samples), not its share of the pixels.
    assert float(dice_loss(missed_small, masks)) == pytest.approx(float(dice_loss(missed_large, masks)), abs=0.03)
    assert float(dice_loss(missed_small, masks)) == pytest.approx(0.5, abs=0.03)
    ignored = torch.ones_like(masks)
    ignored[1] = 0  # nobody labelled the second image's pixels: its miss costs nothing
    assert float(dice_loss(missed_small, masks, weight=ignored)) < 0.01


@pytest.mark.parametrize("capabilities, aten, expected", [
    ({"amx_bf16": True, "avx512_bf16": True}, "AVX512", torch.bfloat16),  # Intel Xeon since Sapphire Rapids
    ({"amx_bf16": False, "avx512_bf16": True}, "AVX512", torch.bfloat16),  # AMD EPYC since Zen 4
    ({"amx_bf16": False, "avx512_bf16": False}, "AVX2", None),  # AVX2 only: bf16 would be emulated, slower
    ({"amx_bf16": True, "avx512_bf16": True}, "AVX2", None),  # ATEN_CPU_CAPABILITY=avx2: the reference class
])
def test_cpu_training_runs_in_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, capabilities, aten, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: aten)
    layer = torch.nn.Linear(4, 4)
    with engine.autocast_for(torch.device("cpu"))():
        output = layer(torch.ones(1, 4))
    assert output.dtype == (expected or torch.float32)
