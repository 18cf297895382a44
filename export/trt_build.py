"""Build TensorRT engines from a model folder's ONNX graphs, check them, record them.

``build_engines(model_dir, BuildOptions(...))`` builds *strongly typed* engines (precision comes
from the graph's types: the FP16 graphs keep their FP32 islands; no precision builder flags, as
TensorRT 11 requires) for the encoder and the decoder, with one optimization profile for the
decoder's prompts B and points N, a workspace limit, and the engine folder's persistent timing
cache. The engines are staged in a hidden folder, checked against ONNX Runtime on the bundled
samples (mask IoU, :data:`ENGINE_GATES`), then moved into
``MODEL_DIR/engines/<gpu>-trt<version>/``; ``build.json`` is written last (see
:mod:`samspt.runtime.engines`). A failed build or check leaves the previous engines as they were.

For machines without TensorRT's Python builder, :func:`trtexec_commands` gives the equivalent
``trtexec`` command lines (pure Python), and :func:`adopt_engines` checks and records engines that
``trtexec`` built.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import samspt
from samspt.runtime import preprocess as pp
from samspt.runtime import tensors
from samspt.runtime.engines import (BUILD_COMMAND, BUILD_JSON, BUILD_SCHEMA_VERSION,
                                    DEFAULT_PROFILES, ENGINES_DIR, TIMING_CACHE, GpuInfo,
                                    ShapeProfiles, build_command, check_compatible,
                                    engine_dir_name, engine_file_name, read_build_json,
                                    write_build_json)
from samspt.runtime.errors import BackendError, ConfigError, ModelFolderError, SamsptError
from samspt.runtime.files import atomic_write_bytes, sha256_file
from samspt.runtime.manifest import GRAPH_KINDS, PRECISIONS, graph_entry, read_manifest

log = logging.getLogger(__name__)

# Mask IoU of engine vs ONNX Runtime (FP32 graphs), draft and final masks. FP32 engines may use
# TF32 (TensorRT's default on Ampere and later), so their gate allows FP16-like differences.
ENGINE_GATES = {"fp32": {"mean_iou": 0.995, "min_iou": 0.97},
                "fp16": {"mean_iou": 0.99, "min_iou": 0.97}}
DEFAULT_WORKSPACE_MB = 4096
Stage = Callable[[str], None]
VerifyImage = Tuple[str, np.ndarray, np.ndarray]  # name, HxWx3 uint8, Kx4 float32 boxes


class EngineVerificationError(SamsptError):
    """A built engine does not compute what ONNX Runtime computes from the same model."""


@dataclass
class BuildOptions:
    """What to build: ``precision`` of the source graphs, the decoder's ``profiles`` (prompts B,
    points N), the builder's ``workspace_mb`` limit, and the CUDA ``device``."""

    precision: str = "fp16"
    profiles: ShapeProfiles = DEFAULT_PROFILES
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    device: int = 0

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                              f"{self.precision!r}")
        if not isinstance(self.workspace_mb, int) or self.workspace_mb < 1:
            raise ConfigError(f"--workspace-mb must be a whole number of MiB >= 1, got "
                              f"{self.workspace_mb!r}")
        if self.profiles.points.max < 2:
            raise ConfigError(f"--points {self.profiles.points.text()}: a box prompt is 2 points, "
                              "so the maximum must be at least 2")
        if self.device < 0:
            raise ConfigError(f"--device must be >= 0, got {self.device}")


@dataclass
class BuildResult:
    engine_dir: Path
    precision: str
    build: Dict[str, Any]                                 # the whole build.json written
    files: Dict[str, int] = field(default_factory=dict)   # engine file -> bytes

    @property
    def entry(self) -> Dict[str, Any]:
        return self.build["precisions"][self.precision]


# ---- pure Python: sources, profiles, trtexec ----------------------------------------------------

