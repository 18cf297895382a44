"""INT8 export: static QDQ graphs calibrated on real images, fragile parts float, parity-gated
against FP32; the Inspector, samspt-eval and the TensorRT build flow (stand-in) on them."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import onnx
import pytest
import torch

from samspt.export.int8 import INT8_OP_TYPES
from samspt.export.onnx_export import export_model, parse_precisions
from samspt.export.to_onnx import main as export_main
from samspt.export.verify import GATES, VerificationError
from samspt.runtime.errors import ConfigError
from samspt.runtime.inspector import Inspector
from samspt.runtime.manifest import MANIFEST, read_manifest
from samspt.runtime.parity import pooled_mask_iou
from samspt.runtime.samples import bundled_verify_images

IMAGES = bundled_verify_images()[:3]
# The numerically fragile ops: every one of them stays, computing in float.
FLOAT_OPS = ("LayerNormalization", "Softmax", "Erf", "ReduceMean", "Pow", "Sqrt", "Exp",
             "ReduceL2", "ReduceSum")


@pytest.fixture(scope="module")
def example_int8(tmp_path_factory):
    """The bundled example model (trained weights: random ones do not hold INT8 mask parity),
    exported FP32 + INT8 and verified on the bundled samples."""
    from samspt.export.model_source import load_export_model

    model, _, sources = load_export_model()
    out = tmp_path_factory.mktemp("int8") / "example"
    collect = _Collect(logging.WARNING)
    logging.getLogger("samspt.export").addHandler(collect)
    try:
        # Verified on all the bundled samples, as export does by default: the INT8 engine
        # check (samspt-build) judges every one of them.
        result = export_model(model, out, "example", precision="fp32,int8",
                              verify_images=bundled_verify_images(), sources=sources)
    finally:
        logging.getLogger("samspt.export").removeHandler(collect)
    return model, out, result


class _Collect(logging.Handler):
    """Keeps the messages of the export's warnings (:data:`EXPORT_WARNINGS`)."""

    def emit(self, record: logging.LogRecord) -> None:
        EXPORT_WARNINGS.append(record.getMessage())


EXPORT_WARNINGS: list = []


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_precision_names_and_lists():
    assert parse_precisions("both") == ["fp32", "fp16"]
    assert parse_precisions("all") == ["fp32", "fp16", "int8"]
    assert parse_precisions("int8,fp32") == ["fp32", "int8"]
    for bad in ("int4", "", "fp32,int4"):
        with pytest.raises(ConfigError, match="precision must be"):
            parse_precisions(bad)


