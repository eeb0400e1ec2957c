import pytest
import torch

from labelme_dsarad.train.sources import AnomalySources, blobs, fractal_noise, stripes
from labelme_dsarad.train.synthesis import augment_sources, blend, perlin_masks, perlin_noise, synthesise


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_masks_are_binary_and_some_are_empty():
    batch = synthesise(torch.rand(16, 3, 64, 64), torch.rand(16, 3, 64, 64), generator())
    assert set(batch.mask.unique().tolist()) <= {0.0, 1.0}
    coverage = batch.mask.flatten(1).mean(dim=1)
    assert (coverage == 0).any(), "half of the samples should stay clean"
    assert (coverage > 0).any()


def test_clean_samples_are_untouched_and_anomalies_stay_inside_the_mask():
    batch = synthesise(torch.rand(16, 3, 64, 64), torch.rand(16, 3, 64, 64), generator(1))
    outside = batch.mask.expand_as(batch.clean) == 0
    assert torch.equal(batch.augmented[outside], batch.clean[outside])


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
    first, second = synthesise(normal, sources, generator(5)), synthesise(normal, sources, generator(5))
    other = synthesise(normal, sources, generator(6))
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
