"""Warm-start retraining from labels people corrected: the loop back from LabelMe to the model.

``retrain`` reads a folder annotated in LabelMe (``labels.read_label_folder``:
reviewed normal images and real defects), continues training the product's
current model for minutes, and writes the result as a new version into the
model store, keeping the old ones (``rollback`` goes back).

**Warm start.** The student and U-Net start from the current model's weights.
The teacher is not in the model file, so distillation pulls the student's
encoder features of the clean image toward those of a frozen copy of the
*starting student* (an "anchor") instead. The starting student was trained to
give, from a defective image, the teacher's features of the clean one, so its
features of clean images are the teacher's as far as training got; anchoring
to them keeps the feature space where the first training put it while a few
hundred steps on a few images adjust the networks, and costs no teacher phase.
Reconstruction targets are the clean images, as in the first training.

**Real defects, three ways.** The reviewed images are split per class
(normal / defect), deterministically: a *holdout* (reported on, never trained
or tuned on), a *calibration* part and the rest for training. Images with
pending suggestions (ignore regions) always train.

1. Thresholds: the image and pixel thresholds go where F1 is best on the
   calibration images (real defects and normals), not on normals alone. They
   are not chosen on the training images, where the U-Net has seen the very
   masks and would score them too confidently. With no defect in the
   calibration part the first training's rule on its normals is used; with
   no calibration image at all the starting model's thresholds stay.
2. Extra anomaly sources: a share of the synthetic samples gets a real defect
   region instead of a Perlin-shaped texture: the training defect image cut
   out with its rasterised shapes (randomly flipped) and pasted into a normal
   image at the same place.
3. Direct supervision: a share of every batch is real defect images with
   their masks (pending regions weigh nothing in the loss). They have no
   clean version, so they train the segmentation (and through it the
   student) but take no part in the reconstruction and distillation terms.

**Before and after.** The holdout is measured with the starting model and
with the new one (``measure``): image and pixel AUROC, AUPRO, best F1 (a
ceiling: threshold chosen on the same set), F1 at the model's own threshold
(what a user gets), and suggestion IoU: the suggested polygons, as the plugin
would draw them, against the people's shapes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from labelme_dsarad.model.inference import Predictor, resize_for_model, resolve_device
from labelme_dsarad.model.model_file import LoadedModel, ModelInfo, load_model, rewrite_header, save_model
from labelme_dsarad.model.networks import image_score
from labelme_dsarad.model.polygons import mask_to_polygons
from labelme_dsarad.model.scoring import ScoreNormaliser, clamp_threshold
from labelme_dsarad.model.store import ModelStore, StoredModel, check_product_name

from .labels import LabelledImage, read_label_folder, rasterise_shapes
from .losses import distillation_loss, focal_loss, reconstruction_loss
from .metrics import best_f1, compute_metrics, downsample_for_metrics, pixel_curves
from .sources import AnomalySources
from .synthesis import synthesise
from .trainer import PIXEL_THRESHOLD_QUANTILE, Budget, learning_rate_at

DEFAULT_MINUTES = 10.0
# A defect pixel at the training size: at least this share of it covered at
# full size. Lower than a half so that hairline cracks survive the shrink.
MASK_COVERAGE = 0.25
# Suggestions as the plugin and 'dsarad predict' make them by default.
SUGGESTION_THRESHOLD, SUGGESTION_MIN_AREA, SUGGESTION_TOLERANCE = 0.5, 20, 1.0
METRICS_MAX_SIDE = 256  # pixel metrics on maps at most this big, as evaluation.evaluate
PROGRESS_EVERY_SECONDS = 1.0
FLAGGED_NORMALS_WARNING = 0.5  # share of calibration normals above the new image threshold worth a warning

Progress = Callable[[dict], None]


@dataclass
class RetrainConfig:
    product: str
    labels_dir: str
    store_root: str | None = None
    base_model: str | None = None  # default: the product's current model in the store
    minutes: float | None = None
    steps: int | None = None
    holdout: float = 0.25
    calibration: float = 0.25  # of what the holdout leaves
    batch_size: int = 8
    learning_rate: float = 1e-4
    real_share: float = 0.25  # of each batch: real defect images with their masks
    paste_probability: float = 0.25  # of the synthetic samples: a real defect pasted in
    device: str = "auto"
    seed: int = 0
    set_current: bool = True

    def __post_init__(self):
        if self.minutes is not None and self.steps is not None:
            raise ValueError("give at most one of minutes or steps")
        if self.minutes is None and self.steps is None:
            self.minutes = DEFAULT_MINUTES
        if (self.minutes is not None and self.minutes <= 0) or (self.steps is not None and self.steps <= 0):
            raise ValueError("the retraining budget must be positive")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be 1 or more, got {self.batch_size}")
        # real_share below 1: the synthetic samples carry the reconstruction and distillation terms.
        for name in ("holdout", "calibration", "real_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.paste_probability <= 1.0:
            raise ValueError(f"paste_probability must be in [0, 1], got {self.paste_probability}")


@dataclass
class Split:
    train: list[LabelledImage]
    calibration: list[LabelledImage]
    holdout: list[LabelledImage]

    def counts(self) -> dict:
        return {name: {"normal": sum(not i.is_defect for i in part), "defect": sum(i.is_defect for i in part)}
                for name, part in (("train", self.train), ("calibration", self.calibration), ("holdout", self.holdout))}


@dataclass
class RetrainResult:
    product: str
    version: int
    path: Path
    previous: dict  # the starting model: name, version (None: a file outside the store), path, sha256
    before: dict  # holdout metrics of the starting model
    after: dict  # and of the new one
    counts: dict
    thresholds: dict
    current: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


# -- the split -------------------------------------------------------------------


def split_labels(images: list[LabelledImage], holdout: float, calibration: float, seed: int) -> Split:
    """Per class, a seeded draw over the byte-sorted files: the same split on every machine.

    Each class keeps at least one image for training when it has any; images
    with ignore regions (pending suggestions) always train, since neither the
    thresholds nor the metrics can leave pixels out.
    """
    split = Split([], [], [])
    rng = np.random.default_rng(seed)
    for is_defect in (False, True):
        members = sorted((i for i in images if i.is_defect == is_defect), key=lambda i: i.label_path.name.encode())
        fixed = [i for i in members if i.pending]
        free = [i for i in members if not i.pending]
        order = [free[k] for k in rng.permutation(len(free))]
        spare = len(free) - (0 if fixed else 1)  # what may leave training
        n_holdout = min(int(round(len(free) * holdout)), max(spare, 0))
        n_calibration = min(int(round((len(free) - n_holdout) * calibration)), max(spare - n_holdout, 0))
        split.holdout += order[:n_holdout]
        split.calibration += order[n_holdout : n_holdout + n_calibration]
        split.train += order[n_holdout + n_calibration :] + fixed
    return split


# -- data at the training size ----------------------------------------------------


@dataclass
class Examples:
    """Images (N, 3, S, S) uint8 with their defect and ignore masks (N, 1, S, S) float."""

    images: torch.Tensor
    masks: torch.Tensor
    ignore: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def shrink_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A full-size bool mask at the model's size: covered at least MASK_COVERAGE."""
    coverage = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return coverage >= MASK_COVERAGE


