"""Synthetic anomalies, as DSARAD trains: masks, appearances, blending.

A synthetic anomaly is a mask (a Perlin blob, as in DRAEM, or a drawn
defect shape: ``defect_shapes``) filled with an appearance: a foreign
texture (an augmented anomaly source, partly transparent) or a change of
the product's own brightness with soft edges (pits, stains, uneven zones).

Synthetic anomalies must not be told apart from the product by a cue real
defects never show, or the segmentation network learns the cue instead of
the defect. So the sources' colour is matched to the product's
(``match_colour``: grey for a grey product), and the normal images are only
flipped, never rotated by odd angles that would make them unlike any normal
image.

Everything but the drawn shapes works on whole batches on the training
device; per-sample choices are drawn as tensors and applied with
``torch.where``, so no Python loop runs per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch

from .defect_shapes import defect_shape_masks

PERLIN_MAX_SCALE_EXPONENT = 5  # scales 2^0 .. 2^5 per axis
PERLIN_THRESHOLD = 0.5
MASK_ROTATION_DEGREES = 90.0
BLEND_BETA_MAX = 0.8
ANOMALY_PROBABILITY = 0.5
AUGMENTATIONS_PER_SOURCE = 3
SHAPE_SHARE = 0.5  # of the masks: drawn defect shapes instead of Perlin blobs
INTENSITY_SHARE = 0.5  # of the appearances: a change of brightness instead of a foreign texture
DARKER_GAIN = (0.3, 0.9)  # brightness factor inside a darker anomaly; a brighter one takes 1 / gain
BRIGHTER_SHARE = 0.4
SOFT_EDGE_SIGMA = 1.0  # pixels: intensity changes fade in over about this distance
GREY_CHROMA = 0.002  # a product whose channels differ less than this on average is grey (JPEG noise aside)


def _fade(t: torch.Tensor) -> torch.Tensor:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise(
    batch: int, height: int, width: int, scales_y: torch.Tensor, scales_x: torch.Tensor, generator: torch.Generator, device
) -> torch.Tensor:
    """2-D Perlin noise (B, H, W), each sample with its own lattice resolution.

    Gradients live on a lattice big enough for the largest scale; each sample
    reads only the top-left (scale+1)^2 corner of it.
    """
    max_scale = 2**PERLIN_MAX_SCALE_EXPONENT
    angles = 2 * math.pi * torch.rand(batch, max_scale + 1, max_scale + 1, generator=generator, device=device)
    gradients = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)  # B, S+1, S+1, 2
    ys = (torch.arange(height, device=device).float() + 0.5) / height
    xs = (torch.arange(width, device=device).float() + 0.5) / width
    grid_y = ys[None, :, None] * scales_y[:, None, None].float()  # B, H, 1
    grid_x = xs[None, None, :] * scales_x[:, None, None].float()  # B, 1, W
    cell_y, cell_x = grid_y.floor().long(), grid_x.floor().long()
    frac_y, frac_x = grid_y - cell_y, grid_x - cell_x
    cell_y, cell_x = cell_y.expand(batch, height, width), cell_x.expand(batch, height, width)
    frac_y, frac_x = frac_y.expand(batch, height, width), frac_x.expand(batch, height, width)
    batch_index = torch.arange(batch, device=device)[:, None, None]

    def corner(dy: int, dx: int) -> torch.Tensor:
        gradient = gradients[batch_index, cell_y + dy, cell_x + dx]  # B, H, W, 2
        return gradient[..., 0] * (frac_y - dy) + gradient[..., 1] * (frac_x - dx)

    fade_y, fade_x = _fade(frac_y), _fade(frac_x)
    top = torch.lerp(corner(0, 0), corner(0, 1), fade_x)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), fade_x)
    return math.sqrt(2) * torch.lerp(top, bottom, fade_y)


def random_uniform(shape, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def perlin_masks(batch: int, height: int, width: int, generator: torch.Generator, device) -> torch.Tensor:
    """Binary masks (B, 1, H, W): thresholded, randomly rotated Perlin noise."""
    exponents = torch.randint(0, PERLIN_MAX_SCALE_EXPONENT + 1, (2, batch), generator=generator, device=device)
    noise = perlin_noise(batch, height, width, 2 ** exponents[0], 2 ** exponents[1], generator, device)
    angles = random_uniform((batch,), -MASK_ROTATION_DEGREES, MASK_ROTATION_DEGREES, generator, device)
    noise = kornia.geometry.transform.rotate(noise.unsqueeze(1), angles, mode="bilinear", padding_mode="reflection")
    return (noise > PERLIN_THRESHOLD).float()


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def augment_sources(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply three of ten random operations to each source image (B, 3, H, W) in [0, 1]."""
    batch, device = images.shape[0], images.device
    operations = [
        lambda x: x.clamp(min=1e-6) ** _per_sample(random_uniform((batch,), 0.5, 2.0, generator, device)),
        lambda x: (
            x * _per_sample(random_uniform((batch,), 0.8, 1.2, generator, device))
            + _per_sample(random_uniform((batch,), -0.12, 0.12, generator, device))
        ),
        lambda x: kornia.enhance.sharpness(x, random_uniform((batch,), 0.5, 2.0, generator, device)),
        lambda x: kornia.enhance.adjust_saturation(
            kornia.enhance.adjust_hue(x, random_uniform((batch,), -math.pi / 4, math.pi / 4, generator, device)),
            random_uniform((batch,), 0.5, 1.5, generator, device),
        ),
        lambda x: kornia.enhance.solarize(x, random_uniform((batch,), 0.2, 0.8, generator, device)),
        lambda x: kornia.enhance.posterize(
            x, torch.randint(4, 9, (batch,), generator=generator, device=device).to(x.dtype)
        ),
        lambda x: 1.0 - x,
        lambda x: kornia.enhance.normalize_min_max(x),
        lambda x: kornia.enhance.equalize(x),
        lambda x: kornia.geometry.transform.rotate(
            x, random_uniform((batch,), -45.0, 45.0, generator, device), padding_mode="reflection"
        ),
    ]
    # Three distinct operations per sample: the first three of a random permutation.
    order = torch.rand(batch, len(operations), generator=generator, device=device).argsort(dim=1)
    chosen = torch.zeros(batch, len(operations), dtype=torch.bool, device=device)
    chosen.scatter_(1, order[:, :AUGMENTATIONS_PER_SOURCE], True)
    result = images
    for index, operation in enumerate(operations):
        selected = chosen[:, index]
        if selected.any():
            result = torch.where(_per_sample(selected), operation(result).clamp(0.0, 1.0), result)
    return result


