"""Where the pasted-in anomalies come from.

A folder the user gives (the DTD textures, say) or, with nothing given and no
network, built-in sources: procedural textures made on the device (coloured
fractal noise, stripes, blobs) and the product's own normal images, which
the augmentations in ``synthesis`` turn into something foreign.
"""

from __future__ import annotations

import math

import torch

from .synthesis import perlin_noise, product_chroma, random_crops, random_uniform

CHROMA_SAMPLE = 64  # normal images the product's colour is measured on

BUILTIN_SOURCE_NAMES = ("fractal_noise", "stripes", "blobs", "own_normals")


def fractal_noise(batch: int, size: int, generator: torch.Generator, device) -> torch.Tensor:
    """Coloured fractal (multi-octave Perlin) noise, (B, 3, S, S) in [0, 1]."""
    total = torch.zeros(batch, size, size, device=device)
    amplitude = 1.0
    base = torch.randint(1, 5, (batch,), generator=generator, device=device)
    for octave in range(4):
        scale = base * 2**octave
        total = total + amplitude * perlin_noise(batch, size, size, scale, scale, generator, device)
        amplitude /= 2
    total = (total - total.amin(dim=(1, 2), keepdim=True)) / (
        total.amax(dim=(1, 2), keepdim=True) - total.amin(dim=(1, 2), keepdim=True) + 1e-6
    )
    low = torch.rand(batch, 3, 1, 1, generator=generator, device=device)
    high = torch.rand(batch, 3, 1, 1, generator=generator, device=device)
    return low + (high - low) * total.unsqueeze(1)


def stripes(batch: int, size: int, generator: torch.Generator, device) -> torch.Tensor:
    """Sinusoidal stripes at random angle, frequency and colours."""
    coords = torch.linspace(0, 1, size, device=device)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    angle = random_uniform((batch, 1, 1), 0, math.pi, generator, device)
    frequency = random_uniform((batch, 1, 1), 3, 40, generator, device)
    wave = 0.5 + 0.5 * torch.sin(2 * math.pi * frequency * (x * torch.cos(angle) + y * torch.sin(angle)))
    low = torch.rand(batch, 3, 1, 1, generator=generator, device=device)
    high = torch.rand(batch, 3, 1, 1, generator=generator, device=device)
    return low + (high - low) * wave.unsqueeze(1)


def blobs(batch: int, size: int, generator: torch.Generator, device) -> torch.Tensor:
    """Soft dark and bright spots, like pits, stains and inclusions."""
    count = 12
    coords = torch.linspace(0, 1, size, device=device)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    centres = torch.rand(batch, count, 2, 1, 1, generator=generator, device=device)
    radii = random_uniform((batch, count, 1, 1), 0.02, 0.15, generator, device)
    signs = torch.where(torch.rand(batch, count, 1, 1, generator=generator, device=device) < 0.5, -1.0, 1.0)
    distance = (y - centres[:, :, 0]) ** 2 + (x - centres[:, :, 1]) ** 2
    field = (signs * torch.exp(-distance / (2 * radii**2))).sum(dim=1).clamp(-1, 1)
    base = torch.rand(batch, 3, 1, 1, generator=generator, device=device)
    return (base + 0.5 * field.unsqueeze(1)).clamp(0, 1)


class AnomalySources:
    """Draws batches of anomaly-source images at the training size.

    ``folder_images`` is a (N, 3, S, S) uint8 tensor of decoded source images
    (empty when the user gave no folder); ``normal_images`` is the product's
    own training set, used as a source only when no folder is given.
    """

    def __init__(self, size: int, folder_images: torch.Tensor | None, normal_images: torch.Tensor):
        self.size = size
        self.folder_images = folder_images if folder_images is not None and len(folder_images) else None
        self.normal_images = normal_images
        # Synthesis matches the sources' colour to this (grey for a grey product).
        self.chroma = product_chroma(normal_images[:CHROMA_SAMPLE])

    @property
    def description(self) -> dict:
        if self.folder_images is not None:
            return {"kind": "folder", "images": int(len(self.folder_images))}
        return {"kind": "builtin", "sources": list(BUILTIN_SOURCE_NAMES)}

    def sample(self, batch: int, generator: torch.Generator, device, size: int | None = None) -> torch.Tensor:
        """``batch`` source images (B, 3, size, size) in [0, 1]; ``size`` defaults to the training size.

        Folder and product images larger than that give a random window.
        """
        size = size or self.size
        if self.folder_images is not None:
            pool = self.folder_images
            index = torch.randint(0, len(pool), (batch,), generator=generator, device=pool.device)
            return random_crops(pool[index].to(device), size, generator).float() / 255.0
        kinds = torch.randint(0, len(BUILTIN_SOURCE_NAMES), (batch,), generator=generator, device=device)
        index = torch.randint(0, len(self.normal_images), (batch,), generator=generator, device=self.normal_images.device)
        candidates = [
            fractal_noise(batch, size, generator, device),
            stripes(batch, size, generator, device),
            blobs(batch, size, generator, device),
            # Another place of the product, flipped both ways, so its texture is
            # plausible but out of place.
            random_crops(self.normal_images[index].to(device), size, generator).float().flip(-1, -2) / 255.0,
        ]
        result = candidates[0]
        for kind, candidate in enumerate(candidates[1:], start=1):
            result = torch.where((kinds == kind).view(-1, 1, 1, 1), candidate, result)
        return result
