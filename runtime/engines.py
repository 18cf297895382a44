"""TensorRT engine folders: naming, ``build.json``, and the check that an engine fits this machine.

Pure Python (no TensorRT, no CUDA): the builder (:mod:`samspt.export.trt_build`) and the runtime
(:mod:`samspt.runtime.trt_backend`) share it, and it is tested without a GPU.

A TensorRT engine runs only on the GPU model and the TensorRT version that built it, so engines
live per machine kind inside the model folder::

    MODEL_DIR/
      manifest.json, encoder.fp16.onnx, decoder.fp16.onnx, ...
      engines/
        nvidia-h100-80gb-hbm3-trt10.3.0/        <sanitised GPU name>-trt<major.minor.patch>
          encoder.fp16.engine  decoder.fp16.engine
          timing.cache                          TensorRT's timing cache, reused across builds
          build.json                            written last: the build counts once it exists

``build.json`` (``schema_version`` 1; read and written here only, as the typed
:class:`samspt.runtime.build_record.BuildRecord`, checked on every read and before every write)::

    {
      "schema_version": 1,
      "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]},
      "tensorrt_version": "10.3.0.26",
      "cuda": {"driver": "12.4", "pycuda": "12.2"},
      "model": {"name": "example_cnn"},
      "timing_cache": "timing.cache",
      "tools": {"samspt": "0.1.0", "tensorrt": "10.3.0.26"},
      "precisions": {
        "fp16": {
          "built_by": "samspt-build",            # or "trtexec" (engines adopted with --adopt)
          "built": "2026-11-24T17:00:00Z", "build_seconds": 81.2,
          "flags": {"strongly_typed": true, "workspace_mb": 4096, "device": 0},  # null: trtexec
          "profiles": {"prompts": [1, 16, 64], "points": [1, 2, 16],    # min, opt, max
                       "views": [1, 4, 8]},     # encoder views per call (absent: 1,1,1)
          "engines": {
            "encoder": {"file": "encoder.fp16.engine", "sha256": "...", "bytes": 123,
                        "source": {"file": "encoder.fp16.onnx", "sha256": "..."}},
            "decoder": {...}},
          "verification": {"reference": "onnxruntime fp32 (CPU)", "gates": {...},
                           "mean_iou": 0.998, "min_iou": 0.98, "max_logit_error": 0.1, ...}
        },
        "fp32": {...}
      }
    }
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from samspt.runtime.build_record import (BuildRecord, BuildRecordError, EngineFile, GpuInfo,
                                         PrecisionBuild, Profile)
from samspt.runtime.errors import ConfigError, ModelFolderError
from samspt.runtime.files import atomic_write_text, sha256_file
from samspt.runtime.manifest import (GRAPH_KINDS, PRECISIONS, Manifest, graph_file_name,
                                     read_json_object)

ENGINES_DIR = "engines"
BUILD_JSON = "build.json"
TIMING_CACHE = "timing.cache"
BUILD_COMMAND = "samspt-build"  # console script of export/to_tensorrt.py

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?((?:\.\d+)*)(.*)$")


def parse_profile(text: str, flag: str = "--prompts") -> Profile:
    """``"1,16,64"`` -> Profile(1, 16, 64); a single value ``"8"`` fixes the dimension at 8.

    Raises :class:`ConfigError` naming ``flag`` when the text is not 1 or 3 integers >= 1 in
    non-decreasing order.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a list of integers: give MIN,OPT,MAX such as "
                          f"{flag} 1,16,64 (or one value to fix the size)") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ConfigError(f"{flag} {text!r} has {len(values)} values; give MIN,OPT,MAX such as "
                          f"{flag} 1,16,64 (or one value to fix the size)")
    if min(values) < 1:
        raise ConfigError(f"{flag} {text!r}: sizes must be at least 1")
    if not values[0] <= values[1] <= values[2]:
        raise ConfigError(f"{flag} {text!r}: need MIN <= OPT <= MAX (the optimum is the size "
                          "TensorRT tunes its kernels for)")
    return Profile(*values)


def sanitize_gpu_name(name: str) -> str:
    """A GPU name as a safe folder name: ``"NVIDIA H100 80GB HBM3"`` -> ``nvidia-h100-80gb-hbm3``
    (lower case, runs of anything but letters and digits become one ``-``)."""
    safe = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    if not safe:
        raise ConfigError(f"GPU name {name!r} has no letters or digits; pass the name CUDA "
                          "reports (nvidia-smi --query-gpu=name --format=csv,noheader)")
    return safe


def _version_parts(version: str) -> Tuple[int, ...]:
    match = _VERSION.match(str(version).strip())
    if not match:
        raise ConfigError(f"TensorRT version {version!r} is not like 10.3.0; pass what "
                          "`python -c 'import tensorrt; print(tensorrt.__version__)'` prints")
    major, minor, patch, rest, _ = match.groups()
    extra = tuple(int(p) for p in rest.split(".") if p)
    return (int(major), int(minor), int(patch or 0)) + extra


