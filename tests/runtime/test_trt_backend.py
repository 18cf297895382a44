"""TensorRT runtime: engine folders, build.json, compatibility refusal, prompt limits, handles.

Without TensorRT, :class:`TrtGraphs` runs on a stand-in for ``tensorrt`` and ``pycuda.driver``
(:mod:`tests.runtime.fake_tensorrt`): its "engines" are ONNX graphs run by ONNX Runtime, its
device memory is numpy, and it checks what the real API demands (a current context, pinned host
buffers for async copies, shapes within the profile, buffers large enough). Tests marked ``trt``
use the real TensorRT on a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from samspt.runtime import build_record as rec
from samspt.runtime import engines as eng
from samspt.runtime import trt_backend as tb
from samspt.runtime import trt_env
from samspt.runtime.errors import BackendError, ConfigError, InputError, ModelFolderError
from samspt.runtime.manifest import Manifest, read_manifest
from samspt.runtime.samples import EXAMPLE_MODEL_DIR
from samspt.runtime.samples import bundled_verify_images
from samspt.runtime.trt_engine import EmbeddingSlot, check_profile_limits

from .fake_tensorrt import install_fake_tensorrt

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def fake_trt(monkeypatch):
    return install_fake_tensorrt(monkeypatch)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny exported model folder (both precisions, random weights)."""
    torch = pytest.importorskip("torch")
    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("trt_runtime") / "tiny"
    export_model(build_model("tiny"), out, "tiny", verify=False)
    return out


def _entry(built="2026-11-24T17:00:00Z", sources=None):
    """A precision's build.json entry (dict) with engines of the given source sha256s."""
    sources = sources or {}
    return {"built_by": "samspt-build", "built": built, "build_seconds": 81.2,
            "flags": {"strongly_typed": True, "workspace_mb": 4096, "device": 0},
            "profiles": {"prompts": [1, 16, 64], "points": [1, 2, 16], "views": [1, 4, 8]},
            "engines": {k: {"file": f"{k}.fp16.engine", "sha256": "aa", "bytes": 1,
                            "source": {"file": f"{k}.fp16.onnx",
                                       "sha256": sources.get(k, "bb")}}
                        for k in ("encoder", "decoder")},
            "verification": {"mean_iou": 0.998}}


def _build_dict(gpu=H100, version="10.3.0.26", precisions=None):
    return {"schema_version": rec.BUILD_SCHEMA_VERSION,
            "gpu": {"name": gpu, "compute_capability": [9, 0]}, "tensorrt_version": version,
            "cuda": {"driver": "12.4"}, "model": {"name": "tiny"}, "timing_cache": "timing.cache",
            "tools": {"samspt": "0.1.0"},
            "precisions": precisions if precisions is not None else {"fp16": _entry()}}


def _build_json(gpu=H100, version="10.3.0.26", precisions=None):
    return rec.BuildRecord.from_dict(_build_dict(gpu, version, precisions))


def _make_engine_dir(model_dir, gpu=H100, version="10.3.0.26", finished=True):
    folder = model_dir / eng.ENGINES_DIR / eng.engine_dir_name(gpu, version)
    folder.mkdir(parents=True)
    if finished:
        eng.write_build_json(folder, _build_json(gpu, version))
    return folder


# ---- names --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,safe", [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
    ("Orin (nvgpu)", "orin-nvgpu"),
    ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
    ("  Tesla T4 ", "tesla-t4"),
    ("../../etc/passwd", "etc-passwd"),
    ("NVIDIA A100-SXM4-40GB", "nvidia-a100-sxm4-40gb"),
])
def test_gpu_names_become_safe_folder_names(name, safe):
    assert eng.sanitize_gpu_name(name) == safe


def test_gpu_name_without_letters_is_refused():
    with pytest.raises(ConfigError, match="nvidia-smi"):
        eng.sanitize_gpu_name(" (/) ")


