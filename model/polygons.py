"""Anomaly map to LabelMe polygons: one polygon per connected defect region.

Coordinates follow what a person sees in LabelMe: pixel ``(x, y)`` covers the
square ``[x, x + 1) x [y, y + 1)``, so a one-pixel region becomes the square
from ``(x, y)`` to ``(x + 1, y + 1)`` and a polygon covers a pixel when it
contains the pixel's centre ``(x + 0.5, y + 0.5)``.

How a region becomes a polygon:

1. ``cv2.findContours`` (outer contour only) traces the region's boundary
   pixels, through their centres.
2. Douglas-Peucker (``cv2.approxPolyDP``) simplifies that trace, with the
   tolerance capped for thin or small regions.
3. The trace is grown by half a pixel (a mitred ``shapely`` buffer), which puts
   straight edges exactly on the pixel edges and gives one-pixel lines, lone
   pixels and diagonal-only joints a real width, so every region yields a valid
   polygon with an area. Should the result still be invalid, ``make_valid``
   repairs it and, if that splits it, the largest part is kept.
4. Only the outer ring is kept. LabelMe polygons have no holes, so holes are
   filled: a ring-shaped defect becomes its filled outline, and a defect lying
   inside that hole gets a polygon of its own, inside the filled one.

Small regions are never dropped in favour of large ones: the only filters are
``min_area`` and ``min_peak``, applied to each region on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon

from .scoring import DEFAULT_MIN_PEAK, MAX_MIN_PEAK, NORMALISED_THRESHOLD

# Douglas-Peucker cuts up to ``tolerance`` pixels off every curve, which on a
# small or thin region removes a large share of it. Capping the tolerance at
# this fraction of the region's mean thickness (2 * area / perimeter) keeps
# rasterised polygons within a few percent of their regions at any size.
TOLERANCE_PER_THICKNESS = 0.04

# A mitre limit just above sqrt(2) keeps right-angled corners square (pixel
# corners stay exact) while bevelling sharper spikes instead of letting them
# shoot past the region.
_MITRE_LIMIT = 1.5

_NEGLIGIBLE = 1e-6  # pixels

# A suggestion's outline keeps the fewest vertices with which it still covers its traced region
# at this IoU: a person drags a handful of vertices, not a pixel staircase (docs/quality.md).
OUTLINE_FIT = 0.9

# How far a suggestion extends where neither the settings nor the model say: chosen on
# retrains' held-out corrections of both data sets (docs/experiments.md).
DEFAULT_EXTEND_TO = 0.7


@dataclass(frozen=True)
class SuggestionSettings:
    """How a normalised map becomes suggestions. The defaults are the CLI's,
    the plugin's and every evaluation's: the one place they are written."""

    threshold: float = NORMALISED_THRESHOLD  # normalised score
    min_area: int = 20  # pixels
    tolerance: float = 1.0  # Douglas-Peucker, pixels
    opening: int = 0  # radius of a morphological opening before labelling; 0: none
    # A region that reaches the threshold takes in its surroundings down to this
    # fraction of it (hysteresis): a defect's outline follows its whole extent,
    # and its pieces join, without weaker spots elsewhere becoming suggestions.
    # 1: a region is exactly where the threshold is reached. None: the model's
    # own, per defect kind where a retrain chose it (``ScoreNormaliser``; above 1
    # for a kind whose map spreads beyond its defects), DEFAULT_EXTEND_TO elsewhere.
    extend_to: float | None = None
    # A region is suggested only where its highest score reaches this multiple of the threshold:
    # on a retrained model the false suggestions peak lower than the defects it finds. None: the
    # model's own (``ScoreNormaliser.min_peak``).
    min_peak: float | None = None
    # The fewest vertices whose outline keeps this IoU with the region's traced outline; 1: the trace
    # as Douglas-Peucker at ``tolerance`` leaves it.
    fit: float = OUTLINE_FIT

    def check(self) -> None:
        """ValueError for settings no run can use. A NaN would even end up in
        the label file as ``NaN``, which is not JSON to most readers."""
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be within [0, 1], got {self.threshold}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"tolerance must be a finite number of pixels, 0 or more, got {self.tolerance}")
        if self.extend_to is not None and not (math.isfinite(self.extend_to) and 0.0 < self.extend_to <= 1.0):
            raise ValueError(f"extend_to must be within (0, 1], got {self.extend_to}")
        if self.min_peak is not None and not (math.isfinite(self.min_peak)
                                              and 1.0 <= self.min_peak <= MAX_MIN_PEAK):
            raise ValueError(f"min_peak must be within [1, {MAX_MIN_PEAK:g}], got {self.min_peak}")
        if not (math.isfinite(self.fit) and 0.5 <= self.fit <= 1.0):
            raise ValueError(f"fit must be within [0.5, 1], got {self.fit}")
        for name in ("min_area", "opening"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")

    def regions(self, score_map: np.ndarray, model_extend_to: np.ndarray | None = None,
                model_min_peak: float | None = None) -> list[Region]:
        """``model_extend_to``: the model's own ``extend_to`` for each pixel of ``score_map``
        (``Prediction.extend_map``), and ``model_min_peak`` its own ``min_peak``, used when the
        settings give none."""
        return mask_to_polygons(score_map, self.threshold, self.min_area, self.tolerance, self.opening,
                                self.extend_to_with(model_extend_to), self.min_peak_with(model_min_peak), self.fit)

    def extend_to_with(self, model_extend_to: np.ndarray | None = None) -> float | np.ndarray:
        """The settings' ``extend_to``, else the model's (per pixel), else DEFAULT_EXTEND_TO."""
        if self.extend_to is not None:
            return self.extend_to
        return DEFAULT_EXTEND_TO if model_extend_to is None else model_extend_to

    def min_peak_with(self, model_min_peak: float | None = None) -> float:
        """The settings' ``min_peak``, else the model's, else DEFAULT_MIN_PEAK."""
        if self.min_peak is not None:
            return self.min_peak
        return DEFAULT_MIN_PEAK if model_min_peak is None else model_min_peak

    def count(self, score_map: np.ndarray, threshold: float) -> int:
        """How many suggestions ``regions`` would make at ``threshold`` instead of the settings'
        (the same scale as ``score_map``, raw or normalised), without drawing their outlines."""
        return len(_suggestion_labels(score_map, threshold, self.opening, self.extend_to_with(), self.min_area,
                                      self.min_peak_with())[2])

    def region_pixels(self, score_map: np.ndarray, model_extend_to: np.ndarray | None = None,
                      model_min_peak: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The suggestions ``regions`` draws, as pixels: each pixel's region label (an integer, 0 for
        none) and the labels that become suggestions; without their outlines."""
        labels, _, kept = _suggestion_labels(score_map, self.threshold, self.opening,
                                             self.extend_to_with(model_extend_to), self.min_area,
                                             self.min_peak_with(model_min_peak))
        return labels, kept


