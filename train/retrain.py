"""Warm-start retraining from labels people corrected: the loop back from LabelMe to the model.

``retrain`` reads a folder annotated in LabelMe (``labels.read_label_folder``:
reviewed normal images and real defects), adds any defect-free images given
(``RetrainConfig.normal_images``, e.g. the first training's) to the normals,
refuses, before any training, labels with no reviewed defect or no
defect-free image (``retrain_checks``), splits them (``corrections``),
continues training the product's model in use for minutes, sets its
thresholds (``calibration``) and measures it before and after on the holdout
(``evaluation``), and writes the result as a new version into the model
store, keeping the old ones. The model in use stays as it was: a person
switches with ``dsarad use`` (or the plugin's *Use vN*) after reading the
before/after numbers.

It is the engine's (``engine``) second configuration:

- **Warm start, frozen student**: the student and the U-Net start from the
  model's weights, and only the U-Net learns, on the student's
  reconstructions made as at inference (``corrections.reconstruct``).
  Training the student too cost much of a step and its features drifted
  under the U-Net that reads them.
- **Batches** (``corrections.CorrectionBatches``): whole images at the
  model's size, nearly all real defects, the rest reviewed normals with
  synthetic anomalies; cross-entropy with every labelled pixel alike
  (pending ones not at all) plus Dice, so that a defect of a few pixels
  counts as a whole. A run of minutes underfits even the corrections it
  trains on, hence the first training's high learning rate.
- **Kinds**: shapes labelled other than the model's generic label
  ("blowhole", "Pitting") teach the U-Net to name them (``with_kinds``);
  every suggestion then carries its most likely kind and its probability.
- **Mirror images at inference** (``Architecture.flip_average``): the new
  model's map is the U-Net's mean over the four mirror images of its input,
  in calibration and at inference alike: closer outlines for three more
  passes of the U-Net.
- **Map correction** (``calibration.choose_map_correction``): refitted on
  the training normals, kept only if the calibration defects' pixels rank
  at least as well with it.
- **Thresholds** (``calibration.f1_thresholds``): where F1 is best on the
  calibration images, never below what the reviewed normals need, and
  never on the training images, which the U-Net scores too confidently;
  then, on the same images, how far each kind's suggestions reach and how
  high a suggestion must peak (``calibration.choose_suggestion_levels``).

The measurements behind these choices: docs/retraining.md and docs/experiments.md.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from labelme_dsarad.model.inference import Prediction, Predictor, denormals_flushed, resolve_device
from labelme_dsarad.model.model_file import LoadedModel, ModelInfo, load_model
from labelme_dsarad.model.networks import ANOMALY_LOGITS, DSARAD
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.model.scoring import BULK_CONFIRM_BELOW, ScoreNormaliser
from labelme_dsarad.model.store import BUNDLED, ModelStore, StoredModel, Version, check_product_name

from .calibration import choose_map_correction, choose_suggestion_levels, f1_thresholds
from .corrections import CorrectionBatches, Examples, Split, defect_kinds, load_examples, split_labels
from .engine import (
    TRAINED_STORAGE,
    Budget,
    LoopState,
    Progress,
    Refinement,
    StudentTraining,
    adam,
    autocast_for,
    finish_model,
    model_header,
    run_steps,
)
from .evaluation import evaluate_predictor
from .labels import LabelFolder, LabelledImage, read_label_folder
from .retrain_checks import few_defects_warning, missing_images
from .retrain_config import RetrainConfig


@dataclass
class RetrainResult:
    product: str
    version: int
    path: Path
    previous: dict  # the starting model: name, version ("bundled", N, or None: a file outside the store), path, sha256
    before: dict  # holdout metrics of the starting model
    after: dict  # and of the new one
    counts: dict
    thresholds: dict
    in_use: str  # the name of the product's model in use, which the retrain left as it was
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


class Retrainer:
    """The warm-started networks, their frozen student, and the batches the U-Net learns from."""

    def __init__(self, base: LoadedModel, config: RetrainConfig, device: torch.device, kinds: tuple[str, ...] = ()):
        self.config = config
        self.device = device
        self.network = with_kinds(base.network, kinds).to(device)
        # Its maps come from the U-Net's mean over mirror images (calibration and inference alike);
        # training runs the U-Net once per image, as before.
        self.network.architecture = replace(self.network.architecture, flip_average=True)
        for parameter in self.network.student.parameters():
            parameter.requires_grad_(False)
        # The U-Net's forward and backward pass in channels-last: more steps a minute on a CPU
        # (bench/bench_retrain_step.py), and the usual layout for CUDA convolutions; the
        # student's reconstructions too (``corrections.reconstruct``).
        self.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = adam(self.network.segmentation.parameters(), config.learning_rate, device)
        self.autocast = autocast_for(device)
        self.training = StudentTraining(self.network, None, self.optimizer, self.autocast)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.size = base.info.architecture.input_size

    def set_data(self, normals, defects) -> None:
        """``corrections.Examples`` of the training normals and defects."""
        self.network.student.eval()
        self.batches = CorrectionBatches(self.network.student, normals, defects, self.config.batch_size,
                                         self.config.real_share, self.config.synthetic_share, self.generator,
                                         self.device, self.autocast)

    def step(self) -> dict[str, float]:
        return self.training.step(self.batches())

    def training_mode(self) -> None:
        """The U-Net in training mode; the frozen student's BatchNorm keeps the statistics inference uses."""
        self.network.train()
        self.network.student.eval()

    def train(self, budget: Budget, progress: Progress) -> dict:
        self.training_mode()
        state = run_steps(self.step, self.optimizer, self.config.learning_rate, budget, LoopState("retraining"),
                          progress)
        self.network.eval()
        return {"steps": state.step, "seconds": round(state.elapsed, 1), "final_losses": state.running}