def check_profiles(manifest: Dict[str, Any], precision: str, profiles: ShapeProfiles) -> None:
    """The profile fits the decoder graph: fixed dimensions of point_coords/point_labels (ints in
    the manifest) must be asked for exactly."""
    graph = graph_entry(manifest, "decoder", precision)
    wanted = profiles.shapes()
    for spec in graph["inputs"]:
        if spec["name"] not in wanted:
            continue
        for axis, dim in enumerate(spec["shape"]):
            if not isinstance(dim, int):
                continue
            for label, shape in zip(("min", "opt", "max"), wanted[spec["name"]]):
                if shape[axis] != dim:
                    flag = "--prompts" if axis == 0 else "--points"
                    raise ConfigError(f"the decoder graph fixes axis {axis} of {spec['name']} at "
                                      f"{dim}, but the profile's {label} is {shape[axis]}: pass "
                                      f"{flag} {dim}, or export the model with dynamic prompts")


def load_sources(model_dir: Union[str, Path],
                 options: BuildOptions) -> Tuple[Dict[str, Any], Dict[str, Path]]:
    """(manifest, kind -> ONNX path) of ``model_dir`` at ``options.precision``, files verified.

    Raises :class:`ModelFolderError` when the folder is damaged or lacks that precision.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    sources = {}
    for kind in GRAPH_KINDS:
        try:
            sources[kind] = model_dir / graph_entry(manifest, kind, options.precision)["file"]
        except ModelFolderError as exc:
            other = [p for p in PRECISIONS if p in manifest["graphs"].get(kind, {})]
            hint = f"; or build from the graphs it has: --precision {other[0]}" if other else ""
            raise ModelFolderError(f"{model_dir}: {exc}{hint}") from None
    check_profiles(manifest, options.precision, options.profiles)
    return manifest, sources


def detect_target(gpu_name: Optional[str] = None, trt_version: Optional[str] = None,
                  device: int = 0) -> Tuple[str, str]:
    """(GPU name, TensorRT version) the engines are for: the arguments, else what pycuda and
    tensorrt report here. :class:`ConfigError` when neither says."""
    if trt_version is None:
        try:
            import tensorrt

            trt_version = str(tensorrt.__version__)
        except ImportError:
            pass
    if gpu_name is None:
        try:
            from samspt.runtime.trt_backend import device_info

            gpu_name = device_info(device).name
        except BackendError:
            pass
    missing = []
    if gpu_name is None:
        missing.append("--gpu-name NAME (the name CUDA reports: nvidia-smi --query-gpu=name "
                       "--format=csv,noheader on desktop and datacenter GPUs, 'Orin' on Jetson "
                       "Orin)")
    if trt_version is None:
        missing.append("--trt-version X.Y.Z (the TensorRT that will build and run the engines: "
                       "trtexec prints it, or dpkg -l | grep nvinfer)")
    if missing:
        raise ConfigError("cannot tell which GPU and TensorRT the engines are for (pycuda or "
                          f"tensorrt do not import here); pass {' and '.join(missing)}")
    return gpu_name, trt_version


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_commands(model_dir: Union[str, Path], engine_dir: Union[str, Path],
                     options: BuildOptions, manifest: Optional[Dict[str, Any]] = None,
                     trtexec: str = "trtexec") -> List[List[str]]:
    """The ``trtexec`` argument lists that build what :func:`build_engines` builds (encoder,
    then decoder), into ``engine_dir`` with its timing cache. No verification, no build.json:
    run :func:`adopt_engines` (``samspt-build MODEL_DIR --adopt``) afterwards."""
    options.validate()
    model_dir, engine_dir = Path(model_dir), Path(engine_dir)
    commands = []
    for kind in GRAPH_KINDS:
        onnx_name = (graph_entry(manifest, kind, options.precision)["file"] if manifest
                     else f"{kind}.{options.precision}.onnx")
        cmd = [trtexec, f"--onnx={model_dir / onnx_name}", "--stronglyTyped"]
        if kind == "decoder":
            shapes = options.profiles.shapes()
            for index, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
                cmd.append(f"{flag}=" + ",".join(f"{name}:{_dims(s[index])}"
                                                 for name, s in shapes.items()))
        cmd += [f"--memPoolSize=workspace:{options.workspace_mb}M",
                f"--timingCacheFile={engine_dir / TIMING_CACHE}",
                f"--saveEngine={engine_dir / engine_file_name(kind, options.precision)}",
                "--skipInference"]
        if options.device:
            cmd.append(f"--device={options.device}")
        commands.append(cmd)
    return commands


def format_trtexec(model_dir: Union[str, Path], engine_dir: Union[str, Path],
                   options: BuildOptions, manifest: Optional[Dict[str, Any]] = None,
                   gpu_name: str = "", trt_version: str = "") -> str:
    """A shell script: make the engine folder, the trtexec lines, then the adopt command."""
    model_dir = Path(model_dir)
    same = build_command(model_dir, options.precision, options.profiles.prompts,
                         options.profiles.points)
    lines = [f"# {options.precision} TensorRT engines of {model_dir} for {gpu_name or 'this GPU'}"
             f" with TensorRT {trt_version or '?'}: what `{same}` builds",
             shlex.join(["mkdir", "-p", str(engine_dir)])]
    lines += [shlex.join(cmd) for cmd in trtexec_commands(model_dir, engine_dir, options,
                                                          manifest)]
    adopt = [BUILD_COMMAND, str(model_dir), "--precision", options.precision, "--adopt"]
    if options.device:
        adopt += ["--device", str(options.device)]
    lines += ["# then check them against ONNX Runtime and record them (writes build.json; "
              "needs the tensorrt and pycuda Python modules):", shlex.join(adopt)]
    return "\n".join(lines) + "\n"


# ---- verification against ONNX Runtime (any backend with embed/decode) --------------------------

def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _fit(coords: np.ndarray, labels: np.ndarray, batch: int,
         points: int) -> Tuple[np.ndarray, np.ndarray]:
    """Repeat prompts up to ``batch`` rows and pad with padding points up to ``points``."""
    reps = -(-batch // len(coords))
    coords, labels = np.tile(coords, (reps, 1, 1))[:batch], np.tile(labels, (reps, 1))[:batch]
    extra = points - coords.shape[1]
    if extra > 0:
        coords = np.concatenate([coords, np.zeros((batch, extra, 2), np.float32)], axis=1)
        labels = np.concatenate([labels, np.full((batch, extra), tensors.LABEL_PADDING,
                                                 np.float32)], axis=1)
    return np.ascontiguousarray(coords), np.ascontiguousarray(labels)


def _decode_all(graphs: Any, embedding: Any, coords: np.ndarray, labels: np.ndarray,
                profiles: ShapeProfiles) -> Tuple[np.ndarray, ...]:
    """Decode B prompts in batches the profile allows (N padded up to its minimum)."""
    n = max(coords.shape[1], profiles.points.min)
    outs = []
    for start in range(0, len(coords), profiles.prompts.max):
        chunk = slice(start, start + profiles.prompts.max)
        rows = len(coords[chunk])
        c, l = _fit(coords[chunk], labels[chunk], max(rows, profiles.prompts.min), n)
        outs.append([o[:rows] for o in graphs.decode(embedding, c, l)])
    return tuple(np.concatenate(parts) for parts in zip(*outs))


def verify_engines(candidate: Any, reference: Any, manifest: Dict[str, Any],
                   images: Sequence[VerifyImage], precision: str,
                   profiles: ShapeProfiles) -> Dict[str, Any]:
    """Mask IoU of ``candidate`` (TrtGraphs) against ``reference`` (OrtGraphs), draft and final
    masks at each image's resolution, plus one call at the profile's largest B and N.

    Both take ``embed(1x3xSxS)`` and ``decode(embedding, BxNx2, BxN)``. Returns the figures;
    raises :class:`EngineVerificationError` when :data:`ENGINE_GATES` ``[precision]`` is missed.
    """
    size = int(manifest["input"]["image_size"])
    mean, std = manifest["input"]["pixel_mean"], manifest["input"]["pixel_std"]
    threshold = float(manifest.get("mask_threshold", pp.MASK_THRESHOLD))
    per_image, logit_err, score_err = [], 0.0, 0.0
    for index, (name, image, boxes) in enumerate(images):
        x, resized = pp.preprocess_image(image, size, mean, std)
        coords, labels = pp.pack_prompts(boxes=boxes)
        coords = pp.scale_coords(coords, image.shape[:2], resized)
        cases = [(name, coords, labels)]
        if index == 0:  # the profile's largest shapes, once
            big = _fit(coords, labels, profiles.prompts.max, profiles.points.max)
            cases.append((f"{name}@B{profiles.prompts.max}xN{profiles.points.max}", *big))
        ref_emb, cand_emb = reference.embed(x), candidate.embed(x)
        for label, c, l in cases:
            ref = _decode_all(reference, ref_emb, c, l, profiles)
            got = _decode_all(candidate, cand_emb, c, l, profiles)
            logit_err = max(logit_err, float(np.abs(got[1] - ref[1]).max()))
            score_err = max(score_err, float(np.abs(got[2] - ref[2]).max()))
            ious = []
            for mine, theirs in ((got[0], ref[0]), (got[1], ref[1])):  # draft, final
                a = pp.upscale_logits(mine, resized, image.shape[:2], size) > threshold
                b = pp.upscale_logits(theirs, resized, image.shape[:2], size) > threshold
                ious += [_iou(a[k], b[k]) for k in range(len(a))]
            per_image.append({"image": label, "prompts": int(c.shape[0]),
                              "points": int(c.shape[1]), "mean_iou": float(np.mean(ious)),
                              "min_iou": float(np.min(ious))})
    gate = ENGINE_GATES[precision]
    figures = {"gates": gate, "images": len(images),
               "mean_iou": float(np.mean([r["mean_iou"] for r in per_image])),
               "min_iou": float(np.min([r["min_iou"] for r in per_image])),
               "max_logit_error": logit_err, "max_score_error": score_err,
               "per_image": per_image}
    log.info("%s engines vs ONNX Runtime: mean mask IoU %.5f, min %.5f, max logit error %.3g",
             precision, figures["mean_iou"], figures["min_iou"], logit_err)
    if figures["mean_iou"] < gate["mean_iou"] or figures["min_iou"] < gate["min_iou"]:
        worst = min(per_image, key=lambda r: r["min_iou"])
        raise EngineVerificationError(
            f"the {precision} TensorRT engines do not match ONNX Runtime: mean mask IoU "
            f"{figures['mean_iou']:.4f} (gate {gate['mean_iou']}), minimum "
            f"{figures['min_iou']:.4f} (gate {gate['min_iou']}) at {worst['image']}, max logit "
            f"error {logit_err:.3g}. The engines were not recorded. Try --precision fp32, check "
            "the ONNX graphs with samspt-export's verification, or report the model and GPU")
    return figures


def _reference(model_dir: Path, manifest: Dict[str, Any], precision: str) -> Tuple[Any, str]:
    """ONNX Runtime on the FP32 graphs when the folder has them, on CPU."""
    from samspt.runtime.ort_backend import OrtGraphs

    ref = "fp32" if "fp32" in manifest["graphs"]["encoder"] else precision
    files = [model_dir / graph_entry(manifest, k, ref)["file"] for k in GRAPH_KINDS]
    return OrtGraphs(*files), f"onnxruntime {ref} (CPU)"


def _check(graphs: Any, model_dir: Path, manifest: Dict[str, Any], precision: str,
           images: Optional[Sequence[VerifyImage]], stage: Stage) -> Dict[str, Any]:
    if images is None:
        from samspt.export.verify import bundled_verify_images

        images = bundled_verify_images()
    reference, described = _reference(model_dir, manifest, precision)
    stage(f"checking the {precision} engines against {described} on {len(images)} images")
    figures = verify_engines(graphs, reference, manifest, images, precision, graphs.profiles)
    figures["reference"] = described
    return figures


# ---- TensorRT: building -------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timing_cache(config: Any, path: Path) -> Any:
    """The engine folder's timing cache (empty when absent or unreadable)."""
    data = path.read_bytes() if path.is_file() else b""
    cache = None
    if data:
        try:
            cache = config.create_timing_cache(data)
        except Exception as exc:  # noqa: BLE001 - TensorRT raises its own types
            log.warning("ignoring the unreadable timing cache %s (%s)", path, exc)
        if cache is None:
            log.warning("ignoring the timing cache %s: TensorRT cannot read it", path)
        else:
            log.info("reusing the timing cache %s (%d bytes)", path, len(data))
    return cache or config.create_timing_cache(b"")


