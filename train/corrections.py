"""Corrected labels as training data: the split, the examples, and the batches retraining learns from.

The reviewed images are split per class (normal / defect), deterministically:
a *holdout* (reported on, never trained or tuned on), a *calibration* part
and the rest for training. Images with pending suggestions (ignore regions)
always train.

A retraining batch (``CorrectionBatches``) uses the real defects two ways
beside the synthetic anomalies of the first training: a share of the
synthetic samples gets a real defect region instead of a Perlin-shaped
texture (the training defect image cut out with its rasterised shapes,
randomly flipped, pasted into a normal image at the same place), and a share
of every batch is real defect images with their masks (pending regions weigh
nothing in the loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from labelme_dsarad.model.inference import resize_for_model

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


class CorrectionBatches:
    """Retraining batches: synthetic anomalies, real defects pasted into normals, real defect images."""

    def __init__(self, normals: Examples, defects: Examples, batch_size: int, real_share: float,
                 paste_probability: float, generator: torch.Generator, device: torch.device):
        if not len(normals):
            raise ValueError("retraining needs at least one reviewed normal image (flag 'ok', no shapes) to train on")
        self.normals = normals.images.to(device)
        self.defects = defects.to(device)
        self.batch_size = batch_size
        self.real_share = real_share
        self.paste_probability = paste_probability
        self.generator = generator
        self.device = device
        self.sources = AnomalySources(self.normals.shape[-1], None, self.normals)

    def _draw(self, pool: torch.Tensor, count: int) -> torch.Tensor:
        return torch.randint(0, len(pool), (count,), generator=self.generator, device=self.device)

    def __call__(self) -> TrainingBatch:
        real_count = min(round(self.batch_size * self.real_share), self.batch_size - 1) if len(self.defects) else 0
        synthetic_count = self.batch_size - real_count
        normal = self.normals[self._draw(self.normals, synthetic_count)].float() / 255.0
        synthetic = synthesise(normal, self.sources.sample(synthetic_count, self.generator, self.device),
                               self.generator, self.sources.chroma)
        augmented, target = synthetic.augmented, synthetic.mask
        kinds = torch.full_like(target, -1, dtype=torch.long)
        pasted = torch.zeros_like(target, dtype=torch.bool)
        if len(self.defects) and self.paste_probability > 0:
            augmented, target, kinds, pasted = self.paste_real(synthetic.clean, augmented, target, kinds)
        inputs, masks, weights, kind_maps = [augmented], [target], [self.weigh(target, pasted)], [kinds]
        if real_count:
            index = self._draw(self.defects.images, real_count)
            real, (real_mask, real_ignore, real_kinds) = random_flips(
                self.defects.images[index].float() / 255.0,
                [self.defects.masks[index], self.defects.ignore[index], self.defects.kinds[index]], self.generator,
            )
            inputs.append(real)
            masks.append(real_mask)
            weights.append(self.weigh(real_mask, real_mask > 0) * (1.0 - real_ignore))
            kind_maps.append(real_kinds)
        return TrainingBatch(inputs=torch.cat(inputs), masks=torch.cat(masks), clean=synthetic.clean,
                             weights=torch.cat(weights), kinds=torch.cat(kind_maps))

    @staticmethod
    def weigh(masks: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Per-pixel loss weights: a real defect's pixels count ``REAL_DEFECT_WEIGHT`` times, so a
        defect of a few pixels is not drowned by the image around it."""
        return torch.where(real & (masks > 0), REAL_DEFECT_WEIGHT, 1.0)

    def paste_real(self, clean: torch.Tensor, augmented: torch.Tensor, target: torch.Tensor,
                   kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replace some synthetic anomalies by a real defect region, cut out with its mask (and kinds);
        also say which samples got one ((B, 1, H, W) bool)."""
        count = clean.shape[0]
        chosen = (torch.rand(count, generator=self.generator, device=self.device)
                  < self.paste_probability).view(-1, 1, 1, 1)
        index = self._draw(self.defects.images, count)
        source, (mask, source_kinds) = random_flips(self.defects.images[index].float() / 255.0,
                                                    [self.defects.masks[index], self.defects.kinds[index]],
                                                    self.generator)
        pasted = clean * (1 - mask) + source * mask
        return (torch.where(chosen, pasted, augmented), torch.where(chosen, mask, target),
                torch.where(chosen, source_kinds, kinds), chosen.expand_as(target))
