"""The DSARAD losses: reconstruction, distillation, focal segmentation."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
DISTILLATION_MSE_WEIGHT = 0.05
FOCAL_GAMMA = 2.0


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 + SSIM loss (1 - SSIM), window 11."""
    ssim = kornia.losses.ssim_loss(reconstruction, target, window_size=SSIM_WINDOW, reduction="mean")
    # kornia returns (1 - SSIM) / 2.
    return F.mse_loss(reconstruction, target) + 2 * ssim


def distillation_loss(student_features: list[torch.Tensor], teacher_features: list[torch.Tensor]) -> torch.Tensor:
    """Per level ``1 - cosine(flattened)`` + 0.05·MSE, summed over the levels."""
    total = student_features[0].new_zeros(())
    for student, teacher in zip(student_features, teacher_features):
        cosine = F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)
        total = total + (1 - cosine).mean() + DISTILLATION_MSE_WEIGHT * F.mse_loss(student, teacher)
    return total


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = FOCAL_GAMMA,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss on the softmax output; ``mask`` is (B, 1, H, W) in {0, 1}.

    With ``weight`` (B, 1, H, W), the weighted mean: pixels of weight 0 (what
    a person left unlabelled) do not count at all.
    """
    log_probabilities = F.log_softmax(logits.float(), dim=1)
    log_p = log_probabilities.gather(1, mask.long()).squeeze(1)
    per_pixel = -((1 - log_p.exp()) ** gamma) * log_p
    if weight is None:
        return per_pixel.mean()
    weight = weight.squeeze(1)
    return (per_pixel * weight).sum() / weight.sum().clamp(min=1.0)


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Soft Dice loss of the anomaly probability, per sample with a defect, averaged over those samples.

    Unlike a per-pixel loss, each defect counts as a whole however few pixels
    it has. ``weight`` 0 leaves a pixel out; samples without a defect pixel
    add nothing (zero, with a gradient, when there is none).
    """
    probability = F.softmax(logits.float(), dim=1)[:, 1:2]
    if weight is not None:
        probability, mask = probability * (weight > 0), mask * (weight > 0)
    overlap = (probability * mask).flatten(1).sum(1)
    sizes = probability.flatten(1).sum(1) + mask.flatten(1).sum(1)
    with_defect = mask.flatten(1).sum(1) > 0
    if not with_defect.any():
        return logits.sum() * 0.0
    return (1 - (2 * overlap + 1) / (sizes + 1))[with_defect].mean()


def kind_loss(kind_logits: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the defect kind over the pixels whose kind is known (``kinds`` >= 0, (B, 1, H, W)),
    averaged per sample, then over the samples that name a kind: a blowhole of a few pixels
    teaches its kind as much as an uneven zone over half the image, which a mean over all pixels
    would let outvote it.

    Zero (with a gradient) where no pixel of the batch names a kind.
    """
    target = kinds[:, 0].long()
    known = target >= 0
    if not known.any():
        return kind_logits.sum() * 0.0
    per_pixel = F.cross_entropy(kind_logits.float(), target.clamp(min=0), reduction="none") * known
    pixels = known.flatten(1).sum(1)
    named = pixels > 0
    return (per_pixel.flatten(1).sum(1)[named] / pixels[named]).mean()