@dataclass(frozen=True)
class Region:
    """One connected region above the threshold, as a LabelMe polygon."""

    points: list[tuple[float, float]]  # (x, y) ring, not closed, >= 3 points
    area: int  # pixel count of the region
    score_max: float
    score_mean: float
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1): pixel box, x1/y1 exclusive


def mask_to_polygons(
    score_map: np.ndarray,
    threshold: float = SuggestionSettings.threshold,
    min_area: int = SuggestionSettings.min_area,
    tolerance: float = SuggestionSettings.tolerance,
    opening: int = SuggestionSettings.opening,
    extend_to: float | np.ndarray = DEFAULT_EXTEND_TO,
    min_peak: float = DEFAULT_MIN_PEAK,
    fit: float = 1.0,
) -> list[Region]:
    """One Region per 8-connected region of ``score_map >= threshold``, each
    extended over its 8-connected surroundings where ``score_map >= extend_to *
    threshold`` (regions that meet there become one). ``extend_to`` is one
    fraction or one per pixel (an array shaped as ``score_map``); where it is
    above 1, a region is cut back to where ``extend_to * threshold`` is reached.

    ``score_map`` is a 2-D array of normalised scores (``NORMALISED_THRESHOLD`` is
    the model's own threshold), or a boolean mask, in which case ``threshold`` is ignored and
    the region scores are 1.0. ``opening`` is the radius in pixels of a
    morphological opening applied before labelling (0: none). Regions with
    fewer than ``min_area`` pixels reaching the threshold (after the opening)
    are skipped, and so are regions whose highest score stays below ``min_peak * threshold``
    (a boolean mask has no peaks: none is skipped for it).
    ``tolerance`` is the Douglas-Peucker tolerance in pixels, reduced for thin
    or small regions (see ``TOLERANCE_PER_THICKNESS``); below 1, ``fit`` then
    drops every vertex it can while the outline keeps that IoU with the
    traced one (``_fewest_vertices``). Regions come in raster order of their
    first pixel.
    """
    score_map = np.asarray(score_map)
    if score_map.ndim != 2:
        raise ValueError(f"score_map must be 2-D, got shape {score_map.shape}")
    if score_map.size == 0:
        return []
    scores = None if score_map.dtype == bool else score_map
    labels, stats, kept = _suggestion_labels(score_map, threshold, opening, extend_to, min_area, min_peak)
    regions = []
    for index in kept:
        x, y, w, h, area = (int(v) for v in stats[index])
        inside = labels[y : y + h, x : x + w] == index
        if scores is None:
            score_max = score_mean = 1.0
        else:
            region_scores = scores[y : y + h, x : x + w][inside]
            score_max = float(region_scores.max())
            score_mean = float(region_scores.mean(dtype=np.float64))
        ring = _fewest_vertices(_outline(inside, area, tolerance), fit) + (x, y)
        points = list(map(tuple, ring.tolist()))
        regions.append(Region(points, area, score_max, score_mean, (x, y, x + w, y + h)))
    return regions


