"""Corrected labels as training data: the split, the examples, and the batches retraining learns from.

The reviewed images are split per class (normal / defect), deterministically:
a *holdout* (reported on, never trained or tuned on), a *calibration* part
and the rest for training. Images with pending suggestions (ignore regions)
always train.

A retraining batch (``CorrectionBatches``) is crops: around the real
defects, of synthetic anomalies in reviewed normals, and of the normals
themselves (pending regions weigh nothing in the loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from labelme_dsarad.model.inference import resize_for_model
from labelme_dsarad.model.networks import SIDE_MULTIPLE

from .engine import TrainingBatch
from .labels import LabelledImage
from .sources import AnomalySources
from .synthesis import synthesise

# A defect pixel at the training size: at least this share of it covered at
# full size. Lower than a half so that hairline cracks survive the shrink.
MASK_COVERAGE = 0.25
# How much more a pixel of a real defect counts in the loss than any other.
REAL_DEFECT_WEIGHT = 4.0


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
    """Images (N, 3, S, S) uint8 with their defect and ignore masks (N, 1, S, S) float and the kind
    of each defect pixel (N, 1, S, S) long, -1 where no kind is known."""

    images: torch.Tensor
    masks: torch.Tensor
    ignore: torch.Tensor
    kinds: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device) -> Examples:
        return Examples(self.images.to(device), self.masks.to(device), self.ignore.to(device), self.kinds.to(device))


def defect_kinds(images: list[LabelledImage], generic: str) -> tuple[str, ...]:
    """The kinds people named in their shapes (their labels), byte-sorted; the model's generic
    label is no kind."""
    names = {str(shape.get("label") or "") for image in images for shape in image.defects}
    return tuple(sorted(names - {"", generic}, key=str.encode))


def shrink_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A full-size bool mask at the model's size: covered at least MASK_COVERAGE."""
    coverage = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return coverage >= MASK_COVERAGE