def _build_one(trt: Any, builder: Any, logger: Any, onnx_path: Path, options: BuildOptions,
               cache: Any) -> bytes:
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT's ONNX parser rejects {onnx_path.name}: {errors}. Export "
                           "the model again with this samspt (opset 17), or report it")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    config.set_timing_cache(cache, False)
    shapes = options.profiles.shapes()
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(d < 0 for d in tuple(network.get_input(i).shape))]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            if tensor.name not in shapes:
                raise BackendError(f"{onnx_path.name} has a dynamic input {tensor.name} "
                                   f"{tuple(tensor.shape)} that samspt has no profile for; export "
                                   "the model again with this samspt")
            profile.set_shape(tensor.name, *shapes[tensor.name])
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT could not build an engine from {onnx_path.name} (its errors "
                           "are in the log above); a larger --workspace-mb or smaller --prompts/"
                           "--points maximum may help")
    return bytes(memoryview(plan))


def _engine_entry(engine_dir: Path, manifest: Dict[str, Any], precision: str) -> Dict[str, Any]:
    entry = {}
    for kind in GRAPH_KINDS:
        name = engine_file_name(kind, precision)
        source = graph_entry(manifest, kind, precision)["file"]
        entry[kind] = {"file": name, "sha256": sha256_file(engine_dir / name),
                       "bytes": (engine_dir / name).stat().st_size,
                       "source": {"file": source, "sha256": manifest["files"][source]["sha256"]}}
    return entry


