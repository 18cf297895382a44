"""Every exported graph (FP32, FP16, INT8; both model families) against the ONNX-TensorRT parser's
operator lists for TensorRT 10.3 (JetPack 6) and the newest 10.x: op types, the types each op
accepts, the documented restrictions that apply to our nodes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from samspt.export.trt_support import (RULES, TRT_VERSIONS, check_files, check_graph,
                                       kept_version_for, log_check, support_list)
from samspt.runtime.manifest import tensorrt_graph_files
from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_verify_images


def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _rejections(model, version):
    return "\n".join(str(r) for r in check_graph(model, version))


@pytest.mark.parametrize("version", TRT_VERSIONS)
def test_lists_state_their_source_and_version(version):
    data = support_list(version)
    assert data["tensorrt"] == version and data["source"].startswith("https://github.com/onnx/")
    assert data["ops"]["Conv"]["supported"] and "FP32" in data["ops"]["Conv"]["types"]
    assert data["ops"]["DequantizeLinear"]["types"][0] == "INT8"
    assert not data["ops"]["DynamicQuantizeLinear"]["supported"]
    assert len(data["ops"]) > 150


@pytest.fixture(scope="module")
def exported_graphs(tmp_path_factory):
    """The shipped example model's graphs, and tiny models of both families exported FP32 +
    FP16 + INT8 (encoder), with their decoders quantised too (calibrated on a bundled image)."""
    import torch

    from samspt.export.int8 import calibration_views, decoder_feeds, encoder_feeds, \
        quantize_graph
    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model

    paths = sorted(EXAMPLE_MODEL_DIR.glob("*.onnx"))
    images = bundled_verify_images()[:1]
    for name in ("tiny", "cnn_tiny"):
        torch.manual_seed(0)
        model = build_model(name)
        out = tmp_path_factory.mktemp(name) / "model"
        result = export_model(model, out, name, precision="all", verify=False,
                              calib_images=images)
        # what TensorRT is given: the INT8 CPU variants (UINT8 activations) are left out
        paths += sorted(out / f for f in tensorrt_graph_files(result.manifest.graphs))
        config = model.config
        views = calibration_views(images, config.image_size, config.view_settings)
        feeds = decoder_feeds(views, encoder_feeds(views, config.pixel_mean, config.pixel_std),
                              out / "encoder.fp32.onnx")
        quantize_graph(out / "decoder.fp32.onnx", out / "decoder.int8.onnx", feeds)
        paths.append(out / "decoder.int8.onnx")
    return paths


@pytest.mark.parametrize("version", TRT_VERSIONS)
def test_every_exported_graph_passes_the_parser_lists(exported_graphs, version):
    names = {(p.parent.parent.name if p.parent.name == "model" else "example", p.name)
             for p in exported_graphs}
    assert {n for _, n in names} >= {"encoder.fp32.onnx", "encoder.fp16.onnx",
                                     "encoder.int8.onnx", "decoder.fp32.onnx",
                                     "decoder.fp16.onnx", "decoder.int8.onnx"}
    seen = set()
    for path in exported_graphs:
        model = onnx.load(str(path))
        seen |= {n.op_type for n in model.graph.node}
        problems = check_graph(model, version)
        assert not problems, f"{path}: " + "\n".join(map(str, problems))
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "LayerNormalization"} <= seen
    # every op we use that the list restricts has a rule (no restriction passes unread)
    ops = support_list(version)["ops"]
    assert all(op in RULES for op in seen if ops[op].get("restrictions"))


@pytest.mark.parametrize("version", TRT_VERSIONS)
def test_unsigned_qdq_and_unsupported_ops_are_rejected_naming_the_node(version):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(128, np.uint8), "zero")
    model = _graph([helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"],
                                     name="act_quant"),
                    helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"],
                                     name="act_dequant")], [x], [y], [scale, zero])
    text = _rejections(model, version)
    assert "'act_quant' (QuantizeLinear): y_zero_point must be zero" in text
    assert "'act_quant' (QuantizeLinear): output 'q' is UINT8 inside the network" in text
    assert "'act_dequant' (DequantizeLinear): input/output 'q' is UINT8" in text

    signed = _graph([helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="a"),
                     helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"],
                                      name="b")],
                    [x], [y], [scale, numpy_helper.from_array(np.array(0, np.int8), "zero")])
    assert check_graph(signed, version) == []

    unique = _graph([helper.make_node("Unique", ["x"], ["y"], name="dedupe", sorted=1)], [x], [y])
    assert "'dedupe' (Unique): unsupported in TensorRT" in _rejections(unique, version)
    custom = _graph([helper.make_node("Gelu", ["x"], ["y"], name="fused", domain="com.microsoft")],
                    [x], [y])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert "'fused' (Gelu): domain 'com.microsoft'" in _rejections(custom, version)
    doubles = _graph([helper.make_node("Softmax", ["d"], ["e"], name="soft")],
                     [helper.make_tensor_value_info("d", TensorProto.DOUBLE, [1, 4])],
                     [helper.make_tensor_value_info("e", TensorProto.DOUBLE, [1, 4])])
    assert "'soft' (Softmax): input/output 'd' is DOUBLE" in _rejections(doubles, version)


def test_restrictions_that_apply_to_our_nodes_are_checked():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    computed_axes = _graph([helper.make_node("Shape", ["x"], ["s"], name="shape", start=0, end=1),
                            helper.make_node("ReduceSum", ["x", "s"], ["y"], name="pool_sum")],
                           [x], [y])
    for version in TRT_VERSIONS:
        assert "'pool_sum' (ReduceSum): axes must be an initializer" in \
            _rejections(computed_axes, version)
    dilated = _graph([helper.make_node("MaxPool", ["x"], ["y"], name="pool",
                                       kernel_shape=[2, 2], dilations=[2, 2])], [x], [y])
    assert "'pool' (MaxPool): dilations must be empty or all ones" in \
        _rejections(dilated, "10.3")
    cubic = _graph([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up",
                                     mode="cubic")], [x], [y],
                   [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    assert "'up' (Resize): unsupported mode 'cubic'" in _rejections(cubic, "10.15")
    # Slice's axes must be constant in 10.1 GA's list (used for 10.3), not in 10.15's
    sliced = _graph([helper.make_node("Shape", ["x"], ["s"], name="shape", start=0, end=1),
                     helper.make_node("Slice", ["x", "zero", "one", "s"], ["y"], name="cut")],
                    [x], [y], [numpy_helper.from_array(np.array([0], np.int64), "zero"),
                               numpy_helper.from_array(np.array([1], np.int64), "one")])
    assert "'cut' (Slice): axes must be an initializer" in _rejections(sliced, "10.3")
    assert "cut" not in _rejections(sliced, "10.15")
    # Pad's axes (input 3) too, in 10.3's list; a Pad without axes passes (TinyViT's windows)
    padded = _graph([helper.make_node("Shape", ["x"], ["s"], name="shape", start=0, end=1),
                     helper.make_node("Pad", ["x", "pads", "", "s"], ["y"], name="pad")],
                    [x], [y], [numpy_helper.from_array(np.zeros(2, np.int64), "pads")])
    assert "'pad' (Pad): axes must be an initializer" in _rejections(padded, "10.3")
    plain = _graph([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")], [x], [y],
                   [numpy_helper.from_array(np.zeros(8, np.int64), "pads")])
    assert "pad" not in _rejections(plain, "10.3")
    # an op the list restricts without a rule here is reported, not passed
    drop = _graph([helper.make_node("Dropout", ["x"], ["y"], name="drop")], [x], [y])
    assert "'drop' (Dropout): unchecked restriction" in _rejections(drop, "10.15")
    old = _graph([helper.make_node("Relu", ["x"], ["y"], name="r")], [x], [y], opset=21)
    assert "opset 21 is outside TensorRT 10.3's 9..20" in _rejections(old, "10.3")
    assert _rejections(old, "10.15") == ""


@pytest.mark.parametrize("version,kept", [("10.3.0.26", "10.3"), ("10.8.0.43", "10.3"),
                                          ("10.15.1.29", "10.15"), ("11.4.0", "10.15"),
                                          ("8.6.1", "10.3")])
def test_each_tensorrt_version_is_checked_against_the_nearest_kept_list(version, kept):
    assert kept_version_for(version) == kept


def test_export_and_build_report_rejections_by_file_and_node(tmp_path, caplog):
    """What samspt-export and samspt-build log: a warning naming file and node where a list
    rejects something, a line saying so where it accepts everything."""
    import logging

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"], name="act")], [x], [y]), good)
    onnx.save(_graph([helper.make_node("Unique", ["x"], ["y"], name="dedupe", sorted=1)],
                     [x], [y]), bad)
    log = logging.getLogger("test.paper")
    with caplog.at_level(logging.INFO, logger="test.paper"):
        assert log_check(check_files([good]), log)
        assert "TensorRT 10.3's ONNX parser list accepts every node" in caplog.text
        caplog.clear()
        assert not log_check(check_files([good, bad], ["10.15"]), log)
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "bad.onnx: node 'dedupe' (Unique)" in warning[0].getMessage()
    assert "good.onnx" not in warning[0].getMessage()


def test_export_checks_what_it_writes(tmp_path, caplog):
    import logging

    import torch

    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model

    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="samspt.export.onnx_export"):
        export_model(build_model("tiny"), tmp_path / "model", "tiny", precision="fp32",
                     verify=False)
    for version in TRT_VERSIONS:
        assert f"TensorRT {version}'s ONNX parser list accepts every node" in caplog.text
