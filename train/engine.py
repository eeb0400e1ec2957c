"""The one DSARAD training engine: the objective, the schedule and the step loop.

First training (``trainer.Trainer``) and retraining from corrected labels
(``retrain.Retrainer``) are two configurations of what is here. They differ
only in how a batch is made and in whether the student learns (first
training: distilled toward the teacher's encoder; retraining: frozen, the
U-Net alone learns). A change to the objective, the optimiser, the schedule, the loop or the
way a trained network becomes a model file is one edit in this module.
"""

from __future__ import annotations

import copy
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from labelme_dsarad.model.model_file import ModelInfo, as_stored, rewrite_header, save_model
from labelme_dsarad.model.networks import ANOMALY_LOGITS, DSARAD
from labelme_dsarad.model.scoring import ScoreNormaliser

from .losses import FOCAL_GAMMA, dice_loss, distillation_loss, focal_loss, kind_loss, reconstruction_loss

Progress = Callable[[dict], None]

# The share of a phase over which the learning rate ramps up from a tenth.
WARMUP_SHARE = 0.03
# The rate at the end of the cosine, as a share of the peak.
FINAL_RATE_SHARE = 0.01
# Exponential moving average of the student and U-Net weights: what is
# exported. Early on the decay is lower ((1 + n) / (10 + n) after n steps),
# so the average never drags the random initial weights along.
AVERAGE_DECAY = 0.99
LOSS_SMOOTHING = 0.9  # running loss: 0.9 old + 0.1 new
HISTORY_EVERY_STEPS = 20
PROGRESS_EVERY_SECONDS = 1.0


@dataclass
class TrainingBatch:
    """What one student step learns from.

    The first ``len(clean)`` inputs are synthetic: their clean versions are
    the reconstruction and distillation targets. Any further inputs are real
    defect images, which have no clean version and train only the
    segmentation (and the student through it).
    """

    inputs: torch.Tensor  # (B, 3, H, W) what the student sees
    masks: torch.Tensor  # (B, 1, H, W) 1 where the anomaly is
    clean: torch.Tensor  # (S, 3, H, W), S <= B
    weights: torch.Tensor | None = None  # (B, 1, H, W) per-pixel loss weights; 0: not labelled, ignored
    kinds: torch.Tensor | None = None  # (B, 1, H, W) long: the defect kind of a pixel, -1 where none is known
    # Add a Dice term, so that a defect of a few pixels counts as much as a large one (retraining).
    dice: bool = False
    # The focal loss's gamma; 0 is plain (weighted) cross-entropy (retraining).
    focal_gamma: float = FOCAL_GAMMA
    # A frozen student's reconstructions of ``inputs``, made beforehand (retraining).
    reconstructions: torch.Tensor | None = None