def _record(engine_dir: Path, gpu: GpuInfo, version: str, manifest: Dict[str, Any],
            precision: str, entry: Dict[str, Any]) -> Dict[str, Any]:
    """build.json with ``entry`` for ``precision``, keeping other precisions' records."""
    from samspt.runtime.trt_backend import cuda_versions

    build = None
    if (engine_dir / BUILD_JSON).is_file():
        try:
            build = read_build_json(engine_dir)
            check_compatible(build, gpu, version)
        except ModelFolderError as exc:
            log.warning("replacing %s: %s", engine_dir / BUILD_JSON, exc)
            build = None
    build = build or {"precisions": {}}
    build.update({"schema_version": BUILD_SCHEMA_VERSION,
                  "gpu": {"name": gpu.name, "compute_capability":
                          list(gpu.compute_capability) if gpu.compute_capability else None},
                  "tensorrt_version": version, "cuda": cuda_versions(),
                  "model": {"name": manifest.get("name")}, "timing_cache": TIMING_CACHE,
                  "tools": {"samspt": samspt.__version__, "tensorrt": version}})
    build["precisions"][precision] = entry
    write_build_json(engine_dir, build)
    return build


def _target(model_dir: Path, options: "BuildOptions"):
    """(manifest, sources, tensorrt module, GpuInfo, TensorRT version, engine folder) of a build
    on this machine's GPU ``options.device``."""
    from samspt.runtime.trt_backend import device_info, import_backend

    options.validate()
    manifest, sources = load_sources(model_dir, options)
    trt, _ = import_backend()
    gpu, version = device_info(options.device), str(trt.__version__)
    return manifest, sources, trt, gpu, version, \
        model_dir / ENGINES_DIR / engine_dir_name(gpu.name, version)


