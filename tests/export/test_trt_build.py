"""TensorRT engine builds: trtexec lines, the CLI, the check against ONNX Runtime, and the build
flow on a stand-in TensorRT (tests/runtime/fake_tensorrt.py); ``trt`` tests use the real one.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samspt.export.to_tensorrt import main as build_main
from samspt.export.trt_build import adopt_engines, build_engines
from samspt.export.trt_check import ENGINE_GATES, EngineVerificationError, verify_engines
from samspt.export.trt_options import BuildOptions, check_profiles
from samspt.export.trtexec import format_trtexec, trtexec_commands
from samspt.runtime import build_record as rec
from samspt.runtime import engines as eng
from samspt.runtime.errors import BackendError, ConfigError, ModelFolderError
from samspt.runtime.files import sha256_file
from samspt.runtime.manifest import read_manifest
from samspt.runtime.ort_backend import OrtGraphs
from samspt.runtime.samples import bundled_verify_images

from ..runtime.fake_tensorrt import install_fake_tensorrt

IMAGES = bundled_verify_images()[:2]
ROOT = Path(__file__).resolve().parents[2]
SMALL = rec.ShapeProfiles(eng.Profile(1, 4, 8), eng.Profile(1, 2, 6))
FAKE_DIR = "nvidia-fake-gpu-24gb-trt10.3.0"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model

    from ..conftest import randomize_spt_

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("trt_build") / "tiny"
    export_model(randomize_spt_(build_model("tiny"), scale=0.1), out, "tiny", verify=False)
    return out


@pytest.fixture
def model_dir(exported, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(exported, folder)
    return folder


def _drop_precision(folder, precision):
    """Make ``folder`` an export that has only the other precision."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for kind in ("encoder", "decoder"):
        name = manifest["graphs"][kind].pop(precision)["file"]
        manifest["files"].pop(name)
        (folder / name).unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))


# ---- trtexec lines (pure Python) ----------------------------------------------------------------

def test_trtexec_lines_build_what_the_python_builder_builds(tmp_path):
    options = BuildOptions(profiles=rec.ShapeProfiles(eng.parse_profile("1,16,64"),
                                                      eng.parse_profile("1,4,16")),
                           workspace_mb=2048)
    engine_dir = tmp_path / "engines" / "orin-trt10.3.0"
    encoder, decoder = trtexec_commands(tmp_path, engine_dir, options)
    common = ["--stronglyTyped", "--memPoolSize=workspace:2048M",
              f"--timingCacheFile={engine_dir / 'timing.cache'}", "--skipInference"]
    assert encoder[0] == "trtexec" and f"--onnx={tmp_path / 'encoder.fp16.onnx'}" in encoder
    assert f"--saveEngine={engine_dir / 'encoder.fp16.engine'}" in encoder
    assert not [a for a in encoder if "Shapes" in a]
    assert f"--saveEngine={engine_dir / 'decoder.fp16.engine'}" in decoder
    for cmd in (encoder, decoder):
        assert all(flag in cmd for flag in common)
        assert not [a for a in cmd if a in ("--fp16", "--best", "--int8") or a.startswith(
            "--device")]
    assert "--minShapes=point_coords:1x1x2,point_labels:1x1" in decoder
    assert "--optShapes=point_coords:16x4x2,point_labels:16x4" in decoder
    assert "--maxShapes=point_coords:64x16x2,point_labels:64x16" in decoder


def test_trtexec_script_quotes_paths_and_ends_with_adopt(tmp_path):
    folder = tmp_path / "my models" / "tiny"
    options = BuildOptions(precision="fp32", device=1)
    engine_dir = folder / "engines" / "orin-trt10.3.0"
    script = format_trtexec(folder, engine_dir, options, gpu_name="Orin",
                            trt_version="10.3.0.30")
    lines = [line for line in script.splitlines() if not line.startswith("#")]
    assert lines[0].startswith("TRTEXEC=")
    assert shlex.split(lines[1]) == ["mkdir", "-p", str(engine_dir)]
    assert shlex.split(lines[2])[:2] == ["$TRTEXEC", f"--onnx={folder / 'encoder.fp32.onnx'}"]
    assert "--device=1" in shlex.split(lines[3])
    assert shlex.split(lines[4]) == ["samspt-build", str(folder), "--precision", "fp32",
                                     "--adopt", "--device", "1"]
    assert "Orin with TensorRT 10.3.0.30" in script