@pytest.mark.parametrize("version,short", [("10.3.0.26", "10.3.0"), ("10.3.0", "10.3.0"),
                                           ("10.3", "10.3.0"), ("11.0.0b3", "11.0.0")])
def test_versions_shorten_to_major_minor_patch(version, short):
    assert eng.short_version(version) == short


def test_engine_folder_and_file_names():
    assert eng.engine_dir_name(H100, "10.3.0.26") == "nvidia-h100-80gb-hbm3-trt10.3.0"
    assert eng.engine_file_name("decoder", "fp16") == "decoder.fp16.engine"
    with pytest.raises(ConfigError):
        eng.engine_dir_name(H100, "ten")
    with pytest.raises(ConfigError):
        eng.engine_file_name("decoder", "int4")


# ---- profiles -----------------------------------------------------------------------------------

def test_profiles_parse_and_give_decoder_shapes():
    assert eng.parse_profile("1,16,64") == eng.Profile(1, 16, 64)
    assert eng.parse_profile(" 8 ") == eng.Profile(8, 8, 8)
    shapes = rec.ShapeProfiles(eng.parse_profile("1,16,64"), eng.parse_profile("1,4,16")).shapes()
    assert shapes == {"point_coords": ((1, 1, 2), (16, 4, 2), (64, 16, 2)),
                      "point_labels": ((1, 1), (16, 4), (64, 16))}


@pytest.mark.parametrize("text,match", [("1,x,3", "not a list of integers"),
                                        ("1,2", "has 2 values"), ("0,1,2", "at least 1"),
                                        ("4,2,8", "MIN <= OPT <= MAX"), ("", "integers")])
def test_bad_profiles_are_refused_naming_the_flag(text, match):
    with pytest.raises(ConfigError, match=match) as info:
        eng.parse_profile(text, "--points")
    assert "--points" in str(info.value)


# ---- build.json ---------------------------------------------------------------------------------

def test_build_json_round_trips_keeping_keys_it_does_not_know(tmp_path):
    data = _build_dict()
    data["note"] = "kept"
    data["precisions"]["fp16"]["later"] = {"x": 1}
    record = rec.BuildRecord.from_dict(data)
    assert record.extra == {"note": "kept"}
    assert record.precisions["fp16"].extra == {"later": {"x": 1}}
    eng.write_build_json(tmp_path, record)
    assert eng.read_build_json(tmp_path) == record
    assert json.loads((tmp_path / eng.BUILD_JSON).read_text()) == data
    assert [p.name for p in tmp_path.iterdir()] == [eng.BUILD_JSON]
    entry = record.precisions["fp16"]
    assert entry.profiles == rec.DEFAULT_PROFILES
    assert entry.engines["decoder"] == rec.EngineFile("decoder.fp16.engine", "aa", 1,
                                                      "decoder.fp16.onnx", "bb")


