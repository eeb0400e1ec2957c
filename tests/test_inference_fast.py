"""The fast inference paths give the maps of plain eager PyTorch."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from labelme_dsarad.model.export import fuse_batch_norms
from labelme_dsarad.model.inference import Predictor, TorchBackend, choose_backend, physical_core_count

from .test_export import MAP_TOLERANCE, eager_reference, perturbed_model


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    return perturbed_model(tmp_path_factory.mktemp("compact") / "compact.safetensors", seed=3)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))


def test_fusion_removes_every_batch_norm_and_leaves_the_original(compact):
    fused = fuse_batch_norms(compact.network)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in fused.modules())
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in compact.network.modules())


def test_fused_channels_last_path_equals_eager(compact, images):
    expected_map, expected_score = eager_reference(compact, images)
    raw_map, raw_score = TorchBackend(compact.network, torch.device("cpu"))(images)
    assert expected_map.std() > 1e-3  # a flat map would make the comparison vacuous
    np.testing.assert_allclose(raw_map, expected_map, atol=MAP_TOLERANCE, rtol=0)
    np.testing.assert_allclose(raw_score, expected_score, atol=MAP_TOLERANCE, rtol=0)


def test_explicit_attention_equals_sdpa_in_both_layouts(compact, images):
    """Channels-last makes the attention inputs contiguous, so SDPA takes another kernel."""
    attention = compact.network.student.encoder.attention
    encoder = compact.network.student.encoder
    with torch.inference_mode():
        features = encoder.block2(torch.nn.functional.max_pool2d(encoder.block1(images), 2))
        attention.explicit_attention = True
        explicit = attention(features)
        attention.explicit_attention = False
        generic = attention(features)
        flash = attention(features.contiguous(memory_format=torch.channels_last))
    assert (explicit - features).abs().max() > 1e-3  # the attention really contributes
    torch.testing.assert_close(generic, explicit, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(flash, explicit, atol=1e-5, rtol=1e-4)


def test_torch_and_onnx_backends_give_the_same_prediction(compact):
    image = np.random.default_rng(5).integers(0, 256, (80, 60, 3), dtype=np.uint8)
    by_torch = Predictor(compact, backend="torch").predict_batch([image, image[::-1]])
    by_onnx = Predictor(compact, backend="onnx").predict_batch([image, image[::-1]])
    for a, b in zip(by_torch, by_onnx):
        assert a.score_map.shape == (80, 60)
        # Normalised maps stretch raw differences by up to 0.5 / threshold.
        np.testing.assert_allclose(a.score_map, b.score_map, atol=2 * MAP_TOLERANCE, rtol=0)
        assert a.image_score == pytest.approx(b.image_score, abs=2 * MAP_TOLERANCE)


def test_auto_backend_is_onnxruntime_on_the_cpu_and_torch_on_a_gpu():
    assert choose_backend("auto", torch.device("cpu")) == "onnx"
    assert choose_backend("auto", torch.device("cuda")) == "torch"
    assert choose_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        choose_backend("onnx", torch.device("cuda"))
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("tensorrt", torch.device("cpu"))


def test_physical_core_count_is_within_the_cpus_we_may_use():
    assert 1 <= physical_core_count() <= os.cpu_count()