def short_version(version: str) -> str:
    """``"10.3.0.26"`` -> ``"10.3.0"`` (major.minor.patch, as engine folders are named)."""
    return ".".join(str(p) for p in _version_parts(version)[:3])


def engine_dir_name(gpu_name: str, trt_version: str) -> str:
    """``nvidia-h100-80gb-hbm3-trt10.3.0``."""
    return f"{sanitize_gpu_name(gpu_name)}-trt{short_version(trt_version)}"


def engine_file_name(kind: str, precision: str) -> str:
    """``encoder.fp16.engine``: named like the ONNX graph it was built from."""
    if kind not in GRAPH_KINDS or precision not in PRECISIONS:
        raise ConfigError(f"no engine {kind!r} at {precision!r}: kinds are "
                          f"{', '.join(GRAPH_KINDS)}, precisions {', '.join(PRECISIONS)}")
    return graph_file_name(kind, precision)[: -len(".onnx")] + ".engine"


def build_command(model_dir: Union[str, Path], precision: Optional[str] = None,
                  prompts: Optional[Profile] = None, points: Optional[Profile] = None,
                  views: Optional[Profile] = None) -> str:
    """The command that (re)builds engines on this machine, for error messages."""
    parts = [BUILD_COMMAND, str(model_dir)]
    if precision:
        parts += ["--precision", precision]
    for flag, profile in (("--prompts", prompts), ("--points", points), ("--views", views)):
        if profile:
            parts += [flag, profile.text()]
    return " ".join(parts)


def _rebuild(model_dir: Union[str, Path], precision: Optional[str] = None) -> str:
    return (f"build engines on this machine with `{build_command(model_dir, precision)}` "
            f"(or `python export/to_tensorrt.py {model_dir}`)")


# ---- build.json ---------------------------------------------------------------------------------

def read_build_json(engine_dir: Union[str, Path]) -> BuildRecord:
    """``engine_dir/build.json``, checked against the schema (:class:`BuildRecord`);
    :class:`ModelFolderError` with the rebuild command if it is absent or does not follow it."""
    engine_dir = Path(engine_dir)
    path = engine_dir / BUILD_JSON
    model_dir = engine_dir.parent.parent
    if not path.is_file():
        raise ModelFolderError(f"{engine_dir} has no {BUILD_JSON}: its build did not finish or "
                               f"failed verification; {_rebuild(model_dir)}")
    try:
        return BuildRecord.from_dict(read_json_object(path, _rebuild(model_dir)))
    except BuildRecordError as exc:
        raise ModelFolderError(f"{path} does not follow the build.json schema: {exc}; "
                               f"{_rebuild(model_dir)}") from None


def write_build_json(engine_dir: Union[str, Path], record: BuildRecord) -> Path:
    """Write ``build.json`` atomically (a reader sees the old file or the new one, never half),
    after checking that what is written reads back as the same record."""
    data = record.to_dict()
    try:
        again = BuildRecord.from_dict(json.loads(json.dumps(data)))
    except BuildRecordError as exc:
        raise ConfigError(f"refusing to write a build.json record that does not follow the "
                          f"schema: {exc}") from None
    if again != record:
        raise ConfigError("refusing to write a build.json record that does not read back the "
                          "same (a value JSON cannot hold)")
    path = Path(engine_dir) / BUILD_JSON
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


# ---- finding and checking engines ---------------------------------------------------------------

def _describe(engine_dir: Path) -> str:
    try:
        data = read_build_json(engine_dir)
    except ModelFolderError:
        return f"{engine_dir.name} (unfinished)"
    precisions = ", ".join(sorted(data.precisions)) or "none"
    return (f"{engine_dir.name} ({data.gpu.name}, TensorRT {data.tensorrt_version}, "
            f"{precisions})")


