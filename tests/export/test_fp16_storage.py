"""--compact's weight storage: float16 where float16 holds a weight exactly, float32 elsewhere,
so a compact FP32 graph computes what the plain one does."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from samspt.export.fp16 import restore_weights_fp32, store_weights_fp16


def _two_matmuls(exact: np.ndarray, rounded: np.ndarray):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "exact"], ["y"]),
         helper.make_node("MatMul", ["y", "rounded"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(exact, "exact"), numpy_helper.from_array(rounded, "rounded")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_only_weights_float16_holds_exactly_are_stored_as_float16():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(16, 16)).astype(np.float16).astype(np.float32)
    rounded = rng.normal(size=(16, 16)).astype(np.float32)       # not float16 numbers
    assert not np.array_equal(rounded.astype(np.float16).astype(np.float32), rounded)
    model = _two_matmuls(exact, rounded)
    compact = store_weights_fp16(model)
    types = {init.name: init.data_type for init in compact.graph.initializer}
    assert types == {"exact__fp16": TensorProto.FLOAT16, "rounded": TensorProto.FLOAT}
    assert [n.op_type for n in compact.graph.node] == ["Cast", "MatMul", "MatMul"]
    x = rng.normal(size=(1, 16)).astype(np.float32)
    np.testing.assert_array_equal(_run(compact, x), _run(model, x))
    restored = restore_weights_fp32(compact)
    assert {i.name for i in restored.graph.initializer} == {"exact", "rounded"}
    np.testing.assert_array_equal(_run(restored, x), _run(model, x))
