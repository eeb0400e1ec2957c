import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelme_dsarad.model.scoring import ScoreNormaliser, normalise

thresholds = st.floats(min_value=1e-4, max_value=1 - 1e-4)


@given(thresholds, st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=50))
def test_normalisation_is_monotone_and_puts_threshold_at_half(threshold, values):
    raw = np.sort(np.array(values))
    normalised = normalise(raw, threshold)
    assert np.all(np.diff(normalised) >= -1e-12)
    assert normalise(np.array([threshold]), threshold)[0] == pytest.approx(0.5)
    assert normalise(np.array([0.0, 1.0]), threshold) == pytest.approx([0.0, 1.0])


def test_normalisation_is_not_clipped_and_works_on_tensors():
    assert normalise(np.array([1.2]), 0.5)[0] == pytest.approx(1.2)
    torch = pytest.importorskip("torch")  # training normalises tensors
    tensor = normalise(torch.tensor([0.1, 0.25, 0.9]), 0.25)
    torch.testing.assert_close(tensor, torch.tensor([0.2, 0.5, 0.5 + 0.65 * 0.5 / 0.75]))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, float("nan"), "0.5"])
def test_thresholds_outside_the_open_interval_are_rejected(bad):
    with pytest.raises(ValueError):
        ScoreNormaliser(bad, 0.5)


def test_round_trip_through_dict():
    normaliser = ScoreNormaliser(0.2, 0.7, {"validation_images": 3})
    assert ScoreNormaliser.from_dict(normaliser.to_dict()) == normaliser
    per_kind = ScoreNormaliser(0.2, 0.7, extend_to_by_kind={"blowhole": 1.0, "fray": 0.3})
    assert ScoreNormaliser.from_dict(per_kind.to_dict()).extend_to_by_kind == {"blowhole": 1.0, "fray": 0.3}
    assert ScoreNormaliser.from_dict(per_kind.to_dict()) != normaliser
    peaked = ScoreNormaliser(0.2, 0.7, min_peak=1.4)
    assert ScoreNormaliser.from_dict(peaked.to_dict()).min_peak == 1.4
    # Files from before the peak had a level suggest every region that reaches the threshold.
    assert "min_peak" not in normaliser.to_dict() and ScoreNormaliser.from_dict(normaliser.to_dict()).min_peak == 1.0


@pytest.mark.parametrize("bad", [0.9, 2.5, float("nan"), "1.4"])
def test_a_lowest_peak_outside_one_to_two_thresholds_is_rejected(bad):
    with pytest.raises(ValueError, match="min_peak"):
        ScoreNormaliser(0.5, 0.5, min_peak=bad)


@pytest.mark.parametrize("bad", [0.0, 2.5, float("nan"), "0.5"])
def test_an_extent_per_kind_outside_zero_to_two_is_rejected(bad):
    with pytest.raises(ValueError, match=r"extend_to_by_kind\['blowhole'\] must be a number in \(0, 2\]"):
        ScoreNormaliser(0.5, 0.5, extend_to_by_kind={"blowhole": bad})
    cut_back = ScoreNormaliser(0.5, 0.5, extend_to_by_kind={"blowhole": 1.6})  # above 1: cut back
    assert ScoreNormaliser.from_dict(cut_back.to_dict()).extend_to_by_kind == {"blowhole": 1.6}
