"""ONNX export of small configurations: both graphs, both precisions, dynamic B and N,
merged-encoder structure, manifest, failure cases."""

from __future__ import annotations

import collections
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from samspt.export.fp16 import FP32_OP_TYPES
from samspt.export.onnx_export import export_model
from samspt.export.to_onnx import main as export_main
from samspt.export.verify import VerificationError
from samspt.runtime import tensors
from samspt.runtime.errors import ConfigError, ModelFolderError
from samspt.runtime.manifest import MANIFEST, read_manifest
from samspt.runtime.samples import bundled_verify_images
from samspt.training.checkpoints import save_spt_weights
from samspt.training.modeling.config import ModelConfig

from ..conftest import randomize_spt_

IMAGES = bundled_verify_images()[:3]  # keeps the suite fast; the CLI test uses all six


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from samspt.training.checkpoints import build_model

    torch.manual_seed(0)
    model = randomize_spt_(build_model("tiny"), scale=0.1)
    out = tmp_path_factory.mktemp("export") / "tiny"
    result = export_model(model, out, "tiny", verify_images=IMAGES)
    return model, out, result


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_folder_holds_both_graphs_in_both_precisions(exported):
    _, out, result = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "decoder.fp16.onnx", "decoder.fp32.onnx", "encoder.fp16.onnx", "encoder.fp32.onnx",
        MANIFEST]
    for name in result.files:
        onnx.checker.check_model(str(out / name))
    assert not list(out.parent.glob(".*tmp*"))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("batch,points", [(1, 1), (1, 2), (5, 3), (16, 4)])
def test_decoder_graph_takes_any_number_of_prompts_and_points(exported, precision, batch,
                                                              points):
    model, out, _ = exported
    session = _session(out / f"decoder.{precision}.onnx")
    gen = torch.Generator().manual_seed(batch * 10 + points)
    emb = torch.randn(1, 32, 8, 8, generator=gen)
    coords = torch.rand(batch, points, 2, generator=gen) * 64
    labels = torch.randint(-1, 4, (batch, points), generator=gen).float()
    draft, logits, scores = session.run(None, {"image_embeddings": emb.numpy(),
                                               "point_coords": coords.numpy(),
                                               "point_labels": labels.numpy()})
    assert draft.shape == logits.shape == (batch, 1, 32, 32) and scores.shape == (batch, 1)
    assert draft.dtype == logits.dtype == scores.dtype == np.float32
    with torch.no_grad():
        ref = model.decode(emb, coords, labels)
    tol = 1e-4 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(logits, ref.logits.numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(draft, ref.draft_logits.numpy(), atol=tol, rtol=tol)


def test_graph_io_follows_the_contract(exported):
    _, out, _ = exported
    for precision in ("fp32", "fp16"):
        enc = onnx.load(str(out / f"encoder.{precision}.onnx"))
        dec = onnx.load(str(out / f"decoder.{precision}.onnx"))
        assert [i.name for i in enc.graph.input] == list(tensors.ENCODER_INPUTS)
        assert [o.name for o in enc.graph.output] == list(tensors.ENCODER_OUTPUTS)
        assert [i.name for i in dec.graph.input] == list(tensors.DECODER_INPUTS)
        assert [o.name for o in dec.graph.output] == list(tensors.DECODER_OUTPUTS)
        for value in list(dec.graph.input) + list(dec.graph.output):
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert enc.opset_import[0].version >= 17


def _op_counts(path_or_proto, ops=("MatMul", "Conv", "Softmax", "Gemm", "Einsum")):
    proto = onnx.load(str(path_or_proto)) if not isinstance(path_or_proto, onnx.ModelProto) \
        else path_or_proto
    counts = collections.Counter(n.op_type for n in proto.graph.node)
    return {op: counts[op] for op in ops}


def test_merged_encoder_has_the_structure_of_segment_anything_encoder(exported, tmp_path,
                                                                      tiny_sam):
    _, out, _ = exported
    vanilla = tmp_path / "vanilla_encoder.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny_sam.image_encoder.eval(), (torch.zeros(1, 3, 64, 64),),
                          str(vanilla), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["image_embeddings"])
    ours = _op_counts(out / "encoder.fp32.onnx")
    assert ours == _op_counts(vanilla)
    assert ours["MatMul"] > 0 and ours["Softmax"] == 2  # two blocks


def test_decoder_computes_the_relation_once_and_stores_no_token_matrix(exported):
    _, out, _ = exported
    proto = onnx.load(str(out / "decoder.fp32.onnx"))
    relation = [n for n in proto.graph.node if "/relation/" in n.name]
    assert sum(n.op_type == "ReduceL2" for n in relation) == 1  # one L2 normalisation per call
    assert sum(n.op_type == "MatMul" for n in relation) == 1  # one similarity matrix per call
    tokens = 8 * 8
    for init in proto.graph.initializer:
        assert int(np.prod(init.dims)) < tokens * tokens, init.name
    for node in proto.graph.node:
        if node.op_type == "Constant":
            assert int(np.prod(node.attribute[0].t.dims)) < tokens * tokens, node.name
    assert not any(i.name == "orig_im_size" for i in proto.graph.input)


