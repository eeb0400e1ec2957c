"""The network every fast path is compared on; tests and bench/ share it."""

from __future__ import annotations

import torch

from labelme_dsarad.model.model_file import preset_architecture
from labelme_dsarad.model.networks import DSARAD


def perturbed_network(preset: str, input_size: int, seed: int) -> DSARAD:
    """Random weights, with BatchNorms and the attention away from their identity start.

    Fresh BatchNorms (mean 0, variance 1), the zero-initialised attention
    output and the identity map correction would let a broken fusion,
    attention or correction pass unnoticed. Speed does not depend on the
    weights.
    """
    torch.manual_seed(seed)
    network = DSARAD(preset_architecture(preset, input_size)).eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None  # tracked by default
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        torch.nn.init.normal_(network.student.encoder.attention.out.weight, std=0.05)
        size = network.architecture.input_size
        network.map_correction.set(torch.rand(size, size) + 0.5, torch.rand(size, size) * 0.2 - 0.1)
    return network
