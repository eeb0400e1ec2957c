"""Models with a scale: photos keep their shape, tiles at the model's size, maps stitched back."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from labelme_dsarad.model.images import reduction_for
from labelme_dsarad.model.inference import Predictor, largest_reduction
from labelme_dsarad.model.model_file import load_model, save_model
from labelme_dsarad.model.polygons import SuggestionSettings
from labelme_dsarad.model.tiles import Tiling, pooled_max, scale_for, scaled_shape, tile_starts

from .conftest import make_tiny_model

torch = pytest.importorskip("torch")


def with_scale(path, scale: float):
    loaded = load_model(path)
    loaded.info.architecture = replace(loaded.info.architecture, scale=scale)
    loaded.network.architecture = loaded.info.architecture
    return loaded


@pytest.mark.parametrize(("length", "size"), [(64, 64), (65, 64), (300, 64), (1000, 128)])
def test_tiles_cover_every_pixel_and_overlap_by_a_quarter(length, size):
    starts = tile_starts(length, size)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(later - earlier <= 0.75 * size for earlier, later in zip(starts, starts[1:]))


def test_maps_that_agree_where_tiles_overlap_stitch_to_the_same_map():
    rng = np.random.default_rng(0)
    tiling = Tiling.of((50, 300), 64)  # shorter than a tile: padded
    truth = rng.random((2, *tiling.canvas)).astype(np.float32)
    maps = np.stack([truth[:, y : y + 64, x : x + 64] for y, x in tiling.starts])
    np.testing.assert_allclose(tiling.stitch(maps), truth[:, :50, :300], atol=1e-6)
    assert tiling.cut(rng.random((50, 300, 3))).shape == (len(tiling), 64, 64, 3)


def test_a_stitched_maps_score_is_the_networks_own_where_one_tile_covers_the_image():
    from labelme_dsarad.model.networks import image_score

    raw_map = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    for window in (1, 5, 21):
        expected = float(image_score(torch.from_numpy(raw_map)[None], window)[0])
        assert pooled_max(raw_map, window) == pytest.approx(expected, abs=1e-6)


def test_where_one_tile_fits_the_scale_gives_the_squashs_map(tmp_path):
    path = make_tiny_model(tmp_path / "tiny.safetensors")
    image = np.random.default_rng(2).integers(0, 255, (128, 128, 3), np.uint8)
    squash = Predictor(load_model(path), backend="torch").predict(image)
    scaled = Predictor(with_scale(path, 2.0), backend="torch").predict(image)  # 128 / 2 = one 64 px tile
    np.testing.assert_allclose(scaled.score_map, squash.score_map, atol=1e-5)
    assert scaled.raw_image_score == pytest.approx(squash.raw_image_score, abs=1e-5)


def test_a_defect_at_the_far_end_of_a_long_photo_is_found_where_it_is(tmp_path):
    photo = np.full((64, 1280, 3), 40, np.uint8)
    photo[26:38, 1236:1250] = 240  # a small bright defect near the right end
    predictor = Predictor(with_scale(make_tiny_model(tmp_path / "tiny.safetensors"), 1.0), backend="torch")

    def brightness(tiles):  # stands for a model that has learnt the defect: the map is the brightness
        maps = tiles.mean(axis=-1).astype(np.float32) / 255.0
        return maps, maps.reshape(len(maps), -1).max(axis=1)

    predictor.raw_maps = brightness  # type: ignore[method-assign]
    half = cv2.resize(photo, (640, 32), interpolation=cv2.INTER_AREA)  # decoded at half its size
    for image, shape in ((photo, None), (half, (64, 1280))):
        prediction = predictor.predict(image, shape)
        if shape is not None:
            prediction = prediction.for_photo(shape)
        suggestions = prediction.suggestions(SuggestionSettings(extend_to=0.9), "defect")
        assert len(suggestions) == 1
        x0, y0, x1, y1 = suggestions[0].region.bbox
        assert 1226 <= x0 <= 1240 and 1246 <= x1 <= 1260 and 18 <= y0 <= 30 and 34 <= y1 <= 46
        # The defect fills 168 of the score window's 21 x 21 pixels: (168 * 0.94 + 273 * 0.16) / 441.
        assert prediction.raw_image_score == pytest.approx(0.455, abs=0.01)


def test_a_scale_is_stored_in_the_model_file_and_its_onnx_graph_gives_the_same_maps(tmp_path):
    loaded = with_scale(make_tiny_model(tmp_path / "tiny.safetensors"), 1.5)
    save_model(tmp_path / "scaled.safetensors", loaded.network, loaded.info)
    reloaded = load_model(tmp_path / "scaled.safetensors")
    assert reloaded.info.architecture.scale == 1.5
    image = np.random.default_rng(3).integers(0, 255, (90, 250, 3), np.uint8)
    by_torch = Predictor(reloaded, backend="torch").predict(image)
    by_onnx = Predictor(tmp_path / "scaled.safetensors", backend="onnx").predict(image)
    assert by_onnx.score_map.shape == (90, 250)
    np.testing.assert_allclose(by_onnx.score_map, by_torch.score_map, atol=1e-4)


def test_a_model_file_without_a_scale_squashes_as_before(tmp_path):
    loaded = load_model(make_tiny_model(tmp_path / "tiny.safetensors"))
    assert loaded.info.architecture.scale == 0.0
    assert "scale" in loaded.info.architecture.to_dict()  # written by this version; absent in older files


def test_the_scale_chosen_from_photos_fills_a_tile_with_the_median_shorter_side():
    assert scale_for([(460, 1130), (470, 1130), (450, 1100)], 128) == pytest.approx(460 / 128, abs=1e-3)
    assert scaled_shape((460, 1130), 460 / 128) == (128, 314)
    assert largest_reduction(0.0) == 8 and largest_reduction(3.6) == 1 and largest_reduction(9.0) == 4
    # A 6000 x 4000 photo of a product at scale 9 is decoded at a quarter, not an eighth, of its size.
    assert reduction_for(6000, 4000, 256) == 8 and reduction_for(6000, 4000, 256, largest_reduction(9.0)) == 4


def test_training_at_a_scale_draws_windows_and_writes_it_into_the_model(tmp_path):
    from labelme_dsarad.train.trainer import TrainConfig, train_model

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    stripes = (128 + 60 * np.sin(np.arange(160) / 3.0))[None, :].repeat(48, axis=0)
    images = []
    for index in range(12):
        path = folder / f"long_{index:02d}.png"
        cv2.imwrite(str(path), np.clip(stripes + rng.normal(0, 8, stripes.shape), 0, 255).astype(np.uint8))
        images.append(str(path))
    config = TrainConfig(product="widget", images=images, preset="tiny", input_size=32, epochs=4, batch_size=4,
                         seed=0, scale="auto")
    loaded = load_model(train_model(config, tmp_path / "run", tmp_path / "model.safetensors"))
    assert loaded.info.architecture.scale == pytest.approx(1.5)  # 48 px photos, 32 px tiles
    assert loaded.info.training["scale"] == pytest.approx(1.5)
    # Scores of the validation images: one per image (their tiles' highest), not one per tile.
    assert loaded.info.normaliser.statistics["validation_images"] == loaded.info.training["validation_images"]
    prediction = Predictor(loaded).predict(cv2.imread(images[0])[:, :, ::-1])
    assert prediction.score_map.shape == (48, 160) and np.isfinite(prediction.score_map).all()


def test_corrections_of_a_model_with_a_scale_are_its_tiles_each_defective_where_its_mask_is(tmp_path):
    from labelme_dsarad.train.corrections import load_examples
    from labelme_dsarad.train.labels import read_label_folder

    from .test_retrain import write_tiny_labels

    folder = read_label_folder(write_tiny_labels(tmp_path / "labels", count=2))  # the second has a defect
    examples = load_examples(folder.images, 32, scale=0.5)  # 40 px photos at 80 px: 3 x 3 tiles of 32
    assert len(examples) == 18 and examples.images.shape[1:] == (3, 32, 32)
    assert examples.sizes.tolist() == [[16, 16]] * 18  # a tile covers 16 photo pixels a side
    # The defect, (7, 8)-(15, 16) in the photo, is 16 x 16 pixels at (14, 16)-(30, 32) of the scaled one: whole
    # in the top-left tile, in part in the three tiles starting at 24 px right, down, and both.
    assert not examples.defective[:9].any()
    assert examples.defective[9:].tolist() == [True, True, False, True, True, False, False, False, False]
    assert examples.masks[9:].flatten(1).sum(1).tolist() == [256.0, 96.0, 0.0, 128.0, 48.0, 0.0, 0.0, 0.0, 0.0]


def test_retraining_a_model_with_a_scale_keeps_it(tmp_path, capsys):
    from labelme_dsarad.cli import main
    from labelme_dsarad.model.store import ModelStore

    from .test_retrain import write_tiny_labels

    labels = write_tiny_labels(tmp_path / "labels")
    store = ModelStore(tmp_path / "store")
    base = with_scale(make_tiny_model(tmp_path / "base.safetensors", input_size=32), 0.8)  # 40 px photos: 2 x 2 tiles
    (store.root / "widget").mkdir(parents=True)
    save_model(store.root / "widget" / "v1.safetensors", base.network, base.info)
    store.set_current("widget", 1)
    code = main(["retrain", "--product", "widget", "--labels", str(labels), "--store", str(store.root),
                 "--steps", "4", "--batch-size", "4"])
    assert code == 0, capsys.readouterr().err
    retrained = load_model(store.resolve("widget", 2).path)
    assert retrained.info.architecture.scale == 0.8 and retrained.info.architecture.flip_average


def test_a_photo_far_larger_than_the_products_is_refused_in_one_line(tmp_path):
    from labelme_dsarad.model.inference import MAX_TILES

    predictor = Predictor(with_scale(make_tiny_model(tmp_path / "tiny.safetensors"), 0.25), backend="torch")
    with pytest.raises(ValueError, match=f"needs [0-9]+ tiles, more than {MAX_TILES}") as raised:
        predictor.predict(np.zeros((400, 600, 3), np.uint8))  # 1600 x 2400 at the scale: 37 x 49 tiles of 64
    assert "\n" not in str(raised.value)


def test_train_takes_a_positive_scale_or_auto_and_refuses_anything_else(capsys):
    from labelme_dsarad.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["train", "--product", "widget", "--images", "photos", "--epochs", "1", "--scale", "-1"])
    assert exited.value.code == 2 and "--scale: must be more than 0, got -1" in capsys.readouterr().err
