"""Score maps become one valid LabelMe polygon per region, small ones included."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import shapely
from bench_polygons import blob_map
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from labelme_dsarad.model.polygons import Region, SuggestionSettings, mask_to_polygons


def covered_pixels(points, shape) -> np.ndarray:
    """Pixels whose centre the polygon covers: LabelMe's convention, where
    pixel (x, y) is the square [x, x + 1) x [y, y + 1)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return shapely.intersects_xy(Polygon(points), xs + 0.5, ys + 0.5)


def filled(component: np.ndarray) -> np.ndarray:
    """The component with its holes filled: what a hole-less polygon can cover."""
    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    result = np.zeros(component.shape, np.uint8)
    cv2.drawContours(result, contours, -1, 1, thickness=cv2.FILLED)
    return result.astype(bool)


def components(mask: np.ndarray) -> list[np.ndarray]:
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [labels == index for index in range(1, count)]


def assert_valid_region(region: Region, shape) -> None:
    polygon = Polygon(region.points)
    assert len(region.points) >= 3 and len(set(region.points)) >= 3
    assert region.points[0] != region.points[-1]  # ring not closed
    assert polygon.is_valid and polygon.area > 0
    height, width = shape
    xs, ys = np.array(region.points).T
    assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= width and ys.max() <= height


@st.composite
def drawn_masks(draw) -> np.ndarray:
    """Rectangles, ellipses and smooth blobs on a canvas of 1x1 to 128x128."""
    height = draw(st.integers(1, 128))
    width = draw(st.integers(1, 128))
    mask = np.zeros((height, width), np.uint8)
    for kind in draw(st.lists(st.sampled_from(["rectangle", "ellipse", "blob"]), min_size=0, max_size=4)):
        if kind == "rectangle":
            x0, x1 = sorted(draw(st.lists(st.integers(0, width - 1), min_size=2, max_size=2)))
            y0, y1 = sorted(draw(st.lists(st.integers(0, height - 1), min_size=2, max_size=2)))
            mask[y0 : y1 + 1, x0 : x1 + 1] = 1
        elif kind == "ellipse":
            centre = (draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1)))
            axes = (draw(st.integers(0, 50)), draw(st.integers(0, 50)))
            cv2.ellipse(mask, centre, axes, draw(st.floats(0, 180)), 0, 360, 1, thickness=-1)
        else:
            # Thresholded smooth noise: irregular, with holes and corner-only joints.
            seed = draw(st.integers(0, 2**32 - 1))
            noise: np.ndarray = np.random.default_rng(seed).random((height, width)).astype(np.float32)
            noise = cv2.GaussianBlur(noise, (0, 0), draw(st.floats(2, 6)))
            mask |= (noise > np.quantile(noise, draw(st.floats(0.3, 0.9)))).astype(np.uint8)
    return mask.astype(bool)


@settings(max_examples=150, deadline=None)
@given(mask=drawn_masks(), tolerance=st.sampled_from([0.5, 1.0]))
@example(mask=np.zeros((1, 1), bool), tolerance=1.0)
@example(mask=np.ones((1, 1), bool), tolerance=1.0)
@example(mask=np.ones((128, 128), bool), tolerance=1.0)
@example(mask=np.eye(16, dtype=bool), tolerance=1.0)
def test_every_component_gets_a_valid_polygon_that_covers_it(mask, tolerance):
    regions = mask_to_polygons(mask, min_area=1, tolerance=tolerance)
    expected = components(mask)
    assert len(regions) == len(expected)
    for region, component in zip(regions, expected):
        assert_valid_region(region, mask.shape)
        assert region.area == component.sum()
        x0, y0, x1, y1 = region.bbox
        ys, xs = np.nonzero(component)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        if region.area >= 100:
            covered = covered_pixels(region.points, mask.shape)
            target = filled(component)
            iou = (covered & target).sum() / (covered | target).sum()
            assert iou >= 0.95, f"IoU {iou:.3f} for a {region.area}-pixel region"


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 2**32 - 1),
    threshold=st.floats(0, 1),
    opening=st.integers(0, 3),
    extend_to=st.sampled_from([1.0, 0.7, 1.4]),
    min_area=st.integers(0, 30),
)
def test_any_score_map_and_threshold_gives_valid_regions(shape, seed, threshold, opening, extend_to, min_area):
    score_map = np.random.default_rng(seed).random(shape).astype(np.float32)
    regions = mask_to_polygons(score_map, threshold=threshold, min_area=min_area, opening=opening, extend_to=extend_to)
    for region in regions:
        assert_valid_region(region, shape)
        assert region.area >= min_area
        assert extend_to * threshold <= region.score_mean <= region.score_max <= 1


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_maps(threshold, value):
    regions = mask_to_polygons(np.full((7, 9), value, np.float32), threshold=threshold, min_area=1)
    if value >= threshold:
        assert len(regions) == 1 and regions[0].area == 63
        assert sorted(regions[0].points) == [(0.0, 0.0), (0.0, 7.0), (9.0, 0.0), (9.0, 7.0)]
    else:
        assert regions == []