def test_build_json_write_is_atomic(tmp_path, monkeypatch):
    eng.write_build_json(tmp_path, _build_json())
    before = (tmp_path / eng.BUILD_JSON).read_bytes()

    def fail(self, data):
        self.open("wb").write(data[: len(data) // 2])  # half written, then the disk fills
        raise OSError("No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_bytes", fail)
    with pytest.raises(OSError):
        eng.write_build_json(tmp_path, _build_json(version="10.4.0"))
    monkeypatch.undo()
    assert (tmp_path / eng.BUILD_JSON).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [eng.BUILD_JSON]


def test_a_record_off_the_schema_is_not_written(tmp_path):
    import dataclasses

    record = _build_json()
    bad = dataclasses.replace(record, precisions={"int4": record.precisions["fp16"]})
    with pytest.raises(ConfigError, match="int4"):
        eng.write_build_json(tmp_path, bad)
    odd = dataclasses.replace(record, extra={"when": float("nan")})
    with pytest.raises(ConfigError):
        eng.write_build_json(tmp_path, odd)
    assert list(tmp_path.iterdir()) == []


def _without(key, *path):
    data = _build_dict()
    node = data
    for part in path:
        node = node[part]
    del node[key]
    return json.dumps(data)


@pytest.mark.parametrize("content,match", [
    (None, "no build.json"), ("{not json", "not valid JSON"), ("[1]", "JSON object"),
    (json.dumps({**_build_dict(), "schema_version": 99}), "schema_version 99"),
    (json.dumps({"schema_version": 1, "gpu": {}}), "lacks gpu.name"),
    (_without("decoder", "precisions", "fp16", "engines"), "engines lacks the decoder"),
    (_without("prompts", "precisions", "fp16", "profiles"), "profiles.prompts"),
    (_without("sha256", "precisions", "fp16", "engines", "encoder", "source"),
     "encoder.source.sha256"),
    (json.dumps(_build_dict(precisions={"fp16": {**_entry(), "build_seconds": "soon"}})),
     "build_seconds"),
])
def test_bad_build_json_is_refused_with_the_rebuild_command(tmp_path, content, match):
    folder = tmp_path / "model" / eng.ENGINES_DIR / "x-trt10.3.0"
    folder.mkdir(parents=True)
    if content is not None:
        (folder / eng.BUILD_JSON).write_text(content)
    with pytest.raises(ModelFolderError, match=match) as info:
        eng.read_build_json(folder)
    assert f"samspt-build {tmp_path / 'model'}" in str(info.value)


# ---- finding engines and refusing foreign ones --------------------------------------------------

def test_find_engine_dir_finds_this_gpus_engines(tmp_path):
    folder = _make_engine_dir(tmp_path)
    _make_engine_dir(tmp_path, gpu="Orin", version="10.3.0.30")
    assert eng.find_engine_dir(tmp_path, H100, "10.3.0.26") == folder
    assert eng.find_engine_dir(tmp_path, "nvidia h100 80gb hbm3", "10.3.0") == folder


def test_find_engine_dir_without_engines_says_how_to_build(tmp_path):
    with pytest.raises(ModelFolderError, match="has no TensorRT engines") as info:
        eng.find_engine_dir(tmp_path, H100, "10.3.0")
    assert f"samspt-build {tmp_path}" in str(info.value)
    assert "export/to_tensorrt.py" in str(info.value)


def test_find_engine_dir_lists_engines_of_other_machines(tmp_path):
    _make_engine_dir(tmp_path, gpu="Orin", version="10.3.0.30")
    _make_engine_dir(tmp_path, gpu=H100, version="10.0.1.6")
    with pytest.raises(ModelFolderError) as info:
        eng.find_engine_dir(tmp_path, H100, "10.3.0.26")
    text = str(info.value)
    assert "no TensorRT engines for NVIDIA H100 80GB HBM3 with TensorRT 10.3.0" in text
    assert "orin-trt10.3.0 (Orin, TensorRT 10.3.0.30, fp16)" in text
    assert "nvidia-h100-80gb-hbm3-trt10.0.1" in text
    assert f"samspt-build {tmp_path}" in text


def test_find_engine_dir_refuses_an_unfinished_build(tmp_path):
    _make_engine_dir(tmp_path, finished=False)
    with pytest.raises(ModelFolderError, match="unfinished"):
        eng.find_engine_dir(tmp_path, H100, "10.3.0.26")


def test_find_engine_dir_of_a_missing_model_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        eng.find_engine_dir(tmp_path / "nope", H100, "10.3.0")


def test_compatible_engines_pass():
    build = _build_json()
    eng.check_compatible(build, H100, "10.3.0.26")
    eng.check_compatible(build, eng.GpuInfo(H100, (9, 0)), "10.3.0")
    eng.check_compatible(_build_json(version="10.3.0"), H100, "10.3.0.26")


@pytest.mark.parametrize("gpu,version,match", [
    ("Orin", "10.3.0.26", "built for a NVIDIA H100 80GB HBM3, this GPU is a Orin"),
    (H100, "10.4.0.26", "built by TensorRT 10.3.0.26, this is TensorRT 10.4.0.26"),
    (H100, "10.3.0.30", "built by TensorRT 10.3.0.26, this is TensorRT 10.3.0.30"),
    (H100, "11.0.0", "this is TensorRT 11.0.0"),
    (eng.GpuInfo(H100, (8, 0)), "10.3.0.26", "compute capability 9.0, this GPU has 8.0"),
])
def test_foreign_engines_are_refused_with_how_to_rebuild(tmp_path, gpu, version, match):
    with pytest.raises(ModelFolderError, match=match) as info:
        eng.check_compatible(_build_json(), gpu, version, tmp_path)
    assert f"samspt-build {tmp_path}" in str(info.value)
    assert "runs only on the GPU model and the TensorRT version that built it" in str(info.value)


def test_precision_entries():
    build = _build_json(precisions={"fp32": _entry("2026-01-01T00:00:00Z"), "fp16": _entry()})
    assert eng.precision_entry(build) == ("fp16", build.precisions["fp16"])
    assert eng.precision_entry(build, "fp32")[1].built == "2026-01-01T00:00:00Z"
    assert eng.precision_entry(_build_json(precisions={"fp32": _entry()}))[0] == "fp32"
    with pytest.raises(ModelFolderError, match="--precision fp32"):
        eng.precision_entry(_build_json(), "fp32", "m")
    with pytest.raises(ModelFolderError, match="lists none"):
        eng.precision_entry(_build_json(precisions={}), None, "m")


def test_engines_of_another_export_are_refused():
    manifest = read_manifest(EXAMPLE_MODEL_DIR)
    sources = {k: manifest.sha256(f"{k}.fp16.onnx") for k in ("encoder", "decoder")}
    eng.check_sources(_build_json(precisions={"fp16": _entry(sources=sources)}), manifest,
                      "fp16")
    stale = _build_json(precisions={"fp16": _entry(sources={**sources, "decoder": "cc"})})
    with pytest.raises(ModelFolderError, match="decoder engines were built from another export"):
        eng.check_sources(stale, manifest, "fp16", "m")


def test_engine_files_are_checked_against_their_sha256(tmp_path):
    folder = tmp_path / "m" / "engines" / "x"
    folder.mkdir(parents=True)
    data = _entry()
    for kind in ("encoder", "decoder"):
        path = folder / f"{kind}.fp16.engine"
        path.write_bytes(kind.encode() * 10)
        data["engines"][kind].update(bytes=path.stat().st_size, sha256=eng.sha256_file(path))
    entry = rec.PrecisionBuild.from_dict(data, "fp16")
    assert eng.verify_engine_files(folder, entry)["decoder"] == folder / "decoder.fp16.engine"
    (folder / "decoder.fp16.engine").write_bytes(b"encoder" * 10)
    with pytest.raises(ModelFolderError, match="decoder.fp16.engine does not match its sha256"):
        eng.verify_engine_files(folder, entry)
    (folder / "encoder.fp16.engine").unlink()
    with pytest.raises(ModelFolderError, match="encoder.fp16.engine is missing"):
        eng.verify_engine_files(folder, entry)


# ---- prompt limits and handles (pure Python) ----------------------------------------------------

PROFILES = rec.ShapeProfiles(eng.Profile(1, 16, 64), eng.Profile(1, 2, 16))


def _prompts(batch, points):
    return np.zeros((batch, points, 2), np.float32), np.zeros((batch, points), np.float32)


def test_prompts_within_the_profile_pass():
    assert check_profile_limits(*_prompts(64, 16), PROFILES) == (64, 16)
    assert check_profile_limits(*_prompts(1, 1), PROFILES) == (1, 1)


def test_too_many_prompts_say_the_limit_and_how_to_rebuild():
    with pytest.raises(InputError) as info:
        check_profile_limits(*_prompts(100, 2), PROFILES, "models/x")
    text = str(info.value)
    assert "100 prompts" in text and "at most 64" in text and "batches of 64" in text
    assert "samspt-build models/x --prompts 1,16,100 --points 1,2,16" in text


def test_too_many_points_say_the_limit_and_how_to_rebuild():
    with pytest.raises(InputError, match="17 points per prompt.*1 to 16.*--points 1,2,17"):
        check_profile_limits(*_prompts(2, 17), PROFILES, "m")


@pytest.mark.parametrize("coords,labels,match", [
    (np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), "BxNx2"),
    (np.zeros((2, 3, 2), np.float32), np.zeros((2, 4), np.float32), "BxN"),
    (np.zeros((0, 2, 2), np.float32), np.zeros((0, 2), np.float32), "no prompts"),
])
def test_malformed_prompts_are_refused(coords, labels, match):
    with pytest.raises(InputError, match=match):
        check_profile_limits(coords, labels, PROFILES)


def test_stale_and_foreign_handles_raise():
    slot, other = EmbeddingSlot(), EmbeddingSlot()
    slot.invalidate()
    first = slot.issue((1, 32, 8, 8))
    slot.check(first)
    slot.invalidate()
    second = slot.issue((1, 32, 8, 8))
    with pytest.raises(BackendError, match="stale embedding handle"):
        slot.check(first)
    slot.check(second)
    with pytest.raises(BackendError, match="another TrtGraphs"):
        other.check(second)


# ---- without TensorRT ---------------------------------------------------------------------------

def test_module_imports_without_tensorrt_or_pycuda():
    code = ("import sys; sys.modules['tensorrt'] = None; sys.modules['pycuda'] = None\n"
            "import samspt.runtime.trt_backend, samspt.runtime.trt_engine, samspt.runtime.trt_env, "
            "samspt.runtime.engines\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('samspt.training', "
            "'samspt.export'))]\nsys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", ["tensorrt", "pycuda"])
def test_opening_engines_without_tensorrt_says_what_to_install(tmp_path, monkeypatch, missing):
    install_fake_tensorrt(monkeypatch)
    monkeypatch.setitem(sys.modules, missing, None)
    if missing == "pycuda":
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(BackendError, match=r"pip install 'samspt\[trt\]'"):
        tb.TrtGraphs(tmp_path)


# ---- TrtGraphs on the stand-in ------------------------------------------------------------------

@pytest.fixture
def built(model_dir, fake_trt, tmp_path):
    """The tiny model folder (a copy) with fp16 engines built by the stand-in builder."""
    import shutil

    from samspt.export.trt_build import build_engines
    from samspt.export.trt_options import BuildOptions

    folder = tmp_path / "tiny"
    shutil.copytree(model_dir, folder)
    options = BuildOptions(profiles=rec.ShapeProfiles(eng.Profile(1, 4, 8), eng.Profile(1, 2, 6)))
    result = build_engines(folder, options, images=bundled_verify_images()[:2])
    return folder, result


def _ort(folder, precision="fp16"):
    from samspt.runtime.ort_backend import OrtGraphs

    return OrtGraphs(folder / f"encoder.{precision}.onnx", folder / f"decoder.{precision}.onnx")


def _inputs(seed=0, batch=3, points=2):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(1, 3, 64, 64)).astype(np.float32)
    coords = (rng.uniform(0, 64, (batch, points, 2))).astype(np.float32)
    row = [2, 3] + [1] * (points - 2) if points >= 2 else [1]
    labels = np.tile(np.array(row, np.float32), (batch, 1))
    return image, coords, labels