def load_examples(images: list[LabelledImage], size: int, kinds: tuple[str, ...] = ()) -> Examples:
    """The images at the model's size, their masks, and the index in ``kinds`` of each defect pixel's kind."""
    pixels, masks, ignores, kind_maps = [], [], [], []
    for item in images:
        image = item.read_image()
        defect, ignore = item.masks(*image.shape[:2])
        pixels.append(resize_for_model(image, size))
        masks.append(shrink_mask(defect, size))
        ignores.append(shrink_mask(ignore, size) & ~masks[-1])
        named = np.full((size, size), -1, np.int64)
        for index, kind in enumerate(kinds):
            named[shrink_mask(item.kinds(*image.shape[:2]) == kind, size) & masks[-1]] = index
        kind_maps.append(named)
    if not images:
        empty = torch.zeros(0, 1, size, size)
        return Examples(torch.zeros(0, 3, size, size, dtype=torch.uint8), empty, empty,
                        torch.zeros(0, 1, size, size, dtype=torch.long))
    return Examples(
        torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(masks)).float().unsqueeze(1),
        torch.from_numpy(np.stack(ignores)).float().unsqueeze(1),
        torch.from_numpy(np.stack(kind_maps)).unsqueeze(1),
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
def reconstruct(student: torch.nn.Module, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """The frozen student's reconstructions (float, [0, 1]) of uint8 or float images, (N, 3, S, S)."""
    outputs = [student(chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk)[0]
               for chunk in images.split(batch)]
    return torch.cat(outputs) if outputs else torch.zeros(images.shape, dtype=torch.float32, device=images.device)


def crop_corners(masks: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 2) top-left corners of ``crop``-sided windows: around a random defect pixel of each mask
    (anywhere within a quarter of the window of it), or anywhere where a mask has none."""
    count, size = masks.shape[0], masks.shape[-1]
    device = masks.device
    # A random defect pixel per mask: the highest of random keys over its defect pixels.
    keys = torch.rand(masks[:, 0].shape, generator=generator, device=device) * (masks[:, 0] > 0)
    flat = keys.flatten(1).argmax(dim=1)
    centres = torch.stack([flat // size, flat % size], dim=1)
    anywhere = torch.randint(crop // 2, size - crop // 2 + 1, (count, 2), generator=generator, device=device)
    has_defect = (masks.flatten(1) > 0).any(dim=1, keepdim=True)
    jitter = torch.randint(-(crop // 4), crop // 4 + 1, (count, 2), generator=generator, device=device)
    centres = torch.where(has_defect, centres + jitter, anywhere)
    return (centres - crop // 2).clamp(0, size - crop)


def take_crops(tensors: list[torch.Tensor], corners: torch.Tensor, crop: int) -> list[torch.Tensor]:
    """The same windows of every tensor (N, C, S, S) -> (N, C, crop, crop)."""
    size = tensors[0].shape[-1]
    offsets = torch.arange(crop, device=corners.device)
    rows = (corners[:, 0:1] + offsets).view(-1, 1, crop, 1).expand(-1, 1, crop, crop)
    columns = (corners[:, 1:2] + offsets).view(-1, 1, 1, crop).expand(-1, 1, crop, crop)
    index = rows * size + columns
    return [tensor.flatten(2).gather(2, index.expand(-1, tensor.shape[1], -1, -1).flatten(2))
            .view(tensor.shape[0], tensor.shape[1], crop, crop) for tensor in tensors]


class CorrectionBatches:
    """Retraining batches for the U-Net, in crops of half the model's side.

    Crops put the real defects, a tiny share of their images' pixels, in a
    large share of what the U-Net sees, and four of them cost what one whole
    image does. A batch holds crops around the labelled defects of real
    defect images (``real_share``), crops of synthetic anomalies pasted into
    reviewed normals (``synthetic_share``: the anomalies nobody labelled yet
    stay found), and crops of the normals as they are. The student is frozen,
    so the reconstructions of the real images are made once, here.
    """

    def __init__(self, student: torch.nn.Module, normals: Examples, defects: Examples, batch_size: int,
                 real_share: float, synthetic_share: float, generator: torch.Generator, device: torch.device):
        if not len(normals):
            raise ValueError("retraining needs at least one reviewed normal image (flag 'ok', no shapes) to train on")
        self.student = student
        self.normals = normals.images.to(device)
        self.normal_reconstructions = reconstruct(student, self.normals)
        self.defects = defects.to(device)
        self.defect_reconstructions = reconstruct(student, self.defects.images)
        # Half the side, and a side the networks take (a multiple of 32).
        self.crop = max(SIDE_MULTIPLE, self.normals.shape[-1] // 2 // SIDE_MULTIPLE * SIDE_MULTIPLE)
        self.real_count = round(batch_size * real_share) if len(defects) else 0
        self.synthetic_count = max(round(batch_size * synthetic_share), 1)
        self.normal_count = max(batch_size - self.real_count - self.synthetic_count, 0)
        self.generator = generator
        self.device = device
        self.sources = AnomalySources(self.normals.shape[-1], None, self.normals)

    def _draw(self, pool: torch.Tensor, count: int) -> torch.Tensor:
        return torch.randint(0, len(pool), (count,), generator=self.generator, device=self.device)

    def __call__(self) -> TrainingBatch:
        parts = [self.synthetic(), self.normal()] + ([self.real()] if self.real_count else [])
        inputs, reconstructions, masks, weights, kinds = (torch.cat(column) for column in zip(*parts))
        inputs, (reconstructions, masks, weights, kinds) = random_flips(
            inputs, [reconstructions, masks, weights, kinds], self.generator)
        return TrainingBatch(inputs=inputs, masks=masks, clean=inputs[:0], weights=weights, kinds=kinds,
                             reconstructions=reconstructions, dice=True)

    def synthetic(self) -> tuple[torch.Tensor, ...]:
        normal = self.normals[self._draw(self.normals, self.synthetic_count)].float() / 255.0
        drawn = self.sources.sample(self.synthetic_count, self.generator, self.device)
        made = synthesise(normal, drawn, self.generator, self.sources.chroma, anomaly_probability=1.0)
        reconstructions = reconstruct(self.student, made.augmented)
        corners = crop_corners(made.mask, self.crop, self.generator)
        inputs, reconstructions, masks = take_crops([made.augmented, reconstructions, made.mask], corners, self.crop)
        return inputs, reconstructions, masks, torch.ones_like(masks), torch.full_like(masks, -1, dtype=torch.long)

    def normal(self) -> tuple[torch.Tensor, ...]:
        index = self._draw(self.normals, self.normal_count)
        masks = torch.zeros(self.normal_count, 1, *self.normals.shape[-2:], device=self.device)
        corners = crop_corners(masks, self.crop, self.generator)
        inputs, reconstructions, masks = take_crops(
            [self.normals[index].float() / 255.0, self.normal_reconstructions[index], masks], corners, self.crop)
        return inputs, reconstructions, masks, torch.ones_like(masks), torch.full_like(masks, -1, dtype=torch.long)

    def real(self) -> tuple[torch.Tensor, ...]:
        index = self._draw(self.defects.images, self.real_count)
        masks = self.defects.masks[index]
        corners = crop_corners(masks, self.crop, self.generator)
        inputs, reconstructions, masks, ignore, kinds = take_crops(
            [self.defects.images[index].float() / 255.0, self.defect_reconstructions[index], masks,
             self.defects.ignore[index], self.defects.kinds[index].float()], corners, self.crop)
        # Pending suggestions were neither accepted nor rejected: their pixels teach nothing.
        weights = torch.where(masks > 0, REAL_DEFECT_WEIGHT, 1.0) * (1.0 - ignore)
        return inputs, reconstructions, masks, weights, kinds.long()
