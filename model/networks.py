"""The DSARAD networks: reconstruction (teacher and student) and segmentation.

Plain PyTorch, in the paper's vocabulary. The training wrapper and the losses
live in ``labelme_dsarad.train``; nothing here knows about training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Defined without PyTorch for model headers; imported here too, where they were first defined.
from .architecture import PRESETS, SIDE_MULTIPLE, Architecture, check_input_size  # noqa: F401


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(in_channels, out_channels), *conv_bn_relu(out_channels, out_channels))


def upsample_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        *conv_bn_relu(in_channels, out_channels),
    )


class SpatialAttention(nn.Module):
    """Non-local spatial attention with a residual connection.

    Keys and values are max-pooled 2x2, and the softmax is unscaled, as in the
    paper. The output projection starts at zero, so the block is the identity
    at initialisation and training decides how much attention to mix in.
    """

    def __init__(self, channels: int, inner_channels: int):
        super().__init__()
        self.theta = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.g = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.out = nn.Conv2d(inner_channels, channels, kernel_size=3, padding=1)
        self.out_norm: nn.Module = nn.BatchNorm2d(channels)  # export.fuse_batch_norms replaces it by an Identity
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None  # Conv2d has a bias unless told otherwise
        nn.init.zeros_(self.out.bias)
        # The explicit 16k x 4k attention matrix is the reference for tests and
        # benchmarks; the fused path gives the same numbers in a fraction of
        # the memory and time.
        self.explicit_attention = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # Contiguous q/k/v: otherwise SDPA on the CPU falls back to a generic
        # kernel slower even than the explicit matrix.
        query = self.theta(x).flatten(2).transpose(1, 2).contiguous()  # B, HW, C'
        key = F.max_pool2d(self.phi(x), 2).flatten(2).transpose(1, 2).contiguous()  # B, HW/4, C'
        value = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2).contiguous()
        if self.explicit_attention:
            weights = torch.softmax(query @ key.transpose(1, 2), dim=-1)
            attended = weights @ value
        else:
            attended = F.scaled_dot_product_attention(
                query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), scale=1.0
            ).squeeze(1)
        attended = attended.transpose(1, 2).reshape(batch, -1, height, width)
        return x + self.out_norm(self.out(attended))


class ReconstructionEncoder(nn.Module):
    def __init__(self, width: int, in_channels: int = 3):
        super().__init__()
        w = width
        self.block1 = double_conv(in_channels, w)
        self.block2 = double_conv(w, 2 * w)
        self.attention = SpatialAttention(2 * w, w)
        self.block3 = double_conv(2 * w, 4 * w)
        self.block4 = double_conv(4 * w, 8 * w)
        self.block5 = double_conv(8 * w, 8 * w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the bottleneck and the block outputs b1..b4 for distillation."""
        b1 = self.block1(x)
        b2 = self.attention(self.block2(F.max_pool2d(b1, 2)))
        b3 = self.block3(F.max_pool2d(b2, 2))
        b4 = self.block4(F.max_pool2d(b3, 2))
        bottleneck = self.block5(F.max_pool2d(b4, 2))
        return bottleneck, [b1, b2, b3, b4]


class ReconstructionDecoder(nn.Module):
    """Decoder without skip connections, so anomalies cannot leak through."""

    def __init__(self, width: int, out_channels: int = 3):
        super().__init__()
        w = width
        stages = []
        for incoming, outgoing in [(8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w), (w, w)]:
            stages.append(
                nn.Sequential(
                    upsample_conv(incoming, incoming),
                    *conv_bn_relu(incoming, incoming),
                    *conv_bn_relu(incoming, outgoing),
                )
            )
        self.stages = nn.Sequential(*stages)
        self.to_image = nn.Conv2d(w, out_channels, kernel_size=3, padding=1)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.to_image(self.stages(bottleneck))