def list_engine_dirs(model_dir: Union[str, Path]) -> List[Path]:
    """Engine folders of ``model_dir`` (finished or not), sorted by name."""
    root = Path(model_dir) / ENGINES_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_engine_dir(model_dir: Union[str, Path], gpu_name: str, trt_version: str) -> Path:
    """The engine folder of ``model_dir`` for this GPU and TensorRT version.

    Raises :class:`ModelFolderError` naming the engines that do exist (for which GPU and version)
    and the command that builds the missing ones.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"model folder {model_dir} does not exist; export one with "
                               "`samspt-export --out DIR`")
    wanted = model_dir / ENGINES_DIR / engine_dir_name(gpu_name, trt_version)
    if (wanted / BUILD_JSON).is_file():
        return wanted
    others = [p for p in list_engine_dirs(model_dir) if p != wanted]
    here = f"{gpu_name} with TensorRT {short_version(trt_version)}"
    if wanted.is_dir():
        raise ModelFolderError(f"the engines in {wanted} for {here} are unfinished (no "
                               f"{BUILD_JSON}: the build stopped or failed verification); "
                               f"{_rebuild(model_dir)}")
    if others:
        raise ModelFolderError(
            f"{model_dir} has no TensorRT engines for {here}; it has engines for: "
            f"{'; '.join(_describe(p) for p in others)}. An engine runs only on the GPU model "
            f"and TensorRT version that built it: {_rebuild(model_dir)}")
    raise ModelFolderError(f"{model_dir} has no TensorRT engines; {_rebuild(model_dir)}, or "
                           "use the ONNX Runtime backend")


def check_compatible(build: BuildRecord, gpu: Union[str, GpuInfo], version: str,
                     model_dir: Union[str, Path, None] = None) -> None:
    """Refuse (:class:`ModelFolderError`) engines built for another GPU or TensorRT version.

    ``gpu``: this machine's GPU name or :class:`GpuInfo`; ``version``: ``tensorrt.__version__``.
    Versions compare on all the components both sides give (10.3.0.26 vs 10.3.0.30 differ).
    """
    gpu = GpuInfo(gpu) if isinstance(gpu, str) else gpu
    where = str(model_dir) if model_dir is not None else "MODEL_DIR"
    problems = []
    if sanitize_gpu_name(build.gpu.name) != sanitize_gpu_name(gpu.name):
        problems.append(f"they were built for a {build.gpu.name}, this GPU is a {gpu.name}")
    else:
        built_cc = build.gpu.compute_capability
        if built_cc and gpu.compute_capability and \
                tuple(built_cc) != tuple(gpu.compute_capability):
            problems.append(f"they were built for compute capability "
                            f"{'.'.join(map(str, built_cc))}, this GPU has "
                            f"{'.'.join(map(str, gpu.compute_capability))}")
    built_version = build.tensorrt_version
    try:
        theirs, mine = _version_parts(built_version), _version_parts(version)
        common = min(len(theirs), len(mine))
        same = theirs[:common] == mine[:common]
    except ConfigError:
        same = False
    if not same:
        problems.append(f"they were built by TensorRT {built_version}, this is TensorRT "
                        f"{version}")
    if problems:
        raise ModelFolderError(
            f"refusing these TensorRT engines: {'; '.join(problems)}. An engine runs only on "
            f"the GPU model and the TensorRT version that built it: {_rebuild(where)}")


def precision_entry(build: BuildRecord, precision: Optional[str] = None,
                    model_dir: Union[str, Path, None] = None) -> Tuple[str, PrecisionBuild]:
    """(precision, its engines' record) of ``build.json``; ``None`` picks fp16 if built, else
    the only one."""
    built = build.precisions
    where = str(model_dir) if model_dir is not None else "MODEL_DIR"
    if precision is None:
        if "fp16" in built:
            precision = "fp16"
        elif len(built) == 1:
            precision = next(iter(built))
        else:
            raise ModelFolderError(f"no engines were built here (build.json lists none); "
                                   f"{_rebuild(where)}")
    if precision not in built:
        raise ModelFolderError(f"no {precision} engines were built for this GPU (built: "
                               f"{', '.join(sorted(built)) or 'none'}); "
                               f"{_rebuild(where, precision)}")
    return precision, built[precision]


def check_sources(build: BuildRecord, manifest: Manifest, precision: str,
                  model_dir: Union[str, Path, None] = None) -> None:
    """Refuse engines built from other ONNX graphs than the model folder's (a re-export)."""
    where = str(model_dir) if model_dir is not None else "MODEL_DIR"
    _, entry = precision_entry(build, precision, model_dir)
    stale = [kind for kind, engine in entry.engines.items()
             if engine.source_sha256 != manifest.sha256(engine.source_file)]
    if stale:
        raise ModelFolderError(f"the {precision} {' and '.join(stale)} engines were built from "
                               f"another export of this model (their source ONNX sha256 does not "
                               f"match manifest.json); {_rebuild(where, precision)}")


def verify_engine_files(engine_dir: Union[str, Path], entry: PrecisionBuild) -> Dict[str, Path]:
    """Check the engines of a precision's record against their size and sha256; kind -> path."""
    engine_dir = Path(engine_dir)
    paths, problems = {}, []
    for kind in GRAPH_KINDS:
        info: EngineFile = entry.engines[kind]
        path = engine_dir / info.file
        if not path.is_file():
            problems.append(f"{info.file} is missing")
        elif path.stat().st_size != info.bytes or sha256_file(path) != info.sha256:
            problems.append(f"{info.file} does not match its sha256 in build.json (replaced "
                            "or corrupted)")
        paths[kind] = path
    if problems:
        raise ModelFolderError(f"{engine_dir} is damaged: {'; '.join(problems)}; "
                               f"{_rebuild(engine_dir.parent.parent)}")
    return paths
