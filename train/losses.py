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


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Focal loss on the softmax output; ``mask`` is (B, 1, H, W) in {0, 1}."""
    log_probabilities = F.log_softmax(logits.float(), dim=1)
    target = mask.squeeze(1).long()
    log_p = log_probabilities.gather(1, target.unsqueeze(1)).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()
