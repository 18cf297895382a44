"""The typed record of an engine folder's builds, ``build.json``: what TensorRT built, for which
GPU and version, from which ONNX graphs, with which shape profiles, and how it checked against
ONNX Runtime.

Pure Python (no TensorRT). :func:`samspt.runtime.engines.read_build_json` and
:func:`~samspt.runtime.engines.write_build_json` are the one place the file is read and written;
both go through :meth:`BuildRecord.from_dict`, so every read and every write is checked against
the schema (``schema_version`` 1, laid out in :mod:`samspt.runtime.engines`). Keys this version
does not know are kept (``extra``) and written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from samspt.runtime import tensors
from samspt.runtime.manifest import GRAPH_KINDS, PRECISIONS

BUILD_SCHEMA_VERSION = 1


class BuildRecordError(ValueError):
    """A build.json record that does not follow the schema (the caller names the file)."""


class GpuInfo(NamedTuple):
    """A CUDA device as TensorRT cares about it: ``name`` as CUDA reports it
    (``"NVIDIA H100 80GB HBM3"``, ``"Orin"``) and ``compute_capability`` (major, minor)."""

    name: str
    compute_capability: Optional[Tuple[int, int]] = None


class Profile(NamedTuple):
    """Minimum, optimum and maximum of one dynamic dimension (ints >= 1, min <= opt <= max)."""

    min: int
    opt: int
    max: int

    def text(self) -> str:
        return f"{self.min},{self.opt},{self.max}"


class ShapeProfiles(NamedTuple):
    """The engines' optimization profiles: the decoder's ``prompts`` B and ``points`` N (points
    per prompt; a box is 2 points, a box and a click 3), and the encoder's ``views`` V (views
    encoded in one call: a scan's views, or the views of concurrent requests)."""

    prompts: Profile
    points: Profile
    views: Profile = Profile(1, 1, 1)

    def shapes(self) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]:
        """Decoder input name -> (min, opt, max) shapes: point_coords BxNx2, point_labels BxN."""
        b, n = self.prompts, self.points
        return {tensors.POINT_COORDS: ((b.min, n.min, 2), (b.opt, n.opt, 2), (b.max, n.max, 2)),
                tensors.POINT_LABELS: ((b.min, n.min), (b.opt, n.opt), (b.max, n.max))}

    def image_shapes(self, image_size: int
                     ) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
        """The encoder input's (min, opt, max) shapes: Vx3xSxS."""
        return tuple((v, 3, image_size, image_size) for v in self.views)  # type: ignore

    def to_dict(self) -> Dict[str, List[int]]:
        return {"prompts": list(self.prompts), "points": list(self.points),
                "views": list(self.views)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "profiles") -> "ShapeProfiles":
        """From ``{"prompts": [min, opt, max], "points": [...], "views": [...]}`` (views
        optional: 1,1,1)."""
        _need(isinstance(data, Mapping), f"{where} is not an object")
        values = {}
        for name in ("prompts", "points", "views"):
            if name not in data and name == "views":
                continue
            raw = data.get(name)
            _need(isinstance(raw, (list, tuple)) and len(raw) == 3
                  and all(type(v) is int and v >= 1 for v in raw) and raw[0] <= raw[1] <= raw[2],
                  f"{where}.{name} is {raw!r}, not [min, opt, max] integers >= 1 in order")
            values[name] = Profile(*raw)
        return cls(**values)


DEFAULT_PROFILES = ShapeProfiles(prompts=Profile(1, 16, 64), points=Profile(1, 2, 16),
                                 views=Profile(1, 4, 8))


def _need(ok: bool, text: str) -> None:
    if not ok:
        raise BuildRecordError(text)


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    _need(isinstance(value, str) and bool(value), f"{where}.{key} is {value!r}, not a name")
    return value


def _extra(data: Mapping[str, Any], known: Tuple[str, ...]) -> Dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass(frozen=True)
class EngineFile:
    """One engine file of a build: its name, sha256 and size, and the ONNX graph (name,
    sha256) it was built from."""

    file: str
    sha256: str
    bytes: int
    source_file: str
    source_sha256: str

    def to_dict(self) -> Dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes,
                "source": {"file": self.source_file, "sha256": self.source_sha256}}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "EngineFile":
        _need(isinstance(data, Mapping), f"{where} is not an object")
        size = data.get("bytes")
        _need(type(size) is int and size >= 0, f"{where}.bytes is {size!r}, not a size")
        source = data.get("source")
        _need(isinstance(source, Mapping), f"{where}.source is not an object")
        return cls(_text(data, "file", where), _text(data, "sha256", where), size,
                   _text(source, "file", f"{where}.source"),
                   _text(source, "sha256", f"{where}.source"))


_PRECISION_KEYS = ("built_by", "built", "build_seconds", "flags", "profiles", "engines",
                   "verification")


