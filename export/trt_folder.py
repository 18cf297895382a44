"""What an engine folder keeps besides the engines: the timing cache and ``build.json`` records
(see :mod:`samspt.runtime.engines` for the folder's layout and schema).
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import samspt
from samspt.runtime.build_record import BuildRecord, EngineFile, GpuInfo, PrecisionBuild
from samspt.runtime.engines import (BUILD_JSON, TIMING_CACHE, check_compatible, engine_file_name,
                                    read_build_json, write_build_json)
from samspt.runtime.errors import ModelFolderError
from samspt.runtime.files import sha256_file
from samspt.runtime.manifest import GRAPH_KINDS, Manifest
from samspt.runtime.trt_env import cuda_versions

log = logging.getLogger(__name__)


def utc_stamp(seconds: Optional[float] = None) -> str:
    """A time (``time.time()`` seconds, default now) as build.json records it, in UTC:
    ``2025-01-31T12:00:00Z``."""
    when = _dt.datetime.now(_dt.timezone.utc) if seconds is None else \
        _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def load_timing_cache(config: Any, path: Path) -> Any:
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


def engine_files(engine_dir: Path, manifest: Manifest, precision: str) -> Dict[str, EngineFile]:
    """build.json's record of the two engines of ``precision``: file, sha256, size, ONNX source."""
    files = {}
    for kind in GRAPH_KINDS:
        name = engine_file_name(kind, precision)
        source = manifest.graph(kind, precision)["file"]
        files[kind] = EngineFile(name, sha256_file(engine_dir / name),
                                 (engine_dir / name).stat().st_size, source,
                                 manifest.sha256(source) or "")
    return files


def record_build(engine_dir: Path, gpu: GpuInfo, version: str, manifest: Manifest,
                 precision: str, entry: PrecisionBuild) -> BuildRecord:
    """build.json with ``entry`` for ``precision``, keeping other precisions' records of the
    same GPU and TensorRT version."""
    kept: Dict[str, PrecisionBuild] = {}
    if (engine_dir / BUILD_JSON).is_file():
        try:
            old = read_build_json(engine_dir)
            check_compatible(old, gpu, version)
            kept = dict(old.precisions)
        except ModelFolderError as exc:
            log.warning("replacing %s: %s", engine_dir / BUILD_JSON, exc)
    build = BuildRecord(gpu=gpu, tensorrt_version=version, precisions={**kept, precision: entry},
                        cuda=cuda_versions(), model_name=manifest.name,
                        timing_cache=TIMING_CACHE,
                        tools={"samspt": samspt.__version__, "tensorrt": version})
    write_build_json(engine_dir, build)
    return build
