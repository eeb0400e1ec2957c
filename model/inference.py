"""From an image to a normalised anomaly map and image score.

One preprocessing function serves training and inference, so the two can
never disagree about what the networks see.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .model_file import LoadedModel, load_model


def resize_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) of any size -> (size, size, 3) uint8, area-averaged."""
    interpolation = cv2.INTER_AREA if image.shape[0] >= size and image.shape[1] >= size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float in [0, 1]: no mean/std normalisation."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)


@dataclass
class Prediction:
    score_map: np.ndarray  # float32 (H, W) at the image's own size, normalised: 0.5 = threshold
    image_score: float  # normalised
    raw_image_score: float
    seconds: float
    device: str


class Predictor:
    """Owns a loaded model on one device and turns images into predictions."""

    def __init__(self, model: LoadedModel | os.PathLike | str, device: str = "auto"):
        self.device = resolve_device(device)
        # Denormal floats make CPU inference many times slower on dark images.
        torch.set_flush_denormal(True)
        self.model = model if isinstance(model, LoadedModel) else load_model(Path(model))
        self.network = self.model.network.to(self.device).eval()
        if self.device.type == "cuda":
            self.network = self.network.to(memory_format=torch.channels_last)
        self.input_size = self.model.info.architecture.input_size
        self.normaliser = self.model.info.normaliser

    @property
    def name(self) -> str:
        return self.model.name

    @torch.inference_mode()
    def raw_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, S, S, 3) uint8 at the model's size -> raw maps (B, S, S) and raw scores (B,)."""
        tensor = to_tensor(batch).to(self.device)
        if self.device.type == "cuda":
            tensor = tensor.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                raw_map, raw_score = self.network(tensor)
        else:
            raw_map, raw_score = self.network(tensor)
        return raw_map.float().cpu().numpy(), raw_score.float().cpu().numpy()

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        started = time.perf_counter()
        batch = np.stack([resize_for_model(image, self.input_size) for image in images])
        raw_maps, raw_scores = self.raw_maps(batch)
        elapsed = (time.perf_counter() - started) / len(images)
        predictions = []
        for image, raw_map, raw_score in zip(images, raw_maps, raw_scores):
            height, width = image.shape[:2]
            full_size = cv2.resize(raw_map, (width, height), interpolation=cv2.INTER_LINEAR)
            predictions.append(
                Prediction(
                    score_map=self.normaliser.pixel(full_size).astype(np.float32),
                    image_score=float(self.normaliser.image(float(raw_score))),
                    raw_image_score=float(raw_score),
                    seconds=elapsed,
                    device=self.device.type,
                )
            )
        return predictions

    def predict(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]
