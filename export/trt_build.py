"""Build TensorRT engines from a model folder's ONNX graphs, check them, record them.

``build_engines(model_dir, BuildOptions(...))`` builds *strongly typed* engines (precision comes
from the graph's types: the FP16 graphs keep their FP32 islands; no precision builder flags, as
TensorRT 11 requires) for the encoder and the decoder, with one optimization profile for the
decoder's prompts B and points N, a workspace limit, and the engine folder's persistent timing
cache. The engines are staged in a hidden folder, checked against ONNX Runtime on the bundled
samples (mask IoU, :data:`samspt.export.trt_check.ENGINE_GATES`), then moved into
``MODEL_DIR/engines/<gpu>-trt<version>/``; ``build.json`` is written last (see
:mod:`samspt.runtime.engines`). A failed build or check leaves the previous engines as they were.

For machines without TensorRT's Python builder, :func:`samspt.export.trtexec.trtexec_commands`
gives the equivalent ``trtexec`` command lines (pure Python), and :func:`adopt_engines` checks and
records engines that ``trtexec`` built.

The pieces: :mod:`.trt_options` (what to build, from which graphs), :mod:`.trt_network` (one
engine from one graph), :mod:`.trt_check` (the check against ONNX Runtime), :mod:`.trt_folder`
(timing cache and build.json), :mod:`.trtexec` (the same build as command lines). None needs
torch: a machine with samspt's base install and TensorRT builds and checks engines.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from samspt.export.trt_check import Stage, check_engines
from samspt.export.trt_folder import engine_files, load_timing_cache, record_build, utc_stamp
from samspt.export.trt_network import build_plan
from samspt.export.trt_options import BuildOptions, load_sources
from samspt.export.trt_support import check_files, kept_version_for, log_check
from samspt.runtime.build_record import BuildRecord, PrecisionBuild
from samspt.runtime.engines import (BUILD_COMMAND, BUILD_JSON, ENGINES_DIR, TIMING_CACHE,
                                    engine_dir_name, engine_file_name)
from samspt.runtime.errors import ModelFolderError
from samspt.runtime.files import atomic_write_bytes
from samspt.runtime.manifest import GRAPH_KINDS
from samspt.runtime.samples import VerifyImage
from samspt.runtime.trt_backend import TrtGraphs
from samspt.runtime.trt_env import device_context, device_info, import_backend, trt_logger

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    engine_dir: Path
    precision: str
    build: BuildRecord                                    # the whole build.json written
    files: Dict[str, int] = field(default_factory=dict)   # engine file -> bytes

    @property
    def entry(self) -> PrecisionBuild:
        return self.build.precisions[self.precision]


def _target(model_dir: Path, options: BuildOptions):
    """(manifest, sources, tensorrt module, GpuInfo, TensorRT version, engine folder) of a build
    on this machine's GPU ``options.device``."""
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
    build failure) or :class:`samspt.export.trt_check.EngineVerificationError`.
    """
    options = options or BuildOptions()
    stage = stage or (lambda text: log.info("%s", text))
    model_dir = Path(model_dir)
    manifest, sources, trt, gpu, version, engine_dir = _target(model_dir, options)
    log_check(check_files([sources[kind] for kind in GRAPH_KINDS], [kept_version_for(version)]),
              log)
    engine_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{options.precision}-", dir=engine_dir))
    names = {kind: engine_file_name(kind, options.precision) for kind in GRAPH_KINDS}
    try:
        start = time.perf_counter()
        with device_context(options.device):
            logger = trt_logger()
            builder = trt.Builder(logger)
            cache_config = builder.create_builder_config()
            cache = load_timing_cache(cache_config, engine_dir / TIMING_CACHE)
            for kind in GRAPH_KINDS:
                stage(f"building the {options.precision} {kind} engine from {sources[kind].name} "
                      f"({gpu.name}, TensorRT {version})")
                plan, cache = build_plan(trt, builder, logger, sources[kind], options, cache)
                atomic_write_bytes(staging / names[kind], plan)
                atomic_write_bytes(engine_dir / TIMING_CACHE, bytes(memoryview(cache.serialize())))
            seconds = time.perf_counter() - start
        with TrtGraphs.from_engine_files(staging / names["encoder"], staging / names["decoder"],
                                         options.device) as graphs:
            verification = check_engines(graphs, model_dir, manifest, options.precision,
                                         images, stage)
        for name in names.values():
            os.replace(staging / name, engine_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry = PrecisionBuild(engines=engine_files(engine_dir, manifest, options.precision),
                           profiles=options.profiles, built_by=BUILD_COMMAND, built=utc_stamp(),
                           build_seconds=round(seconds, 1),
                           flags={"strongly_typed": True, "workspace_mb": options.workspace_mb,
                                  "device": options.device},
                           verification=verification)
    build = record_build(engine_dir, gpu, version, manifest, options.precision, entry)
    stage(f"wrote {engine_dir}")
    return BuildResult(engine_dir, options.precision, build,
                       {n: (engine_dir / n).stat().st_size for n in names.values()})


def adopt_engines(model_dir: Union[str, Path], options: Optional[BuildOptions] = None,
                  stage: Optional[Stage] = None,
                  images: Optional[Sequence[VerifyImage]] = None) -> BuildResult:
    """Check and record engines that the :mod:`samspt.export.trtexec` lines built into this GPU's
    engine folder; the profile is read from the decoder engine itself."""
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
        verification = check_engines(graphs, model_dir, manifest, options.precision, images, stage)
        profiles = graphs.profiles
    entry = PrecisionBuild(engines=engine_files(engine_dir, manifest, options.precision),
                           profiles=profiles, built_by="trtexec",
                           built=utc_stamp(paths["decoder"].stat().st_mtime),
                           verification=verification)
    build = record_build(engine_dir, gpu, version, manifest, options.precision, entry)
    stage(f"recorded {engine_dir / BUILD_JSON}")
    return BuildResult(engine_dir, options.precision, build,
                       {p.name: p.stat().st_size for p in paths.values()})
