"""The backends a benchmark compares, and how each runs one image with K box prompts.

Every pipeline answers ``run(image, boxes) -> {stage: ms}`` with the stages of
:data:`STAGES`; ``end_to_end`` is the wall time of the whole call. ONNX Runtime and TensorRT
run through the real :class:`samspt.runtime.Inspector` (its own stage timings), PyTorch through
:mod:`samspt.benchmarks.torch_pipeline` (the steps of ``samspt.training.predict``). This module
imports no torch, so a child process measuring an ONNX Runtime pipeline stays torch-free.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from samspt.runtime.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

STAGES = ("preprocess", "encoder", "decoder", "postprocess", "end_to_end")


@dataclass(frozen=True)
class BackendSpec:
    name: str
    family: str          # torch | onnxruntime | tensorrt
    precision: str       # fp32 | fp16
    cuda_only: bool
    description: str
    folder: str = "run"  # run: the run's exported model; example: the shipped example model


BACKENDS: Dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("torch", "torch", "fp32", False, "PyTorch eager, FP32"),
    BackendSpec("torch-fp16", "torch", "fp16", True, "PyTorch eager, FP16 autocast"),
    BackendSpec("torch-cudagraph", "torch", "fp16", True,
                "PyTorch, FP16 autocast, encoder and decoder replayed as CUDA graphs"),
    BackendSpec("ort", "onnxruntime", "fp32", False, "ONNX Runtime, FP32 graphs"),
    BackendSpec("ort-fp16", "onnxruntime", "fp16", False, "ONNX Runtime, FP16 graphs"),
    BackendSpec("ort-int8", "onnxruntime", "int8", False,
                "ONNX Runtime, INT8 QDQ encoder (the decoder stays float: unverified export)"),
    BackendSpec("ort-example", "onnxruntime", "fp32", False,
                "ONNX Runtime, FP32: the shipped example model (trained), prompts on views",
                folder="example"),
    BackendSpec("tensorrt", "tensorrt", "fp16", True, "TensorRT, strongly typed FP16 engines"),
)}


def tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def default_backends(device: str) -> List[str]:
    """Every backend that can run on ``device``; on a GPU TensorRT too, skipped with a note
    where it does not import."""
    return [n for n, s in BACKENDS.items() if device == "cuda" or not s.cuda_only]


def check_backends(names: Sequence[str], device: str) -> List[str]:
    """``names`` validated against ``device``: ConfigError for an unknown name or a GPU-only
    backend on the CPU. TensorRT is kept even when it does not import (it is skipped later,
    with a note)."""
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(BACKENDS)} (or 'auto')")
    gpu_only = [n for n in names if BACKENDS[n].cuda_only and device != "cuda"]
    if gpu_only:
        raise ConfigError(f"{', '.join(gpu_only)} run only on a CUDA device; pass --device cuda "
                          "on a machine with an NVIDIA GPU, or leave them out of --backends")
    return list(dict.fromkeys(names))


@dataclass
class OpenContext:
    """What opening a pipeline needs. ``model``: the merged torch model, if already built."""

    model_type: str
    seed: int
    device: str
    model_dir: Path
    prompt_counts: List[int]
    threads: int = 0
    model: Optional[Any] = field(default=None, repr=False)


def ort_providers(device: str) -> List[str]:
    """ONNX Runtime providers for ``device``: CUDA first where onnxruntime-gpu offers it."""
    from samspt.runtime.ort_backend import available_providers

    if device == "cuda":
        if "CUDAExecutionProvider" in available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("ONNX Runtime has no CUDAExecutionProvider (pip install 'samspt[gpu]'); "
                    "its backends run on the CPU")
    return ["CPUExecutionProvider"]


class InspectorPipeline:
    """ONNX Runtime or TensorRT through :class:`samspt.runtime.Inspector` (its real path)."""

    def __init__(self, spec: BackendSpec, ctx: OpenContext) -> None:
        from samspt.runtime.inspector import Inspector

        self.spec = spec
        providers = ort_providers(ctx.device) if spec.family == "onnxruntime" else None
        if spec.family == "tensorrt":
            ensure_engines(ctx.model_dir, max(ctx.prompt_counts))
        model_dir = ctx.model_dir
        if spec.folder == "example":
            from samspt.runtime.samples import EXAMPLE_MODEL_DIR as model_dir
        self.model_dir = model_dir
        self.inspector = Inspector(model_dir, backend=spec.family, precision=spec.precision,
                                   providers=providers, threads=ctx.threads,
                                   max_prompts=max(ctx.prompt_counts))
        self.runtime = self.inspector.backend  # names the providers ONNX Runtime really took
        on_gpu = spec.family == "tensorrt" or "CUDAExecutionProvider" in self.runtime
        self.device = "cuda" if on_gpu else "cpu"

    def run(self, image: np.ndarray, boxes: np.ndarray) -> Dict[str, float]:
        start = time.perf_counter()
        result = self.inspector.inspect(image, boxes=boxes)
        wall = (time.perf_counter() - start) * 1e3
        stages = {stage: float(result.timings_ms[stage]) for stage in STAGES[:-1]}
        stages["end_to_end"] = wall
        return stages

    def close(self) -> None:
        self.inspector.close()


def ensure_engines(model_dir: Path, max_prompts: int) -> None:
    """Build this GPU's FP16 TensorRT engines into ``model_dir`` unless they are there."""
    from samspt.runtime.build_record import Profile, ShapeProfiles
    from samspt.runtime.engines import ENGINES_DIR

    if (model_dir / ENGINES_DIR).is_dir():
        return
    try:
        from samspt.export.trt_build import BuildOptions, build_engines
    except ImportError as exc:
        raise BackendError(f"building TensorRT engines needs samspt[export,trt] ({exc})") from None
    profiles = ShapeProfiles(prompts=Profile(1, min(16, max_prompts), max_prompts),
                             points=Profile(1, 2, 16))
    log.info("building TensorRT FP16 engines in %s (minutes for a large model)", model_dir)
    build_engines(model_dir, BuildOptions(precision="fp16", profiles=profiles))


def open_pipeline(name: str, ctx: OpenContext):
    """The pipeline of backend ``name``; BackendError when it cannot run here."""
    spec = BACKENDS[name]
    if spec.family == "tensorrt" and not tensorrt_importable():
        raise BackendError("the tensorrt package does not import here; install samspt[trt] on "
                           "the GPU machine (JetPack ships it on a Jetson)")
    if spec.family == "torch":
        from samspt.benchmarks.torch_pipeline import TorchPipeline

        return TorchPipeline(spec, ctx)
    return InspectorPipeline(spec, ctx)