def test_trt_graphs_compute_what_the_graphs_compute(built):
    folder, _ = built
    ort = _ort(folder)
    with tb.TrtGraphs.from_model_dir(folder) as graphs:
        assert graphs.precision == "fp16" and graphs.max_prompts == 8
        assert graphs.profiles == rec.ShapeProfiles(eng.Profile(1, 4, 8), eng.Profile(1, 2, 6))
        for seed, (batch, points) in enumerate([(3, 2), (8, 6), (1, 1)]):
            image, coords, labels = _inputs(seed, batch, points)
            handle = graphs.embed(image)
            got = graphs.decode(handle, coords, labels)
            want = ort.decode(ort.encode(image), coords, labels)
            for a, b in zip(got, want):
                assert a.shape == b.shape and a.dtype == np.float32
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(graphs.download(handle), ort.encode(image))
            # a host embedding decodes the same, and leaves the device embedding alone
            host = graphs.decode(ort.encode(image), coords, labels)
            np.testing.assert_array_equal(host[1], want[1])
            np.testing.assert_array_equal(graphs.decode(handle, coords, labels)[1], want[1])


def test_engines_encode_a_batch_of_views_within_their_views_profile(model_dir, fake_trt,
                                                                     tmp_path):
    """samspt-build --views: the encoder engine takes up to V views a run; the backend's encode
    splits larger batches into runs of V and answers what ONNX Runtime answers for them all,
    also through the Inspector (the Backend interface, no lock held around its view loop)."""
    import shutil

    from samspt.export.trt_build import build_engines
    from samspt.export.trt_options import BuildOptions
    from samspt.runtime.backend import Backend
    from samspt.runtime.inspector import Inspector

    folder = tmp_path / "tiny"
    shutil.copytree(model_dir, folder)
    profiles = rec.ShapeProfiles(eng.Profile(1, 4, 8), eng.Profile(1, 2, 6), eng.Profile(1, 2, 3))
    result = build_engines(folder, BuildOptions(profiles=profiles),
                           images=bundled_verify_images()[:2])
    assert result.entry.profiles.views == eng.Profile(1, 2, 3)
    ort = _ort(folder)
    rng = np.random.default_rng(3)
    with tb.TrtGraphs.from_model_dir(folder) as graphs:
        assert isinstance(graphs, Backend) and graphs.max_views == 3
        assert graphs.profiles.views == eng.Profile(1, 2, 3)
        for count in (1, 3, 5):
            views = rng.standard_normal((count,) + graphs.image_shape[1:]).astype(np.float32)
            np.testing.assert_array_equal(graphs.encode(views), ort.encode(views))
        with pytest.raises(InputError, match="views must be"):
            graphs.encode(np.zeros((2, 3, 8, 8), np.float32))
    image = bundled_verify_images()[0][1]
    with Inspector(folder, backend="tensorrt") as trt, \
            Inspector(folder, backend="onnxruntime", precision="fp16") as reference:
        assert trt.backend == "tensorrt" and trt.graphs.max_views == 3
        got, want = trt.inspect(image), reference.inspect(image)
        np.testing.assert_array_equal(got.masks, want.masks)


