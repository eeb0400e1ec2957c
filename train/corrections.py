"""Corrected labels as training data: the split, the examples, and the batches retraining learns from.

The reviewed images are split per class (normal / defect), deterministically:
a *holdout* (reported on, never trained or tuned on), a *calibration* part
and the rest for training. Images with pending suggestions (ignore regions)
always train.

A retraining batch (``CorrectionBatches``) is whole images: real defects,
reviewed normals with synthetic anomalies, and the normals themselves
(pending regions weigh nothing in the loss).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from labelme_dsarad.model.inference import resize_to
from labelme_dsarad.model.tiles import Tiling, scaled_shape

from .engine import TrainingBatch
from .labels import LabelledImage
from .sources import AnomalySources
from .synthesis import synthesise

# A defect pixel at the training size: at least this share of it covered at
# full size. Lower than a half so that hairline cracks survive the shrink.
MASK_COVERAGE = 0.25
# Plain cross-entropy beside the Dice term, not focal's gamma 2 of the first training, with every
# labelled pixel counting alike: closer outlines and more defects found (docs/experiments.md).
RETRAIN_FOCAL_GAMMA = 0.0
# Steps' worth of synthetic images made at once (``CorrectionBatches.synthetic``).
SYNTHETIC_POOL = 16
# Each synthetic image serves this many steps (half a pool apart, flipped afresh each time): making
# one is a noticeable part of a step, the student's reconstruction most of it.
SYNTHETIC_USES = 2


@dataclass
class Split:
    train: list[LabelledImage]
    calibration: list[LabelledImage]
    holdout: list[LabelledImage]

    def counts(self) -> dict:
        return {name: {"normal": sum(not i.is_defect for i in part), "defect": sum(i.is_defect for i in part)}
                for name, part in (("train", self.train), ("calibration", self.calibration), ("holdout", self.holdout))}


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


@dataclass
class Examples:
    """Images (N, 3, S, S) uint8 with their defect and ignore masks (N, 1, S, S) float, the kind
    of each defect pixel (N, 1, S, S) long, -1 where no kind is known, each image's own
    (height, width) (N, 2), where its suggestions are drawn, and whether it shows a defect (N,).
    For a model with a scale, each is a tile of a photo, as inference cuts it (``model.tiles``)."""

    images: torch.Tensor
    masks: torch.Tensor
    ignore: torch.Tensor
    kinds: torch.Tensor
    sizes: np.ndarray
    defective: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device) -> Examples:
        return Examples(self.images.to(device), self.masks.to(device), self.ignore.to(device), self.kinds.to(device),
                        self.sizes, self.defective)


def defect_kinds(images: list[LabelledImage], generic: str) -> tuple[str, ...]:
    """The kinds people named in their shapes (their labels), byte-sorted; the model's generic
    label is no kind."""
    names = {str(shape.get("label") or "") for image in images for shape in image.defects}
    return tuple(sorted(names - {"", generic}, key=str.encode))


def shrink_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A full-size bool mask at the model's size (a side, or (height, width)): covered at least
    MASK_COVERAGE."""
    height, width = (size, size) if isinstance(size, int) else size
    coverage = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return coverage >= MASK_COVERAGE


def load_examples(images: list[LabelledImage], size: int, kinds: tuple[str, ...] = (), scale: float = 0.0) -> Examples:
    """The images at the model's size (or, with ``scale``, their tiles), their masks, and the index in
    ``kinds`` of each defect pixel's kind."""
    pixels: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    ignores: list[np.ndarray] = []
    kind_maps: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    defective: list[bool] = []
    for item in images:
        image = item.read_image()
        shape = scaled_shape(image.shape[:2], scale) if scale else (size, size)
        defect, ignore = item.masks(*image.shape[:2])
        mask = shrink_mask(defect, shape)
        named = np.full(shape, -1, np.int64)
        for index, kind in enumerate(kinds):
            named[shrink_mask(item.kinds(*image.shape[:2]) == kind, shape) & mask] = index
        planes: tuple[np.ndarray, ...] = (resize_to(image, shape), mask, shrink_mask(ignore, shape) & ~mask, named)
        if scale:
            tiling = Tiling.of(shape, size)
            planes = tuple(tiling.cut(plane) for plane in planes)
            tile_side = round(size * scale)
            sizes += [(tile_side, tile_side)] * len(tiling)
            defective += [bool(tile.any()) for tile in planes[1]]
        else:
            planes = tuple(plane[None] for plane in planes)
            sizes.append(image.shape[:2])
            defective.append(item.is_defect)
        for column, plane in zip((pixels, masks, ignores, kind_maps), planes):
            column.extend(plane)
    if not images:
        empty = torch.zeros(0, 1, size, size)
        return Examples(torch.zeros(0, 3, size, size, dtype=torch.uint8), empty, empty,
                        torch.zeros(0, 1, size, size, dtype=torch.long), np.zeros((0, 2), np.int64), np.zeros(0, bool))
    return Examples(
        torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(masks)).float().unsqueeze(1),
        torch.from_numpy(np.stack(ignores)).float().unsqueeze(1),
        torch.from_numpy(np.stack(kind_maps)).unsqueeze(1),
        np.array(sizes, np.int64),
        np.array(defective, bool),
    )


