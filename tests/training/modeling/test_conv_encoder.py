"""The conv encoder family (a timm trunk + SAM's neck): configurations, batched views, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samspt.runtime.errors import ConfigError
from samspt.training.modeling.config import ModelConfig, get_config
from samspt.training.modeling.conv_encoder import ConvImageEncoder
from samspt.training.modeling.model import SptSam

from ...conftest import randomize_spt_


def test_conv_configurations_build_and_encode_at_their_stride():
    for name in ("cnn_tiny", "cnn_small"):
        config = get_config(name)
        model = SptSam(config).eval()
        assert isinstance(model.image_encoder, ConvImageEncoder)
        x = torch.zeros(2, 3, config.image_size, config.image_size)
        with torch.no_grad():
            emb = model.encode(x)
        assert emb.shape == (2, config.embedding_channels, config.embedding_size,
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
    with pytest.raises(ConfigError, match="high_res_features needs the conv or hiera encoder"):
        dataclasses.replace(get_config("tiny"), high_res_features=True)
    with pytest.raises(ConfigError, match="strides 1, 2, 4"):
        ConvImageEncoder("resnet10t", 4, 32, high_res=True)


def test_trunk_stochastic_depth_acts_in_training_only():
    config = dataclasses.replace(get_config("cnn_tiny"), encoder_drop_path=0.5)
    assert ModelConfig.from_dict(config.to_dict()) == config
    torch.manual_seed(0)
    model = SptSam(config)
    with torch.no_grad():   # timm zero-initialises each block's last norm: as if trained
        for name, param in model.image_encoder.trunk.named_parameters():
            if name.endswith("bn2.weight") or name.endswith("bn3.weight"):
                param.fill_(1.0)
    x = torch.randn(1, 3, config.image_size, config.image_size)
    model.train()
    trained = [model.encode(x) for _ in range(2)]
    assert not torch.equal(trained[0], trained[1])      # residual blocks dropped at random
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(x), model.encode(x))
    # The same weights without it answer the same in eval mode: the exported graph is unchanged.
    plain = SptSam(dataclasses.replace(config, encoder_drop_path=0.0)).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.encode(x), model.encode(x))
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="encoder_drop_path"):
            dataclasses.replace(config, encoder_drop_path=bad)
    with pytest.raises(ConfigError, match="encoder_drop_path"):
        dataclasses.replace(get_config("tiny"), encoder_drop_path=0.1)


def test_high_res_features_pack_into_the_embedding_and_unpack_exactly():
    from samspt.training.modeling import high_res

    torch.manual_seed(0)
    emb, s1, s0 = torch.randn(2, 32, 8, 8), torch.randn(2, 8, 16, 16), torch.randn(2, 4, 32, 32)
    packed = high_res.pack(emb, s1, s0)
    assert packed.shape == (2, 128, 8, 8)
    out, (u1, u0) = high_res.unpack(packed, 32, True)
    assert torch.equal(out, emb) and torch.equal(u1, s1) and torch.equal(u0, s0)
    assert high_res.unpack(emb, 32, False) == (emb, None)


def test_high_res_fold_is_onnx_space_to_depth_in_value_gradient_and_graph(tmp_path):
    """The fold exports as one SpaceToDepth / DepthToSpace node (not a 6-D transpose, several
    times slower on ONNX Runtime), ONNX Runtime computes what PyTorch computes, and gradients
    pass through it exactly (a permutation: its gradient is the inverse permutation)."""
    import warnings

    import numpy as np
    import onnx
    import onnxruntime as ort

    from samspt.training.modeling import high_res

    class Roundtrip(torch.nn.Module):
        def forward(self, emb, s1, s0):
            packed = high_res.pack(emb, s1, s0)
            _, (u1, u0) = high_res.unpack(packed, 32, True)
            return packed, u1, u0

    torch.manual_seed(0)
    emb, s1, s0 = torch.randn(1, 32, 4, 4), torch.randn(1, 8, 8, 8), torch.randn(1, 4, 16, 16)
    # ONNX SpaceToDepth's order: output channel (dy * r + dx) * C + c
    packed = high_res.pack(emb, s1, s0)
    assert torch.equal(packed[0, 32 + (1 * 2 + 0) * 8 + 5, 2, 3], s1[0, 5, 2 * 2 + 1, 3 * 2])
    path = tmp_path / "fold.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Roundtrip(), (emb, s1, s0), str(path), dynamo=False,
                          opset_version=17, input_names=["emb", "s1", "s0"])
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("SpaceToDepth") == 2 and ops.count("DepthToSpace") == 2
    assert "Transpose" not in ops
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"emb": emb.numpy(), "s1": s1.numpy(), "s0": s0.numpy()})
    for mine, theirs in zip(got, Roundtrip()(emb, s1, s0)):
        np.testing.assert_array_equal(mine, theirs.numpy())
    s0 = s0.clone().requires_grad_(True)
    weight = torch.randn(1, 128, 4, 4)
    (high_res.pack(emb, s1, s0) * weight).sum().backward()
    assert torch.equal(s0.grad, high_res.unpack(weight, 32, True)[1][1])


def test_high_res_features_reach_the_mask_at_pixel_level():
    """A change in one input pixel's high-res features changes logits near that pixel, finer
    than a token: the decoders' upscaling sees the trunk's stride-2 and stride-4 features."""
    torch.manual_seed(0)
    config = get_config("cnn_tiny")
    assert config.high_res_features
    model = randomize_spt_(SptSam(config), scale=0.2).eval()
    size, dim = config.image_size, config.prompt_embed_dim
    coords = torch.tensor([[[4.0, 4.0], [60.0, 60.0]]])
    labels = torch.tensor([[2.0, 3.0]])
    with torch.no_grad():
        emb = model.encode(torch.randn(1, 3, size, size))
        base = model.decode(emb, coords, labels).draft_logits
        bumped = emb.clone()
        bumped[:, 2 * dim:] += 1.0  # the stride-2 features: every pixel of the low-res mask
        other = model.decode(bumped, coords, labels).draft_logits
    assert base.shape[-1] == 4 * config.embedding_size
    assert (other - base).abs().amax() > 1e-3


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
    # Weights already in float16, as shipped weights are: --compact then stores them exactly.
    # FP32 only: an untrained model's logits sit within FP16's rounding of zero over whole
    # boxes; the FP16 graphs of the high-res path are checked on the trained example model
    # (tests/training/test_example_model.py).
    model = randomize_spt_(SptSam(get_config("cnn_tiny")), scale=0.2).half().float().eval()
    result = export_model(model, tmp_path / "m", "cnn_tiny", precision="fp32", compact=True)
    manifest = result.manifest
    assert manifest.views == get_config("cnn_tiny").view_settings
    assert manifest.graphs["encoder"]["fp32"]["inputs"][0]["shape"][0] == "V"
    assert manifest.graphs["encoder"]["fp32"]["weights_storage"] == "float16"
    assert manifest.verification["fp32"]["mean_iou"] >= 0.99
    session = ort.InferenceSession(str(tmp_path / "m" / "encoder.fp32.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    batch = session.run(None, {"image": x})[0]
    single = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(batch, single, atol=1e-4)
