"""The map correction: fitted on normal images, it brings the positions that score higher or
spread wider than the median one down to it (issue 12's bright border), leaves the rest alone,
and never changes which image scores higher at one position."""

from __future__ import annotations

import numpy as np
import torch

from labelme_dsarad.model.model_file import preset_architecture
from labelme_dsarad.model.networks import DSARAD, image_score
from labelme_dsarad.train.calibration import (
    MAP_CORRECTION_MIN_IMAGES,
    border_band,
    choose_map_correction,
    fit_map_correction,
    raw_outputs,
)

SIZE = 32


class BrightBorderNetwork(DSARAD):
    """Maps like the zero-padded networks give on normal images: the border higher and more
    spread out than the interior, plus what the image itself says."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        band = border_band(SIZE)
        signal = image.mean(dim=1) - 0.5
        raw = 0.2 + 0.1 * signal + band * (0.15 + 0.2 * signal)
        raw = self.map_correction(raw)
        return raw, image_score(raw, self.architecture.score_window)


def normals(count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, SIZE, SIZE), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def band_statistics(network: DSARAD, images: torch.Tensor) -> tuple[float, float]:
    with torch.inference_mode():
        maps = network(images.float() / 255.0)[0]
    band = border_band(SIZE)
    level, spread = maps.mean(dim=0), maps.std(dim=0)
    return float(level[band].mean() / level[~band].mean()), float(spread[band].mean() / spread[~band].mean())


def test_a_fitted_correction_evens_out_new_normal_maps():
    network = BrightBorderNetwork(preset_architecture("tiny", SIZE)).eval()
    level_before, spread_before = band_statistics(network, normals(64, seed=2))
    assert level_before > 1.5 and spread_before > 2.5
    recorded = fit_map_correction(network, normals(64, seed=1), torch.device("cpu"), seed=0)
    assert recorded["fitted"] and recorded["images"] == 64
    assert recorded["border_to_interior_level"] > 1.5
    level_after, spread_after = band_statistics(network, normals(64, seed=2))
    assert abs(level_after - 1.0) < 0.05 and abs(spread_after - 1.0) < 0.15
    # It only takes away: no spread is widened, and the quieter positions are left alone.
    correction = network.map_correction
    assert (correction.gain <= 1).all()
    untouched = (correction.gain == 1) & (correction.offset == 0)
    assert untouched.float().mean() > 0.2


def test_the_correction_keeps_the_order_of_scores_at_each_position():
    network = BrightBorderNetwork(preset_architecture("tiny", SIZE)).eval()
    images = normals(64, seed=3)
    with torch.inference_mode():
        before = network(images.float() / 255.0)[0]
        fit_map_correction(network, images, torch.device("cpu"), seed=0)
        after = network(images.float() / 255.0)[0]
    unclamped = (after > 0) & (after < 1)
    assert unclamped.float().mean() > 0.95
    for row, column in ((0, 0), (0, 16), (16, 16)):
        kept = unclamped[:, row, column]
        ranked_by_before = after[kept, row, column][torch.argsort(before[kept, row, column])]
        assert (ranked_by_before.diff() >= -1e-6).all()


def test_too_few_normals_leave_the_correction_as_it_is():
    network = BrightBorderNetwork(preset_architecture("tiny", SIZE)).eval()
    gain, offset = torch.full((SIZE, SIZE), 0.9), torch.full((SIZE, SIZE), 0.01)
    network.map_correction.set(gain, offset)
    recorded = fit_map_correction(network, normals(MAP_CORRECTION_MIN_IMAGES - 1, seed=1), torch.device("cpu"), 0)
    assert not recorded["fitted"]
    assert torch.equal(network.map_correction.gain, gain) and torch.equal(network.map_correction.offset, offset)


def is_identity(network: DSARAD) -> bool:
    return bool((network.map_correction.gain == 1).all() and (network.map_correction.offset == 0).all())


def test_retraining_keeps_the_correction_only_where_calibration_defects_rank_better_with_it():
    """Defects in the bright interior pixels stand out once the border is evened out: kept.
    Defects all along the border are what the uncorrected map ranks first: dropped."""
    network = BrightBorderNetwork(preset_architecture("tiny", SIZE)).eval()
    images = normals(48, seed=4)
    brightness = images.float().mean(dim=1).numpy() / 255.0 - 0.5
    interior_defects = (brightness > 0.25) & ~border_band(SIZE).numpy()
    kept, maps, scores = choose_map_correction(network, normals(64, seed=1), images, interior_defects,
                                               torch.device("cpu"), 0)
    assert kept["fitted"] and not is_identity(network)
    expected_maps, expected_scores = raw_outputs(network, images, torch.device("cpu"))
    np.testing.assert_array_equal(maps, expected_maps)
    np.testing.assert_array_equal(scores, expected_scores)
    assert kept["calibration_pixel_ap"]["corrected"] > kept["calibration_pixel_ap"]["uncorrected"]
    border_defects = np.broadcast_to(border_band(SIZE).numpy(), brightness.shape)
    dropped, maps, scores = choose_map_correction(network, normals(64, seed=1), images, border_defects,
                                                  torch.device("cpu"), 0)
    assert not dropped["fitted"] and "lowered the calibration images' pixel AP" in dropped["reason"]
    assert is_identity(network)
    expected_maps, expected_scores = raw_outputs(network, images, torch.device("cpu"))
    np.testing.assert_array_equal(maps, expected_maps)
    np.testing.assert_array_equal(scores, expected_scores)
