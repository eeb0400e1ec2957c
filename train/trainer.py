"""First training from defect-free images: teacher first, then student and segmentation.

This is the engine's (``engine``) first configuration: batches are synthetic
anomalies pasted into normal images, and the student's encoder is distilled
toward the teacher's. Images are decoded once, resized to the training size
(or, for a model with a scale, to that scale, each keeping its shape: batches
are then random windows of them) and kept as uint8 tensors on the training
device; every batch is drawn, synthesised and augmented there. Checkpoints
are safetensors files (weights, optimizer state, random state) written
atomically, so a run killed at any moment resumes from the last one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save as save_safetensors_bytes
from tqdm import tqdm

from labelme_dsarad.model.atomic_write import write_atomically
from labelme_dsarad.model.devices import DEFAULT_DEVICE
from labelme_dsarad.model.export import onnx_bytes
from labelme_dsarad.model.images import image_size, read_image
from labelme_dsarad.model.inference import denormals_flushed, resize_for_model, resize_to, resolve_device
from labelme_dsarad.model.model_file import LoadedModel, ModelInfo, preset_architecture, read_safetensors
from labelme_dsarad.model.networks import DSARAD, ReconstructionNetwork, check_input_size
from labelme_dsarad.model.scoring import ScoreNormaliser
from labelme_dsarad.model.tiles import Tiling, canvas_shape, pad_to, scale_for, scaled_shape

from .calibration import (
    HELD_OUT,
    MAP_CORRECTION_MAX_IMAGES,
    NOT_HELD_OUT,
    choose_score_window,
    describe_validation,
    fit_map_correction,
    normal_thresholds,
    raw_outputs,
)
from .engine import (
    TRAINED_STORAGE,
    Budget,
    LoopState,
    Progress,
    StudentTraining,
    TrainingBatch,
    adam,
    autocast_for,
    every,
    finish_model,
    model_header,
    run_steps,
)
from .losses import reconstruction_loss
from .progress import TerminalProgress
from .sources import AnomalySources
from .synthesis import random_crops, random_windows, synthesise

CHECKPOINT_NAME = "checkpoint.safetensors"
# Checkpoints leave out what every export fits afresh (and checkpoints written before it existed lack).
REFITTED_AT_EXPORT = "map_correction."
# With --minutes: writing the model is timed on this many validation images,
# and given this much slack, plus a fixed allowance for saving the file.
CALIBRATION_TIMING_IMAGES = 8
CALIBRATION_PASSES = 2  # the validation normals, and them with synthetic anomalies (score window and thresholds)
EXPORT_SAFETY = 1.5
EXPORT_WRITE_SECONDS = 2.0
MINIMUM_TRAINING_SECONDS = 5.0


@dataclass
class TrainConfig:
    product: str
    images: list[str]
    preset: str = "compact"
    input_size: int | None = None
    # Train on random windows of this side cut from the images at input_size
    # (None: whole images). Steps cost what crop-sized images cost, while the
    # model sees the product in the detail it infers at.
    crop_size: int | None = None
    # Photo pixels per model pixel (model/tiles.py): photos keep their aspect and are covered by tiles;
    # None: squashed to one square. ``AUTO_SCALE``: chosen from the images (``tiles.scale_for``).
    scale: float | str | None = None
    epochs: float | None = None
    minutes: float | None = None
    batch_size: int = 8
    learning_rate: float = 1e-3  # the peak of the warm-up and cosine (engine.learning_rate_at)
    teacher_share: float = 0.25  # part of the budget spent on the teacher
    anomaly_source: str | None = None
    device: str = DEFAULT_DEVICE
    seed: int = 0
    validation_fraction: float = 0.1
    labels: list[str] = field(default_factory=lambda: ["defect"])
    checkpoint_seconds: float = 60.0
    # Export a model this many times during the student phase, to measure
    # accuracy against training time (0: only at the end).
    snapshots: int = 0

    def __post_init__(self):
        if (self.epochs is None) == (self.minutes is None):
            raise ValueError("give exactly one of epochs or minutes")
        if (self.epochs is not None and self.epochs <= 0) or (self.minutes is not None and self.minutes <= 0):
            raise ValueError("the training budget must be positive")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be 1 or more, got {self.batch_size}")
        if self.input_size is not None:
            check_input_size(self.input_size)
        if isinstance(self.scale, str) and self.scale != AUTO_SCALE:
            raise ValueError(f"scale must be a number or {AUTO_SCALE!r}, got {self.scale!r}")
        if isinstance(self.scale, (int, float)) and not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.crop_size is not None:
            check_input_size(self.crop_size)
            if self.crop_size > (self.input_size or preset_architecture(self.preset).input_size):
                raise ValueError(f"crop size {self.crop_size} is larger than the input size")


AUTO_SCALE = "auto"


def decode_images(paths: list[str], size: int, description: str = "decoding") -> torch.Tensor:
    """(N, 3, S, S) uint8, decoded and resized once for the whole run."""
    arrays = [resize_for_model(read_image(path), size) for path in tqdm(paths, desc=description, leave=False)]
    if not arrays:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def decode_scaled(paths: list[str], scale: float, size: int, description: str) -> list[torch.Tensor]:
    """Each image (3, H, W) uint8 at ``scale`` photo pixels per model pixel, padded as inference pads
    it (``tiles.Tiling``) where a side is shorter than ``size``."""
    scaled = []
    for path in tqdm(paths, desc=description, leave=False):
        image = read_image(path)
        shape = scaled_shape(image.shape[:2], scale)
        canvas = pad_to(resize_to(image, shape), canvas_shape(shape, size))
        scaled.append(torch.from_numpy(np.ascontiguousarray(canvas)).permute(2, 0, 1).contiguous())
    return scaled


def tiles_of(scaled: list[torch.Tensor], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The tiles inference cuts from each scaled image (N, 3, size, size) uint8, and the index of the
    image each tile comes from."""
    tiles, owners = [], []
    for index, image in enumerate(scaled):
        tiling = Tiling.of((image.shape[1], image.shape[2]), size)
        tiles.append(torch.from_numpy(tiling.cut(image.permute(1, 2, 0).numpy())).permute(0, 3, 1, 2))
        owners += [index] * len(tiling)
    if not tiles:
        return torch.empty((0, 3, size, size), dtype=torch.uint8), np.zeros(0, np.int64)
    return torch.cat(tiles).contiguous(), np.array(owners, np.int64)