def flip_inputs(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each normal image left-right and up-down at random, before any anomaly is pasted."""
    batch, device = images.shape[0], images.device
    for dim in (-1, -2):
        flip = _per_sample(torch.rand(batch, generator=generator, device=device) < 0.5)
        images = torch.where(flip, images.flip(dim), images)
    return images


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` window of each image (B, C, H, W); the images as they are at that size."""
    batch, _, height, width = images.shape
    if (height, width) == (size, size):
        return images
    tops = torch.randint(0, height - size + 1, (batch,), generator=generator, device=generator.device).tolist()
    lefts = torch.randint(0, width - size + 1, (batch,), generator=generator, device=generator.device).tolist()
    return torch.stack([image[:, top : top + size, left : left + size]
                        for image, top, left in zip(images, tops, lefts)])


def random_windows(images: list[torch.Tensor], size: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` window of each image (C, H, W each, of any size at least ``size``)."""
    fractions = torch.rand((len(images), 2), generator=generator, device=generator.device).tolist()
    windows = []
    for image, (down, across) in zip(images, fractions):
        top, left = int(down * (image.shape[-2] - size + 1)), int(across * (image.shape[-1] - size + 1))
        windows.append(image[:, top : top + size, left : left + size])
    return torch.stack(windows)


def product_chroma(images: torch.Tensor) -> float:
    """How coloured a product is: the mean distance of its pixels' channels from their grey (0..1)."""
    pixels = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
    return float((pixels - pixels.mean(dim=1, keepdim=True)).abs().mean())


def match_colour(sources: torch.Tensor, chroma: float) -> torch.Tensor:
    """Scale each source's colour (its distance from grey) down to the product's ``chroma``; never up.

    A product below ``GREY_CHROMA`` is grey, and so are its sources, exactly.
    """
    grey = sources.mean(dim=1, keepdim=True)
    if chroma < GREY_CHROMA:
        return grey.expand_as(sources).contiguous()
    colour = sources - grey
    current = colour.abs().mean(dim=(1, 2, 3), keepdim=True)
    scale = (chroma / current.clamp(min=1e-6)).clamp(max=1.0)
    return (grey + colour * scale).clamp(0.0, 1.0)


def change_brightness(clean: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The product itself, darker or brighter inside the masks, fading in at their edges."""
    batch, device = clean.shape[0], clean.device
    gain = random_uniform((batch,), *DARKER_GAIN, generator, device)
    gain = torch.where(torch.rand(batch, generator=generator, device=device) < BRIGHTER_SHARE, 1.0 / gain, gain)
    kernel = 2 * math.ceil(3 * SOFT_EDGE_SIGMA) + 1
    # Never fainter than 0.8 inside the mask: the label must stay true.
    weight = torch.maximum(kornia.filters.gaussian_blur2d(masks, (kernel, kernel), (SOFT_EDGE_SIGMA,) * 2), 0.8 * masks)
    return clean * (1 - weight) + (clean * _per_sample(gain)).clamp(0.0, 1.0) * weight


@dataclass
class SyntheticBatch:
    clean: torch.Tensor  # B, 3, H, W: the (possibly flipped) normal image
    augmented: torch.Tensor  # B, 3, H, W: with a synthetic anomaly pasted in
    mask: torch.Tensor  # B, 1, H, W: 1 where the anomaly is


def blend(normal: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``x·(1-m) + (1-β)·src·m + β·x·m``: the source shows through, partly transparent."""
    beta = _per_sample(beta)
    return normal * (1 - mask) + (1 - beta) * source * mask + beta * normal * mask


def synthesise(normal: torch.Tensor, sources: torch.Tensor, generator: torch.Generator,
               chroma: float, anomaly_probability: float = ANOMALY_PROBABILITY) -> SyntheticBatch:
    """A training batch from normal images and anomaly-source images, both (B, 3, H, W) in [0, 1].

    ``chroma`` is the product's (``product_chroma`` of its normal images);
    ``anomaly_probability`` the share of samples that get an anomaly.
    """
    batch, _, height, width = normal.shape
    device = normal.device
    clean = flip_inputs(normal, generator)
    drawn = _per_sample(torch.rand(batch, generator=generator, device=device) < SHAPE_SHARE)
    masks = torch.where(drawn, defect_shape_masks(batch, height, width, generator, device),
                        perlin_masks(batch, height, width, generator, device))
    has_anomaly = torch.rand(batch, generator=generator, device=device) < anomaly_probability
    masks = masks * _per_sample(has_anomaly.float())
    beta = random_uniform((batch,), 0.0, BLEND_BETA_MAX, generator, device)
    textured = blend(clean, match_colour(augment_sources(sources, generator), chroma), masks, beta)
    brightened = change_brightness(clean, masks, generator)
    intensity = _per_sample(torch.rand(batch, generator=generator, device=device) < INTENSITY_SHARE)
    return SyntheticBatch(clean=clean, augmented=torch.where(intensity, brightened, textured), mask=masks)
