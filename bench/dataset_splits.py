"""Where the shared data sets are, and the splits only experiments use.

A retraining experiment learns from one half of a data set's defects (the
"corrections", used as if a person had labelled them) and reports on the
other half plus the test split's defect-free images (the "measurement"), as
each data set's DATASET.md defines them
(``../shared/datasets/<name>/DATASET.md`` beside the checkout). The product
reads the data sets through ``labelme_dsarad.train.datasets``; these halves
are built from its test splits.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from labelme_dsarad.train.datasets import Sample, ball_screw_test_samples, mtd_test_samples

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def default_mtd_root() -> Path | None:
    """The Magnetic Tile folder: ``$DSARAD_MTD_ROOT``, else the shared copy; the first that exists, else None."""
    candidates = [Path(os.environ["DSARAD_MTD_ROOT"])] if os.environ.get("DSARAD_MTD_ROOT") else []
    candidates.append(SHARED_DATASETS / "magnetic_tile")
    return next((path for path in candidates if path.is_dir()), None)


def default_ball_screw_root() -> Path | None:
    """The shared ball screw (BSData) folder, or None where it is absent."""
    root = SHARED_DATASETS / "ball_screw"
    return root if (root / "data").is_dir() else None


def mtd_retrain_halves(root: Path) -> tuple[list[Sample], list[Sample]]:
    """(corrections, measurement): within each defect folder, in byte order, even 0-based indices
    go to corrections and odd ones to measurement, which also holds the test-split MT_Free images."""
    test = mtd_test_samples(root)
    corrections: list[Sample] = []
    measured: list[Sample] = []
    seen: Counter[str] = Counter()
    for sample in test:
        if sample.is_anomalous:
            (corrections if seen[sample.defect_type] % 2 == 0 else measured).append(sample)
            seen[sample.defect_type] += 1
    return corrections, [sample for sample in test if not sample.is_anomalous] + measured


def ball_screw_sequence(image: Path) -> str:
    """A wear sequence: the 3rd and 4th name fields (``01_200907033001_332500_225_crop_2`` -> ``332500_225``)."""
    return "_".join(image.stem.split("_")[2:4])


def ball_screw_retrain_halves(root: Path) -> tuple[list[Sample], list[Sample]]:
    """(corrections, measurement) by wear sequence: the sequences with pitting, sorted by name,
    even index to corrections, odd to measurement, which also holds the test-split defect-free images."""
    test = ball_screw_test_samples(root)
    pitted = [sample for sample in test if sample.is_anomalous]
    sequences = sorted({ball_screw_sequence(sample.image_path) for sample in pitted}, key=str.encode)
    half = {sequence: index % 2 for index, sequence in enumerate(sequences)}
    corrections = [sample for sample in pitted if half[ball_screw_sequence(sample.image_path)] == 0]
    measured = [sample for sample in pitted if half[ball_screw_sequence(sample.image_path)] == 1]
    return corrections, [sample for sample in test if not sample.is_anomalous] + measured
