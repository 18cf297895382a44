"""What a TensorRT build is asked for: :class:`BuildOptions`, the model folder's ONNX sources,
and the target (GPU name and TensorRT version). Needs no TensorRT (:func:`detect_target` asks
tensorrt and pycuda when they import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from samspt.runtime.build_record import DEFAULT_PROFILES, ShapeProfiles
from samspt.runtime.errors import BackendError, ConfigError, ModelFolderError
from samspt.runtime.manifest import GRAPH_KINDS, PRECISIONS, Manifest, read_manifest
from samspt.runtime.trt_env import device_info

DEFAULT_WORKSPACE_MB = 4096


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


def check_profiles(manifest: Manifest, precision: str, profiles: ShapeProfiles) -> None:
    """The profile fits the decoder graph: fixed dimensions of point_coords/point_labels (ints in
    the manifest) must be asked for exactly."""
    graph = manifest.graph("decoder", precision)
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
                 options: BuildOptions) -> Tuple[Manifest, Dict[str, Path]]:
    """(manifest, kind -> ONNX path) of ``model_dir`` at ``options.precision``, files verified.

    Raises :class:`ModelFolderError` when the folder is damaged or lacks that precision.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    sources = {}
    for kind in GRAPH_KINDS:
        try:
            sources[kind] = model_dir / manifest.graph(kind, options.precision)["file"]
        except ModelFolderError as exc:
            other = manifest.precisions(kind)
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