def load_examples(images: list[LabelledImage], size: int) -> Examples:
    pixels, masks, ignores = [], [], []
    for item in images:
        image = item.read()
        defect, ignore = item.masks(*image.shape[:2])
        pixels.append(resize_for_model(image, size))
        masks.append(shrink_mask(defect, size))
        ignores.append(shrink_mask(ignore, size) & ~masks[-1])
    if not images:
        empty = torch.zeros(0, 1, size, size)
        return Examples(torch.zeros(0, 3, size, size, dtype=torch.uint8), empty, empty)
    return Examples(
        torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(masks)).float().unsqueeze(1),
        torch.from_numpy(np.stack(ignores)).float().unsqueeze(1),
    )


# -- training ---------------------------------------------------------------------


def random_flips(images: torch.Tensor, masks: list[torch.Tensor], generator: torch.Generator):
    """Flip each sample left-right and/or up-down, its masks alike."""
    batch, device = images.shape[0], images.device
    results = [images, *masks]
    for dim in (-1, -2):
        flip = (torch.rand(batch, generator=generator, device=device) < 0.5).view(-1, 1, 1, 1)
        results = [torch.where(flip, tensor.flip(dim), tensor) for tensor in results]
    return results[0], results[1:]


class Retrainer:
    """The warm-started networks, the anchor they distil toward, and one training step."""

    def __init__(self, base: LoadedModel, config: RetrainConfig, device: torch.device):
        self.config = config
        self.device = device
        self.network = copy.deepcopy(base.network).to(device)
        # Distillation reads only encoder features: the anchor is the starting student's encoder.
        self.anchor = copy.deepcopy(base.network.student.encoder).to(device).eval()
        for parameter in self.anchor.parameters():
            parameter.requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            list(self.network.student.parameters()) + list(self.network.segmentation.parameters()),
            lr=config.learning_rate,
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.size = base.info.architecture.input_size

    def set_data(self, normals: Examples, defects: Examples) -> None:
        if not len(normals):
            raise ValueError("retraining needs at least one reviewed normal image (flag 'ok', no shapes) to train on")
        self.normals = normals.images.to(self.device)
        self.defects = Examples(defects.images.to(self.device), defects.masks.to(self.device),
                                defects.ignore.to(self.device))
        self.sources = AnomalySources(self.size, None, self.normals)

    def _draw(self, pool: torch.Tensor, count: int) -> torch.Tensor:
        return torch.randint(0, len(pool), (count,), generator=self.generator, device=self.device)

    def step(self) -> dict:
        config, device = self.config, self.device
        real_count = min(round(config.batch_size * config.real_share), config.batch_size - 1) if len(self.defects) else 0
        synthetic_count = config.batch_size - real_count
        normal = self.normals[self._draw(self.normals, synthetic_count)].float() / 255.0
        synthetic = synthesise(normal, self.sources.sample(synthetic_count, self.generator, device), self.generator)
        augmented, target = synthetic.augmented, synthetic.mask
        if len(self.defects) and config.paste_probability > 0:
            augmented, target = self._paste_real(synthetic.clean, augmented, target)
        inputs, masks, weights = [augmented], [target], [torch.ones_like(target)]
        if real_count:
            index = self._draw(self.defects.images, real_count)
            real, (real_mask, real_ignore) = random_flips(
                self.defects.images[index].float() / 255.0, [self.defects.masks[index], self.defects.ignore[index]],
                self.generator,
            )
            inputs.append(real)
            masks.append(real_mask)
            weights.append(1.0 - real_ignore)
        batch = torch.cat(inputs)
        # One pass over synthetic and real samples together, so BatchNorm sees both.
        reconstruction, features = self.network.student(batch)
        with torch.no_grad():
            _, anchor_features = self.anchor(synthetic.clean)
        logits = self.network.segmentation(torch.cat([reconstruction, batch], dim=1))
        reconstruction_term = reconstruction_loss(reconstruction[:synthetic_count].float(), synthetic.clean)
        distillation_term = distillation_loss([f[:synthetic_count].float() for f in features], anchor_features)
        segmentation_term = focal_loss(logits, torch.cat(masks), weight=torch.cat(weights))
        loss = reconstruction_term + distillation_term + segmentation_term
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"reconstruction": reconstruction_term.item(), "distillation": distillation_term.item(),
                "segmentation": segmentation_term.item()}

    def _paste_real(self, clean: torch.Tensor, augmented: torch.Tensor, target: torch.Tensor):
        """Replace some synthetic anomalies by a real defect region, cut out with its mask."""
        count = clean.shape[0]
        chosen = (torch.rand(count, generator=self.generator, device=self.device)
                  < self.config.paste_probability).view(-1, 1, 1, 1)
        index = self._draw(self.defects.images, count)
        source, (mask,) = random_flips(self.defects.images[index].float() / 255.0, [self.defects.masks[index]],
                                       self.generator)
        pasted = clean * (1 - mask) + source * mask
        return torch.where(chosen, pasted, augmented), torch.where(chosen, mask, target)

    def train(self, budget: Budget, progress: Progress) -> dict:
        self.network.train()
        step, started, last_report, running = 0, time.monotonic(), 0.0, {}
        total_steps = budget.steps
        while not budget.done(step, time.monotonic() - started):
            fraction = budget.progress(step, time.monotonic() - started)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate_at(self.config.learning_rate, fraction)
            losses = self.step()
            running = {key: 0.9 * running.get(key, value) + 0.1 * value for key, value in losses.items()}
            step += 1
            elapsed = time.monotonic() - started
            if elapsed - last_report >= PROGRESS_EVERY_SECONDS or budget.done(step, elapsed):
                last_report = elapsed
                progress({"event": "progress", "stage": "training", "step": step, "steps": total_steps,
                          "fraction": round(min(budget.progress(step, elapsed), 1.0), 4),
                          "seconds": round(elapsed, 1), "losses": {k: round(v, 4) for k, v in running.items()}})
        self.network.eval()
        return {"steps": step, "seconds": round(time.monotonic() - started, 1), "final_losses": running}

    @torch.inference_mode()
    def raw_outputs(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Raw maps (N, S, S) and raw image scores (N,) of the network as it is now."""
        self.network.eval()
        maps, scores = [], []
        for start in range(0, len(images), 16):
            batch = images[start : start + 16].to(self.device).float() / 255.0
            raw_map, _ = self.network(batch)
            maps.append(raw_map.float().cpu())
            scores.append(image_score(raw_map.float()).cpu())
        if not maps:
            return np.zeros((0, self.size, self.size), np.float32), np.zeros(0, np.float32)
        return torch.cat(maps).numpy(), torch.cat(scores).numpy()


# -- thresholds ---------------------------------------------------------------------


def f1_thresholds(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                  fallback: ScoreNormaliser) -> ScoreNormaliser:
    """Raw image and pixel thresholds at the best F1 on calibration images (see the module docstring).

    ``maps`` (N, S, S) raw, ``scores`` (N,) raw, ``masks`` (N, S, S) bool,
    ``labels`` (N,) True for a defect image. Each threshold falls back on its
    own: to the first training's rule on the normals when F1 is undefined (no
    defect, or no defect pixel left at the model's size), to the starting
    model's when there is no normal either.
    """
    labels = np.asarray(labels, dtype=bool)
    statistics = {"calibration_images": int(len(labels)), "calibration_defects": int(labels.sum())}
    normals = ~labels
    if labels.any() and normals.any():
        statistics["image_best_f1"], image_threshold = best_f1(scores, labels)
        statistics["image_method"] = "best F1 on held-back corrected labels (real defects and reviewed normals)"
    elif normals.any():
        image_threshold = float(scores[normals].max())
        statistics["image_method"] = "maximum score of the held-back reviewed normals (no real defect held back)"
    else:
        image_threshold = fallback.image_threshold
        statistics["image_method"] = "the starting model's (nothing held back for calibration)"
    if masks.any() and normals.any():
        statistics["pixel_best_f1"], pixel_threshold = pixel_curves(list(maps), list(masks)).best_f1()
        statistics["pixel_method"] = "best F1 over the pixels of the held-back corrected labels"
    elif normals.any():
        quantiles = np.quantile(maps[normals].reshape(int(normals.sum()), -1), PIXEL_THRESHOLD_QUANTILE, axis=1)
        pixel_threshold = float(quantiles.max())
        statistics["pixel_method"] = (f"maximum of the held-back reviewed normals' {PIXEL_THRESHOLD_QUANTILE:.1%} "
                                      "pixel quantiles (no real defect pixel held back)")
    else:
        pixel_threshold = fallback.pixel_threshold
        statistics["pixel_method"] = "the starting model's (nothing held back for calibration)"
    statistics["method"] = f"image: {statistics['image_method']}; pixel: {statistics['pixel_method']}"
    if normals.any():
        # Where the model separates the defects poorly, the best F1 can be "flag everything": say so.
        statistics["calibration_normals_flagged"] = float(np.mean(scores[normals] >= image_threshold))
    return ScoreNormaliser(clamp_threshold(image_threshold), clamp_threshold(pixel_threshold), statistics)


# -- measuring ---------------------------------------------------------------------


def measure(model: LoadedModel | os.PathLike | str, examples: list[tuple[np.ndarray, np.ndarray | None]],
            device: str = "auto", defect_types: list[str] | None = None) -> dict:
    """Metrics of a model on (image RGB, defect mask or None for a normal image) pairs; see the module docstring.

    Values that need both classes are None when one is missing. With
    ``defect_types`` (one per example, "good" for normals) the result also
    holds ``per_type_image_auroc``: each type's images against all normals.
    """
    result = {"images": len(examples), "defect_images": sum(mask is not None for _, mask in examples)}
    if not examples:
        return result
    predictor = Predictor(model, device=device)
    maps, masks, scores, labels, ious = [], [], [], [], []
    flagged_normals, true_positive, false_positive, defect_pixels = 0, 0, 0, 0
    for image, mask in examples:
        prediction = predictor.predict(image)
        score_map = prediction.score_map
        truth = mask if mask is not None else np.zeros(score_map.shape, dtype=bool)
        regions = mask_to_polygons(score_map, threshold=SUGGESTION_THRESHOLD, min_area=SUGGESTION_MIN_AREA,
                                   tolerance=SUGGESTION_TOLERANCE)
        suggested = rasterise_shapes([{"points": region.points} for region in regions], *score_map.shape)
        if mask is not None:
            if truth.any():  # a defect image with an empty mask has no outline to match
                ious.append(np.count_nonzero(suggested & truth) / np.count_nonzero(suggested | truth))
        else:
            flagged_normals += bool(regions)
        flagged = score_map >= SUGGESTION_THRESHOLD
        true_positive += int(np.count_nonzero(flagged & truth))
        false_positive += int(np.count_nonzero(flagged & ~truth))
        defect_pixels += int(np.count_nonzero(truth))
        small_map, small_mask = downsample_for_metrics(score_map, truth, METRICS_MAX_SIDE)
        maps.append(small_map)
        masks.append(small_mask)
        scores.append(prediction.image_score)
        labels.append(mask is not None)
    types = defect_types or ["defect" if label else "good" for label in labels]
    computed = compute_metrics(maps, masks, scores, labels, types)
    overall = computed["overall"]
    labels, scores = np.array(labels), np.array(scores)
    flagged_images = scores >= SUGGESTION_THRESHOLD
    image_tp = int(np.count_nonzero(flagged_images & labels))
    result.update(overall)
    result.update({
        "image_f1_at_threshold": _f1(image_tp, int(np.count_nonzero(flagged_images & ~labels)), int(labels.sum()))
        if labels.any() else None,
        "pixel_f1_at_threshold": _f1(true_positive, false_positive, defect_pixels) if defect_pixels else None,
        "suggestion_iou": float(np.mean(ious)) if ious else None,
        "normal_images_with_suggestions": flagged_normals / int((~labels).sum()) if (~labels).any() else None,
    })
    if defect_types is not None:
        result["per_type_image_auroc"] = {name: values["image_auroc"] for name, values in computed["per_type"].items()}
    return result


def _f1(true_positive: int, false_positive: int, positives: int) -> float:
    return 2 * true_positive / (true_positive + false_positive + positives) if positives else 0.0


def holdout_examples(images: list[LabelledImage]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    examples = []
    for item in images:
        image = item.read()
        examples.append((image, item.masks(*image.shape[:2])[0] if item.is_defect else None))
    return examples


# -- the whole retrain ------------------------------------------------------------------


def base_model(config: RetrainConfig, store: ModelStore) -> tuple[Path, int | None]:
    """The model to start from and its store version (None: a file given directly)."""
    if config.base_model is not None:
        return Path(config.base_model), None
    stored: StoredModel = store.resolve(config.product)
    return stored.path, (None if stored.bundled else stored.version)


def retrain(config: RetrainConfig, progress: Progress | None = None) -> RetrainResult:
    """Retrain and store a new version; see the module docstring. Ctrl+C (or SIGTERM
    turned into KeyboardInterrupt) at any point leaves the store as it was."""
    progress = progress or (lambda event: None)
    started = time.monotonic()
    check_product_name(config.product)
    store = ModelStore(config.store_root)

    def stage(name: str, message: str) -> None:
        progress({"event": "stage", "stage": name, "message": message})

    stage("reading", f"reading labels in {config.labels_dir}")
    folder = read_label_folder(config.labels_dir)
    for problem in folder.problems:
        progress({"event": "problem", "message": problem})
    if not folder.images:
        raise ValueError(f"{config.labels_dir}: no reviewed images (set the image flag 'ok' on the images "
                         f"you reviewed); {len(folder.skipped)} skipped, {len(folder.problems)} unreadable")
    split = split_labels(folder.images, config.holdout, config.calibration, config.seed)
    counts = {**split.counts(), "skipped": len(folder.skipped), "unreadable": len(folder.problems)}
    stage("reading", folder.describe())

    base_path, base_version = base_model(config, store)
    base = load_model(base_path)
    previous = {"name": base.name, "version": base_version, "path": str(base_path), "sha256": base.sha256}
    device = resolve_device(config.device)
    torch.set_flush_denormal(True)  # dark images: denormal floats run ~50x slower on x86 CPUs

    holdout = holdout_examples(split.holdout)
    if holdout:
        stage("measuring", f"measuring {base.name} on {len(holdout)} held-out images")
    before = measure(base_path, holdout, config.device)

    stage("loading", f"loading {len(split.train)} training and {len(split.calibration)} calibration images")
    size = base.info.architecture.input_size
    trainer = Retrainer(base, config, device)
    train_normals = [i for i in split.train if not i.is_defect]
    trainer.set_data(load_examples(train_normals, size), load_examples([i for i in split.train if i.is_defect], size))

    stage("training", f"training for {config.steps} steps" if config.steps else f"training for {config.minutes:g} min")
    budget = Budget(config.steps, None) if config.steps else Budget(None, config.minutes * 60.0)
    history = trainer.train(budget, progress)

    stage("calibrating", "setting thresholds at the best F1")
    calibration = load_examples(split.calibration, size)
    maps, scores = trainer.raw_outputs(calibration.images)
    labels = np.array([item.is_defect for item in split.calibration], dtype=bool)
    normaliser = f1_thresholds(maps, scores, calibration.masks[:, 0].numpy() > 0.5, labels, base.info.normaliser)
    flagged = normaliser.statistics.get("calibration_normals_flagged", 0.0)
    if flagged > FLAGGED_NORMALS_WARNING:
        progress({"event": "problem", "message": f"warning: the best-F1 image threshold flags {flagged:.0%} of the "
                  "held-back normal images: the model separates these defects poorly"})

    version, final_path = store.next_path(config.product)
    # Written under a name the store does not list, renamed once complete, so
    # a cancel or crash never leaves a half-made version behind.
    temporary = final_path.with_name(f".retrain-{os.getpid()}-{final_path.name}")
    info = ModelInfo(
        architecture=base.info.architecture,
        product=config.product,
        labels=list(base.info.labels),
        normaliser=normaliser,
        training={
            "method": "DSARAD warm-start retraining from corrected labels: student and U-Net from the base model, "
                      "distillation toward the base student on clean images, real defects pasted and supervised",
            "base": previous,
            "labels_dir": str(config.labels_dir),
            "images": counts,
            "steps": history["steps"],
            "seconds": history["seconds"],
            "final_losses": history["final_losses"],
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "real_share": config.real_share,
            "paste_probability": config.paste_probability,
            "seed": config.seed,
            "device": device.type,
        },
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        version=version,
    )
    try:
        stage("saving", f"writing {config.product} v{version}")
        save_model(temporary, trainer.network, info, storage="fp16")
        if holdout:
            stage("measuring", f"measuring v{version} on {len(holdout)} held-out images")
        after = measure(temporary, holdout, config.device)
        metrics = {"overall": after, "before": before, "dataset": {"kind": "held-out corrected labels",
                                                                  "path": str(config.labels_dir)}}
        rewrite_header(temporary, replace(info, metrics=metrics))
        os.replace(temporary, final_path)
    finally:
        temporary.unlink(missing_ok=True)
    if config.set_current:
        store.set_current(config.product, version)
    thresholds = {"image": normaliser.image_threshold, "pixel": normaliser.pixel_threshold, **normaliser.statistics}
    return RetrainResult(config.product, version, final_path, previous, before, after, counts, thresholds,
                         config.set_current, list(folder.problems), round(time.monotonic() - started, 1))


def rollback(product: str, version: int, store_root: os.PathLike | str | None = None) -> StoredModel:
    """Make an older (or any stored) version the product's current model again."""
    store = ModelStore(store_root)
    store.set_current(product, version)  # ValueError when there is no such version
    return store.resolve(product, version)


# -- reporting --------------------------------------------------------------------------

REPORTED_METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_best_f1", "pixel_best_f1",
                    "image_f1_at_threshold", "pixel_f1_at_threshold", "suggestion_iou",
                    "normal_images_with_suggestions")