def with_kinds(network: DSARAD, kinds: tuple[str, ...]) -> DSARAD:
    """A copy of ``network`` whose U-Net also names ``kinds``: the kinds it knew keep their
    weights, new ones start from zero (every kind equally likely)."""
    architecture = network.architecture
    if not kinds or kinds == architecture.kinds:
        return copy.deepcopy(network)
    widened = DSARAD(replace(architecture, kinds=kinds))
    state = {key: value for key, value in network.state_dict().items() if not key.startswith("segmentation.to_logits.")}
    widened.load_state_dict(state, strict=False)
    old, new = network.segmentation.to_logits, widened.segmentation.to_logits
    assert old.bias is not None and new.bias is not None  # every conv of ours has one
    with torch.no_grad():
        new.weight.zero_()
        new.bias.zero_()
        keep = [ANOMALY_LOGITS + architecture.kinds.index(kind) for kind in kinds if kind in architecture.kinds]
        into = [ANOMALY_LOGITS + index for index, kind in enumerate(kinds) if kind in architecture.kinds]
        for source, target in zip([*range(ANOMALY_LOGITS), *keep], [*range(ANOMALY_LOGITS), *into]):
            new.weight[target] = old.weight[source]
            new.bias[target] = old.bias[source]
    return widened


def with_suggestion_levels(model_path: Path, calibration: list[LabelledImage], device: str) -> ScoreNormaliser:
    """The model's normaliser with the extent of each kind's suggestions and their lowest peak
    chosen on the calibration images (``calibration.choose_suggestion_levels``), and the bulk
    confirmation's cut: the lowest image score of a calibration image with defects."""
    # The torch backend: on a CPU ``auto`` would export this file, whose header is rewritten
    # next, to ONNX (seconds, and a cache file nothing reads again).
    predictor = Predictor(model_path, device=device, backend="torch")
    defect_scores: list[float] = []

    def predicted() -> Iterator[tuple[Prediction, np.ndarray]]:
        for item in calibration:
            prediction = predictor.predict(item.read_image())
            if item.is_defect:
                defect_scores.append(prediction.image_score)
            yield prediction, item.masks(*prediction.score_map.shape)[0]

    levels, min_peak, statistics = choose_suggestion_levels(predicted())
    normaliser = predictor.normaliser
    # The bulk-confirmation grid shows only images scoring below every calibration defect.
    cut = {BULK_CONFIRM_BELOW: min(defect_scores)} if defect_scores else {}
    return replace(normaliser, extend_to_by_kind=levels, min_peak=min_peak,
                   statistics={**normaliser.statistics, **statistics, **cut})


def measure(model_path: Path, samples: list[LabelledImage], device: str) -> dict:
    """The holdout's metrics through the one evaluator, with the default suggestions."""
    if not samples:
        return {"images": 0}
    metrics = evaluate_predictor(Predictor(model_path, device=device), samples, suggestions=SuggestionSettings(),
                                 show_progress=False)
    return {"images": len(samples), "defect_images": sum(sample.is_anomalous for sample in samples),
            **metrics["overall"]}


