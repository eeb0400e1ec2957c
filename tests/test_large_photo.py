"""A 6000 x 4000 photo is decoded at a fraction of its size, and its suggestions still land
where the defect is, in the photo's own pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from labelme_dsarad.model.images import read_image_reduced
from labelme_dsarad.model.inference import Prediction, largest_reduction, working_size
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.pipeline import PredictOptions, predict_paths
from labelme_dsarad.worker import Job, decode_image

from .test_gui_support import FakePredictor

WIDTH, HEIGHT = 6000, 4000
# The defect, in photo pixels: edges on no multiple of 8, so a wrong scale or offset shows.
DEFECT = (4103, 1201, 4403, 1451)  # x0, y0, x1, y1 (exclusive)
DEFECT_AREA = (DEFECT[2] - DEFECT[0]) * (DEFECT[3] - DEFECT[1])


def photo_with_defect(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """BGR: a dark, slightly shaded surface with one bright rectangle (FakePredictor's defect)."""
    shade = np.linspace(30, 50, width, dtype=np.float32)[None, :].repeat(height, axis=0).astype(np.uint8)
    photo = np.dstack([shade, shade, shade])
    x0, y0, x1, y1 = (round(value * width / WIDTH) for value in DEFECT)
    photo[y0:y1, x0:x1] = 240
    return photo


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large")
    path = folder / "photo.jpg"
    assert cv2.imwrite(str(path), photo_with_defect(), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def only_suggestion(prediction: Prediction) -> Polygon:
    suggestion, = prediction.suggestions(SuggestionSettings(), "defect")
    return Polygon(suggestion.region.points)


def assert_on_the_defect(outline: Polygon, reduction: int) -> None:
    """Every edge within one pixel of the reduced image (``reduction`` photo pixels) of the defect's."""
    defect = box(*DEFECT)
    assert outline.is_valid
    assert defect.buffer(reduction, join_style="mitre").contains(outline)
    assert outline.contains(defect.buffer(-reduction, join_style="mitre"))


def test_suggestions_of_a_large_jpeg_land_on_the_defect_in_photo_pixels(large_jpeg):
    predictor = FakePredictor()
    architecture = predictor.model.info.architecture
    image = decode_image(Job(str(large_jpeg)), working_size(architecture.input_size), largest_reduction(architecture.scale))
    assert image.reduced_while_decoding and image.reduction == 8 and image.shape == (HEIGHT, WIDTH)
    prediction = predictor.predict(image.pixels).for_photo(image.shape)
    assert predictor.calls == [(HEIGHT // 8, WIDTH // 8, 3)], "the model saw the reduced image only"
    assert prediction.score_map.shape == (HEIGHT // 8, WIDTH // 8)
    suggestion, = prediction.suggestions(SuggestionSettings(), "defect")
    assert_on_the_defect(Polygon(suggestion.region.points), image.reduction)
    x0, y0, x1, y1 = suggestion.region.bbox
    assert abs(x0 - DEFECT[0]) <= 8 and abs(y0 - DEFECT[1]) <= 8 and abs(x1 - DEFECT[2]) <= 8 and abs(y1 - DEFECT[3]) <= 8
    assert suggestion.region.area == pytest.approx(DEFECT_AREA, rel=0.1)


def test_min_area_counts_photo_pixels_not_map_pixels(large_jpeg):
    predictor = FakePredictor()
    image = read_image_reduced(large_jpeg, working_size(predictor.model.info.architecture.input_size))
    prediction = predictor.predict(image.pixels).for_photo(image.shape)
    assert len(prediction.suggestions(SuggestionSettings(min_area=int(DEFECT_AREA * 0.9)), "defect")) == 1
    assert prediction.suggestions(SuggestionSettings(min_area=int(DEFECT_AREA * 1.1)), "defect") == []


def test_map_pixels_are_scaled_to_the_photo_edge_to_edge():
    score_map = np.zeros((50, 75), np.float32)
    score_map[20:30, 40:50] = 0.9
    score_map[45:50, 70:75] = 0.9  # touches the far corner
    prediction = Prediction(score_map, 0.9, 0.9, 0.0, "cpu").for_photo((400, 600))
    regions = sorted((suggestion.region for suggestion in prediction.suggestions(SuggestionSettings(min_area=0),
                                                                                    "defect")), key=lambda r: r.bbox)
    assert [region.bbox for region in regions] == [(320, 160, 400, 240), (560, 360, 600, 400)]
    assert [region.area for region in regions] == [6400, 1600]
    assert Polygon(regions[1].points).bounds == (560.0, 360.0, 600.0, 400.0)
    assert prediction.for_photo((50, 75)).photo_shape is None, "a map at the photo's size needs no scaling"


def test_large_png_is_decoded_in_full_then_placed_alike(tmp_path):
    # Half the size keeps the test quick; the PNG path has no decoder scaling to check.
    path = tmp_path / "photo.png"
    assert cv2.imwrite(str(path), photo_with_defect(WIDTH // 2, HEIGHT // 2), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    predictor = FakePredictor()
    image = read_image_reduced(path, working_size(predictor.model.info.architecture.input_size))
    assert not image.reduced_while_decoding and image.reduction == 8 and image.shape == (HEIGHT // 2, WIDTH // 2)
    outline = only_suggestion(predictor.predict(image.pixels).for_photo(image.shape))
    scaled_back = shapely.affinity.scale(outline, 2.0, 2.0, origin=(0, 0))
    assert_on_the_defect(scaled_back, 2 * image.reduction)


def test_dsarad_predict_writes_a_large_photos_label_file_in_photo_pixels(large_jpeg, tmp_path):
    predictor = FakePredictor()
    (tmp_path / "maps").mkdir()
    summary = predict_paths([large_jpeg], None, PredictOptions(out_dir=tmp_path / "labels", maps_dir=tmp_path / "maps"),
                            predictor=predictor)
    assert summary.predicted == 1 and not summary.failures
    assert predictor.calls == [(HEIGHT // 8, WIDTH // 8, 3)]
    written = json.loads((tmp_path / "labels" / "photo.json").read_text())
    assert (written["imageHeight"], written["imageWidth"]) == (HEIGHT, WIDTH)
    shape, = written["shapes"]
    assert_on_the_defect(Polygon(shape["points"]), 8)
    heat_map = cv2.imread(str(tmp_path / "maps" / "photo_anomaly.png"))
    assert heat_map.shape[0] == HEIGHT // 8, "the map picture stays at the decoded size"
