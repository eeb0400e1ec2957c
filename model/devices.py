"""The devices a model runs and trains on, as people name them (``--device``).

Without PyTorch, so the command line can offer them before loading it;
``inference.resolve_device`` turns a name into the device.
"""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[Device, ...] = get_args(Device)
# CUDA, then Apple MPS, then the CPU: whatever this computer has.
DEFAULT_DEVICE: Device = "auto"