def json_progress(event: dict, stream=None) -> None:
    """One JSON object per line, flushed at once: what the plugin's dialog reads."""
    stream = stream or sys.stdout
    stream.write(json.dumps(event, allow_nan=False, default=str) + "\n")
    stream.flush()


def human_progress(event: dict, stream=None) -> None:
    stream = stream or sys.stderr
    if event["event"] == "stage":
        stream.write(f"{event['message']}\n")
    elif event["event"] == "problem":
        message = event["message"]
        stream.write(f"{message}\n" if message.startswith("warning:") else f"skipped: {message}\n")
    elif event["event"] == "progress":
        losses = " ".join(f"{key} {value:.3f}" for key, value in event["losses"].items())
        stream.write(f"  {event['fraction']:6.1%}  step {event['step']}  {event['seconds']:.0f} s  {losses}\n")
    stream.flush()


def format_result(result: RetrainResult) -> str:
    lines = [f"{result.product} v{result.version} written to {result.path} ({result.seconds / 60:.1f} min)"
             + ("; now the current model" if result.current else "; the current model is unchanged")]
    holdout = result.counts["holdout"]
    lines.append(f"held-out corrected labels: {holdout['defect']} defect and {holdout['normal']} normal images")
    lines.append(f"{'':<24}{'before':>10}{'after':>10}")
    for key in REPORTED_METRICS:
        lines.append(f"{key:<24}{_number(result.before.get(key)):>10}{_number(result.after.get(key)):>10}")
    lines.append(f"roll back with: dsarad retrain --product {result.product} --rollback "
                 f"{result.previous['version'] if result.previous['version'] is not None else 'VERSION'}")
    return "\n".join(lines)


def _number(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