def test_one_pixel_becomes_its_pixel_square():
    mask = np.zeros((5, 5), bool)
    mask[2, 3] = True
    (region,) = mask_to_polygons(mask, min_area=1)
    assert sorted(region.points) == [(3.0, 2.0), (3.0, 3.0), (4.0, 2.0), (4.0, 3.0)]


@pytest.mark.parametrize("length", [2, 3, 10])
@pytest.mark.parametrize("transpose", [False, True])
def test_one_pixel_wide_line_becomes_its_pixel_rectangle(length, transpose):
    mask = np.zeros((3, 12), bool)
    mask[1, 1 : 1 + length] = True
    if transpose:
        mask = mask.T.copy()
    (region,) = mask_to_polygons(mask, min_area=1)
    assert_valid_region(region, mask.shape)
    assert Polygon(region.points).area == pytest.approx(length)
    assert (covered_pixels(region.points, mask.shape) == mask).all()


@pytest.mark.parametrize("pixels", [[(0, 0), (1, 1)], [(0, 1), (1, 0)], [(0, 0), (1, 1), (2, 2), (3, 3)]])
def test_pixels_joined_only_at_corners_give_one_polygon_covering_all(pixels):
    mask = np.zeros((4, 4), bool)
    for y, x in pixels:
        mask[y, x] = True
    (region,) = mask_to_polygons(mask, min_area=1)
    assert_valid_region(region, mask.shape)
    assert covered_pixels(region.points, mask.shape)[mask].all()


def test_two_blocks_touching_at_a_corner_both_stay_covered():
    # "Keep the largest part" must not throw one block away.
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:10] = True
    mask[10:20, 10:20] = True
    (region,) = mask_to_polygons(mask, min_area=1)
    covered = covered_pixels(region.points, mask.shape)
    assert (covered == mask).all()


def test_small_defect_beside_a_huge_one_survives():
    score_map = np.zeros((400, 400), np.float32)
    score_map[20:380, 20:300] = 0.9  # 100 800 pixels
    score_map[200:205, 350:354] = 0.6  # a 20-pixel blowhole
    regions = mask_to_polygons(score_map, min_area=20)
    assert sorted(region.area for region in regions) == [20, 100_800]
    blowhole = next(region for region in regions if region.area == 20)
    assert blowhole.bbox == (350, 200, 354, 205)
    assert blowhole.score_max == pytest.approx(0.6)


def test_min_area_keeps_exactly_the_regions_that_large():
    mask = np.zeros((30, 80), bool)
    for x, area in [(0, 5), (10, 19), (30, 20), (55, 21)]:
        mask[0:1, x : x + area] = True
    assert sorted(r.area for r in mask_to_polygons(mask, min_area=20)) == [20, 21]
    assert sorted(r.area for r in mask_to_polygons(mask, min_area=1)) == [5, 19, 20, 21]
    assert sorted(r.area for r in mask_to_polygons(mask, min_area=0)) == [5, 19, 20, 21]


def test_scores_are_max_and_mean_inside_each_region():
    score_map = np.array(
        [
            [0.6, 0.8, 0.0, 0.0],
            [0.7, 0.0, 0.0, 0.95],
            [0.0, 0.0, 0.4, 0.55],
        ],
        dtype=np.float32,
    )
    first, second = mask_to_polygons(score_map, threshold=0.5, min_area=1, extend_to=1.0)
    assert (first.area, second.area) == (3, 2)
    assert first.score_max == pytest.approx(0.8)
    assert first.score_mean == pytest.approx((0.6 + 0.8 + 0.7) / 3)
    assert second.score_max == pytest.approx(0.95)
    assert second.score_mean == pytest.approx((0.95 + 0.55) / 2)


def test_boolean_mask_is_taken_as_is_with_unit_scores():
    mask = np.zeros((6, 6), bool)
    mask[1:4, 1:5] = True
    (region,) = mask_to_polygons(mask, threshold=0.99, min_area=1)
    assert region.area == 12 and region.score_max == region.score_mean == 1.0


def test_holes_are_filled_and_a_defect_inside_gets_its_own_polygon():
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (20, 20), 15, 1, thickness=-1)
    cv2.circle(mask, (20, 20), 8, 0, thickness=-1)  # the hole
    mask[19:22, 19:22] = 1  # a small defect inside the hole
    ring, inner = sorted(mask_to_polygons(mask.astype(bool), min_area=1), key=lambda r: -r.area)
    assert ring.area == (mask.sum() - 9) and inner.area == 9
    hole = filled(mask.astype(bool)) & ~mask.astype(bool)
    assert covered_pixels(ring.points, mask.shape)[hole].all()
    assert covered_pixels(inner.points, mask.shape)[19:22, 19:22].all()