class ReconstructionNetwork(nn.Module):
    """Teacher and student share this shape."""

    def __init__(self, width: int):
        super().__init__()
        self.encoder = ReconstructionEncoder(width)
        self.decoder = ReconstructionDecoder(width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the reconstruction and the encoder features b1..b4."""
        bottleneck, features = self.encoder(x)
        return self.decoder(bottleneck), features


ANOMALY_LOGITS = 2  # normal, anomalous


class SegmentationNetwork(nn.Module):
    """U-Net over [reconstruction, input]: two anomaly logits per pixel, then one per defect kind."""

    def __init__(self, width: int, kinds: int = 0, in_channels: int = 6):
        super().__init__()
        d = width
        encoder_widths = [d, 2 * d, 4 * d, 8 * d, 8 * d, 8 * d]
        self.encoder_blocks = nn.ModuleList()
        previous = in_channels
        for channels in encoder_widths:
            self.encoder_blocks.append(double_conv(previous, channels))
            previous = channels
        self.up_stages = nn.ModuleList()
        self.decoder_blocks = nn.ModuleList()
        for skip_channels, outgoing in zip(reversed(encoder_widths[:-1]), [8 * d, 4 * d, 2 * d, d, d]):
            self.up_stages.append(upsample_conv(previous, outgoing))
            self.decoder_blocks.append(double_conv(outgoing + skip_channels, outgoing))
            previous = outgoing
        self.to_logits = nn.Conv2d(d, ANOMALY_LOGITS + kinds, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.encoder_blocks):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up_stages, self.decoder_blocks):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.to_logits(x)


MIRRORS = ((), (-1,), (-2,), (-1, -2))  # the flips ``segmentation_logits`` averages over


def segmentation_logits(student: ReconstructionNetwork, segmentation: SegmentationNetwork,
                        image: torch.Tensor, flip_average: bool = False) -> torch.Tensor:
    """(B, 2 + kinds, H, W): the U-Net's logits over [the student's reconstruction, the input];
    with ``flip_average``, their mean over the input's mirror images, each flipped back. The
    student reconstructs once: only the U-Net is mirrored."""
    reconstruction, _ = student(image)
    pair = torch.cat([reconstruction, image], dim=1)
    if not flip_average:
        return segmentation(pair)
    # One batch of all mirror images: one pass of the U-Net, not four.
    mirrored = segmentation(torch.cat([pair.flip(dims) if dims else pair for dims in MIRRORS]))
    unflipped = [logits.flip(dims) if dims else logits for logits, dims in zip(mirrored.chunk(len(MIRRORS)), MIRRORS)]
    return torch.stack(unflipped).mean(dim=0)


def anomaly_probability(logits: torch.Tensor) -> torch.Tensor:
    """Raw anomaly map (B, H, W): probability of the anomaly class."""
    return torch.softmax(logits[:, :ANOMALY_LOGITS], dim=1)[:, 1]


def kind_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, kinds, H, W): which kind a defect at each pixel would be."""
    return torch.softmax(logits[:, ANOMALY_LOGITS:], dim=1)


def image_score(raw_map: torch.Tensor, window: int) -> torch.Tensor:
    """Image score (B,): the maximum of the map after ``window`` x ``window`` mean pooling."""
    # Zero padding counts, as in DRAEM's scoring: a window at the border is diluted.
    pooled = F.avg_pool2d(raw_map.unsqueeze(1), window, stride=1, padding=window // 2)
    return pooled.flatten(1).amax(dim=1)


class MapCorrection(nn.Module):
    """A per-pixel affine correction of the raw map, ``clamp(map * gain + offset, 0, 1)``.

    Zero-padded convolutions leave every map with a position-dependent level
    and spread: on defect-free images the border scores higher than the
    interior and holds many of each map's highest pixels. Training fits
    ``gain`` (at most 1) and ``offset`` on normal images
    (``train/calibration.py``) so that no position has a higher level or a
    wider spread there than the median position; the identity until then,
    and for model files written before it existed. Kept at the model's
    input size and resized to the map's, so the network stays size-generic.
    """

    gain: torch.Tensor
    offset: torch.Tensor

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("gain", torch.ones(size, size))
        self.register_buffer("offset", torch.zeros(size, size))

    def forward(self, raw_map: torch.Tensor) -> torch.Tensor:
        planes = torch.stack([self.gain, self.offset]).unsqueeze(0)
        # Bilinear at the same size returns the planes exactly.
        gain, offset = F.interpolate(planes, size=raw_map.shape[-2:], mode="bilinear", align_corners=False)[0]
        return (raw_map * gain + offset).clamp(0.0, 1.0)

    def set(self, gain: torch.Tensor, offset: torch.Tensor) -> None:
        with torch.no_grad():
            self.gain.copy_(gain)
            self.offset.copy_(offset)

    def reset(self) -> None:
        self.set(torch.ones_like(self.gain), torch.zeros_like(self.offset))


class DSARAD(nn.Module):
    """What inference needs: the student, the segmentation network and the map's correction."""

    def __init__(self, architecture: Architecture):
        super().__init__()
        self.architecture = architecture
        self.student = ReconstructionNetwork(architecture.reconstruction_width)
        self.segmentation = SegmentationNetwork(architecture.segmentation_width, len(architecture.kinds))
        self.map_correction = MapCorrection(architecture.input_size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The raw anomaly map (B, H, W), the raw image score (B,) and, when the model knows
        defect kinds, their probabilities (B, kinds, H, W)."""
        logits = segmentation_logits(self.student, self.segmentation, image, self.architecture.flip_average)
        raw_map = self.map_correction(anomaly_probability(logits))
        outputs = (raw_map, image_score(raw_map, self.architecture.score_window))
        return (*outputs, kind_probabilities(logits)) if self.architecture.kinds else outputs

    def set_explicit_attention(self, explicit: bool) -> None:
        self.student.encoder.attention.explicit_attention = explicit


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
