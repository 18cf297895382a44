"""The typed manifest: one place reads and writes manifest.json, with the schema's checks."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from samspt.runtime.errors import ModelFolderError
from samspt.runtime.manifest import MANIFEST, InputSpec, read_manifest, write_manifest
from samspt.runtime.samples import EXAMPLE_MODEL_DIR
from samspt.runtime.views import ViewSettings


def test_the_shipped_manifest_reads_typed_and_writes_back_what_it_read(tmp_path):
    raw = json.loads((EXAMPLE_MODEL_DIR / MANIFEST).read_text())
    manifest = read_manifest(EXAMPLE_MODEL_DIR)
    assert isinstance(manifest.input, InputSpec) and isinstance(manifest.views, ViewSettings)
    assert manifest.input.image_size == raw["input"]["image_size"]
    assert manifest.input.pixel_mean == tuple(raw["input"]["pixel_mean"])
    assert manifest.views.scan_min_score == raw["views"]["scan_min_score"]
    assert manifest.graph("encoder", "fp32")["file"] == "encoder.fp32.onnx"
    assert manifest.sha256("encoder.fp32.onnx") == raw["files"]["encoder.fp32.onnx"]["sha256"]
    assert manifest.precisions("decoder") == ["fp32", "fp16"]
    written = manifest.to_dict()
    # views gain the settings this version adds with their defaults; nothing else changes
    assert {k: v for k, v in written.items() if k != "views"} == \
        {k: v for k, v in raw.items() if k != "views"}
    assert {k: written["views"][k] for k in raw["views"]} == raw["views"]
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE_MODEL_DIR, copy)
    write_manifest(copy, manifest)
    assert read_manifest(copy) == manifest


def test_keys_this_version_does_not_know_are_kept(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE_MODEL_DIR, copy)
    raw = json.loads((copy / MANIFEST).read_text())
    raw["station"] = {"line": 3}
    (copy / MANIFEST).write_text(json.dumps(raw))
    manifest = read_manifest(copy)
    assert manifest.extra == {"station": {"line": 3}}
    assert manifest.to_dict()["station"] == {"line": 3}


def test_a_missing_graph_names_what_the_folder_has():
    manifest = read_manifest(EXAMPLE_MODEL_DIR)
    with pytest.raises(ModelFolderError, match=r"no int8 encoder graph \(it has: fp16, fp32\)"):
        manifest.graph("encoder", "int8")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(input={**m["input"], "pixel_std": [1.0, 0.0, 1.0]}), "std > 0"),
    (lambda m: m.update(views={**m["views"], "zoom": 2}), "unknown view settings"),
    (lambda m: m["graphs"]["encoder"]["fp32"].update(file="../elsewhere.onnx"),
     "not a file name inside the model folder"),
    (lambda m: m.pop("graphs"), "lacks graphs"),
    (lambda m: m.update(schema_version=7), "schema_version 7"),
])
def test_a_malformed_manifest_is_refused_with_what_is_wrong(tmp_path, edit, message):
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE_MODEL_DIR, copy)
    raw = json.loads((copy / MANIFEST).read_text())
    edit(raw)
    (copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ModelFolderError, match=message):
        read_manifest(copy)


def test_write_refuses_what_read_would_refuse_and_leaves_the_file_alone(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(EXAMPLE_MODEL_DIR, copy)
    before = (copy / MANIFEST).read_bytes()
    manifest = read_manifest(copy)
    graphs = json.loads(json.dumps(manifest.graphs))
    graphs["encoder"]["fp32"]["file"] = "encoder.unlisted.onnx"
    with pytest.raises(ModelFolderError, match="not listed under files"):
        write_manifest(copy, dataclasses.replace(manifest, graphs=graphs))
    assert (copy / MANIFEST).read_bytes() == before
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in
                                                             EXAMPLE_MODEL_DIR.iterdir())