def build_engines(model_dir: Union[str, Path], options: Optional[BuildOptions] = None,
                  stage: Optional[Stage] = None,
                  images: Optional[Sequence[VerifyImage]] = None) -> BuildResult:
    """Build, check and record the engines of ``model_dir`` for this GPU (see module doc).

    ``images``: (name, HxWx3 uint8, Kx4 boxes) for the check; default: the bundled samples.
    Raises :class:`ModelFolderError`, :class:`ConfigError`, :class:`BackendError` (no TensorRT,
    build failure) or :class:`EngineVerificationError`.
    """
    from samspt.runtime.trt_backend import TrtGraphs, device_context, trt_logger

    options = options or BuildOptions()
    stage = stage or (lambda text: log.info("%s", text))
    model_dir = Path(model_dir)
    manifest, sources, trt, gpu, version, engine_dir = _target(model_dir, options)
    engine_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{options.precision}-", dir=engine_dir))
    names = {kind: engine_file_name(kind, options.precision) for kind in GRAPH_KINDS}
    try:
        start = time.perf_counter()
        with device_context(options.device):
            logger = trt_logger()
            builder = trt.Builder(logger)
            cache_config = builder.create_builder_config()
            cache = _timing_cache(cache_config, engine_dir / TIMING_CACHE)
            for kind in GRAPH_KINDS:
                stage(f"building the {options.precision} {kind} engine from {sources[kind].name} "
                      f"({gpu.name}, TensorRT {version})")
                plan = _build_one(trt, builder, logger, sources[kind], options, cache)
                atomic_write_bytes(staging / names[kind], plan)
                atomic_write_bytes(engine_dir / TIMING_CACHE, bytes(memoryview(cache.serialize())))
            seconds = time.perf_counter() - start
        with TrtGraphs.from_engine_files(staging / names["encoder"], staging / names["decoder"],
                                         options.device) as graphs:
            verification = _check(graphs, model_dir, manifest, options.precision, images, stage)
        for name in names.values():
            os.replace(staging / name, engine_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry = {"built_by": BUILD_COMMAND, "built": _now(), "build_seconds": round(seconds, 1),
             "flags": {"strongly_typed": True, "workspace_mb": options.workspace_mb,
                       "device": options.device},
             "profiles": options.profiles.to_dict(),
             "engines": _engine_entry(engine_dir, manifest, options.precision),
             "verification": verification}
    build = _record(engine_dir, gpu, version, manifest, options.precision, entry)
    stage(f"wrote {engine_dir}")
    return BuildResult(engine_dir, options.precision, build,
                       {n: (engine_dir / n).stat().st_size for n in names.values()})


def adopt_engines(model_dir: Union[str, Path], options: Optional[BuildOptions] = None,
                  stage: Optional[Stage] = None,
                  images: Optional[Sequence[VerifyImage]] = None) -> BuildResult:
    """Check and record engines that the :func:`trtexec_commands` lines built into this GPU's
    engine folder; the profile is read from the decoder engine itself."""
    from samspt.runtime.trt_backend import TrtGraphs

    options = options or BuildOptions()
    stage = stage or (lambda text: log.info("%s", text))
    model_dir = Path(model_dir)
    manifest, _, trt, gpu, version, engine_dir = _target(model_dir, options)
    paths = {kind: engine_dir / engine_file_name(kind, options.precision) for kind in GRAPH_KINDS}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise ModelFolderError(f"{engine_dir} lacks {', '.join(missing)}: run the commands of "
                               f"`{BUILD_COMMAND} {model_dir} --precision {options.precision} "
                               "--print-trtexec` on this machine first")
    stage(f"opening the {options.precision} engines in {engine_dir}")
    with TrtGraphs.from_engine_files(paths["encoder"], paths["decoder"], options.device) as graphs:
        verification = _check(graphs, model_dir, manifest, options.precision, images, stage)
        profiles = graphs.profiles
    built = _dt.datetime.fromtimestamp(paths["decoder"].stat().st_mtime, _dt.timezone.utc)
    entry = {"built_by": "trtexec", "built": built.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "build_seconds": None, "flags": None, "profiles": profiles.to_dict(),
             "engines": _engine_entry(engine_dir, manifest, options.precision),
             "verification": verification}
    build = _record(engine_dir, gpu, version, manifest, options.precision, entry)
    stage(f"recorded {engine_dir / BUILD_JSON}")
    return BuildResult(engine_dir, options.precision, build,
                       {p.name: p.stat().st_size for p in paths.values()})
