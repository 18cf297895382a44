"""The conv encoder family (a timm trunk + SAM's neck): configurations, batched views, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samspt.runtime.errors import ConfigError
from samspt.training.config import ModelConfig, get_config
from samspt.training.conv_encoder import ConvImageEncoder
from samspt.training.model import SptSam

from ..conftest import randomize_spt_


def test_conv_configurations_build_and_encode_at_their_stride():
    for name in ("cnn_tiny", "cnn_small"):
        config = get_config(name)
        model = SptSam(config).eval()
        assert isinstance(model.image_encoder, ConvImageEncoder)
        x = torch.zeros(2, 3, config.image_size, config.image_size)
        with torch.no_grad():
            emb = model.encode(x)
        assert emb.shape == (2, config.prompt_embed_dim, config.embedding_size,
                             config.embedding_size)
        assert config.view_settings is not None
        # Round trip through the JSON metadata that travels with weights and manifests.
        assert ModelConfig.from_dict(config.to_dict()) == config


def test_bad_conv_configurations_are_refused():
    base = get_config("cnn_tiny")
    with pytest.raises(ConfigError, match="encoder_arch"):
        dataclasses.replace(base, encoder_arch=None)
    with pytest.raises(ConfigError, match="encoder must be one of"):
        dataclasses.replace(base, encoder="swin")
    with pytest.raises(ConfigError, match="feature strides"):
        ConvImageEncoder("resnet10t", 3, 32)
    with pytest.raises(ConfigError, match="no architecture"):
        ConvImageEncoder("not_a_timm_model", 8, 32)


def test_decoding_a_batch_of_views_equals_decoding_each_view():
    """Training decodes B views (one prompt each) in one call, each with its own relation."""
    torch.manual_seed(0)
    model = randomize_spt_(SptSam(get_config("cnn_tiny")), scale=0.2).eval()
    size = model.config.image_size
    images = torch.randn(3, 3, size, size)
    coords = torch.tensor([[[4.0, 6.0], [30.0, 40.0]], [[10.0, 10.0], [50.0, 20.0]],
                           [[0.0, 0.0], [63.0, 63.0]]])
    labels = torch.tensor([[2.0, 3.0]] * 3)
    with torch.no_grad():
        emb = model.encode(images)
        together = model.decode(emb, coords, labels)
        for i in range(3):
            alone = model.decode(emb[i:i + 1], coords[i:i + 1], labels[i:i + 1])
            torch.testing.assert_close(together.logits[i:i + 1], alone.logits, atol=1e-4,
                                       rtol=1e-4)
            torch.testing.assert_close(together.draft_logits[i:i + 1], alone.draft_logits,
                                       atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(together.scores[i:i + 1], alone.scores, atol=1e-5,
                                       rtol=1e-4)


def test_conv_models_export_verified_with_a_batched_encoder(tmp_path):
    import onnxruntime as ort

    from samspt.export.onnx_export import export_model

    torch.manual_seed(0)
    model = randomize_spt_(SptSam(get_config("cnn_tiny")), scale=0.2).eval()
    result = export_model(model, tmp_path / "m", "cnn_tiny", compact=True)
    manifest = result.manifest
    assert manifest["views"] == get_config("cnn_tiny").view_settings.to_dict()
    assert manifest["graphs"]["encoder"]["fp32"]["inputs"][0]["shape"][0] == "V"
    assert manifest["graphs"]["encoder"]["fp32"]["weights_storage"] == "float16"
    assert manifest["verification"]["fp32"]["mean_iou"] >= 0.99
    session = ort.InferenceSession(str(tmp_path / "m" / "encoder.fp32.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    batch = session.run(None, {"image": x})[0]
    single = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(batch, single, atol=1e-4)
