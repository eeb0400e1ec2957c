import math

import kornia
import pytest
import torch

from labelme_dsarad.train.defect_shapes import defect_shape_masks
from labelme_dsarad.train.sources import AnomalySources, blobs, fractal_noise, stripes
from labelme_dsarad.train.synthesis import (
    SOFT_EDGE_SIGMA,
    augment_sources,
    blend,
    perlin_masks,
    perlin_noise,
    product_chroma,
    synthesise,
)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_masks_are_binary_and_some_are_empty():
    batch = synthesise(torch.rand(16, 3, 64, 64), torch.rand(16, 3, 64, 64), generator(), 0.0)
    assert set(batch.mask.unique().tolist()) <= {0.0, 1.0}
    coverage = batch.mask.flatten(1).mean(dim=1)
    assert (coverage == 0).any(), "half of the samples should stay clean"
    assert (coverage > 0).any()


def test_clean_samples_are_untouched_and_anomalies_stay_within_their_soft_edge():
    batch = synthesise(torch.rand(16, 3, 64, 64), torch.rand(16, 3, 64, 64), generator(1), 0.0)
    reach = 2 * math.ceil(3 * SOFT_EDGE_SIGMA) + 1  # how far a brightness change fades out
    near = torch.nn.functional.max_pool2d(batch.mask, reach, stride=1, padding=reach // 2)
    outside = near.expand_as(batch.clean) == 0
    assert torch.equal(batch.augmented[outside], batch.clean[outside])
    inside = batch.mask.expand_as(batch.clean) == 1
    assert not torch.equal(batch.augmented[inside], batch.clean[inside])


@pytest.mark.parametrize("beta", [0.0, 0.4, 0.8])
def test_blend_bounds(beta):
    normal, source = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    mask = (torch.rand(4, 1, 32, 32) > 0.5).float()
    mixed = blend(normal, source, mask, torch.full((4,), beta))
    expected_inside = (1 - beta) * source + beta * normal
    inside = mask.expand_as(normal) == 1
    torch.testing.assert_close(mixed[inside], expected_inside[inside])
    low, high = torch.minimum(normal, source), torch.maximum(normal, source)
    assert torch.all(mixed >= low - 1e-6) and torch.all(mixed <= high + 1e-6)


def test_seeded_runs_repeat_and_seeds_differ():
    normal, sources = torch.rand(8, 3, 64, 64), torch.rand(8, 3, 64, 64)
    first, second = synthesise(normal, sources, generator(5), 0.0), synthesise(normal, sources, generator(5), 0.0)
    other = synthesise(normal, sources, generator(6), 0.0)
    assert torch.equal(first.augmented, second.augmented) and torch.equal(first.mask, second.mask)
    assert not torch.equal(first.mask, other.mask)


def test_perlin_noise_is_bounded_and_scale_dependent():
    g = generator()
    coarse = perlin_noise(2, 64, 64, torch.tensor([1, 1]), torch.tensor([1, 1]), g, "cpu")
    fine = perlin_noise(2, 64, 64, torch.tensor([32, 32]), torch.tensor([32, 32]), g, "cpu")
    assert coarse.abs().max() <= 1.0 + 1e-5 and fine.abs().max() <= 1.0 + 1e-5
    roughness = lambda n: (n[:, 1:] - n[:, :-1]).abs().mean()  # noqa: E731
    assert roughness(fine) > 4 * roughness(coarse)


def test_masks_cover_a_plausible_fraction():
    masks = perlin_masks(64, 64, 64, generator(2), "cpu")
    assert 0.01 < float(masks.mean()) < 0.5


def test_augmented_sources_stay_in_range_and_change():
    images = torch.rand(16, 3, 32, 32)
    augmented = augment_sources(images, generator(3))
    assert augmented.min() >= 0 and augmented.max() <= 1
    assert not torch.allclose(augmented, images)


def test_builtin_sources():
    g = generator(4)
    for make in (fractal_noise, stripes, blobs):
        images = make(4, 32, g, "cpu")
        assert images.shape == (4, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    normals = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    sources = AnomalySources(32, None, normals)
    assert sources.description["kind"] == "builtin"
    assert sources.sample(6, g, "cpu").shape == (6, 3, 32, 32)
    folder = AnomalySources(32, torch.zeros(3, 3, 32, 32, dtype=torch.uint8), normals)
    assert folder.description == {"kind": "folder", "images": 3}
    assert torch.equal(folder.sample(2, g, "cpu"), torch.zeros(2, 3, 32, 32))


def striped_product(count: int, size: int = 64, tint=(1.0, 1.0, 1.0), seed: int = 0) -> torch.Tensor:
    """Normal images of a product: vertical streaks and noise, grey unless tinted."""
    g = generator(seed)
    streaks = 0.4 + 0.2 * torch.sin(torch.arange(size) / 2.0).view(1, 1, 1, size)
    grey = (streaks + 0.05 * torch.randn(count, 1, size, size, generator=g)).clamp(0, 1)
    return (grey * torch.tensor(tint).view(1, 3, 1, 1)).clamp(0, 1)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels.flatten().numpy(), scores.flatten().numpy()))


def local_deviation(images: torch.Tensor) -> torch.Tensor:
    grey = images.mean(dim=1, keepdim=True)
    mean = kornia.filters.box_blur(grey, (5, 5))
    return (kornia.filters.box_blur(grey**2, (5, 5)) - mean**2).clamp(min=0).sqrt()


def test_on_a_grey_product_synthetic_anomalies_have_no_colour():
    normal = striped_product(32)
    colourful = torch.rand(32, 3, 64, 64, generator=generator(1))
    batch = synthesise(normal, colourful, generator(2), product_chroma(normal))
    assert batch.mask.sum() > 0
    spread = (batch.augmented - batch.augmented.mean(dim=1, keepdim=True)).abs()
    assert float(spread.max()) < 1e-6  # "is there colour here?" finds nothing (float rounding aside)


def test_on_a_tinted_product_anomalies_are_no_more_colourful_than_it():
    normal = striped_product(32, tint=(1.0, 0.8, 0.6))
    batch = synthesise(normal, torch.rand(32, 3, 64, 64, generator=generator(1)), generator(2), product_chroma(normal))
    colour = (batch.augmented - batch.augmented.mean(dim=1, keepdim=True)).abs().mean(dim=1)
    inside = batch.mask[:, 0] > 0.5
    assert float(colour[inside].mean()) <= 1.1 * float(colour[~inside].mean())


def test_a_trivial_local_contrast_detector_does_not_find_the_anomalies():
    """Real defects differ in texture too, so this cannot be chance; it must not be easy either.

    The first DSARAD synthesis (coloured sources, no soft edges) scores 0.78 on Magnetic Tile normals.
    """
    normal = striped_product(32)
    batch = synthesise(normal, torch.rand(32, 3, 64, 64, generator=generator(1)), generator(2), product_chroma(normal))
    assert auroc(local_deviation(batch.augmented), batch.mask) < 0.75


def test_drawn_defect_shapes_are_binary_and_each_kind_appears():
    masks = defect_shape_masks(64, 48, 80, generator(3), "cpu")
    assert masks.shape == (64, 1, 48, 80) and set(masks.unique().tolist()) == {0.0, 1.0}
    coverage = masks.flatten(1).mean(dim=1)
    assert (coverage > 0).all() and float(coverage.min()) < 0.01 < 0.1 < float(coverage.max())
    assert torch.equal(masks, defect_shape_masks(64, 48, 80, generator(3), "cpu"))
