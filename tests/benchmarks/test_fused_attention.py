"""Hiera's attention fused for ONNX Runtime's CPU kernels: every attention found, each in the
flash layout, the same outputs as the exported graph (a tiny SAM 2 Hiera, random weights)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from samspt.benchmarks.fused_attention import MHA, fuse_attention
from samspt.benchmarks.models import spt_model
from samspt.export.onnx_export import export_model

pytest.importorskip("sam2")


@pytest.fixture(scope="module")
def tiny_hiera(tmp_path_factory):
    model = spt_model("sam2_hiera_tiny")
    folder = tmp_path_factory.mktemp("hiera")
    export_model(model, folder, "hiera", precision="fp32", verify=False,
                 stage=lambda text: None)
    return model, folder


def _run(path, image):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def test_every_attention_is_fused_in_the_flash_layout_and_computes_the_same(tiny_hiera,
                                                                            tmp_path):
    model, folder = tiny_hiera
    blocks = len(model.image_encoder.trunk.blocks)
    out = tmp_path / "fused.onnx"
    counts = fuse_attention(folder / "encoder.fp32.onnx", out)
    assert counts == {"fused": blocks, "flash_layout": blocks}
    graph = onnx.load(str(out)).graph
    producer = {name: node for node in graph.node for name in node.output}
    attentions = [node for node in graph.node if node.op_type == MHA]
    assert len(attentions) == blocks
    for node in attentions:       # query, key and value as (batch, sequence, hidden)
        assert [producer[name].op_type for name in node.input[1:3]] == ["Reshape", "Reshape"]
    size = model.config.image_size
    image = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    np.testing.assert_allclose(_run(out, image), _run(folder / "encoder.fp32.onnx", image),
                               rtol=1e-4, atol=1e-4)


def test_a_graph_without_attention_is_left_without_fusion(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["image_embeddings"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                             [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("image_embeddings",
                                                             TensorProto.FLOAT, [1, 3, 8, 8])])
    src = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    assert fuse_attention(src, tmp_path / "out.onnx") == {"fused": 0, "flash_layout": 0}