def test_the_trtexec_script_finds_trtexec_on_path_or_where_jetpack_puts_it(tmp_path):
    """On JetPack trtexec is not on PATH; the script falls back to /usr/src/tensorrt/bin."""
    from samspt.export.trtexec import JETPACK_TRTEXEC, TRTEXEC_LINE

    def resolved(path_dirs, env_value=None):
        env = {"PATH": ":".join(path_dirs)}
        if env_value:
            env["TRTEXEC"] = env_value
        return subprocess.run(["/bin/bash", "-c", TRTEXEC_LINE + '\necho "$TRTEXEC"'],
                              env=env, capture_output=True, text=True, check=True).stdout.strip()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert resolved([str(bin_dir), "/usr/bin", "/bin"]) == JETPACK_TRTEXEC
    tool = bin_dir / "trtexec"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolved([str(bin_dir), "/usr/bin", "/bin"]) == str(tool)
    assert resolved([str(bin_dir), "/usr/bin", "/bin"], "/opt/trt/trtexec") == "/opt/trt/trtexec"


@pytest.mark.parametrize("kwargs,match", [
    ({"precision": "int4"}, "precision must be"), ({"workspace_mb": 0}, "workspace-mb"),
    ({"profiles": rec.ShapeProfiles(eng.Profile(1, 1, 1), eng.Profile(1, 1, 1))},
     "a box prompt is 2 points"),
])
def test_bad_build_options_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BuildOptions(**kwargs).validate()


def test_a_profile_must_fit_fixed_decoder_dimensions(model_dir):
    manifest = read_manifest(model_dir)
    check_profiles(manifest, "fp16", rec.DEFAULT_PROFILES)
    for spec in manifest.graphs["decoder"]["fp16"]["inputs"][1:]:
        spec["shape"][0] = 1  # a graph exported for one prompt per call
    with pytest.raises(ConfigError, match="fixes axis 0 of point_coords at 1.*--prompts 1"):
        check_profiles(manifest, "fp16", rec.DEFAULT_PROFILES)


# ---- the CLI without TensorRT -------------------------------------------------------------------

def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        build_main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--precision", "--prompts", "--points", "--workspace-mb", "--print-trtexec",
                 "--adopt"):
        assert flag in out


def test_cli_prints_trtexec_lines_without_tensorrt(model_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    code = build_main([str(model_dir), "--print-trtexec", "--gpu-name", "NVIDIA H100 80GB HBM3",
                       "--trt-version", "10.3.0.26", "--prompts", "1,8,32", "--points", "2,2,4",
                       "--workspace-mb", "1024"])
    out = capsys.readouterr().out
    assert code == 0
    engine_dir = model_dir / "engines" / "nvidia-h100-80gb-hbm3-trt10.3.0"
    assert f"--saveEngine={engine_dir / 'decoder.fp16.engine'}" in out
    assert "--maxShapes=point_coords:32x4x2,point_labels:32x4" in out
    assert "--memPoolSize=workspace:1024M" in out
    assert not engine_dir.exists()  # printing builds nothing


def test_cli_print_trtexec_asks_for_the_target_when_it_cannot_tell(model_dir, capsys,
                                                                   monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    assert build_main([str(model_dir), "--print-trtexec"]) == 2
    err = capsys.readouterr().err
    assert "--gpu-name" in err and "--trt-version" in err


def test_cli_refuses_a_precision_the_model_folder_lacks(model_dir, capsys):
    _drop_precision(model_dir, "fp32")
    assert build_main([str(model_dir), "--precision", "fp32", "--print-trtexec", "--gpu-name",
                       "x", "--trt-version", "10.3.0"]) == 2
    err = capsys.readouterr().err
    assert "no fp32 encoder graph (it has: fp16)" in err and "--precision fp16" in err
    assert build_main([str(model_dir), "--precision", "fp32"]) == 2
    assert "no fp32 encoder graph" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["--prompts", "8,4,16"], "MIN <= OPT <= MAX"), (["--points", "1"], "box prompt is 2"),
    (["--workspace-mb", "0"], "workspace-mb"),
])
def test_cli_refuses_bad_flags(model_dir, capsys, argv, match):
    assert build_main([str(model_dir), *argv]) == 2
    assert match in capsys.readouterr().err