def _suggestion_labels(score_map: np.ndarray, threshold: float, opening: int, extend_to: float | np.ndarray,
                       min_area: int, min_peak: float = DEFAULT_MIN_PEAK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected labels and stats (``_label_regions``) of where ``score_map`` (or a boolean mask,
    as it is) reaches ``threshold``, extended down to ``extend_to * threshold`` around those pixels
    (cut back to it where ``extend_to`` is above 1) and opened with radius ``opening`` pixels (0:
    none); and the labels that become suggestions: those with at least ``min_area`` pixels (one at
    least) reaching the threshold, so that extending a speck too small to suggest never makes it a
    suggestion, and (on a score map) a pixel reaching ``min_peak * threshold``."""
    core: np.ndarray
    binary: np.ndarray
    if score_map.dtype == bool:
        core = binary = np.ascontiguousarray(score_map, dtype=np.uint8)
    else:
        core = (score_map >= threshold).view(np.uint8)
        reaches_elsewhere = np.any(extend_to != 1.0)
        binary = _extended(core, score_map >= extend_to * threshold) if reaches_elsewhere else core
    if opening > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * opening + 1, 2 * opening + 1))
        opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
        core = opened if binary is core else core
        binary = opened
    labels, stats = _label_regions(binary)
    core_areas: np.ndarray
    if binary is core:
        core_areas = stats[:, cv2.CC_STAT_AREA]
    else:  # core pixels the opening removed fall on label 0, the background
        core_areas = np.bincount(labels[core.view(bool)], minlength=len(stats))
    large_enough = core_areas >= max(min_area, 1)
    if score_map.dtype != bool and min_peak > 1.0:
        # a peak the opening removed falls on label 0, the background
        large_enough &= np.bincount(labels[score_map >= min_peak * threshold], minlength=len(stats)) > 0
    return labels, stats, 1 + np.flatnonzero(large_enough[1:])


def _extended(seeds: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """uint8: the 8-connected regions of ``reach`` that hold a pixel of ``seeds`` (hysteresis)."""
    count, labels = cv2.connectedComponents(reach.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    keep = np.zeros(count, dtype=np.uint8)
    keep[labels[seeds.view(bool)]] = 1
    keep[0] = 0
    return keep[labels]


def _label_regions(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected labels and their stats (x, y, width, height, area)."""
    try:
        # 16-bit labels halve the memory traffic, about twice as fast; OpenCV
        # refuses when there are more than 65535 regions.
        _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_16U)
    except cv2.error:
        _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
    return labels, stats