# -- the whole retrain ------------------------------------------------------------------


def base_model(config: RetrainConfig, store: ModelStore) -> tuple[Path, Version | None]:
    """The model to start from and its store version (None: a file given directly)."""
    if config.base_model is not None:
        return Path(config.base_model), None
    stored: StoredModel = store.resolve(config.product)
    return stored.path, (BUNDLED if stored.bundled else stored.version)


def retrain(config: RetrainConfig, progress: Progress | None = None) -> RetrainResult:
    """Retrain and store a new version; see the module docstring. Ctrl+C (or SIGTERM
    turned into KeyboardInterrupt) at any point leaves the store as it was."""
    progress = progress or (lambda event: None)
    started = time.monotonic()
    check_product_name(config.product)
    store = ModelStore(config.store_root)
    # Dark images drive activations and gradients into denormal floats, which run many times
    # slower on x86 CPUs: flushed while the retrain lasts, not after it.
    with denormals_flushed():
        labels = read_reviewed(config, progress)
        base_path, base_version = base_model(config, store)
        base = load_model(base_path)
        previous = {"name": base.name, "version": base_version, "path": str(base_path), "sha256": base.sha256}
        holdout = labels.split.holdout
        if holdout:
            stage(progress, "measuring", f"measuring {base.name} on {len(holdout)} held-out images")
        before = measure(base_path, holdout, config.device)
        trainer, normals, history = train_warm_started(base, labels.split, config, progress)
        version, path = store.next_path(config.product)
        training = training_record(config, previous, labels.counts(), history, trainer.device)

        def header(network: DSARAD, normaliser: ScoreNormaliser) -> ModelInfo:
            stage(progress, "saving", f"writing {config.product} v{version}")
            return model_header(network, config.product, base.info.labels, normaliser, training, version)

        info = finish_model(path, trainer.training.result(),
                            lambda network: calibrate_thresholds(network, labels.split, normals, base.info.normaliser,
                                                                 trainer.device, config.seed, progress),
                            header, TRAINED_STORAGE, refinements(labels.split, before, config, version, progress))
    normaliser = info.normaliser
    thresholds = {"image": normaliser.image_threshold, "pixel": normaliser.pixel_threshold,
                  "extend_to_by_kind": normaliser.extend_to_by_kind, "min_peak": normaliser.min_peak,
                  **normaliser.statistics}
    return RetrainResult(config.product, version, path, previous, before, info.metrics["overall"], labels.counts(),
                         thresholds, store.in_use(config.product)[0].name, list(labels.folder.problems),
                         round(time.monotonic() - started, 1))


def stage(progress: Progress, name: str, message: str) -> None:
    progress({"event": "stage", "stage": name, "message": message})


@dataclass
class ReviewedLabels:
    """What a retrain learns from and measures on: the reviewed images of the labels folder and the
    defect-free images given beside them, split into training, calibration and holdout."""

    folder: LabelFolder
    given_normals: list[LabelledImage]
    split: Split

    def counts(self) -> dict:
        return {**self.split.counts(), "given_normals": len(self.given_normals), "skipped": len(self.folder.skipped),
                "unreadable": len(self.folder.problems)}


def read_reviewed(config: RetrainConfig, progress: Progress) -> ReviewedLabels:
    """The reviewed labels and the normals given, split; a one-line ValueError, before any training,
    when they cannot teach a retrain (``retrain_checks``)."""
    folder = read_label_folder(config.labels_dir)
    for problem in folder.problems:
        progress({"event": "problem", "message": problem})
    reviewed = {image.image_path.resolve() for image in folder.images}
    given_normals = [LabelledImage(Path(path), Path(path), [], []) for path in config.normal_images
                     if Path(path).resolve() not in reviewed]
    if not folder.images:
        raise ValueError(f"{config.labels_dir}: no reviewed images (set the image flag 'ok' on the images "
                         f"you reviewed); {len(folder.skipped)} skipped, {len(folder.problems)} unreadable")
    refusal = missing_images(config.labels_dir, len(folder.defects), len(folder.normals) + len(given_normals))
    if refusal:
        raise ValueError(refusal)
    warning = few_defects_warning(len(folder.defects))
    if warning:
        progress({"event": "problem", "message": warning})
    split = split_labels(folder.images + given_normals, config.holdout, config.calibration, config.seed)
    stage(progress, "reading", folder.describe() + (f"; {len(given_normals)} defect-free images given" if given_normals else ""))
    return ReviewedLabels(folder, given_normals, split)