def test_opening_cuts_thin_bridges():
    mask = np.zeros((20, 40), bool)
    mask[5:15, 2:12] = True
    mask[5:15, 28:38] = True
    mask[10, 12:28] = True  # one-pixel bridge
    assert len(mask_to_polygons(mask, min_area=1)) == 1
    assert len(mask_to_polygons(mask, min_area=1, opening=1)) == 2


def test_a_region_extends_over_its_weaker_surroundings_and_joins_its_pieces():
    score_map = np.zeros((20, 40), np.float32)
    score_map[5:15, 2:12] = 0.9  # two strong pieces of one defect
    score_map[5:15, 28:38] = 0.9
    score_map[8:12, 12:28] = 0.4  # joined by a weaker stretch
    score_map[4:8, 18:22] = 0.3  # touching the stretch, weaker still
    score_map[16:19, 2:38] = 0.45  # stronger than both, but reaching no strong pixel: never a suggestion
    assert [region.area for region in mask_to_polygons(score_map, min_area=1, extend_to=1.0)] == [100, 100]
    (joined,) = mask_to_polygons(score_map, min_area=1, extend_to=0.7)  # down to 0.35
    assert joined.area == 2 * 100 + 4 * 16 and joined.score_max == pytest.approx(0.9)
    (whole,) = mask_to_polygons(score_map, min_area=1, extend_to=0.5)  # down to 0.25: the weakest spot too
    assert whole.area == 2 * 100 + 4 * 16 + 4 * 4
    with pytest.raises(ValueError, match="extend_to"):
        SuggestionSettings(extend_to=0.0).check()


def test_a_region_is_cut_back_where_its_extent_is_above_one():
    score_map = np.zeros((20, 40), np.float32)
    score_map[2:18, 2:18] = score_map[2:18, 22:38] = 0.6  # two maps spreading above the threshold ...
    score_map[5:15, 5:15] = score_map[5:15, 25:35] = 0.9  # ... around their strong cores
    assert [region.area for region in mask_to_polygons(score_map, min_area=1, extend_to=1.0)] == [256, 256]
    assert [region.area for region in mask_to_polygons(score_map, min_area=1, extend_to=1.4)] == [100, 100]
    per_pixel = np.ones_like(score_map)
    per_pixel[:, :20] = 1.4  # the left one's kind cut back to 0.7, the right one's as it is
    # Raster order of their first pixels: the right one, whole, now begins higher up.
    assert [region.area for region in mask_to_polygons(score_map, min_area=1, extend_to=per_pixel)] == [256, 100]


def test_a_region_whose_peak_stays_low_is_no_suggestion():
    score_map = np.zeros((20, 40), np.float32)
    score_map[5:15, 2:12] = 0.83  # a strong region
    score_map[5:15, 28:38] = 0.62  # a weak one, reaching the threshold all the same
    score_map[9:11, 15:20] = 0.9  # a strong speck, too small to suggest
    assert [region.area for region in mask_to_polygons(score_map, min_area=20)] == [100, 100]
    (strong,) = mask_to_polygons(score_map, min_area=20, min_peak=1.6)  # a peak of 0.8 or more
    assert strong.score_max == pytest.approx(0.83)
    assert mask_to_polygons(score_map, min_area=20, min_peak=1.7) == []  # the speck gives no peak of its own
    assert len(mask_to_polygons(score_map > 0.5, min_area=20, min_peak=2.0)) == 2  # a mask has no peaks
    # The settings' peak, else the model's, else every region; counted as drawn.
    drawing = SuggestionSettings(min_area=20)
    assert len(drawing.regions(score_map)) == 2 and len(drawing.regions(score_map, model_min_peak=1.6)) == 1
    assert len(replace(drawing, min_peak=1.0).regions(score_map, model_min_peak=1.6)) == 2
    assert replace(drawing, min_peak=1.6).count(score_map, 0.5) == 1
    labels, kept = drawing.region_pixels(score_map, model_min_peak=1.6)
    assert len(kept) == 1 and labels[10, 5] == kept[0]
    for bad in (0.9, 2.1, float("nan")):
        with pytest.raises(ValueError, match="min_peak"):
            SuggestionSettings(min_peak=bad).check()


