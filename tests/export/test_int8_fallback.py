"""INT8 parity fallback: an encoder that misses the INT8 gate keeps its most sensitive nodes
float, the fewest that pass, found in few rounds."""

from __future__ import annotations

import math

import onnx
import pytest

from samspt.export.int8_fallback import smallest_passing
from samspt.export.verify import GATES
from samspt.runtime.manifest import read_manifest
from samspt.runtime.samples import bundled_verify_images

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("count, needed", [(14, 9), (14, 1), (14, 14), (50, 23), (1, 1)])
def test_the_fewest_float_nodes_are_found_by_doubling_and_bisecting(count, needed):
    calls = []
    k, tried = smallest_passing(count, lambda k: calls.append(k) or k >= needed)
    assert k == needed and tried == calls
    assert len(tried) <= 2 * math.ceil(math.log2(count)) + 1
    assert count not in tried            # everything float is known to pass


def test_an_encoder_missing_the_gate_keeps_its_most_sensitive_nodes_float(tmp_path):
    """A random conv model does not hold INT8 parity with every node quantised: the export
    keeps float the most sensitive ones, says which in the manifest, and the graphs it writes
    pass the gate."""
    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model

    from ..conftest import randomize_spt_

    torch.manual_seed(0)
    model = randomize_spt_(build_model("cnn_tiny"), scale=0.3).eval()
    out = tmp_path / "m"
    export_model(model, out, "m", precision="fp32,int8",
                 verify_images=bundled_verify_images()[:2])
    manifest = read_manifest(out)
    info = manifest.graphs["encoder"]["int8"]["quantization"]
    kept = info["kept_float_for_parity"]
    ranking = sorted(info["parity_fallback"]["sensitivity"].items(), key=lambda kv: -kv[1])
    assert kept == [name for name, _ in ranking[:len(kept)]] and kept
    graph = onnx.load(str(out / "encoder.int8.onnx"))
    producers = {o: n for n in graph.graph.node for o in n.output}
    reads_int8 = {n.name for n in graph.graph.node
                  if any(i in producers and producers[i].op_type == "DequantizeLinear"
                         for i in n.input) and n.op_type != "QuantizeLinear"}
    assert not reads_int8 & set(kept)
    assert info["quantized_nodes"] == len(ranking) - len(kept)
    variant = manifest.graphs["encoder"]["int8"].get("variants", {}).get("cpu")
    if variant is not None:          # its own search, ranked for unsigned activations
        own = variant["quantization"]["kept_float_for_parity"]
        if own:
            ranked = sorted(variant["quantization"]["parity_fallback"]["sensitivity"].items(),
                            key=lambda kv: -kv[1])
            assert own == [name for name, _ in ranked[:len(own)]]
    figures = manifest.verification["int8"]
    assert figures["mean_iou"] >= GATES["int8"]["mean_iou"]
    assert figures["min_iou"] >= GATES["int8"]["min_iou"]