def choose_scale(config: TrainConfig, input_size: int) -> float:
    """The scale a run trains at: 0 (squash), the one given, or one chosen from the images' sizes."""
    if config.scale is None:
        return 0.0
    if config.scale == AUTO_SCALE:
        return scale_for([image_size(path)[::-1] for path in config.images], input_size)
    return float(config.scale)


def split_validation(paths: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Carve the validation images from the training images only, deterministically."""
    order = np.random.default_rng(seed).permutation(len(paths))
    count = 0 if len(paths) < 4 else max(1, int(round(len(paths) * fraction)))
    validation = sorted(paths[i] for i in order[:count])
    train = sorted(paths[i] for i in order[count:])
    return train, validation


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: Path, progress: Progress | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.progress = progress or TerminalProgress(enabled=self.rank == 0)
        self.architecture = preset_architecture(config.preset, config.input_size)
        self.architecture = replace(self.architecture, scale=choose_scale(config, self.architecture.input_size))
        torch.manual_seed(config.seed)
        self.teacher = ReconstructionNetwork(self.architecture.reconstruction_width).to(self.device)
        self.network = DSARAD(self.architecture).to(self.device)
        self.teacher_optimizer = adam(self.teacher.parameters(), config.learning_rate, self.device)
        self.student_optimizer = adam([*self.network.student.parameters(), *self.network.segmentation.parameters()],
                                      config.learning_rate, self.device)
        # Each process draws its own batches; the same seed on every rank
        # would make data parallelism pointless.
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed * 1000 + self.rank)
        self.phase = "teacher"
        self.state = LoopState("teacher")
        self.training_seconds: float | None = None  # with --minutes: both phases together (plan_time)
        # Minutes of each further student round added to a finished run (``extend``); in a
        # further round, training_seconds is that round's.
        self.further_minutes: list[float] = []
        if self.device.type == "cuda":
            self.teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # valid; not in the stubs
            self.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # The modules that take gradient steps; under DDP they average
        # gradients across processes, and the plain modules stay for export.
        self.teacher_trained: torch.nn.Module = self.teacher
        student_trained: torch.nn.Module = self.network.student
        segmentation_trained: torch.nn.Module = self.network.segmentation
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.teacher_trained = DistributedDataParallel(self.teacher, device_ids=device_ids)
            student_trained = DistributedDataParallel(self.network.student, device_ids=device_ids)
            segmentation_trained = DistributedDataParallel(self.network.segmentation, device_ids=device_ids)
        self.autocast = autocast_for(self.device)
        # Distillation reads only the encoder: the teacher's decoder would be wasted work.
        self.student_training = StudentTraining(self.network, self.teacher.encoder, self.student_optimizer,
                                                self.autocast, student_trained, segmentation_trained)

    @property
    def history(self) -> list[dict]:
        return self.state.history

    # ----- data -----
    def prepare_data(self) -> None:
        config = self.config
        size = self.architecture.input_size
        train_paths, self.validation_paths = split_validation(config.images, config.validation_fraction, config.seed)
        if not train_paths:
            raise ValueError("no training images")
        # With a scale, batches are random windows of the scaled images, and what takes whole images
        # at the model's size (map correction, thresholds, anomaly sources) takes their tiles; the
        # validation images' scores are their tiles' highest, as a stitched map's would be.
        self.scaled_images: list[torch.Tensor] = []
        self.validation_owners: np.ndarray | None = None
        if self.architecture.scale:
            self.scaled_images = [image.to(self.device) for image in
                                  decode_scaled(train_paths, self.architecture.scale, size, "decoding training images")]
            self.images = tiles_of([image.cpu() for image in self.scaled_images], size)[0].to(self.device)
            self.validation_images, self.validation_owners = tiles_of(
                decode_scaled(self.validation_paths, self.architecture.scale, size, "decoding validation images"), size)
        else:
            self.images = decode_images(train_paths, size, "decoding training images").to(self.device)
            self.validation_images = decode_images(self.validation_paths, size, "decoding validation images")
        folder_images = None
        if config.anomaly_source:
            from labelme_dsarad.model.images import list_images

            source_paths = [str(p) for p in list_images([config.anomaly_source])]
            folder_images = decode_images(source_paths, size, "decoding anomaly sources")
            if not len(folder_images):
                raise ValueError(f"{config.anomaly_source}: no images in the anomaly-source folder")
            folder_images = folder_images.to(self.device)
        self.sources = AnomalySources(self.config.crop_size or size, folder_images, self.images)
        self.train_count = len(train_paths)

    def batch(self) -> torch.Tensor:
        size = self.config.crop_size or self.architecture.input_size
        if self.scaled_images:
            index = torch.randint(0, len(self.scaled_images), (self.config.batch_size,), generator=self.generator,
                                  device=self.device)
            windows = random_windows([self.scaled_images[i] for i in index.tolist()], size, self.generator)
            return self.batch_layout(windows.float() / 255.0)
        index = torch.randint(0, len(self.images), (self.config.batch_size,), generator=self.generator, device=self.device)
        return self.batch_layout(random_crops(self.images[index], size, self.generator).float() / 255.0)

    def batch_layout(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch in the layout its device computes fastest."""
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def synthetic_batch(self) -> TrainingBatch:
        synthetic = synthesise(self.batch(), self.sources.sample(self.config.batch_size, self.generator, self.device),
                               self.generator, self.sources.chroma)
        return TrainingBatch(inputs=synthetic.augmented, masks=synthetic.mask, clean=synthetic.clean)

    def plan_time(self, started: float) -> None:
        """With ``--minutes``, the seconds both phases (or a further round) may train: the whole budget
        less what setup took and what writing the model will take, so the command ends close to the
        minutes asked for."""
        minutes = self.further_minutes[-1] if self.further_minutes else self.config.minutes
        if minutes is None or self.training_seconds is not None:
            return  # a step budget, or a resumed run that planned already
        writing = self.export_seconds()  # timed here, so counted in the setup below too
        setup = time.monotonic() - started
        seconds = max(minutes * 60.0 - setup - writing, MINIMUM_TRAINING_SECONDS)
        if self.distributed:  # every process must plan the same budget, or they stop at different steps
            agreed = torch.tensor([seconds], dtype=torch.float64, device=self.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            seconds = float(agreed.item())
        self.training_seconds = seconds

    def export_seconds(self) -> float:
        """What ``export`` will take, timed on a batch: a pass over training images for the map
        correction, the calibration passes over the validation images, and the ONNX graph the
        model file carries (exported once here: its time depends little on the weights)."""
        images = self.validation_images if len(self.validation_images) else self.images.cpu()[:16]
        sample = images[:CALIBRATION_TIMING_IMAGES]
        began = time.monotonic()
        raw_outputs(self.network, sample, self.device)
        per_image = (time.monotonic() - began) / max(len(sample), 1)
        passes = CALIBRATION_PASSES * len(images) + min(len(self.images), MAP_CORRECTION_MAX_IMAGES)
        began = time.monotonic()
        header = ModelInfo(self.architecture, self.config.product, list(self.config.labels), ScoreNormaliser(0.5, 0.5))
        onnx_bytes(LoadedModel(network=self.network, info=header, path=None, sha256=""))  # exports a copy
        graph = time.monotonic() - began
        return EXPORT_SAFETY * (per_image * passes + graph) + EXPORT_WRITE_SECONDS

    def phase_budget(self, phase: str) -> Budget:
        if self.further_minutes:  # a further round is all student
            assert self.training_seconds is not None, "plan_time comes first"
            return Budget(seconds=self.training_seconds)
        share = self.config.teacher_share if phase == "teacher" else 1.0 - self.config.teacher_share
        if self.config.epochs is not None:
            steps_per_epoch = math.ceil(self.train_count / (self.config.batch_size * self.world_size))
            return Budget(steps=max(1, round(self.config.epochs * share * steps_per_epoch)))
        assert self.training_seconds is not None, "plan_time comes first"
        return Budget(seconds=self.training_seconds * share)

    # ----- steps -----
    def teacher_step(self) -> dict[str, float]:
        clean = self.batch()
        with self.autocast():
            reconstruction, _ = self.teacher_trained(clean)
            loss = reconstruction_loss(reconstruction.float(), clean)
        self.teacher_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.teacher_optimizer.step()
        return {"teacher": loss.item()}

    def student_step(self) -> dict[str, float]:
        return self.student_training.step(self.synthetic_batch())

    def set_mode(self) -> None:
        if self.phase == "teacher":
            self.teacher.train()
        else:
            self.teacher.eval()
            for parameter in self.teacher.parameters():
                parameter.requires_grad_(False)
            self.network.train()

    def run_phase(self, phase: str) -> None:
        teacher = phase == "teacher"
        hooks = [every(self.config.checkpoint_seconds, self.save_checkpoint)]
        if not teacher and self.config.snapshots:
            hooks.append(self.snapshot_when_due)
        run_steps(self.teacher_step if teacher else self.student_step,
                  self.teacher_optimizer if teacher else self.student_optimizer,
                  self.config.learning_rate, self.phase_budget(phase), self.state, self.progress, hooks,
                  self.agreed_elapsed)

    def agreed_elapsed(self, elapsed: float) -> float:
        """Under DDP every process must stop at the same step: agree on the slowest clock."""
        if not self.distributed or self.config.minutes is None:
            return elapsed
        value = torch.tensor([elapsed], dtype=torch.float64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value.item())

    def train(self) -> None:
        """Run (or continue) both phases; Ctrl+C saves a checkpoint before it stops."""
        try:
            if self.phase == "teacher":
                self.set_mode()
                self.run_phase("teacher")
                self.phase, self.state = "student", LoopState("student", history=self.state.history)
                self.save_checkpoint()
            self.set_mode()
            self.run_phase("student")
            self.phase = "done"
            self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise

    def extend(self, minutes: float, snapshots: int = 0) -> None:
        """Train the student and the U-Net of a finished run ``minutes`` more: a further round with
        its own warm-up and cosine from the recipe's peak rate, on from the weights, optimizer state
        and weight average where the run ended; the teacher stays as it is."""
        if self.phase != "done":
            raise ValueError(f"{self.run_dir}: the run has not finished; resume it without --minutes first, "
                             "then add minutes")
        self.further_minutes.append(minutes)
        self.config = replace(self.config, snapshots=snapshots)
        self.phase, self.training_seconds = "student", None
        self.state = LoopState(f"student{len(self.further_minutes) + 1}", self.state.step,
                               history=self.state.history)

    # ----- thresholds and the model file -----
    def calibrate(self, network: DSARAD) -> ScoreNormaliser:
        """The map correction, the image-score window and the thresholds of ``network`` (the weights
        as they will be stored), from validation normals, so a new model suggests little on normal
        images."""
        held_out = len(self.validation_images) > 0
        images = self.validation_images if held_out else self.images.cpu()[:16]
        network.map_correction.reset()  # fitted afresh, from no correction
        correction = fit_map_correction(network, self.images, self.device, self.config.seed)
        window, window_aurocs, maps, scores = choose_score_window(network, images, self.sources, self.device,
                                                                  self.config.seed)
        if self.architecture.scale:
            owners = self.validation_owners if held_out else np.arange(len(images))
            assert owners is not None  # set with the validation tiles
            scores = np.array([scores[owners == owner].max() for owner in np.unique(owners)], np.float32)
        self.architecture = replace(self.architecture, score_window=window)
        network.architecture = self.network.architecture = self.architecture
        normaliser = normal_thresholds(maps, scores,
                                       HELD_OUT if held_out else NOT_HELD_OUT)
        normaliser.statistics["score_window_aurocs"] = window_aurocs
        normaliser.statistics["map_correction"] = correction
        return normaliser

    def model_info(self, network: DSARAD, normaliser: ScoreNormaliser, version: int = 1) -> ModelInfo:
        config = self.config
        return model_header(
            network, config.product, config.labels, normaliser,
            training={
                "method": "DSARAD: teacher reconstruction, then student with feature distillation and U-Net "
                          "on synthetic anomalies",
                "images": self.train_count,
                "validation_images": len(self.validation_paths),
                "anomaly_sources": self.sources.description,
                "preset": config.preset,
                "input_size": self.architecture.input_size,
                "crop_size": config.crop_size,
                "scale": self.architecture.scale,
                "epochs": config.epochs,
                "minutes": config.minutes,
                "further_minutes": self.further_minutes,
                "batch_size": config.batch_size,
                "learning_rate": config.learning_rate,
                "seed": config.seed,
                "device": self.device.type,
                "devices": self.world_size,
                "seconds": round(sum(entry["seconds"] for entry in self.phase_ends()), 1),
                "final_losses": self.history[-1] if self.history else {},
            },
            version=version,
        )

    def phase_ends(self) -> list[dict]:
        ends = {}
        for entry in self.history:
            ends[entry["phase"]] = entry
        return list(ends.values())

    def export(self, path: Path, version: int = 1, storage: str = TRAINED_STORAGE, report: bool = True,
               graph: bool = True) -> Path:
        info = finish_model(path, self.student_training.result(), self.calibrate,
                            lambda network, normaliser: self.model_info(network, normaliser, version), storage,
                            graph=graph)
        if report:
            line, warning = describe_validation(info.normaliser)
            self.progress({"event": "stage", "stage": "calibrating", "message": line})
            if warning:
                self.progress({"event": "problem", "message": warning})
        return path

    def snapshot_paths(self) -> list[Path]:
        return sorted((self.run_dir / "snapshots").glob("*.safetensors"))

    def snapshot_when_due(self, state: LoopState, fraction: float) -> None:
        """Export a model at each 1/snapshots of the student phase (or round), to measure accuracy
        against training; the name says the phase, its fraction, the step and the seconds trained."""
        taken = [path for path in self.snapshot_paths() if path.name.startswith(f"{state.phase}_")]
        if self.rank != 0 or fraction >= 1.0 or fraction * self.config.snapshots < len(taken) + 1:
            return
        earlier = sum(entry["seconds"] for entry in self.phase_ends() if entry["phase"] != state.phase)
        seconds = int(earlier + state.elapsed)
        self.export(self.run_dir / "snapshots" / f"{state.phase}_{fraction:.2f}_step{state.step}_at_{seconds}s"
                                                 ".safetensors", report=False, graph=False)
        self.network.train()

    # ----- checkpoints -----
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def checkpointed_modules(self) -> tuple[tuple[str, torch.nn.Module], ...]:
        return (("teacher", self.teacher), ("student", self.network.student), ("segmentation", self.network.segmentation),
                ("average", self.student_training.average))

    def checkpointed_optimizers(self) -> tuple[tuple[str, torch.optim.Optimizer], ...]:
        return ("teacher_optimizer", self.teacher_optimizer), ("student_optimizer", self.student_optimizer)

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        tensors = {}
        for prefix, module in self.checkpointed_modules():
            for key, value in module.state_dict().items():
                if REFITTED_AT_EXPORT not in key:
                    tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous()
        groups = {}
        for name, optimizer in self.checkpointed_optimizers():
            state = optimizer.state_dict()
            for index, values in state["state"].items():
                for key, value in values.items():
                    tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
            groups[name] = state["param_groups"]
        tensors["generator_state"] = self.generator.get_state().cpu()
        meta = {
            "config": asdict(self.config),
            "phase": self.phase,
            "step": self.state.step,
            "elapsed": self.state.elapsed,
            "training_seconds": self.training_seconds,
            "further_minutes": self.further_minutes,
            "loop_phase": self.state.phase,
            "running": self.state.running,
            "history": self.state.history,
            "param_groups": groups,
        }
        write_atomically(self.checkpoint_path, save_safetensors_bytes(tensors, metadata={"checkpoint": json.dumps(meta)}))

    @classmethod
    def resume(cls, run_dir: Path, progress: Progress | None = None) -> Trainer:
        checkpoint = Path(run_dir) / CHECKPOINT_NAME
        metadata, tensors = read_safetensors(checkpoint)
        meta = json.loads(metadata["checkpoint"])
        trainer = cls(TrainConfig(**meta["config"]), run_dir, progress)
        for prefix, module in trainer.checkpointed_modules():
            kept = {key: value for key, value in module.state_dict().items() if REFITTED_AT_EXPORT in key}
            kept.update({key[len(prefix) + 1 :]: value for key, value in tensors.items() if key.startswith(prefix + ".")})
            module.load_state_dict(kept)
        for name, optimizer in trainer.checkpointed_optimizers():
            state: dict = {}
            for key, value in tensors.items():
                if key.startswith(name + "."):
                    _, index, field_name = key.split(".", 2)
                    state.setdefault(int(index), {})[field_name] = value.to(trainer.device) if field_name != "step" else value
            optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"][name]})
        trainer.generator.set_state(tensors["generator_state"])
        trainer.phase = meta["phase"]
        trainer.training_seconds = meta.get("training_seconds")
        trainer.further_minutes = meta.get("further_minutes", [])
        # Checkpoints written before further rounds existed name no loop phase.
        loop_phase = meta.get("loop_phase", "student" if trainer.phase == "done" else trainer.phase)
        trainer.state = LoopState(loop_phase, meta["step"], meta["elapsed"], meta.get("running", {}), meta["history"])
        return trainer


def train_model(config: TrainConfig | None, run_dir: Path, output: Path, resume: bool = False, version: int = 1,
                storage: str = TRAINED_STORAGE, started: float | None = None, further_minutes: float | None = None,
                snapshots: int = 0) -> Path:
    """Train (or resume, when ``config`` is None) and write the model file; returns its path.

    ``started`` (``time.monotonic()``) is when the command began: a minutes
    budget counts from there, setup and writing the model included.
    ``further_minutes``: resume a finished run for a further round of the
    student of that many minutes (``Trainer.extend``), with ``snapshots``.
    """
    started = time.monotonic() if started is None else started
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Low-contrast product images drive activations and gradients into denormal floats, which
    # run many times slower on x86 CPUs: flushed while the run lasts, not after it.
    with denormals_flushed():
        if resume or config is None:
            trainer = Trainer.resume(run_dir)
            if further_minutes is not None:
                trainer.extend(further_minutes, snapshots)
        else:
            trainer = Trainer(config, run_dir)
        trainer.prepare_data()
        trainer.plan_time(started)
        if trainer.phase != "done":
            trainer.train()
        if trainer.rank == 0:
            trainer.export(Path(output), version=version, storage=storage)
            (run_dir / "history.json").write_text(json.dumps(trainer.history, indent=1))
    return Path(output)