@dataclass(frozen=True)
class PrecisionBuild:
    """The engines of one precision: ``engines`` (kind -> :class:`EngineFile`, the encoder
    and the decoder), their ``profiles``, who built them (``samspt-build`` or ``trtexec``),
    when (UTC) and in how many seconds (None: trtexec), the builder ``flags`` (None: trtexec)
    and the ``verification`` against ONNX Runtime (figures and gates)."""

    engines: Dict[str, EngineFile]
    profiles: ShapeProfiles
    built_by: str
    built: str
    build_seconds: Optional[float] = None
    flags: Optional[Dict[str, Any]] = None
    verification: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"built_by": self.built_by, "built": self.built,
                "build_seconds": self.build_seconds, "flags": self.flags,
                "profiles": self.profiles.to_dict(),
                "engines": {kind: self.engines[kind].to_dict() for kind in GRAPH_KINDS},
                "verification": self.verification, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "PrecisionBuild":
        _need(isinstance(data, Mapping), f"{where} is not an object")
        engines = data.get("engines")
        _need(isinstance(engines, Mapping), f"{where}.engines is not an object")
        missing = [kind for kind in GRAPH_KINDS if kind not in engines]
        _need(not missing, f"{where}.engines lacks the {' and '.join(missing)}")
        seconds = data.get("build_seconds")
        _need(seconds is None or (isinstance(seconds, (int, float)) and seconds >= 0),
              f"{where}.build_seconds is {seconds!r}, not seconds or null")
        flags, verification = data.get("flags"), data.get("verification", {})
        _need(flags is None or isinstance(flags, Mapping), f"{where}.flags is not an object")
        _need(isinstance(verification, Mapping), f"{where}.verification is not an object")
        return cls({kind: EngineFile.from_dict(engines[kind], f"{where}.engines.{kind}")
                    for kind in GRAPH_KINDS},
                   ShapeProfiles.from_dict(data.get("profiles"), f"{where}.profiles"),
                   _text(data, "built_by", where), _text(data, "built", where),
                   None if seconds is None else float(seconds),
                   None if flags is None else dict(flags), dict(verification),
                   _extra(data, _PRECISION_KEYS))


_RECORD_KEYS = ("schema_version", "gpu", "tensorrt_version", "cuda", "model", "timing_cache",
                "tools", "precisions")


@dataclass(frozen=True)
class BuildRecord:
    """An engine folder's ``build.json``: the ``gpu`` and ``tensorrt_version`` its engines run
    on, and one :class:`PrecisionBuild` per precision built there."""

    gpu: GpuInfo
    tensorrt_version: str
    precisions: Dict[str, PrecisionBuild]
    cuda: Dict[str, Any] = field(default_factory=dict)
    model_name: Optional[str] = None
    timing_cache: Optional[str] = None
    tools: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    def with_precision(self, precision: str, entry: PrecisionBuild) -> "BuildRecord":
        """This record with ``entry`` for ``precision`` (other precisions kept)."""
        return replace(self, precisions={**self.precisions, precision: entry})

    def to_dict(self) -> Dict[str, Any]:
        cc = self.gpu.compute_capability
        return {"schema_version": BUILD_SCHEMA_VERSION,
                "gpu": {"name": self.gpu.name, "compute_capability": list(cc) if cc else None},
                "tensorrt_version": self.tensorrt_version, "cuda": self.cuda,
                "model": {"name": self.model_name}, "timing_cache": self.timing_cache,
                "tools": self.tools,
                "precisions": {p: e.to_dict() for p, e in self.precisions.items()},
                **self.extra}

    @classmethod
    def from_dict(cls, data: Any) -> "BuildRecord":
        """A record from build.json's object; :class:`BuildRecordError` says what is wrong."""
        _need(isinstance(data, Mapping), "the record is not a JSON object")
        version = data.get("schema_version")
        _need(version == BUILD_SCHEMA_VERSION,
              f"schema_version {version!r}; this samspt reads version {BUILD_SCHEMA_VERSION}")
        gpu = data.get("gpu")
        _need(isinstance(gpu, Mapping) and isinstance(gpu.get("name"), str),
              "it lacks gpu.name")
        cc = gpu.get("compute_capability")
        _need(cc is None or (isinstance(cc, (list, tuple)) and len(cc) == 2
                             and all(type(v) is int for v in cc)),
              f"gpu.compute_capability is {cc!r}, not [major, minor] or null")
        precisions = data.get("precisions")
        _need(isinstance(precisions, Mapping), "it lacks precisions")
        unknown = sorted(set(precisions) - set(PRECISIONS))
        _need(not unknown, f"precisions {unknown} are none of {', '.join(PRECISIONS)}")
        model = data.get("model") or {}
        _need(isinstance(model, Mapping), "model is not an object")
        cuda, tools = data.get("cuda") or {}, data.get("tools") or {}
        _need(isinstance(cuda, Mapping) and isinstance(tools, Mapping),
              "cuda and tools must be objects")
        return cls(GpuInfo(gpu["name"], tuple(cc) if cc else None),  # type: ignore[arg-type]
                   _text(data, "tensorrt_version", "build"),
                   {p: PrecisionBuild.from_dict(e, f"precisions.{p}")
                    for p, e in precisions.items()},
                   dict(cuda), model.get("name"), data.get("timing_cache"), dict(tools),
                   _extra(data, _RECORD_KEYS))