def test_trt_graphs_allocate_nothing_per_call(built, fake_trt):
    folder, _ = built
    _, cuda = fake_trt
    with tb.TrtGraphs.from_model_dir(folder) as graphs:
        before = cuda.allocations[0]
        for seed in range(3):
            image, coords, labels = _inputs(seed, batch=seed + 1)
            graphs.decode(graphs.embed(image), coords, labels)
        assert cuda.allocations[0] == before
    assert not cuda.thread_stack()  # every push was popped


def test_a_handle_is_stale_after_the_next_embed(built):
    folder, _ = built
    image, coords, labels = _inputs()
    with tb.TrtGraphs.from_model_dir(folder) as graphs, \
            tb.TrtGraphs.from_model_dir(folder) as other:
        first = graphs.embed(image)
        graphs.embed(image + 1)
        with pytest.raises(BackendError, match="stale embedding handle"):
            graphs.decode(first, coords, labels)
        with pytest.raises(BackendError, match="stale"):
            graphs.download(first)
        with pytest.raises(BackendError, match="another TrtGraphs"):
            other.decode(graphs.embed(image), coords, labels)


def test_too_many_prompts_for_the_engine_profile(built):
    folder, _ = built
    image, coords, labels = _inputs(batch=9)
    with tb.TrtGraphs.from_model_dir(folder) as graphs:
        with pytest.raises(InputError, match=f"at most 8.*samspt-build {folder} --prompts 1,4,9"):
            graphs.decode(graphs.embed(image), coords, labels)
        with pytest.raises(InputError, match="image must be 1x3x64x64"):
            graphs.embed(np.zeros((1, 3, 32, 32), np.float32))
        with pytest.raises(InputError, match="image_embeddings must be 1x32x8x8"):
            graphs.decode(np.zeros((1, 32, 4, 4), np.float32), *_inputs()[1:])


