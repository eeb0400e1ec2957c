"""A retrain's settings, without PyTorch: ``dsarad retrain`` and the plugin's retrain dialog take
their defaults from here, and ``retrain.retrain`` runs them."""

from __future__ import annotations

from dataclasses import dataclass

from labelme_dsarad.model.devices import DEFAULT_DEVICE

DEFAULT_MINUTES = 10.0  # the training budget when neither minutes nor steps are given


@dataclass
class RetrainConfig:
    product: str
    labels_dir: str
    store_root: str | None = None
    base_model: str | None = None  # default: the product's model in use in the store
    normal_images: tuple[str, ...] = ()  # defect-free images beside the reviewed ones (the first training's)
    minutes: float | None = None
    steps: int | None = None
    holdout: float = 0.25
    calibration: float = 0.25  # of what the holdout leaves
    batch_size: int = 8  # whole images at the model's size
    # The first training's peak rate, not a gentler fine-tuning one: in a retrain's minutes the warm
    # U-Net underfits the corrections it trains on (see retrain's module docstring).
    learning_rate: float = 1e-3
    real_share: float = 0.875  # of each batch: real defect images
    synthetic_share: float = 0.125  # reviewed normals with synthetic anomalies; the rest: normals as they are
    device: str = DEFAULT_DEVICE
    seed: int = 0

    def __post_init__(self):
        if self.minutes is not None and self.steps is not None:
            raise ValueError("give at most one of minutes or steps")
        if self.minutes is None and self.steps is None:
            self.minutes = DEFAULT_MINUTES
        if (self.minutes is not None and self.minutes <= 0) or (self.steps is not None and self.steps <= 0):
            raise ValueError("the retraining budget must be positive")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be 1 or more, got {self.batch_size}")
        for name in ("holdout", "calibration", "real_share", "synthetic_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.real_share + self.synthetic_share > 1.0:
            raise ValueError(f"real_share + synthetic_share must be at most 1, got {self.real_share + self.synthetic_share}")