def test_each_pixel_may_extend_to_its_own_fraction():
    score_map = np.zeros((20, 40), np.float32)
    score_map[5:15, 2:12] = 0.9  # the map of the test above
    score_map[5:15, 28:38] = 0.9
    score_map[8:12, 12:28] = 0.4
    score_map[4:8, 18:22] = 0.3
    extend_to = np.ones(score_map.shape, np.float32)
    extend_to[:, 20:] = 0.5  # the right half reaches down to 0.25, the left only where the threshold is
    left, right = mask_to_polygons(score_map, min_area=1, extend_to=extend_to)
    assert left.area == 100 and right.area == 100 + 4 * 8 + 4 * 2
    # The settings' own fraction, when given, is the one drawn; without, the model's per pixel.
    drawing = SuggestionSettings(min_area=1)
    assert [region.area for region in drawing.regions(score_map, extend_to)] == [100, 140]
    (joined,) = drawing.regions(score_map)  # the model has none: DEFAULT_EXTEND_TO
    assert joined.area == 2 * 100 + 4 * 16
    assert [region.area for region in replace(drawing, extend_to=1.0).regions(score_map, extend_to)] == [100, 100]


def test_empty_and_wrong_inputs():
    assert mask_to_polygons(np.zeros((0, 5), np.float32)) == []
    assert mask_to_polygons(np.zeros((3, 3), np.float32)) == []
    with pytest.raises(ValueError, match="2-D"):
        mask_to_polygons(np.zeros((3, 3, 3), np.float32))


def test_nan_scores_are_not_defects():
    score_map = np.full((4, 4), np.nan, np.float32)
    score_map[1:3, 1:3] = 0.9
    (region,) = mask_to_polygons(score_map, min_area=1)
    assert region.area == 4 and region.score_mean == pytest.approx(0.9)


def test_2000_square_map_with_dozens_of_regions_gives_each_its_polygon():
    # Its time is bench/bench_polygons.py's: a timed test fails on a busy machine, not on slow code.
    score_map = blob_map(2000, 40)
    regions = mask_to_polygons(score_map)
    assert len(regions) >= 20
    assert all(len(region.points) >= 3 for region in regions)


def test_counting_suggestions_agrees_with_drawing_them():
    rng = np.random.default_rng(0)
    score_map = cv2.GaussianBlur(rng.uniform(0.0, 1.0, (80, 120)).astype(np.float32), (0, 0), 2.0)
    for threshold in (0.45, 0.5, 0.55):
        for min_area, opening, extend_to in ((0, 0, 1.0), (20, 0, 1.0), (5, 1, 1.0), (20, 0, 0.8), (5, 1, 0.6)):
            drawn = SuggestionSettings(threshold=threshold, min_area=min_area, opening=opening, extend_to=extend_to)
            assert drawn.count(score_map, threshold) == len(drawn.regions(score_map)) > 0


def test_extending_a_speck_too_small_to_suggest_does_not_make_it_a_suggestion():
    score_map = np.zeros((30, 30), np.float32)
    score_map[10:20, 10:20] = 0.4  # 100 px of weak surroundings
    score_map[14:16, 14:16] = 0.8  # around a strong core of 4 px
    settings = SuggestionSettings(min_area=5, extend_to=0.5)
    assert settings.regions(score_map) == [] and settings.count(score_map, 0.5) == 0
    score_map[14:16, 14:17] = 0.8  # 6 px: now a suggestion, drawn at its whole extent
    (region,) = settings.regions(score_map)
    assert region.area == 100 and settings.count(score_map, 0.5) == 1


@pytest.mark.parametrize("fit", [0.97, 0.95, 0.9])
def test_a_fit_below_one_keeps_few_vertices_and_that_iou_with_the_traced_outline(fit):
    mask = np.zeros((120, 160), np.uint8)
    cv2.ellipse(mask, (80, 60), (55, 22), 25, 0, 360, 1, -1)
    cv2.circle(mask, (40, 40), 12, 1, -1)  # a bump: not a shape a few vertices fit exactly
    (traced,) = mask_to_polygons(mask.astype(bool), min_area=1)
    (fitted,) = mask_to_polygons(mask.astype(bool), min_area=1, fit=fit)
    assert len(fitted.points) < len(traced.points) * 2 / 3
    exact, simple = Polygon(traced.points), Polygon(fitted.points)
    assert simple.is_valid
    assert exact.intersection(simple).area / exact.union(simple).area >= fit
    assert (fitted.area, fitted.bbox) == (traced.area, traced.bbox)


def test_suggestions_fit_their_regions_with_few_vertices_and_a_fit_of_one_is_the_trace():
    score_map = blob_map(512, 24, seed=3)
    drawn = SuggestionSettings().regions(score_map)
    traced = replace(SuggestionSettings(), fit=1.0).regions(score_map)
    assert len(drawn) == len(traced) > 0
    assert max(len(region.points) for region in drawn) <= max(len(region.points) for region in traced)
    assert np.median([len(region.points) for region in drawn]) <= 12
    with pytest.raises(ValueError, match="fit"):
        replace(SuggestionSettings(), fit=0.2).check()