def test_int8_graphs_quantise_only_weighted_products(example_int8):
    """INT8 weights feed only Conv/MatMul/Gemm (per channel, symmetric); products of two
    activations (attention, the relation) and the box clip read no quantised values; the
    fragile ops are all still there, in float."""
    _, out, result = example_int8
    assert {"encoder.int8.onnx", "encoder.fp32.onnx", MANIFEST} <= {p.name for p in out.iterdir()}
    for kind in ("encoder", "decoder"):
        info = result.manifest.graphs[kind]["int8"]
        if not info["quantization"]["quantized"]:
            assert kind == "decoder" and info["file"] == "decoder.fp32.onnx"
            continue
        model = onnx.load(str(out / info["file"]))
        reference = onnx.load(str(out / f"{kind}.fp32.onnx"))
        producers = _producers(model)
        inits = {i.name: i for i in model.graph.initializer}
        ops = [n.op_type for n in model.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        for op in FLOAT_OPS:
            assert ops.count(op) == [n.op_type for n in reference.graph.node].count(op), op
        quantised = 0
        for node in model.graph.node:
            dq = [producers[i] for i in node.input
                  if i in producers and producers[i].op_type == "DequantizeLinear"]
            dq_weights = [d for d in dq if d.input[0] in inits]
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                zero = onnx.numpy_helper.to_array(inits[node.input[2]])
                assert zero.dtype == np.int8 and not zero.any(), f"{node.name}: not symmetric"
                continue
            if "/relation/" in node.name or "/box_clip" in node.name:
                assert not dq, f"{node.name} ({node.op_type}) reads quantised values"
            if dq_weights:
                assert node.op_type in INT8_OP_TYPES, f"{node.name}: INT8 weights"
                weight = dq_weights[0]
                assert inits[weight.input[0]].data_type == onnx.TensorProto.INT8
                scale = onnx.numpy_helper.to_array(inits[weight.input[1]])
                assert scale.size > 1, f"{node.name}: weights not per channel"
                quantised += 1
            elif node.op_type == "MatMul":
                assert not dq, f"{node.name}: a product of two activations is quantised"
        assert quantised == info["quantization"]["quantized_nodes"] > 0


def test_manifest_holds_int8_parity_within_the_gate(example_int8):
    _, out, result = example_int8
    manifest = read_manifest(out)  # every file hashed, every graph's file listed
    figures = manifest.verification["int8"]
    assert figures["mean_iou"] >= GATES["int8"]["mean_iou"]
    assert figures["min_iou"] >= GATES["int8"]["min_iou"]
    assert {r["image"] for r in figures["per_image"]} == \
        {name for name, _, _ in bundled_verify_images()}
    info = manifest.graphs["encoder"]["int8"]["quantization"]
    # MinMax ranges for the signed graphs (TensorRT's), percentile ones for the CPU variant's
    # encoder; decoders' tensors change shape with the prompts: MinMax ranges
    assert info["calibration"] == {"method": "MinMax", "inputs": info["calibration"]["inputs"]}
    assert info["calibration"]["inputs"] > 0
    cpu = manifest.graphs["encoder"]["int8"]["variants"]["cpu"]["quantization"]
    assert cpu["calibration"] == {"method": "Percentile", "percentile": 99.99,
                                  "inputs": info["calibration"]["inputs"]}
    for graph in [manifest.graphs["decoder"]["int8"]] + list(
            manifest.graphs["decoder"]["int8"].get("variants", {}).values()):
        if graph["quantization"]["quantized"]:
            assert graph["quantization"]["calibration"]["method"] == "MinMax"
    assert manifest.graphs["encoder"]["int8"]["inputs"][0]["dtype"] == "float32"


def test_inspector_runs_int8_graphs_close_to_fp32(example_int8):
    _, out, _ = example_int8
    name, image, boxes = IMAGES[0]
    with Inspector(out, backend="onnxruntime", precision="int8") as int8, \
            Inspector(out, backend="onnxruntime", precision="fp32") as fp32:
        assert int8.precision == "int8"
        a, b = int8.inspect(image, boxes=boxes), fp32.inspect(image, boxes=boxes)
    assert a.masks.shape == b.masks.shape
    assert pooled_mask_iou(a.masks, b.masks) >= GATES["int8"]["min_iou"]
    with pytest.raises(ConfigError, match="precision must be one of fp32, fp16, int8"):
        Inspector(out, precision="int4")


def test_eval_reports_accuracy_through_int8_graphs(example_int8, capsys):
    from samspt.training.evaluate import main as eval_main

    _, out, _ = example_int8
    assert eval_main(["--model", str(out), "--precision", "int8", "--limit", "2", "--json"]) == 0
    printed = capsys.readouterr().out
    assert "int8" in printed


def test_a_missed_int8_gate_fails_the_export_naming_graph_and_image(tmp_path, tiny_spt,
                                                                   monkeypatch):
    import samspt.export.verify as verify

    monkeypatch.setitem(verify.GATES, "int8", {"mean_iou": 1.01, "min_iou": 0.0})
    with pytest.raises(VerificationError, match=r"int8: mean mask IoU .* at image "
                                                r"\w+.*\.int8\.onnx|int8\.onnx.*calib") as err:
        export_model(tiny_spt, tmp_path / "m", "m", precision="int8", verify_images=IMAGES[:1])
    assert "--calib-data" in str(err.value) and IMAGES[0][0] in str(err.value)
    assert not (tmp_path / "m").exists()


def test_unverified_int8_keeps_the_decoder_float_and_says_so(tmp_path, tiny_spt, capsys):
    out = tmp_path / "m"
    assert export_main(["--precision", "int8", "--no-verify", "--out", str(out),
                        "--weights", str(_tiny_weights(tmp_path, tiny_spt))]) == 0
    assert "decoder kept float" in capsys.readouterr().out
    manifest = read_manifest(out)
    decoder = manifest.graphs["decoder"]["int8"]
    assert decoder["file"] == "decoder.fp32.onnx" and not decoder["quantization"]["quantized"]
    assert "not verified" in decoder["quantization"]["reason"]
    assert set(manifest.graphs["encoder"]) == {"int8"}
    # the encoder's CPU variant is written (unverified, like the encoder); the decoder's is not
    assert "variants" not in decoder
    assert sorted(p.name for p in out.iterdir()) == ["decoder.fp32.onnx",
                                                    "encoder.int8-cpu.onnx",
                                                    "encoder.int8.onnx", MANIFEST]
    with Inspector(out, backend="onnxruntime", precision="int8") as inspector:
        result = inspector.inspect(IMAGES[0][1], boxes=IMAGES[0][2])
    assert result.masks.shape[0] == len(IMAGES[0][2])


def _tiny_weights(tmp_path, model):
    from samspt.training.checkpoints import save_spt_weights

    return save_spt_weights(model, tmp_path / "tiny.safetensors", mode="full")


def test_int8_engines_build_strongly_typed_from_the_qdq_graphs(example_int8, tmp_path,
                                                              monkeypatch):
    from samspt.export.trt_build import build_engines
    from samspt.export.trt_options import BuildOptions
    from samspt.runtime.build_record import Profile, ShapeProfiles

    from ..runtime.fake_tensorrt import install_fake_tensorrt

    _, exported, _ = example_int8
    folder = tmp_path / "example"
    shutil.copytree(exported, folder)
    trt, _ = install_fake_tensorrt(monkeypatch)
    small = ShapeProfiles(Profile(1, 4, 8), Profile(1, 2, 6))
    # The images the export verified on: the example's INT8 pair sits near its gate (0.971
    # against 0.97 on them), and a few of them alone fall below it.
    result = build_engines(folder, BuildOptions(precision="int8", profiles=small),
                           images=bundled_verify_images())
    entry = result.build.precisions["int8"]
    assert entry.engines["encoder"].source_file == "encoder.int8.onnx"
    # never the CPU variant (UINT8 activations), even with one in the folder
    assert "variants" in read_manifest(folder).graphs["encoder"]["int8"]
    assert "-cpu" not in entry.engines["decoder"].source_file
    assert entry.verification["mean_iou"] >= GATES["int8"]["mean_iou"]
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert [c["flags"] for c in trt.calls] == [strongly_typed] * 2  # no calibrator
    assert all(c["precision_flags"] == [] for c in trt.calls)
    build = json.loads((result.engine_dir / "build.json").read_text())
    assert "int8" in build["precisions"]
    torch.manual_seed(0)  # keep the module's later tests independent of this one


def test_quantising_leaves_the_root_logger_alone(tmp_path):
    """ONNX Runtime's quantiser logs through ``logging.warning``, which gives an unconfigured
    root logger a stderr handler: every later export log would print twice. Run as the CLI
    runs (a fresh process, samspt's CLI logging only), since pytest configures the root."""
    import subprocess
    import sys

    script = """
import logging, sys
from pathlib import Path
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
from samspt.runtime.logs import configure_cli_logging
from samspt.export.int8 import quantize_graph
configure_cli_logging(0)
folder = Path(sys.argv[1])
x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 4, 4])
y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
w = numpy_helper.from_array(np.random.default_rng(0).random((3, 2, 1, 1), np.float32), "w")
graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["out"], name="conv")],
                          "g", [x], [y], [w])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
          str(folder / "c.onnx"))
feeds = [{"image": np.random.default_rng(1).random((1, 2, 4, 4), np.float32)}]
quantize_graph(folder / "c.onnx", folder / "q.onnx", feeds)
quantize_graph(folder / "c.onnx", folder / "m.onnx", feeds, calibration="minmax")
assert not logging.getLogger().handlers, logging.getLogger().handlers
logging.getLogger("samspt.export.probe").info("exported once")
"""
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("exported once") == 1, run.stderr
    assert "Please consider" not in run.stderr
    assert run.stdout == "", run.stdout   # the histogram calibrators' progress is not printed
    assert (tmp_path / "q.onnx").is_file()


# ------------------------------------------------------------------ the INT8 CPU variant
def _zero_points(model):
    """dtypes of the zero points of QuantizeLinear (activations) and of the DequantizeLinear
    nodes of initializers (weights)."""
    inits = {i.name: i for i in model.graph.initializer}
    acts = {onnx.numpy_helper.to_array(inits[n.input[2]]).dtype.name
            for n in model.graph.node if n.op_type == "QuantizeLinear"}
    weights = {inits[n.input[0]].data_type for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return acts, weights


def test_cpu_variant_is_listed_hashed_unsigned_and_within_the_gate(example_int8):
    """Beside each INT8 graph written, a CPU variant: same calibration views, UINT8 (asymmetric)
    activations, signed per-channel weights; its files hashed; its parity within the gate."""
    _, out, _ = example_int8
    manifest = read_manifest(out)  # hashes checked, variant files listed
    encoder = manifest.graphs["encoder"]["int8"]
    variant = encoder["variants"]["cpu"]
    assert variant["file"] == "encoder.int8-cpu.onnx" and variant["activations"] == "uint8"
    assert variant["execution_provider"] == "CPUExecutionProvider" and not variant["tensorrt"]
    assert variant["quantization"]["calibration"]["inputs"] == \
        encoder["quantization"]["calibration"]["inputs"]
    # Each form keeps float what its own parity needs.
    assert variant["quantization"]["quantized_nodes"] > 0
    for kind in ("encoder", "decoder"):
        graph = manifest.graphs[kind]["int8"]
        if "variants" not in graph:  # dropped (its pair missed the gate) or never written
            assert kind == "decoder"
            assert not graph["quantization"]["quantized"] or \
                "dropped" in graph["variants_dropped"]["cpu"]
            continue
        entry = graph["variants"]["cpu"]
        assert entry["file"] in manifest.files
        assert len(manifest.files[entry["file"]]["sha256"]) == 64
        acts, weights = _zero_points(onnx.load(str(out / entry["file"])))
        assert acts == {"uint8"}, f"{kind}: activations {acts}"
        assert weights == {onnx.TensorProto.INT8}
        signed_acts, _ = _zero_points(onnx.load(str(out / graph["file"])))
        assert signed_acts == {"int8"}, "the graph TensorRT reads stays signed"
    figures = manifest.verification["int8-cpu"]
    assert figures["mean_iou"] >= GATES["int8"]["mean_iou"]
    assert figures["min_iou"] >= GATES["int8"]["min_iou"]


def test_inspector_on_the_cpu_runs_the_cpu_variant(example_int8, caplog, monkeypatch):
    from samspt.runtime import ort_backend
    from samspt.runtime.ort_backend import graph_files

    _, out, _ = example_int8
    name, image, boxes = IMAGES[0]
    with caplog.at_level("INFO", logger="samspt.runtime.ort_backend"), \
            Inspector(out, backend="onnxruntime", precision="int8") as int8, \
            Inspector(out, backend="onnxruntime", precision="fp32") as fp32:
        assert int8.graphs.files[0] == "encoder.int8-cpu.onnx"
        assert fp32.graphs.files[0] == "encoder.fp32.onnx"
        a, b = int8.inspect(image, boxes=boxes), fp32.inspect(image, boxes=boxes)
    assert "encoder.int8-cpu.onnx (the cpu variant)" in caplog.text
    assert pooled_mask_iou(a.masks, b.masks) >= GATES["int8"]["min_iou"]
    manifest = read_manifest(out)
    # CUDA first where this onnxruntime offers it: the plain (signed) graphs
    monkeypatch.setattr(ort_backend, "available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    cuda = graph_files(out, manifest, "int8", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [p.name for p in cuda] == [manifest.graphs[k]["int8"]["file"]
                                      for k in ("encoder", "decoder")]
    # ... and where it does not, ONNX Runtime runs on the CPU: the variant
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["CPUExecutionProvider"])
    cpu = graph_files(out, manifest, "int8", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert cpu[0].name == "encoder.int8-cpu.onnx"


def _without_variants(src, dst):
    """A copy of the model folder as an older samspt wrote it: no variants, no variant files."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / MANIFEST).read_text())
    for kind in manifest["graphs"]:
        for variant in manifest["graphs"][kind]["int8"].pop("variants", {}).values():
            manifest["files"].pop(variant["file"])
            (dst / variant["file"]).unlink()
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_a_folder_without_variants_runs_the_plain_int8_graphs(example_int8, tmp_path):
    _, out, _ = example_int8
    _without_variants(out, tmp_path / "old")
    with Inspector(tmp_path / "old", backend="onnxruntime", precision="int8") as inspector:
        assert inspector.graphs.files[0] == "encoder.int8.onnx"
        assert inspector.inspect(IMAGES[0][1], boxes=IMAGES[0][2]).masks.shape[0] == \
            len(IMAGES[0][2])


def test_a_variant_file_not_listed_under_files_is_refused(example_int8, tmp_path):
    from samspt.runtime.errors import ModelFolderError

    _, out, _ = example_int8
    shutil.copytree(out, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    del manifest["files"]["encoder.int8-cpu.onnx"]
    (tmp_path / "m" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"int8-cpu encoder graph's "
                                               r"'encoder.int8-cpu.onnx' is not listed"):
        read_manifest(tmp_path / "m")


def test_tensorrt_check_leaves_the_cpu_variant_out(example_int8):
    """The parser-list check export runs covers the plain graphs only; given to it, the CPU
    variant would be rejected (UINT8 inside the network): the exclusion is what keeps export's
    log free of TensorRT warnings."""
    from samspt.export.trt_support import check_files
    from samspt.runtime.manifest import tensorrt_graph_files

    _, out, result = example_int8
    graphs = result.manifest.graphs
    files = tensorrt_graph_files(graphs)
    assert "encoder.int8.onnx" in files and not any("-cpu" in f for f in files)
    assert not any(check_files([out / f for f in files]).values())
    rejected = check_files([out / "encoder.int8-cpu.onnx"])
    assert all(any("UINT8" in r for r in v) for v in rejected.values())
    assert not any("rejects" in message for message in EXPORT_WARNINGS)


def test_a_variant_missing_the_gate_is_dropped_decoder_first(example_int8, tmp_path,
                                                            monkeypatch, caplog):
    import copy

    import samspt.export.verify as verify

    _, out, result = example_int8
    for bad, dropped in (("decoder.int8-cpu", {"decoder.int8-cpu.onnx"}),
                         ("int8-cpu", {"decoder.int8-cpu.onnx", "encoder.int8-cpu.onnx"})):
        folder = tmp_path / bad
        shutil.copytree(out, folder)
        graphs = copy.deepcopy(result.manifest.graphs)
        # both variants present, as export writes them before the check
        if "variants" not in graphs["decoder"]["int8"]:
            # (a decoder kept float, as the example's is, stands in for its own variant file)
            graphs["decoder"]["int8"].pop("variants_dropped", None)
            graphs["decoder"]["int8"]["variants"] = {"cpu": {"file": "decoder.int8-cpu.onnx"}}
            shutil.copy(folder / graphs["decoder"]["int8"]["file"],
                        folder / "decoder.int8-cpu.onnx")

        def parity(prepared, encoder, decoder, bad=bad):
            iou = 0.5 if any(bad in p.name for p in (encoder, decoder)) else 1.0
            return {"mean_iou": iou, "min_iou": iou}

        monkeypatch.setattr(verify, "graph_parity", parity)
        with caplog.at_level("WARNING", logger="samspt.export.verify"):
            removed = verify.keep_passing_variants([], folder, graphs)
        assert set(removed) == dropped
        assert not any((folder / f).exists() for f in removed)
        for kind in ("encoder", "decoder"):
            graph = graphs[kind]["int8"]
            gone = f"{kind}.int8-cpu.onnx" in dropped
            assert ("variants" in graph) is not gone
            if gone:
                assert "dropped" in graph["variants_dropped"]["cpu"]
        assert "int8-cpu graphs" in caplog.text and "dropped" in caplog.text


# ------------------------------------------------------------------ calibration
def _conv_graph(path):
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 32, 32])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 2, 1, 1))
                                .astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["out"], name="conv")],
                              "g", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _input_scale(path):
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] == "image")
    return float(inits[node.input[1]])


def test_percentile_ranges_ignore_a_rare_extreme_that_minmax_ranges_stretch_to(tmp_path):
    """One value at 100 among 100,000 within +-3: MinMax spends the 256 steps up to 100 (steps
    of about 0.8, coarser than the values' spread), the percentile range stays near the bulk."""
    from samspt.export.int8 import CALIBRATIONS, Int8Error, quantize_graph

    _conv_graph(tmp_path / "c.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"image": np.clip(rng.standard_normal((1, 2, 32, 32)), -3, 3).astype(np.float32)}
             for _ in range(50)]
    feeds[7]["image"][0, 0, 3, 3] = 100.0
    scales = {}
    for method in CALIBRATIONS:
        info = quantize_graph(tmp_path / "c.onnx", tmp_path / f"{method}.onnx", feeds,
                              calibration=method)
        scales[method] = _input_scale(tmp_path / f"{method}.onnx")
        assert info["calibration"]["inputs"] == 50
    assert scales["minmax"] >= 0.99 * 100 / 127     # symmetric INT8: the extreme is +-127 steps
    assert scales["percentile"] < 6 / 127
    with pytest.raises(Int8Error, match="unknown calibration 'kl'.*percentile, minmax"):
        quantize_graph(tmp_path / "c.onnx", tmp_path / "x.onnx", feeds, calibration="kl")


def test_the_cpu_variant_of_the_example_encoder_keeps_float_only_what_the_gate_needs(
        example_int8):
    """The CPU variant quantises every convolution where that holds the parity gate, and
    otherwise keeps float the fewest nodes, those that cost the masks most (ranked by what the
    gate measures: mask IoU through the graph). The earlier example model needed its first
    convolution float (the one reading the image); the current one needs none."""
    from samspt.export.int8 import quantizable_nodes

    _, out, _ = example_int8
    manifest = read_manifest(out)
    info = manifest.graphs["encoder"]["int8"]["variants"]["cpu"]["quantization"]
    assert manifest.verification["int8-cpu"]["mean_iou"] >= GATES["int8"]["mean_iou"]
    nodes = quantizable_nodes(onnx.load(str(out / "encoder.fp32.onnx"),
                                        load_external_data=False))
    kept = info["kept_float_for_parity"]
    assert info["quantized_nodes"] == len(nodes) - len(kept)
    if "parity_fallback" in info:
        sensitivity = info["parity_fallback"]["sensitivity"]
        ranked = sorted(sensitivity, key=lambda name: -sensitivity[name])
        assert kept == ranked[:len(kept)] and 0 < len(kept) < len(ranked)
    else:
        assert kept == []