def train_warm_started(base: LoadedModel, split: Split, config: RetrainConfig,
                       progress: Progress) -> tuple[Retrainer, Examples, dict]:
    """The base model's U-Net trained on the training images for the budget; the trainer, the
    training normals (calibration refits the map correction on them) and the training's history."""
    stage(progress, "loading", f"loading {len(split.train)} training and {len(split.calibration)} calibration images")
    size, scale = base.info.architecture.input_size, base.info.architecture.scale
    train_defects = [i for i in split.train if i.is_defect]
    known = base.info.architecture.kinds
    kinds = known + tuple(kind for kind in defect_kinds(train_defects, base.info.labels[0]) if kind not in known)
    if kinds:
        stage(progress, "loading", f"defect kinds learnt: {', '.join(kinds)}")
    setup_started = time.monotonic()
    trainer = Retrainer(base, config, resolve_device(config.device), kinds)
    normals = load_examples([i for i in split.train if not i.is_defect], size, scale=scale)
    trainer.set_data(normals, load_examples(train_defects, size, kinds, scale))

    stage(progress, "training", f"training for {config.steps} steps" if config.steps else f"training for {config.minutes:g} min")
    # --minutes counts the loading and the reconstructions made for the training images too.
    budget = Budget(steps=config.steps) if config.steps else \
        Budget(seconds=max((config.minutes or 0) * 60.0 - (time.monotonic() - setup_started), 1.0))
    return trainer, normals, trainer.train(budget, progress)


def training_record(config: RetrainConfig, previous: dict, counts: dict, history: dict, device: torch.device) -> dict:
    """How the new version was trained, for its header."""
    return {
        "method": ("DSARAD warm-start retraining from corrected labels: the base model's student frozen, its "
                   "U-Net trained on whole images: real defects, synthetic anomalies and normals, "
                   "cross-entropy + Dice loss; maps averaged over the input's mirror images"),
        "base": previous,
        "labels_dir": str(config.labels_dir),
        "images": counts,
        "steps": history["steps"],
        "seconds": history["seconds"],
        "final_losses": history["final_losses"],
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "real_share": config.real_share,
        "synthetic_share": config.synthetic_share,
        "seed": config.seed,
        "device": device.type,
    }


def calibrate_thresholds(network: DSARAD, split: Split, normals: Examples, base_normaliser: ScoreNormaliser,
                         device: torch.device, seed: int, progress: Progress) -> ScoreNormaliser:
    """The map correction refitted on the training normals (kept only where it helps), then the
    thresholds at the best F1 on the calibration images, above what the reviewed normals allow."""
    stage(progress, "calibrating", "setting thresholds at the best F1, above what the reviewed normals allow")
    calibration = load_examples(split.calibration, network.architecture.input_size, scale=network.architecture.scale)
    masks = calibration.masks[:, 0].numpy() > 0.5
    correction, maps, scores = choose_map_correction(network, normals.images, calibration.images, masks, device, seed)
    normaliser = f1_thresholds(maps, scores, masks, calibration.defective, calibration.sizes, base_normaliser)
    normaliser.statistics["map_correction"] = correction
    return normaliser


def refinements(split: Split, before: dict, config: RetrainConfig, version: int, progress: Progress) -> list[Refinement]:
    """What the saved version's header gains: each kind's suggestion levels (with calibration
    images), and the holdout's metrics before and after."""

    def suggestion_levels(path: Path, info: ModelInfo) -> ModelInfo:
        stage(progress, "calibrating", "choosing how far the suggestions of each kind extend and how high they peak")
        return replace(info, normaliser=with_suggestion_levels(path, split.calibration, config.device))

    def holdout_metrics(path: Path, info: ModelInfo) -> ModelInfo:
        if split.holdout:
            stage(progress, "measuring", f"measuring v{version} on {len(split.holdout)} held-out images")
        after = measure(path, split.holdout, config.device)
        dataset = {"kind": "held-out corrected labels", "path": str(config.labels_dir)}
        return replace(info, metrics={"overall": after, "before": before, "dataset": dataset})

    return [suggestion_levels, holdout_metrics] if split.calibration else [holdout_metrics]