def objective(student: nn.Module, segmentation: nn.Module, target_encoder: nn.Module | None,
              batch: TrainingBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DSARAD loss: reconstruction + distillation + focal segmentation (+ the defect kinds,
    where the batch names them and the network knows kinds), and its terms.

    ``target_encoder`` None: the student is frozen (retraining from corrections): the batch
    brings its reconstructions, made as at inference, and the U-Net alone learns.
    """
    synthetic = len(batch.clean)
    terms: dict[str, torch.Tensor] = {}
    if target_encoder is None:
        if batch.reconstructions is None:
            raise ValueError("with the student frozen, a batch brings its reconstructions")
        reconstruction = batch.reconstructions
    else:
        with torch.no_grad():
            _, target_features = target_encoder(batch.clean)
        # One pass over synthetic and real samples together, so BatchNorm sees both.
        reconstruction, student_features = student(batch.inputs)
        terms["reconstruction"] = reconstruction_loss(reconstruction[:synthetic].float(), batch.clean.float())
        terms["distillation"] = distillation_loss([f[:synthetic].float() for f in student_features],
                                                  [f.float() for f in target_features])
    logits = segmentation(torch.cat([reconstruction, batch.inputs], dim=1))
    terms["segmentation"] = focal_loss(logits[:, :ANOMALY_LOGITS], batch.masks, batch.focal_gamma, batch.weights)
    if batch.dice:
        terms["dice"] = dice_loss(logits[:, :ANOMALY_LOGITS], batch.masks, weight=batch.weights)
    if batch.kinds is not None and logits.shape[1] > ANOMALY_LOGITS:
        terms["kind"] = kind_loss(logits[:, ANOMALY_LOGITS:], batch.kinds)
    return torch.stack(list(terms.values())).sum(), terms


def average_decay(steps: torch.Tensor | int) -> float:
    """The moving average's decay after ``steps`` averaged steps (``AVERAGE_DECAY``, lower early on)."""
    return min(AVERAGE_DECAY, (1.0 + float(steps)) / (10.0 + float(steps)))


def average_step(averaged: tuple[torch.Tensor, ...] | list[torch.Tensor],
                 current: tuple[torch.Tensor, ...] | list[torch.Tensor], steps: torch.Tensor | int) -> None:
    """One step of the moving average, over all of a network's tensors of one dtype at once
    (a fused operation, not several per tensor)."""
    decay = average_decay(steps)
    if averaged[0].is_floating_point():
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
    else:  # BatchNorm's batch counters: nothing to average
        torch._foreach_copy_(averaged, current)


class StudentTraining:
    """One optimisation step of the student and the U-Net on a ``TrainingBatch``, and their average.

    ``student`` and ``segmentation`` are the modules that take the step
    (DistributedDataParallel wrappers under DDP); ``network`` is the plain
    model they belong to; ``average`` follows it step by step
    (``AVERAGE_DECAY``; its U-Net alone when the student is frozen) and is
    what ``result`` gives to be exported.
    """

    def __init__(self, network: DSARAD, target_encoder: nn.Module | None, optimizer: torch.optim.Optimizer,
                 autocast: Callable[[], AbstractContextManager], student: nn.Module | None = None,
                 segmentation: nn.Module | None = None):
        self.network = network
        self.target_encoder = target_encoder
        self.optimizer = optimizer
        self.autocast = autocast
        self.student = student or network.student
        self.segmentation = segmentation or network.segmentation
        # BatchNorm statistics are averaged too (use_buffers), so the average is a whole model.
        # With the student frozen only the U-Net changes: averaging the whole network would
        # copy the student's unchanging weights (over two thirds of them) every step.
        self.averaged = network if target_encoder is not None else network.segmentation
        self.average = AveragedModel(self.averaged, multi_avg_fn=average_step, use_buffers=True)

    def step(self, batch: TrainingBatch) -> dict[str, float]:
        with self.autocast():
            loss, terms = objective(self.student, self.segmentation, self.target_encoder, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.average.update_parameters(self.averaged)
        return {name: value.item() for name, value in terms.items()}

    def result(self) -> DSARAD:
        """The network to export: the average of the weights, once a step has been taken."""
        if int(self.average.n_averaged) == 0:
            return self.network
        if self.averaged is self.network:
            averaged = self.average.module
            assert isinstance(averaged, DSARAD)
            return averaged
        whole = copy.deepcopy(self.network)
        whole.segmentation.load_state_dict(self.average.module.state_dict())
        return whole


def adam(parameters: Iterable[nn.Parameter], learning_rate: float, device: torch.device) -> torch.optim.Adam:
    """The optimiser of both configurations: Adam, fused wherever PyTorch has a fused kernel for
    ``device``. Fused, one kernel updates every tensor; the plain implementation launches several
    per tensor, a large part of a step for networks of many small tensors like these."""
    return torch.optim.Adam(list(parameters), lr=learning_rate, fused=has_fused_adam(device))


def has_fused_adam(device: torch.device) -> bool:
    try:
        # PyTorch's own test (private): which devices its fused optimisers run on, in this version.
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return False
    return device.type in _get_fused_kernels_supported_devices()


def has_bf16_units() -> bool:
    """AMX or AVX-512 BF16, and PyTorch allowed to use AVX-512: under ``ATEN_CPU_CAPABILITY=avx2``
    (the reference class, two AVX2 cores, emulated on a newer CPU) the bf16 path is off too."""
    capabilities = torch.cpu.get_capabilities()
    units = bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))
    return units and "AVX512" in torch.backends.cpu.get_cpu_capability()


