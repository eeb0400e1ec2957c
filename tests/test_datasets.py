"""Data set listings, the splits of each DATASET.md, and the experiments' halves (bench/dataset_splits.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_splits import ball_screw_retrain_halves, ball_screw_sequence, default_mtd_root, mtd_retrain_halves

from labelme_dsarad.train.datasets import (
    MTD_DEFECT_FOLDERS,
    ball_screw_test_samples,
    ball_screw_train_images,
    folder_test_samples,
    load_samples,
    mtd_test_samples,
    mtd_train_images,
    mvtec_test_samples,
    mvtec_train_images,
    read_mask,
)

# Byte order puts upper case before lower case and "10" before "9".
FREE_NAMES = ["a.jpg", "B.jpg", "exp1_num_9.jpg", "exp1_num_10.jpg", "_x.jpg", "Z.jpg", "b.jpg"] + [
    f"n{i}.jpg" for i in range(5)
]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # listings never open the files
    return path


def make_mtd(root: Path, defects_per_folder: int = 5) -> Path:
    for name in FREE_NAMES:
        touch(root / "MT_Free" / "Imgs" / name)
        touch(root / "MT_Free" / "Imgs" / name.replace(".jpg", ".png"))
    for folder in MTD_DEFECT_FOLDERS:
        for i in range(defects_per_folder):
            touch(root / folder / "Imgs" / f"d{i}.jpg")
            touch(root / folder / "Imgs" / f"d{i}.png")
    return root


MTD_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")


def byte_sorted(names):
    return sorted(names, key=str.encode)


def test_mtd_split_follows_byte_order(tmp_path):
    root = make_mtd(tmp_path)
    ordered = byte_sorted(FREE_NAMES)
    assert ordered[:3] == ["B.jpg", "Z.jpg", "_x.jpg"]
    test = mtd_test_samples(root)
    normals = [s for s in test if not s.is_anomalous]
    assert [s.image_path.name for s in normals] == ordered[::5]
    assert [p.name for p in mtd_train_images(root)] == [n for i, n in enumerate(ordered) if i % 5]
    assert all(s.mask_path is None and s.defect_type == "good" for s in normals)
    defects = [s for s in test if s.is_anomalous]
    assert len(defects) == 5 * len(MTD_DEFECT_FOLDERS)
    assert defects[0].defect_type == "Blowhole"
    assert defects[0].mask_path == defects[0].image_path.with_suffix(".png")


def test_mtd_retrain_halves_by_index_within_each_folder(tmp_path):
    root = make_mtd(tmp_path)
    corrections, measurement = mtd_retrain_halves(root)
    assert [s.image_path.name for s in corrections[:3]] == ["d0.jpg", "d2.jpg", "d4.jpg"]
    assert len(corrections) == 3 * len(MTD_DEFECT_FOLDERS)
    measured_defects = [s for s in measurement if s.is_anomalous]
    assert [s.image_path.name for s in measured_defects[:2]] == ["d1.jpg", "d3.jpg"]
    # The measurement set is the odd half plus the test-split normals.
    test_normals = [s for s in mtd_test_samples(root) if not s.is_anomalous]
    assert [s for s in measurement if not s.is_anomalous] == test_normals
    assert not {s.image_path for s in corrections} & {s.image_path for s in measurement}


def test_mtd_defect_without_mask_is_an_error(tmp_path):
    root = make_mtd(tmp_path)
    (root / "MT_Crack" / "Imgs" / "d3.png").unlink()
    with pytest.raises(FileNotFoundError, match="d3.png"):
        mtd_test_samples(root)


def test_default_mtd_root_prefers_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DSARAD_MTD_ROOT", str(tmp_path))
    assert default_mtd_root() == tmp_path
    # A variable naming nothing falls through to the shared copy (or None).
    monkeypatch.setenv("DSARAD_MTD_ROOT", str(tmp_path / "missing"))
    assert default_mtd_root() != tmp_path / "missing"


def test_real_mtd_split_counts(mtd_root):  # mtd_root: conftest.py, skips without the data set
    train = mtd_train_images(mtd_root)
    test = mtd_test_samples(mtd_root)
    normals = [s for s in test if not s.is_anomalous]
    assert len(train) == 761 and len(normals) == 191 and len(test) - len(normals) == 392
    assert not {p.name for p in train} & {s.image_path.name for s in normals}
    per_type = {t: sum(s.defect_type == t for s in test) for t in MTD_TYPES}
    assert per_type == {"Blowhole": 115, "Break": 85, "Crack": 57, "Fray": 32, "Uneven": 103}
    assert all(s.mask_path.is_file() for s in test if s.is_anomalous)

    corrections, measurement = mtd_retrain_halves(mtd_root)
    assert len(corrections) == 58 + 43 + 29 + 16 + 52 == 198
    assert len(measurement) == 191 + 57 + 42 + 28 + 16 + 51 == 385


def test_real_ball_screw_split_follows_dataset_md(ball_screw_root):
    train = ball_screw_train_images(ball_screw_root)
    test = ball_screw_test_samples(ball_screw_root)
    assert len(train) == 550 and sum(not s.is_anomalous for s in test) == 138
    assert sum(s.is_anomalous for s in test) == 167 and {s.defect_type for s in test} == {"good", "Pitting"}
    assert not {p.name for p in train} & {s.image_path.name for s in test}
    corrections, measurement = ball_screw_retrain_halves(ball_screw_root)
    assert len(corrections) == 84 and sum(s.is_anomalous for s in measurement) == 83
    assert not {ball_screw_sequence(s.image_path) for s in corrections} & \
        {ball_screw_sequence(s.image_path) for s in measurement if s.is_anomalous}
    pitted = test[-1]
    mask = pitted.mask(*pitted.read_image().shape[:2])
    assert mask.shape == (460, 1130) and 0 < mask.sum() < mask.size / 10


def test_mvtec_layout(tmp_path):
    category = tmp_path / "bottle"
    touch(category / "train" / "good" / "000.png")
    touch(category / "train" / "good" / "notes.txt")
    touch(category / "test" / "good" / "000.png")
    touch(category / "test" / "crack" / "000.png")
    touch(category / "test" / "crack" / "001.png")
    touch(category / "ground_truth" / "crack" / "000_mask.png")
    touch(category / "ground_truth" / "crack" / "001_mask.png")
    assert [p.name for p in mvtec_train_images(category)] == ["000.png"]
    samples = mvtec_test_samples(category)
    assert [(s.defect_type, s.is_anomalous) for s in samples] == [("crack", True)] * 2 + [("good", False)]
    assert samples[1].mask_path == category / "ground_truth" / "crack" / "001_mask.png"
    assert samples[2].mask_path is None
    (category / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="001_mask.png"):
        mvtec_test_samples(category)


def test_folder_layout(tmp_path):
    touch(tmp_path / "normal" / "ok.jpg")
    touch(tmp_path / "defect" / "scratch.jpg")
    touch(tmp_path / "masks" / "scratch.png")
    samples = folder_test_samples(tmp_path)
    assert [(s.image_path.name, s.defect_type, s.is_anomalous) for s in samples] == [
        ("ok.jpg", "good", False),
        ("scratch.jpg", "defect", True),
    ]
    assert samples[1].mask_path == tmp_path / "masks" / "scratch.png"
    touch(tmp_path / "defect" / "dent.jpg")
    with pytest.raises(FileNotFoundError, match="dent.png"):
        folder_test_samples(tmp_path)


def test_load_samples_says_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match="mtd, mvtec, folder"):
        load_samples("coco", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_samples("folder", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="MT_Free"):
        load_samples("mtd", tmp_path)
    with pytest.raises(FileNotFoundError, match="test"):
        load_samples("mvtec", tmp_path)
    with pytest.raises(FileNotFoundError, match="normal"):
        load_samples("folder", tmp_path)
    (tmp_path / "normal").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_samples("folder", tmp_path)
    assert len(load_samples("mtd", make_mtd(tmp_path / "mtd"))) == 3 + 25


def test_read_mask_thresholds_and_resizes(tmp_path):
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[:, :3] = 200  # JPEG-like values around the edges still count
    mask[0, 0] = 127
    path = tmp_path / "maske_ü.png"  # non-ASCII on purpose
    cv2.imencode(".png", mask)[1].tofile(str(path))
    read = read_mask(path, 4, 6)
    assert read.dtype == bool and read.sum() == 11 and not read[0, 0]
    bigger = read_mask(path, 8, 12)
    assert bigger.shape == (8, 12) and bigger[:, :6].sum() == 8 * 6 - 4 and not bigger[:, 6:].any()
    assert not read_mask(None, 3, 5).any() and read_mask(None, 3, 5).shape == (3, 5)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        read_mask(bad, 4, 6)