def random_flips(images: torch.Tensor, masks: list[torch.Tensor],
                 generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Flip each sample left-right and/or up-down, its masks alike."""
    batch, device = images.shape[0], images.device
    results = [images, *masks]
    for dim in (-1, -2):
        flip = (torch.rand(batch, generator=generator, device=device) < 0.5).view(-1, 1, 1, 1)
        results = [torch.where(flip, tensor.flip(dim), tensor) for tensor in results]
    return results[0], results[1:]


@torch.no_grad()  # not inference_mode: the U-Net's backward pass saves these as its inputs
def reconstruct(student: torch.nn.Module, images: torch.Tensor,
                autocast: Callable[[], AbstractContextManager] = nullcontext, batch: int = 16) -> torch.Tensor:
    """The frozen student's reconstructions (float, [0, 1]) of uint8 or float images, (N, 3, S, S).

    Under ``autocast``, the training step's: the U-Net reads them at that precision anyway, and
    with the student in channels-last too (``retrain.Retrainer``) they are much faster on CPUs
    with bf16 units.
    """
    outputs = []
    for chunk in images.split(batch):
        chunk = chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk
        with autocast():
            outputs.append(student(chunk)[0].float())
    return torch.cat(outputs) if outputs else torch.zeros(images.shape, dtype=torch.float32, device=images.device)


class CorrectionBatches:
    """Retraining batches for the U-Net: whole images at the model's size.

    A batch holds real defect images (``real_share``), reviewed normals with
    synthetic anomalies pasted in (``synthetic_share``: the anomalies nobody
    labelled yet stay found) and reviewed normals as they are. Whole images,
    not crops: an uneven zone fills much of a crop, which then looks like a
    plain bright surface, and a U-Net taught on such crops fired on whole
    over-exposed normal images. The student is frozen,
    so the reconstructions of the real images are made once, here.
    """

    def __init__(self, student: torch.nn.Module, normals: Examples, defects: Examples, batch_size: int,
                 real_share: float, synthetic_share: float, generator: torch.Generator, device: torch.device,
                 autocast: Callable[[], AbstractContextManager] = nullcontext):
        if not len(normals):
            raise ValueError("retraining needs at least one reviewed normal image (flag 'ok', no shapes) to train on")
        self.student = student
        self.autocast = autocast
        self.normals = normals.images.to(device)
        self.normal_reconstructions = reconstruct(student, self.normals, autocast)
        self.defects = defects.to(device)
        self.defect_reconstructions = reconstruct(student, self.defects.images, autocast)
        self.synthetic_count = max(round(batch_size * synthetic_share), 1)
        # Never more than the batch holds: 7/8 of 4 rounds to 4, and the synthetic image comes first.
        self.real_count = min(round(batch_size * real_share), batch_size - self.synthetic_count) if len(defects) else 0
        self.normal_count = max(batch_size - self.real_count - self.synthetic_count, 0)
        self.generator = generator
        self.device = device
        self.sources = AnomalySources(self.normals.shape[-1], None, self.normals)
        self.synthetic_pool: list[torch.Tensor] = []  # images, reconstructions, masks
        self.synthetic_used = 0

    def _draw(self, pool: torch.Tensor, count: int) -> torch.Tensor:
        return torch.randint(0, len(pool), (count,), generator=self.generator, device=self.device)

    def __call__(self) -> TrainingBatch:
        parts = [self.synthetic(), self.normal()] + ([self.real()] if self.real_count else [])
        inputs, reconstructions, masks, weights, kinds = (torch.cat(column) for column in zip(*parts))
        inputs, (reconstructions, masks, weights, kinds) = random_flips(
            inputs, [reconstructions, masks, weights, kinds], self.generator)
        return TrainingBatch(inputs=inputs, masks=masks, clean=inputs[:0], weights=weights, kinds=kinds,
                             reconstructions=reconstructions, dice=True,
                             focal_gamma=RETRAIN_FOCAL_GAMMA)

    def synthetic(self) -> tuple[torch.Tensor, ...]:
        """``synthetic_count`` images with a synthetic anomaly, each used ``SYNTHETIC_USES`` times, from
        a pool made for ``SYNTHETIC_POOL`` steps at a time: the student reconstructs many images in one
        pass far faster per image than one at a time."""
        if not self.synthetic_pool or self.synthetic_used + self.synthetic_count > len(self.synthetic_pool[0]):
            count = max(self.synthetic_count * SYNTHETIC_POOL // SYNTHETIC_USES, 1)
            normal = self.normals[self._draw(self.normals, count)].float() / 255.0
            drawn = self.sources.sample(count, self.generator, self.device)
            made = synthesise(normal, drawn, self.generator, self.sources.chroma, anomaly_probability=1.0)
            made_pool = [made.augmented, reconstruct(self.student, made.augmented, self.autocast), made.mask]
            self.synthetic_pool = [torch.cat([part] * SYNTHETIC_USES) for part in made_pool]
            self.synthetic_used = 0
        images, reconstructions, masks = (part[self.synthetic_used : self.synthetic_used + self.synthetic_count]
                                          for part in self.synthetic_pool)
        self.synthetic_used += self.synthetic_count
        return (images, reconstructions, masks, torch.ones_like(masks), torch.full_like(masks, -1, dtype=torch.long))

    def normal(self) -> tuple[torch.Tensor, ...]:
        index = self._draw(self.normals, self.normal_count)
        masks = torch.zeros(self.normal_count, 1, *self.normals.shape[-2:], device=self.device)
        return (self.normals[index].float() / 255.0, self.normal_reconstructions[index], masks,
                torch.ones_like(masks), torch.full_like(masks, -1, dtype=torch.long))

    def real(self) -> tuple[torch.Tensor, ...]:
        index = self._draw(self.defects.images, self.real_count)
        masks = self.defects.masks[index]
        # Pending suggestions were neither accepted nor rejected: their pixels teach nothing.
        weights = 1.0 - self.defects.ignore[index]
        return (self.defects.images[index].float() / 255.0, self.defect_reconstructions[index], masks, weights,
                self.defects.kinds[index])