def test_fp16_graphs_keep_fragile_parts_in_fp32(exported):
    _, out, _ = exported
    proto = onnx.load(str(out / "decoder.fp16.onnx"))
    types = {}
    inferred = onnx.shape_inference.infer_shapes(proto)
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    inserted = ("/Cast_fp16", "/Cast_fp32", "/Cast_out")  # the converter's boundary casts
    fragile = [n for n in proto.graph.node if (n.op_type in FP32_OP_TYPES or "/relation/" in
               n.name) and not n.name.endswith(inserted)]
    assert fragile
    for node in fragile:
        for name in node.output:
            if types.get(name) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                assert types[name] == onnx.TensorProto.FLOAT, (node.name, name)
    halves = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves, "weights should be FP16"
    size32 = (out / "decoder.fp32.onnx").stat().st_size
    assert (out / "decoder.fp16.onnx").stat().st_size < size32


def test_manifest_describes_and_protects_the_folder(exported):
    model, out, result = exported
    manifest = read_manifest(out)
    assert manifest.to_dict() == json.loads((out / MANIFEST).read_text())
    assert manifest.schema_version == 2 and manifest.name == "tiny"
    assert manifest.views is None  # a whole-image model
    assert ModelConfig.from_dict(manifest.model) == model.config
    assert manifest.input.image_size == 64 and manifest.low_res_size == 32
    assert manifest.input.pixel_mean == tuple(model.config.pixel_mean)
    assert set(manifest.files) == {"encoder.fp32.onnx", "encoder.fp16.onnx",
                                      "decoder.fp32.onnx", "decoder.fp16.onnx"}
    dec = manifest.graphs["decoder"]["fp16"]
    assert dec["inputs"][1] == {"name": "point_coords", "shape": ["B", "N", 2],
                                "dtype": "float32"}
    assert {"torch", "onnx", "onnxruntime", "samspt"} <= set(manifest.tools)
    ver = manifest.verification
    assert ver["fp32"]["mean_iou"] >= 0.999 and ver["fp16"]["min_iou"] >= 0.97
    assert ver["fp32"]["max_logit_error"] < 1e-3


def test_tampered_folders_are_refused(exported, tmp_path):
    import shutil

    _, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "decoder.fp16.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "decoder.fp16.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="decoder.fp16.onnx does not match its sha256"):
        read_manifest(copy)
    (copy / "encoder.fp32.onnx").write_bytes(b"short")
    with pytest.raises(ModelFolderError, match="truncated or replaced"):
        read_manifest(copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="schema_version 99"):
        read_manifest(copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(ModelFolderError, match="no manifest.json"):
        read_manifest(copy)


def test_unsupported_opset_and_precision_are_refused(tmp_path, tiny_spt):
    with pytest.raises(ConfigError, match="opset 13 is not supported"):
        export_model(tiny_spt, tmp_path / "x", "x", opset=13, verify=False)
    with pytest.raises(ConfigError, match="precision"):
        export_model(tiny_spt, tmp_path / "x", "x", precision="int4", verify=False)
    assert not (tmp_path / "x").exists()


def test_missed_parity_gate_fails_the_export_and_keeps_the_old_folder(tmp_path, tiny_spt,
                                                                    monkeypatch):
    import samspt.export.verify as verify

    out = tmp_path / "model"
    export_model(tiny_spt, out, "old", precision="fp32", verify=False)
    before = (out / MANIFEST).read_text()
    monkeypatch.setitem(verify.GATES, "fp32", {"mean_iou": 1.01, "min_iou": 0.0})
    with pytest.raises(VerificationError, match=r"fp32: mean mask IoU .* at image "):
        export_model(tiny_spt, out, "new", precision="fp32", verify_images=IMAGES[:1])
    assert (out / MANIFEST).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_export_command_with_spt_weights(tmp_path, tiny_spt, tiny_sam, capsys):
    sam_path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam.state_dict(), sam_path)
    randomize_spt_(tiny_spt, scale=0.1)
    spt_path = save_spt_weights(tiny_spt, tmp_path / "spt_tiny.safetensors")
    out = tmp_path / "models" / "spt_tiny"
    assert export_main(["--checkpoint", str(sam_path), "--spt", str(spt_path), "--out", str(out),
                        "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "parity with PyTorch" in printed and "decoder.fp32.onnx" in printed
    manifest = read_manifest(out)
    assert manifest.sources["spt"]["name"] == "spt_tiny.safetensors"
    assert set(manifest.graphs["encoder"]) == {"fp32"}


def test_the_scan_gate_goes_into_the_manifest_and_is_the_inspectors_default(tmp_path, capsys):
    from samspt.runtime import Inspector
    from samspt.training.checkpoints import build_model

    weights = save_spt_weights(build_model("cnn_tiny"), tmp_path / "cnn.safetensors",
                               mode="full")
    out = tmp_path / "cnn"
    assert export_main(["--weights", str(weights), "--out", str(out), "--precision", "fp32",
                        "--no-verify", "--scan-min-score", "0.35"]) == 0
    assert read_manifest(out).views.scan_min_score == 0.35
    with Inspector(out, warmup=False) as inspector:
        assert inspector.view_settings.scan_min_score == 0.35
    with Inspector(out, warmup=False, scan_min_score=0.1) as inspector:
        assert inspector.view_settings.scan_min_score == 0.1


def test_a_scan_gate_for_a_whole_image_model_is_refused(tmp_path, tiny_spt, capsys):
    weights = save_spt_weights(tiny_spt, tmp_path / "tiny.safetensors", mode="full")
    assert export_main(["--weights", str(weights), "--out", str(tmp_path / "m"),
                        "--no-verify", "--scan-min-score", "0.3"]) == 2
    assert "whole-image model" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv,words", [
    (["--spt", "x.safetensors"], "also give the SAM checkpoint"),
    (["--weights", "/nonexistent/w.safetensors"], "does not exist"),
    (["--weights", "a", "--spt", "b", "--checkpoint", "c"], "give one of"),
    (["--checkpoint", "/nonexistent.pth"], "does not exist"),
])
def test_export_command_errors(argv, words, capsys):
    assert export_main(argv) == 2
    assert words in capsys.readouterr().err