def autocast_for(device: torch.device) -> Callable[[], AbstractContextManager]:
    """bf16 autocast on CUDA and on CPUs with bf16 units: AMX (Intel Xeon since Sapphire Rapids)
    or AVX-512 BF16 (AMD EPYC since Zen 4), where a retraining step's U-Net passes run much faster
    (``bench/bench_retrain_step.py``). Full precision elsewhere, where bf16 has no fast path."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and has_bf16_units():
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return lambda: torch.autocast("cpu", enabled=False)


def learning_rate_at(base: float, progress: float) -> float:
    """The rate at ``progress`` (0..1) of a phase: a linear warm-up from a tenth of ``base``, then a
    cosine down to 1% of it, so that a short run spends most of its steps at a high rate."""
    if progress < WARMUP_SHARE:
        return base * (0.1 + 0.9 * progress / WARMUP_SHARE)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min((progress - WARMUP_SHARE) / (1.0 - WARMUP_SHARE), 1.0)))
    return base * (FINAL_RATE_SHARE + (1.0 - FINAL_RATE_SHARE) * cosine)


class Budget:
    """Progress through a phase, in steps or in seconds."""

    def __init__(self, steps: int | None = None, seconds: float | None = None):
        if (steps is None) == (seconds is None):
            raise ValueError("a budget is a number of steps or of seconds, not both")
        self.steps, self.seconds = steps, seconds

    def progress(self, step: int, elapsed: float) -> float:
        if self.steps is not None:
            return step / self.steps
        assert self.seconds is not None
        return elapsed / self.seconds

    def done(self, step: int, elapsed: float) -> bool:
        return self.progress(step, elapsed) >= 1.0


@dataclass
class LoopState:
    """Where a phase stands; saved in checkpoints so a phase resumes where it stopped."""

    phase: str
    step: int = 0
    elapsed: float = 0.0
    running: dict[str, float] = field(default_factory=dict)  # smoothed losses
    history: list[dict] = field(default_factory=list)

    def record(self) -> None:
        self.history.append({"phase": self.phase, "step": self.step, "seconds": round(self.elapsed, 1),
                             **{key: round(value, 6) for key, value in self.running.items()}})


Hook = Callable[[LoopState, float], None]


def run_steps(step: Callable[[], dict[str, float]], optimizer: torch.optim.Optimizer, base_learning_rate: float,
              budget: Budget, state: LoopState, progress: Progress, hooks: Sequence[Hook] = (),
              agree: Callable[[float], float] = lambda elapsed: elapsed) -> LoopState:
    """Take steps until the budget is spent: schedule, smoothed losses, history, progress events.

    ``hooks(state, fraction)`` run after every step (checkpoints, snapshots).
    ``agree`` turns this process's clock into the one all processes use
    (under DDP, every process must stop at the same step).
    """
    started = time.monotonic() - state.elapsed
    last_report = -math.inf
    while not budget.done(state.step, state.elapsed):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(base_learning_rate, budget.progress(state.step, state.elapsed))
        losses = step()
        state.running = {key: LOSS_SMOOTHING * state.running.get(key, value) + (1 - LOSS_SMOOTHING) * value
                         for key, value in losses.items()}
        state.step += 1
        state.elapsed = agree(time.monotonic() - started)
        fraction = min(budget.progress(state.step, state.elapsed), 1.0)
        if state.step == 1 or state.step % HISTORY_EVERY_STEPS == 0:
            state.record()
        if state.elapsed - last_report >= PROGRESS_EVERY_SECONDS or fraction >= 1.0:
            last_report = state.elapsed
            progress({"event": "progress", "stage": "training", "phase": state.phase, "step": state.step,
                      "steps": budget.steps, "fraction": round(fraction, 4), "seconds": round(state.elapsed, 1),
                      "losses": {key: round(value, 4) for key, value in state.running.items()}})
        for hook in hooks:
            hook(state, fraction)
    if not state.history or state.history[-1]["step"] != state.step or state.history[-1]["phase"] != state.phase:
        state.record()
    return state


def every(seconds: float, action: Callable[[], None]) -> Hook:
    """A hook that runs ``action`` once ``seconds`` have passed since it last ran (or since it was made)."""
    last = time.monotonic()

    def hook(state: LoopState, fraction: float) -> None:
        nonlocal last
        if time.monotonic() - last > seconds:
            action()
            last = time.monotonic()

    return hook


# -- the model file ----------------------------------------------------------------------

# How trained weights are stored: fp16 halves the file; inference runs in fp32 either way.
TRAINED_STORAGE = "fp16"
Calibrate = Callable[[DSARAD], ScoreNormaliser]
Header = Callable[[DSARAD, ScoreNormaliser], ModelInfo]
# A step that reads the saved model and returns its header with more in it (metrics, levels).
Refinement = Callable[[Path, ModelInfo], ModelInfo]


def model_header(network: DSARAD, product: str, labels: list[str], normaliser: ScoreNormaliser, training: dict,
                 version: int) -> ModelInfo:
    """The header of a model trained now: what ``network`` is, its thresholds, how it was trained."""
    return ModelInfo(architecture=network.architecture, product=product, labels=list(labels), normaliser=normaliser,
                     training=training, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     version=version)


def finish_model(path: Path, network: DSARAD, calibrate: Calibrate, header: Header, storage: str = TRAINED_STORAGE,
                 refinements: Sequence[Refinement] = (), graph: bool = True) -> ModelInfo:
    """The one way a trained network becomes a model file, first training and retraining alike.

    The weights as a file of ``storage`` gives them back, thresholds calibrated on those
    (``calibrate``, which may also fit the network's map correction), the header (``header``),
    saved (with its ONNX graph unless ``graph`` is false: training snapshots leave it out); then
    each of ``refinements``, which read the saved model, rewrites the header. Written
    under a hidden name and renamed once complete, so a cancel or a crash never leaves a half-made
    model where the store or a person would take it for a whole one. Returns the final header.
    """
    stored = as_stored(network, storage)
    info = header(stored, calibrate(stored))
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # as ``write_atomically`` names them
    try:
        save_model(temporary, stored, info, storage=storage, graph=graph)
        for refine in refinements:
            info = refine(temporary, info)
            rewrite_header(temporary, info)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return info
