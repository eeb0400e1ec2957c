"""The numbers that fix the networks' shapes, without PyTorch.

Model files store them in their header; a review station without PyTorch
reads and checks them (``model_file.parse_header``) before running the ONNX
graph the file carries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Architecture:
    """The numbers that fix the networks' shapes; stored in every model file."""

    preset: str
    reconstruction_width: int  # w
    segmentation_width: int  # d
    input_size: int  # square side the networks see
    # Side of the mean-pooling window of the image score (odd). The paper's
    # 21 at 256 px; training chooses it per product (train/calibration.py).
    score_window: int = 21
    # Defect kinds the segmentation network also names, learnt from people's
    # labels (retraining); empty: every defect is the model's one label.
    kinds: tuple[str, ...] = ()
    # The U-Net's logits averaged over the four mirror images of its input (``segmentation_logits``):
    # set by retraining, whose suggestions it outlines better (train/retrain.py) for four passes
    # of the U-Net instead of one.
    flip_average: bool = False
    # Photo pixels per model pixel, the same across and along: photos are resized by it and covered
    # by tiles of input_size (model/tiles.py), so a thin defect keeps its shape. 0: every photo is
    # squashed to one input_size square, as model files written before scales existed.
    scale: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "kinds": list(self.kinds)}

    def input_description(self) -> str:
        """What the networks see, for people: '128 px' (photos squashed), or tiles at a scale."""
        if not self.scale:
            return f"{self.input_size} px"
        return f"{self.input_size} px tiles, {self.scale:g} photo px per pixel"


# Five 2x poolings: every side the networks take is a multiple of this.
SIDE_MULTIPLE = 32


def check_input_size(size: int) -> None:
    """ValueError unless the networks can take ``size`` x ``size`` images."""
    if size < SIDE_MULTIPLE or size % SIDE_MULTIPLE:
        raise ValueError(f"input size must be a multiple of {SIDE_MULTIPLE} (five 2x poolings), got {size}")


PRESETS = {
    "paper": Architecture("paper", 128, 64, 256),
    "compact": Architecture("compact", 32, 16, 256),
    # Small enough that tests train and run it in seconds on two cores.
    "tiny": Architecture("tiny", 4, 4, 64),
}