def test_unwritable_output_folder_is_a_clear_error(tmp_path, tiny_sam, capsys):
    sam_path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam.state_dict(), sam_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert export_main(["--checkpoint", str(sam_path), "--model-type", "tiny", "--out",
                        str(blocker / "model"), "--no-verify"]) == 2
    assert "cannot write the model folder" in capsys.readouterr().err


@pytest.mark.slow
def test_vit_b_exports(tmp_path):
    from samspt.training.checkpoints import build_model

    model = build_model("vit_b")
    result = export_model(model, tmp_path / "vit_b", "vit_b", verify_images=IMAGES[:1])
    assert result.manifest.verification["fp32"]["mean_iou"] >= 0.999


def test_box_clip_exports_inside_the_decoder_graph(tmp_path):
    """A model that clips to its box prompts clips in both graphs, and passes both parity gates."""
    import dataclasses

    from samspt.training.modeling.box_region import CLIPPED_LOGIT
    from samspt.training.modeling.config import get_config
    from samspt.training.modeling.model import SptSam

    torch.manual_seed(0)
    model = randomize_spt_(SptSam(dataclasses.replace(get_config("tiny"),
                                                      box_clip_margin=0.0)), scale=0.1)
    result = export_model(model, tmp_path / "clip", "clip", verify_images=IMAGES[:2])
    assert result.manifest.verification  # parity was checked, and passed
    session = _session(tmp_path / "clip" / "decoder.fp16.onnx")
    embedding = np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)
    coords = np.array([[[8.0, 8.0], [23.0, 23.0]]], np.float32)
    labels = np.array([[2.0, 3.0]], np.float32)
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {tensors.IMAGE_EMBEDDINGS: embedding,
                                          tensors.POINT_COORDS: coords,
                                          tensors.POINT_LABELS: labels})))
    logits = outputs[tensors.LOGITS][0, 0]  # 32x32 cells of 2 px: box cells 4..11, slack 3..12
    assert (logits[:, 14:] == CLIPPED_LOGIT).all() and (logits[14:, :] == CLIPPED_LOGIT).all()
    assert (logits[4:12, 4:12] != CLIPPED_LOGIT).all()


def test_large_encoders_go_to_external_data_that_the_manifest_protects(tmp_path, tiny_spt,
                                                                      monkeypatch):
    """vit_h (and anything over 2 GB) is saved with ONNX external data; here the size threshold is
    lowered so the tiny model takes that path."""
    import samspt.export.onnx_export as onnx_export
    from samspt.runtime.inspector import Inspector

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    out = tmp_path / "big"
    export_model(tiny_spt, out, "big", precision="fp32", verify_images=IMAGES[:1])
    assert sorted(p.name for p in out.iterdir()) == [
        "decoder.fp32.onnx", "encoder.fp32.onnx", "encoder.fp32.onnx.data", MANIFEST]
    manifest = read_manifest(out)
    assert manifest.graphs["encoder"]["fp32"]["external_data"] == ["encoder.fp32.onnx.data"]
    assert "encoder.fp32.onnx.data" in manifest.files
    assert (out / "encoder.fp32.onnx").stat().st_size < 100_000  # the weights live in .data
    image = IMAGES[0][1]
    with Inspector(out, backend="onnxruntime", precision="fp32") as inspector:
        assert inspector.inspect(image).masks.shape == (1,) + image.shape[:2]
    data = bytearray((out / "encoder.fp32.onnx.data").read_bytes())
    data[-1] ^= 0xFF
    (out / "encoder.fp32.onnx.data").write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="encoder.fp32.onnx.data does not match"):
        read_manifest(out)