def test_closed_graphs_refuse_calls(built):
    folder, _ = built
    graphs = tb.TrtGraphs.from_model_dir(folder)
    handle = graphs.embed(_inputs()[0])
    graphs.close()
    graphs.close()
    with pytest.raises(BackendError, match="closed"):
        graphs.decode(handle, *_inputs()[1:])


def test_open_and_close_from_other_threads_leaves_nothing_held(built, fake_trt):
    """Every device and pinned host buffer is freed at close, in the device's context, whichever
    thread closes; the primary context is retained once for the process, not once per open (a
    pycuda detach from another thread releases nothing, so per-open retains would leak)."""
    folder, _ = built
    _, cuda = fake_trt
    image, coords, labels = _inputs()
    for _ in range(4):
        graphs = tb.TrtGraphs.from_model_dir(folder)
        graphs.decode(graphs.embed(image), coords, labels)
        assert cuda.memory and cuda.pinned
        closer = threading.Thread(target=graphs.close)
        closer.start()
        closer.join()
        assert not cuda.memory, "device buffers left after close"
        assert not cuda.pinned, "pinned host buffers left after close"
    assert cuda.retains[0] == 1
    assert not cuda.thread_stack()


def test_engines_with_non_float32_tensors_are_refused(fake_trt, tmp_path):
    """samspt engines take and give float32 (the FP16 graphs keep FP32 inputs and outputs); an
    engine whose image is float16 is refused by name rather than fed the wrong bytes."""
    from onnx import TensorProto, helper

    def plan(dtype, inputs, outputs):
        graph = helper.make_graph(
            [helper.make_node("Identity", [inputs[0]], [outputs[0]])], "g",
            [helper.make_tensor_value_info(inputs[0], dtype, [1, 3, 64, 64])],
            [helper.make_tensor_value_info(outputs[0], dtype, [1, 3, 64, 64])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return b"FAKEPLAN\n{\"profiles\": {}}\n" + model.SerializeToString()

    encoder, decoder = tmp_path / "encoder.engine", tmp_path / "decoder.engine"
    encoder.write_bytes(plan(TensorProto.FLOAT16, ["image"], ["image_embeddings"]))
    decoder.write_bytes(plan(TensorProto.FLOAT, ["image_embeddings"], ["logits"]))
    with pytest.raises(BackendError, match="encoder engine's tensor image is float16.*float32"):
        tb.TrtGraphs.from_engine_files(encoder, decoder)
    _, cuda = fake_trt
    assert not cuda.memory and not cuda.pinned  # a failed open frees what it took


def test_threads_share_one_trt_graphs_safely(built):
    folder, _ = built
    ort = _ort(folder)
    cases = [_inputs(seed, batch=seed % 4 + 1) for seed in range(8)]
    wants = [ort.decode(ort.encode(i), c, l)[1] for i, c, l in cases]
    errors = []
    with tb.TrtGraphs.from_model_dir(folder) as graphs:
        def work(k):
            image, coords, labels = cases[k]
            for _ in range(3):
                with graphs.lock:  # embed + decode as one unit
                    got = graphs.decode(graphs.embed(image), coords, labels)[1]
                if not np.array_equal(got, wants[k]):
                    errors.append(k)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(cases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_engines_of_another_gpu_or_version_are_refused_at_open(built, monkeypatch):
    folder, result = built
    install_fake_tensorrt(monkeypatch, gpu_name="Orin")
    with pytest.raises(ModelFolderError, match="no TensorRT engines for Orin.*samspt-build"):
        tb.TrtGraphs.from_model_dir(folder)
    with pytest.raises(ModelFolderError, match="this GPU is a Orin"):
        tb.TrtGraphs(result.engine_dir)
    install_fake_tensorrt(monkeypatch, version="10.3.0.30")
    with pytest.raises(ModelFolderError, match="this is TensorRT 10.3.0.30"):
        tb.TrtGraphs(result.engine_dir)


def test_tampered_engines_and_re_exports_are_refused(built):
    folder, result = built
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["decoder.fp16.onnx"]["sha256"] = "0" * 64
    with pytest.raises(ModelFolderError, match="another export"):
        tb.TrtGraphs.from_model_dir(folder, manifest=Manifest.from_dict(manifest))
    engine = result.engine_dir / "decoder.fp16.engine"
    engine.write_bytes(engine.read_bytes()[:-1] + b"x")
    with pytest.raises(ModelFolderError, match="does not match its sha256"):
        tb.TrtGraphs.from_model_dir(folder)


def test_tensorrt_log_goes_to_python_logging(fake_trt, caplog):
    trt, _ = fake_trt
    logger = trt_env.trt_logger()
    assert isinstance(logger, trt.ILogger) and trt_env.trt_logger() is logger
    with caplog.at_level(trt_env.TRACE, logger="samspt.runtime.trt_backend.tensorrt"):
        for severity in range(5):
            logger.log(severity, f"message {severity}")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [(50, "message 0"), (40, "message 1"), (30, "message 2"),
                      (10, "message 3"), (trt_env.TRACE, "message 4")]


# ---- the real TensorRT --------------------------------------------------------------------------

@pytest.mark.trt
def test_real_engines_run_like_onnx_runtime(request, tmp_path):
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    model_dir = request.getfixturevalue("model_dir")
    import shutil

    from samspt.export.trt_build import build_engines
    from samspt.export.trt_options import BuildOptions

    folder = tmp_path / "tiny"
    shutil.copytree(model_dir, folder)
    profiles = rec.ShapeProfiles(eng.Profile(1, 4, 8), eng.Profile(1, 2, 6))
    build_engines(folder, BuildOptions(profiles=profiles, workspace_mb=512))
    ort = _ort(folder, "fp32")
    with tb.TrtGraphs.from_model_dir(folder) as graphs:
        assert graphs.profiles == profiles
        for seed, (batch, points) in enumerate([(3, 2), (8, 6), (1, 1)]):
            image, coords, labels = _inputs(seed, batch, points)
            handle = graphs.embed(image)
            draft, logits, scores = graphs.decode(handle, coords, labels)
            want = ort.decode(ort.encode(image), coords, labels)
            assert draft.shape == want[0].shape and scores.shape == (batch, 1)
            for mine, theirs in ((logits, want[1]), (graphs.download(handle),
                                                     ort.encode(image))):
                scale = float(np.abs(theirs).max()) + 1.0  # fp16 engine vs fp32 graphs
                assert float(np.abs(mine - theirs).max()) <= 0.05 * scale
        graphs.embed(image)
        with pytest.raises(BackendError, match="stale"):
            graphs.decode(handle, coords, labels)
        with pytest.raises(InputError, match="at most 8"):
            graphs.decode(graphs.embed(image), *_inputs(batch=9)[1:])