def test_cli_refuses_a_damaged_or_missing_model_folder(model_dir, tmp_path, capsys):
    assert build_main([str(tmp_path / "nope"), "--print-trtexec"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with open(model_dir / "decoder.fp16.onnx", "ab") as handle:
        handle.write(b"\0")
    assert build_main([str(model_dir)]) == 2
    assert "damaged" in capsys.readouterr().err


def test_cli_build_without_tensorrt_says_what_to_install(model_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert build_main([str(model_dir)]) == 2
    assert "pip install 'samspt[trt]'" in capsys.readouterr().err
    assert not (model_dir / "engines").exists()


def test_cli_gpu_name_only_goes_with_print_trtexec(model_dir):
    with pytest.raises(SystemExit) as info:
        build_main([str(model_dir), "--gpu-name", "x"])
    assert info.value.code == 2


# ---- the check against ONNX Runtime (any backend) -----------------------------------------------

class _Limited:
    """A backend that enforces a profile, as an engine does."""

    def __init__(self, inner, profiles, corrupt=False):
        self.inner, self.profiles, self.corrupt, self.shapes = inner, profiles, corrupt, []

    def encode(self, views):
        return self.inner.encode(views)

    def decode(self, embedding, coords, labels):
        from samspt.runtime.trt_engine import check_profile_limits

        check_profile_limits(coords, labels, self.profiles)
        self.shapes.append(coords.shape[:2])
        draft, logits, scores = self.inner.decode(embedding, coords, labels)
        return (draft, -logits if self.corrupt else logits, scores)


def _ort(folder, precision):
    return OrtGraphs(folder / f"encoder.{precision}.onnx", folder / f"decoder.{precision}.onnx")


def test_fp16_graphs_pass_the_engine_gates(exported):
    manifest = read_manifest(exported)
    profiles = rec.ShapeProfiles(eng.Profile(1, 2, 3), eng.Profile(3, 3, 4))
    candidate = _Limited(_ort(exported, "fp16"), profiles)
    figures = verify_engines(candidate, _Limited(_ort(exported, "fp32"), profiles), manifest,
                             IMAGES, "fp16", profiles)
    assert figures["mean_iou"] >= 0.99 and figures["min_iou"] >= 0.97
    # four boxes in batches of at most 3, two points padded to 3; once at B=3, N=4
    assert set(candidate.shapes) == {(3, 3), (1, 3), (3, 4)}
    assert [r["image"] for r in figures["per_image"]] == [
        IMAGES[0][0], f"{IMAGES[0][0]}@B3xN4", IMAGES[1][0]]


def test_a_wrong_engine_fails_the_check(exported):
    manifest = read_manifest(exported)
    candidate = _Limited(_ort(exported, "fp16"), rec.DEFAULT_PROFILES, corrupt=True)
    with pytest.raises(EngineVerificationError, match="do not match ONNX Runtime.*not recorded"):
        verify_engines(candidate, _ort(exported, "fp32"), manifest, IMAGES, "fp16",
                       rec.DEFAULT_PROFILES)


# ---- the build flow on the stand-in TensorRT ----------------------------------------------------

@pytest.mark.parametrize("version", ["10.3.0.26", "11.4.0.12"])
def test_build_writes_checked_engines_and_build_json(model_dir, monkeypatch, version):
    """TensorRT 10.3 (JetPack 6) and 11.x: 11 builds only strongly typed networks and gives the
    flag another value (EXPLICIT_BATCH is gone); the build asks for it by name on both."""
    trt, _ = install_fake_tensorrt(monkeypatch, version=version)
    result = build_engines(model_dir, BuildOptions(profiles=SMALL, workspace_mb=512),
                           images=IMAGES)
    short = ".".join(version.split(".")[:3])
    engine_dir = model_dir / "engines" / f"nvidia-fake-gpu-24gb-trt{short}"
    assert result.engine_dir == engine_dir
    assert sorted(p.name for p in engine_dir.iterdir()) == [
        "build.json", "decoder.fp16.engine", "encoder.fp16.engine", "timing.cache"]
    build = eng.read_build_json(engine_dir)
    assert build == result.build
    assert build.gpu == eng.GpuInfo("NVIDIA Fake GPU 24GB", (8, 9))
    assert build.tensorrt_version == version
    assert build.cuda == {"driver": "12.4", "pycuda": "12.2"}
    entry = build.precisions["fp16"]
    assert entry.flags == {"strongly_typed": True, "workspace_mb": 512, "device": 0}
    raw = json.loads((engine_dir / "build.json").read_text())["precisions"]["fp16"]
    assert raw["profiles"] == {"prompts": [1, 4, 8], "points": [1, 2, 6], "views": [1, 1, 1]}
    manifest = json.loads((model_dir / "manifest.json").read_text())
    for kind in ("encoder", "decoder"):
        record = raw["engines"][kind]
        assert record["sha256"] == sha256_file(engine_dir / record["file"])
        assert record["source"] == {"file": f"{kind}.fp16.onnx",
                                    "sha256": manifest["files"][f"{kind}.fp16.onnx"]["sha256"]}
        assert entry.engines[kind].sha256 == record["sha256"]
    assert entry.verification["mean_iou"] >= 0.99
    assert entry.verification["reference"] == "onnxruntime fp32 (CPU)"
    # strongly typed networks, no precision flags, the workspace limit, one decoder profile
    strongly_typed = 1 << (0 if version.startswith("11.") else 1)
    assert [c["flags"] for c in trt.calls] == [strongly_typed] * 2
    assert all(c["precision_flags"] == [] for c in trt.calls)
    assert all(c["pools"] == {"workspace": 512 << 20} for c in trt.calls)
    # The encoder graph takes V views; its engine is built for one view per call.
    assert trt.calls[0]["profiles"] == [{"image": [[1, 3, 64, 64]] * 3}]
    assert trt.calls[1]["profiles"] == [{"point_coords": [[1, 1, 2], [4, 2, 2], [8, 6, 2]],
                                         "point_labels": [[1, 1], [4, 2], [8, 6]]}]
    assert engine_dir.parent.parent == model_dir
    assert not [p for p in engine_dir.parent.rglob(".*")]


def test_the_timing_cache_persists_across_builds_and_precisions_accumulate(model_dir,
                                                                         monkeypatch):
    trt, _ = install_fake_tensorrt(monkeypatch)
    options = BuildOptions(profiles=SMALL)
    build_engines(model_dir, options, images=IMAGES[:1])
    cache = model_dir / "engines" / FAKE_DIR / "timing.cache"
    assert cache.read_bytes() == b"++"  # one entry per engine built
    result = build_engines(model_dir, BuildOptions(precision="fp32", profiles=SMALL),
                           images=IMAGES[:1])
    assert trt.calls[2]["cache"].data.startswith(b"++")  # the stored cache was loaded
    assert cache.read_bytes() == b"++++"
    assert sorted(result.build.precisions) == ["fp16", "fp32"]
    assert result.build.precisions["fp32"].verification["gates"] == ENGINE_GATES["fp32"]


def test_a_failed_check_records_nothing_and_keeps_the_old_engines(model_dir, monkeypatch):
    install_fake_tensorrt(monkeypatch)
    build_engines(model_dir, BuildOptions(profiles=SMALL), images=IMAGES[:1])
    engine_dir = model_dir / "engines" / FAKE_DIR
    before = {p.name: p.read_bytes() for p in engine_dir.iterdir() if p.name != "timing.cache"}
    monkeypatch.setitem(ENGINE_GATES, "fp16", {"mean_iou": 1.01, "min_iou": 0.97})
    with pytest.raises(EngineVerificationError):
        build_engines(model_dir, BuildOptions(profiles=rec.DEFAULT_PROFILES),
                      images=IMAGES[:1])
    after = {p.name: p.read_bytes() for p in engine_dir.iterdir() if p.name != "timing.cache"}
    assert after == before
    assert not [p for p in engine_dir.iterdir() if p.name.startswith(".")]


def test_a_failed_build_leaves_no_engines(model_dir, monkeypatch):
    trt, _ = install_fake_tensorrt(monkeypatch)
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda *a: None)
    with pytest.raises(BackendError, match="could not build an engine from encoder.fp16.onnx"):
        build_engines(model_dir, BuildOptions(), images=IMAGES[:1])
    engine_dir = model_dir / "engines" / FAKE_DIR
    assert [p.name for p in engine_dir.iterdir()] == []


def test_adopt_records_engines_that_trtexec_built(model_dir, monkeypatch):
    install_fake_tensorrt(monkeypatch)
    with pytest.raises(ModelFolderError, match="--print-trtexec"):
        adopt_engines(model_dir, images=IMAGES[:1])
    build_engines(model_dir, BuildOptions(profiles=SMALL), images=IMAGES[:1])
    engine_dir = model_dir / "engines" / FAKE_DIR
    (engine_dir / "build.json").unlink()  # as trtexec leaves them
    result = adopt_engines(model_dir, images=IMAGES[:1])
    entry = eng.read_build_json(engine_dir).precisions["fp16"]
    assert entry.built_by == "trtexec" and entry.flags is None
    assert entry.profiles == SMALL  # read from the engine itself
    assert result.entry == entry


def test_cli_builds_with_progress_and_a_summary(model_dir, monkeypatch, capsys):
    install_fake_tensorrt(monkeypatch)
    monkeypatch.setattr("samspt.export.trt_check.bundled_verify_images", lambda: IMAGES[:1])
    assert build_main([str(model_dir), "--prompts", "1,4,8", "--points", "1,2,6"]) == 0
    captured = capsys.readouterr()
    assert "building the fp16 encoder engine" in captured.err
    assert "checking the fp16 engines against onnxruntime fp32" in captured.err
    assert f"fp16 TensorRT engines in {model_dir / 'engines' / FAKE_DIR}" in captured.out
    assert "prompts 1,4,8, points 1,2,6" in captured.out and "mean IoU" in captured.out


# ---- without torch (a Jetson with samspt's base install and [trt]) ------------------------------

WITHOUT_TORCH = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("torch", "torchvision", "segment_anything")


class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed here")
        return None


sys.meta_path.insert(0, NoTorch())
import samspt.export
import samspt.export.to_tensorrt
import samspt.export.trt_build
import samspt.export.trt_check
import samspt.export.trt_folder
import samspt.export.trt_network
import samspt.export.trt_options
import samspt.export.trtexec
from tests.runtime.fake_tensorrt import fake_modules

sys.modules.update(fake_modules())
code = samspt.export.to_tensorrt.main([sys.argv[1], "--prompts", "1,4,8", "--points", "1,2,6"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("loaded:", loaded)
sys.exit(code or bool(loaded))
"""


@pytest.mark.integration
def test_engines_build_and_check_without_torch(model_dir):
    """The build and its check against ONNX Runtime (default: the bundled samples) import no
    torch: the stand-in TensorRT builds, samspt checks and records."""
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(model_dir)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    entry = eng.read_build_json(model_dir / "engines" / FAKE_DIR).precisions["fp16"]
    assert entry.verification["images"] == len(bundled_verify_images())


# ---- the real TensorRT --------------------------------------------------------------------------

@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_real_build_of_tiny_engines(request, precision):
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    model_dir = request.getfixturevalue("model_dir")
    from samspt.runtime.trt_backend import TrtGraphs

    options = BuildOptions(precision=precision, profiles=SMALL, workspace_mb=512)
    result = build_engines(model_dir, options, images=IMAGES)
    entry = result.entry
    assert entry.verification["mean_iou"] >= ENGINE_GATES[precision]["mean_iou"]
    cache = result.engine_dir / "timing.cache"
    assert cache.stat().st_size > 0
    again = build_engines(model_dir, options, images=IMAGES[:1])  # reuses the cache
    assert again.engine_dir == result.engine_dir and cache.stat().st_size > 0
    with TrtGraphs.from_model_dir(model_dir, precision) as graphs:
        assert graphs.profiles == SMALL
        ort = _ort(model_dir, "fp32")
        name, image, boxes = IMAGES[0]
        from samspt.runtime.preprocess import preprocess_image
        from samspt.runtime.prompts import pack_prompts, scale_coords

        x, resized = preprocess_image(image, 64)
        coords, labels = pack_prompts(boxes=boxes)
        coords = scale_coords(coords, image.shape[:2], resized)
        got = graphs.decode(graphs.embed(x), coords, labels)
        want = ort.decode(ort.encode(x), coords, labels)
        scale = float(np.abs(want[1]).max()) + 1.0
        assert float(np.abs(got[1] - want[1]).max()) <= 0.05 * scale


def test_build_then_inspect_takes_the_engines_by_default(model_dir, monkeypatch, tmp_path, capsys):
    """samspt-build -> Inspector(backend="auto") and samspt-inspect: with FP16 engines for this
    GPU and TensorRT, the default precision follows the backend (engines, not FP32 graphs on
    ONNX Runtime), and the answers are the ONNX Runtime graphs' within the engine gate."""
    from samspt.runtime import Inspector
    from samspt.runtime.inspect_images import main as inspect_main
    from samspt.runtime.parity import pooled_mask_iou

    install_fake_tensorrt(monkeypatch)
    build_engines(model_dir, BuildOptions(profiles=SMALL, workspace_mb=512), images=IMAGES[:1])
    name, image, boxes = IMAGES[0]
    with Inspector(model_dir) as engines, Inspector(model_dir, backend="onnxruntime") as ort:
        assert engines.backend == "tensorrt" and engines.precision == "fp16"
        assert ort.precision == "fp32"
        got, want = engines.inspect(image, boxes=boxes), ort.inspect(image, boxes=boxes)
        assert pooled_mask_iou(got.masks, want.masks) >= ENGINE_GATES["fp16"]["mean_iou"]
        engines.set_image(image)
        again = engines.predict(boxes=boxes)
        assert np.array_equal(again.masks, got.masks)
    tile = tmp_path / f"{name}.png"
    from PIL import Image

    Image.fromarray(image).save(tile)
    assert inspect_main([str(model_dir), str(tile), "--out", str(tmp_path / "out")]) == 0
    assert "on tensorrt, fp16" in capsys.readouterr().err


def test_a_refused_timing_cache_is_replaced_not_written_back(model_dir, monkeypatch, caplog):
    from ..runtime.fake_tensorrt import STALE_CACHE

    install_fake_tensorrt(monkeypatch)
    engine_dir = model_dir / "engines" / FAKE_DIR
    engine_dir.mkdir(parents=True)
    (engine_dir / "timing.cache").write_bytes(STALE_CACHE + b"-from-another-gpu")
    build_engines(model_dir, BuildOptions(profiles=SMALL), images=IMAGES[:1])
    assert (engine_dir / "timing.cache").read_bytes() == b"++"      # a new cache, two entries
    assert "refuses the stored timing cache" in caplog.text
