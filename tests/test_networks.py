from dataclasses import replace

import pytest
import torch

from labelme_dsarad.model.networks import (
    DSARAD,
    PRESETS,
    ReconstructionNetwork,
    SegmentationNetwork,
    SpatialAttention,
    anomaly_probability,
    image_score,
    parameter_count,
)

# From the architecture issue: a drifting architecture fails here by name.
EXPECTED_COUNTS = {
    "paper": (69_442_947, 38_016_768, 28_374_146),
    "compact": (4_347_747, 2_380_224, 1_778_210),
}


@pytest.mark.parametrize("preset", sorted(EXPECTED_COUNTS))
def test_parameter_counts_match_the_architecture(preset):
    architecture = PRESETS[preset]
    reconstruction = ReconstructionNetwork(architecture.reconstruction_width)
    segmentation = SegmentationNetwork(architecture.segmentation_width)
    assert (
        parameter_count(reconstruction),
        parameter_count(reconstruction.encoder),
        parameter_count(segmentation),
    ) == EXPECTED_COUNTS[preset]


def test_attention_starts_as_identity():
    torch.manual_seed(0)
    block = SpatialAttention(8, 4).eval()
    x = torch.randn(2, 8, 16, 16)
    assert torch.equal(block(x), x)


def test_fused_attention_equals_explicit_matrix():
    torch.manual_seed(0)
    block = SpatialAttention(8, 4).eval()
    torch.nn.init.normal_(block.out.weight)  # leave the identity start, or the test is vacuous
    x = torch.randn(2, 8, 16, 16)
    fused = block(x)
    block.explicit_attention = True
    explicit = block(x)
    assert not torch.equal(fused, x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


def test_encoder_returns_four_distillation_levels():
    network = ReconstructionNetwork(4)
    reconstruction, features = network(torch.rand(1, 3, 64, 64))
    assert reconstruction.shape == (1, 3, 64, 64)
    assert [tuple(f.shape[1:]) for f in features] == [(4, 64, 64), (8, 32, 32), (16, 16, 16), (32, 8, 8)]


def test_dsarad_outputs_probability_map_and_pooled_score():
    network = DSARAD(PRESETS["tiny"]).eval()
    with torch.no_grad():
        raw_map, score = network(torch.rand(2, 3, 64, 64))
    assert raw_map.shape == (2, 64, 64) and score.shape == (2,)
    assert float(raw_map.min()) >= 0.0 and float(raw_map.max()) <= 1.0
    torch.testing.assert_close(score, image_score(raw_map, PRESETS["tiny"].score_window))


def test_flip_average_is_the_mean_of_the_unets_logits_over_the_mirror_images():
    torch.manual_seed(0)
    network = DSARAD(replace(PRESETS["tiny"], flip_average=True)).eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        raw_map, _ = network(image)
        pair = torch.cat([network.student(image)[0], image], dim=1)
        expected = sum(network.segmentation(pair.flip(dims)).flip(dims) for dims in ([], [-1], [-2], [-1, -2])) / 4
        once = network.segmentation(pair)
    torch.testing.assert_close(raw_map, anomaly_probability(expected), atol=1e-5, rtol=0)
    # The U-Net of random weights is no mirror-symmetric function: the average differs from one pass.
    assert float((anomaly_probability(once) - raw_map).abs().max()) > 1e-4


@pytest.mark.parametrize("window", [21, 5])
def test_image_score_is_max_of_the_windows_mean(window):
    raw_map = torch.zeros(1, 64, 64)
    raw_map[0, 10, 10] = 1.0  # a single hot pixel is averaged over the window
    assert float(image_score(raw_map, window)) == pytest.approx(1 / window**2, rel=1e-5)
    raw_map[0, 20 : 20 + window, 20 : 20 + window] = 0.8
    assert float(image_score(raw_map, window)) == pytest.approx(0.8, rel=1e-5)
