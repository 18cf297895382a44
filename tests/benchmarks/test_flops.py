"""The encoder's arithmetic, counted from the configuration."""

from __future__ import annotations

import pytest

from samspt.benchmarks.flops import encoder_figures, encoder_flops, encoder_macs, floor_ms
from samspt.training.modeling.config import get_config


def test_vit_b_is_about_0_97_tflop_counting_a_multiply_add_as_two():
    config = get_config("vit_b")
    assert encoder_macs(config) == pytest.approx(487e9, rel=0.02)
    assert encoder_flops(config) == 2 * encoder_macs(config)
    assert encoder_flops(config) == pytest.approx(0.97e12, rel=0.02)


def test_sizes_grow_and_the_floor_is_flops_over_peak():
    flops = [encoder_flops(get_config(n)) for n in ("tiny", "small", "vit_b", "vit_l", "vit_h")]
    assert flops == sorted(flops)
    assert encoder_flops(get_config("vit_h")) == pytest.approx(5.96e12, rel=0.03)
    vit_b = get_config("vit_b")
    assert floor_ms(vit_b, 100.0) == pytest.approx(encoder_flops(vit_b) / 100e12 * 1e3)
    assert encoder_figures(vit_b)["gflop"] == pytest.approx(encoder_flops(vit_b) / 1e9)


def test_graph_count_matches_hand_counts_and_the_vit_configuration(tmp_path):
    """Counted from an ONNX graph's shapes: a conv + matmul graph by hand, the conv family's
    exported encoders (FP32 and FP16 the same), and a clear refusal where shapes stay unknown."""
    import numpy as np
    import torch
    from onnx import TensorProto, helper, numpy_helper, save

    from samspt.benchmarks.flops import graph_macs
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["V", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((16, 5), np.float32), "m")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("MatMul", ["c", "m"], ["y"])],
                              "g", [x], [y], [w, m])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
         str(tmp_path / "g.onnx"))
    assert graph_macs(tmp_path / "g.onnx") == 8 * 16 * 16 * 27 + 8 * 16 * 5 * 16

    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model

    torch.manual_seed(0)
    export_model(build_model("cnn_tiny"), tmp_path / "cnn", "cnn", precision="both",
                 verify=False)
    counted = graph_macs(tmp_path / "cnn" / "encoder.fp32.onnx")
    assert counted > 0 and graph_macs(tmp_path / "cnn" / "encoder.fp16.onnx") == counted
    assert graph_macs(EXAMPLE_MODEL_DIR / "encoder.fp32.onnx") > 1e8
    export_model(build_model("tiny"), tmp_path / "vit", "vit", precision="fp32", verify=False)
    with pytest.raises(ValueError, match="no static shape for node"):
        graph_macs(tmp_path / "vit" / "encoder.fp32.onnx")


def test_cpu_peak_states_its_basis_and_int8_above_fp32():
    from samspt.benchmarks.peak import cpu_peak, device_peak, gpu_peak

    fp32, int8 = cpu_peak("fp32"), cpu_peak("int8")
    if fp32 is None:
        pytest.skip("this CPU's clock or vector units are not in /proc/cpuinfo")
    assert fp32["tflops"] > 0 and "cores" in fp32["basis"]
    assert int8["tflops"] in (pytest.approx(2 * fp32["tflops"]), pytest.approx(4 * fp32["tflops"]))
    assert device_peak("cpu", "fp16") == fp32          # FP16 graphs compute in FP32 on a CPU
    assert gpu_peak("NVIDIA A100-SXM4-80GB", "fp16")["tflops"] == 312.0
    assert gpu_peak("Some GPU", "fp16") is None