def _outline(inside: np.ndarray, area: int, tolerance: float) -> np.ndarray:
    """Polygon ring (N x 2, not closed) of one region, in its bounding-box crop."""
    padded = cv2.copyMakeBorder(inside.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    trace = max(contours, key=len)
    tolerance = min(tolerance, TOLERANCE_PER_THICKNESS * 2.0 * area / len(trace))
    if tolerance > 0 and len(trace) > 2:
        trace = cv2.approxPolyDP(trace, tolerance, closed=True)
    # -1 undoes the padding; +0.5 moves from pixel index to pixel centre.
    centres = trace.reshape(-1, 2).astype(np.float64) - 0.5
    grown = _centre_line(centres).buffer(0.5, cap_style="square", join_style="mitre", mitre_limit=_MITRE_LIMIT)
    ring = shapely.get_coordinates(_largest_polygon(grown).exterior)[:-1]
    # Bevelled spikes may poke up to a quarter pixel past the pixel box; pull
    # them back in (clamping, much cheaper than a polygon intersection).
    height, width = inside.shape
    np.clip(ring, 0.0, (width, height), out=ring)
    polygon = Polygon(ring)
    if not polygon.is_valid:
        polygon = _largest_polygon(shapely.make_valid(polygon))
        ring = shapely.get_coordinates(polygon.exterior)[:-1]
    if polygon.is_empty or polygon.area <= 0:
        # Not expected; a region must never vanish, so fall back to its box.
        return np.array([(0.0, 0.0), (width, 0.0), (width, height), (0.0, height)])
    return _without_redundant_vertices(ring)


# Halvings of the simplification distance ``_fewest_vertices`` tries: the last one is about a
# thousandth of the region's size.
_FIT_SEARCH_STEPS = 10


def _fewest_vertices(ring: np.ndarray, fit: float) -> np.ndarray:
    """``ring`` with as few vertices as keep an IoU of ``fit`` with it: the largest Douglas-Peucker
    distance that does, found by halving (vertices only go away, so the outline stays within the
    region's box), never an invalid or empty polygon."""
    if fit >= 1.0 or len(ring) <= 4:
        return ring
    traced = Polygon(ring)
    low, high = 0.0, float(np.ptp(ring, axis=0).max())
    best = ring
    for _ in range(_FIT_SEARCH_STEPS):
        distance = (low + high) / 2
        simpler = shapely.simplify(traced, distance, preserve_topology=True)
        if simpler.geom_type == "Polygon" and simpler.is_valid and simpler.area > 0 and \
                simpler.intersection(traced).area >= fit * simpler.union(traced).area:
            best = shapely.get_coordinates(simpler.exterior)[:-1]
            low = distance
        else:
            high = distance
    return best


def _without_redundant_vertices(ring: np.ndarray) -> np.ndarray:
    """Drop vertices that add nothing: (near) repeats, which clamping and the
    buffer leave, and vertices in the middle of a straight edge.

    Both tests use a distance in pixels: GEOS emits vertex pairs a few 1e-16
    apart, where a raw cross product would call a real corner straight.
    """
    step = np.linalg.norm(ring - np.roll(ring, 1, axis=0), axis=1)
    ring = ring[step > _NEGLIGIBLE]
    previous, following = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    chord = following - previous
    offset = ring - previous
    chord_length = np.linalg.norm(chord, axis=1)
    # Distance of each vertex from the chord joining its neighbours; a vertex
    # whose neighbours coincide is a spike tip and always stays.
    distance = np.abs(chord[:, 0] * offset[:, 1] - chord[:, 1] * offset[:, 0]) / np.maximum(chord_length, _NEGLIGIBLE)
    return ring[(distance > _NEGLIGIBLE) | (chord_length <= _NEGLIGIBLE)]


def _centre_line(centres: np.ndarray) -> shapely.Geometry:
    """The simplified trace as a point or a line, ready to be grown.

    Growing the trace as a line rather than as a polygon means traces that
    double back on themselves (one-pixel-wide parts, regions joined only at a
    corner) need no repair. The line runs one segment past its start instead
    of closing, because GEOS can mis-buffer closed lines with mitred joins.
    """
    if len(centres) == 1:
        return Point(centres[0])
    if len(centres) == 2:
        return LineString(centres)
    return LineString(np.vstack([centres, centres[:2]]))


def _largest_polygon(geometry: shapely.Geometry) -> Polygon:
    """The geometry itself if it is a polygon, else its largest polygon part.

    The buffered trace is connected, so this only drops slivers left by
    clipping or repair, never a region's main body.
    """
    if geometry.geom_type == "Polygon":
        return geometry
    # Twice, because a repaired collection may hold multipolygons.
    parts = [part for part in shapely.get_parts(shapely.get_parts(geometry)) if part.geom_type == "Polygon"]
    return max(parts, key=lambda part: part.area, default=Polygon())


# A new suggestion mostly inside a shape a person made, or inside a
# suggestion they rejected, is the same finding again: not suggested twice.
COVERED_SHARE = 0.5


def is_covered(points: list, outlines: list[list]) -> bool:
    """Whether at least ``COVERED_SHARE`` of the polygon ``points`` lies inside one of ``outlines``.

    Points are (x, y) pairs in LabelMe coordinates; an outline with fewer
    than three points (a line, a point) covers nothing.
    """
    shape = _valid_polygon(points)
    if shape.is_empty or shape.area <= 0:
        return False
    for outline in outlines:
        if len(outline) < 3:
            continue
        other = _valid_polygon(outline)
        if shape.intersects(other) and shape.intersection(other).area >= COVERED_SHARE * shape.area:
            return True
    return False


def _valid_polygon(points: list) -> shapely.Geometry:
    if len(points) < 3:
        return Polygon()
    polygon = Polygon([(float(x), float(y)) for x, y in points])
    return polygon if polygon.is_valid else shapely.make_valid(polygon)
