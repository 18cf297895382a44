"""``manifest.json``: what an exported model folder holds, and the check that it is intact.

Export writes it last; the runtime reads it first and refuses a folder whose files do not match.
It is read and written here only, as a typed :class:`Manifest` (:func:`read_manifest`,
:func:`write_manifest`): the schema's checks (version, required keys, every graph's files listed
and hashed, a calibration that belongs to these graphs) run on every read and before every write.

Schema (``schema_version`` 2; version-1 folders still load, as whole-image models)::

    {
      "schema_version": 2,
      "name": "example_cnn",
      "model": {...ModelConfig...},            # architecture of the exported model
      "lora": {"rank": 8, "alpha": 1.0, "merged": true},
      "input": {"image_size": 512, "pixel_mean": [...], "pixel_std": [...],
                "preprocessing": "runtime"},    # resize/normalise/pad happen in runtime numpy
      "mask_threshold": 0.0,
      "low_res_size": 128,
      "views": {"context": 2.0, "min_side": 64, "scan_side": 160, "scan_overlap": 0.25,
                "max_side": 0, "scan_min_score": null, "prompt_min_score": null} | null,
                                                # samspt.runtime.views.ViewSettings; null (or
                                                # absent, version 1): a whole-image model
      "graphs": {"encoder": {"fp32": GRAPH, "fp16": GRAPH, "int8": GRAPH}, "decoder": {...}},
      "files": {"encoder.fp32.onnx": {"sha256": "...", "bytes": 123}, ...},
      "verification": {...parity figures...} | null,
      "tools": {"samspt": "...", "torch": "...", "onnx": "...", ...},
      "sources": {"checkpoint": {"name": "...", "sha256": "..."}, ...},
      "scan_head": {"file": "scan_head.npz", "channels": C, "hidden": H},   # optional: the
                                                # scan's per-token defect head (numpy arrays,
                                                # samspt.runtime.scan_head); absent: the scan
                                                # decodes every view
      "calibration": {...} | null,             # optional: the scan's operating point set on a
                                                # station's images (samspt-calibrate; its gate is
                                                # views.scan_min_score), an OperatingPoint
      "created": "2026-11-24T17:00:00Z"
    }
    GRAPH = {"file": "encoder.fp32.onnx", "opset": 17, "external_data": [],
             "weights_storage": "float32",      # "float16": stored half, computed as the graph says
             "inputs": [{"name": "image", "shape": ["V", 3, 512, 512], "dtype": "float32"}],
             "outputs": [...],                  # symbolic dims are strings ("B", "N")
             "quantization": {...},             # int8 only: what is INT8 (QDQ), calibration;
                                                # {"quantized": false, "reason": ...} for a
                                                # decoder kept float (its file: the FP32 one)
             "variants": {"cpu": VARIANT},      # optional (int8): absent in older folders
             "variants_dropped": {"cpu": "..."}}  # optional: why export left a variant out
    VARIANT = {"file": "encoder.int8-cpu.onnx", "external_data": [], "activations": "uint8",
               "execution_provider": "CPUExecutionProvider", "tensorrt": false,
               "quantization": {...}}           # a second graph of the same precision for one
                                                # ONNX Runtime provider (:data:`VARIANTS`); its
                                                # files are listed under files like any other

Optional keys added to a schema version keep its older folders loading (``views.scan_min_score``:
a folder without it scans with every view; ``views.prompt_min_score``: a folder without it
answers every prompt with its mask; ``calibration``: a folder without it has no measured
operating point, its ``pred_score`` centred on the gate alone; ``variants``: a folder
without them runs its plain graphs); a key the reader cannot do without bumps the version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from samspt.runtime.errors import ConfigError, ModelFolderError
from samspt.runtime.files import sha256_file
from samspt.runtime.operating_point import OperatingPoint
from samspt.runtime.views import ViewSettings

MANIFEST = "manifest.json"
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
GRAPH_KINDS = ("encoder", "decoder")
PRECISIONS = ("fp32", "fp16", "int8")
REQUIRED_KEYS = ("schema_version", "name", "model", "input", "mask_threshold", "low_res_size",
                 "graphs", "files", "tools")
# Variants of a GRAPH (under its "variants"): name -> the ONNX Runtime execution provider it is
# for. CPU: INT8 with unsigned (asymmetric) activations, ONNX Runtime's fast x86 form (u8 x s8);
# TensorRT rejects UINT8 inside a network, so no variant is ever given to TensorRT.
CPU_VARIANT = "cpu"
VARIANTS = {CPU_VARIANT: "CPUExecutionProvider"}


def graph_file_name(kind: str, precision: str, variant: Optional[str] = None) -> str:
    """File name of a graph in a model folder: ``encoder.fp16.onnx``; of a variant:
    ``encoder.int8-cpu.onnx``."""
    return f"{kind}.{precision}-{variant}.onnx" if variant else f"{kind}.{precision}.onnx"


def read_json_object(path: Path, fix: str) -> Dict[str, Any]:
    """The JSON object in ``path``; :class:`ModelFolderError` (ending in ``fix``) if the file is
    not valid JSON or holds something else than an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} does not hold a JSON object; {fix}")
    return data


@dataclass(frozen=True)
class InputSpec:
    """The manifest's ``input``: views are ``image_size`` px squares normalised by
    ``(x - pixel_mean) / pixel_std`` in runtime numpy (``preprocessing``; ``layout`` says how)."""

    image_size: int
    pixel_mean: Tuple[float, float, float]
    pixel_std: Tuple[float, float, float]
    preprocessing: str = "runtime"
    layout: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"image_size": self.image_size, "pixel_mean": list(self.pixel_mean),
                "pixel_std": list(self.pixel_std), "preprocessing": self.preprocessing,
                **({"layout": self.layout} if self.layout else {})}

    @classmethod
    def from_dict(cls, data: Any) -> "InputSpec":
        if not isinstance(data, dict):
            raise ConfigError("input is not a record")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown input keys {unknown}")
        try:
            mean = tuple(float(v) for v in data["pixel_mean"])
            std = tuple(float(v) for v in data["pixel_std"])
            size = int(data["image_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"input lacks or mistypes {exc}") from None
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or size <= 0:
            raise ConfigError(f"input: image_size {size}, pixel_mean {mean} and pixel_std {std} "
                              "must be a positive size and three channels (std > 0)")
        return cls(size, mean, std, str(data.get("preprocessing", "runtime")),
                   str(data.get("layout", "")))


@dataclass(frozen=True)
class Manifest:
    """A model folder's ``manifest.json``, read and written here only (the schema in the module
    doc). ``graphs`` and ``files`` keep their records (GRAPH, VARIANT, ``{"sha256", "bytes"}``);
    ``views`` and ``calibration`` are typed; ``extra`` holds keys this version does not know
    (kept, so a rewrite loses nothing)."""

    name: str
    model: Dict[str, Any]
    input: InputSpec
    mask_threshold: float
    low_res_size: int
    graphs: Dict[str, Dict[str, Dict[str, Any]]]
    files: Dict[str, Dict[str, Any]]
    tools: Dict[str, Any]
    lora: Optional[Dict[str, Any]] = None
    views: Optional[ViewSettings] = None
    scan_head: Optional[Dict[str, Any]] = None
    calibration: Optional[OperatingPoint] = None
    verification: Optional[Dict[str, Any]] = None
    sources: Dict[str, Any] = field(default_factory=dict)
    created: Optional[str] = None
    schema_version: int = SCHEMA_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ look-ups
    def graph(self, kind: str, precision: str) -> Dict[str, Any]:
        """The GRAPH record of ``kind`` at ``precision``, or a ModelFolderError naming what
        exists."""
        graphs = self.graphs.get(kind, {})
        if precision not in graphs:
            raise ModelFolderError(f"this model folder has no {precision} {kind} graph (it has: "
                                   f"{', '.join(sorted(graphs)) or 'none'}); export it with "
                                   f"--precision {precision} (or all)")
        return graphs[precision]

    def precisions(self, kind: str) -> List[str]:
        """The precisions this folder holds a ``kind`` graph at, in :data:`PRECISIONS` order."""
        return [p for p in PRECISIONS if p in self.graphs.get(kind, {})]

    def sha256(self, name: str) -> Optional[str]:
        """The listed sha256 of file ``name``, or None where it is not listed."""
        entry = self.files.get(name)
        return entry.get("sha256") if isinstance(entry, dict) else None

    # ------------------------------------------------------------------- JSON
    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {
            "schema_version": self.schema_version, "name": self.name, "model": self.model,
            "lora": self.lora, "input": self.input.to_dict(),
            "mask_threshold": self.mask_threshold, "low_res_size": self.low_res_size,
            "views": self.views.to_dict() if self.views is not None else None}
        if self.scan_head is not None:
            data["scan_head"] = self.scan_head
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_dict()
        data.update({"graphs": self.graphs, "files": self.files,
                     "verification": self.verification, "tools": self.tools,
                     "sources": self.sources})
        if self.created is not None:
            data["created"] = self.created
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = MANIFEST) -> "Manifest":
        """The manifest in ``data`` (read from ``where``), after the schema's checks:
        :class:`ModelFolderError` saying what is wrong and what to do."""
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ModelFolderError(f"{where} has schema_version {version!r}; this samspt reads "
                                   f"versions {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: "
                                   "export the model again with this samspt, or install the "
                                   "samspt that wrote it")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ModelFolderError(f"{where} lacks {', '.join(missing)}; export the model again")
        known = {f.name for f in fields(cls)} - {"extra"}
        try:
            spec = InputSpec.from_dict(data["input"])
            views = ViewSettings.from_dict(data["views"]) if data.get("views") else None
        except (ConfigError, TypeError) as exc:
            raise ModelFolderError(f"{where}'s input or views entry is invalid ({exc}); export "
                                   "the model again") from None
        try:
            point = (OperatingPoint.from_dict(data["calibration"])
                     if data.get("calibration") is not None else None)
        except (ConfigError, TypeError) as exc:
            raise ModelFolderError(f"{where}'s calibration entry is invalid ({exc}); calibrate "
                                   "the model again (samspt-calibrate)") from None
        for key in ("model", "graphs", "files", "tools"):
            if not isinstance(data[key], dict):
                raise ModelFolderError(f"{where}'s {key} is not a record; export the model again")
        manifest = cls(
            name=str(data["name"]), model=data["model"], input=spec,
            mask_threshold=float(data["mask_threshold"]), low_res_size=int(data["low_res_size"]),
            graphs=data["graphs"], files=data["files"], tools=data["tools"],
            lora=data.get("lora"), views=views, scan_head=data.get("scan_head"),
            calibration=point, verification=data.get("verification"),
            sources=data.get("sources") or {}, created=data.get("created"),
            schema_version=int(version),
            extra={k: v for k, v in data.items() if k not in known})
        _check_graphs_are_listed(where, manifest)
        _check_calibration(manifest)
        return manifest


def read_manifest(model_dir: Union[str, Path], verify_files: bool = True) -> Manifest:
    """The manifest of ``model_dir``, after checking its schema and every file's sha256."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise ModelFolderError(f"model folder {model_dir} does not exist; export one with "
                               "`samspt-export --out DIR`")
    if not path.is_file():
        raise ModelFolderError(f"{model_dir} has no {MANIFEST}: it is not an exported samspt "
                               "model, or its export did not finish; export it again")
    manifest = Manifest.from_dict(read_json_object(path, "export the model again"), str(path))
    if verify_files:
        verify_files_against(model_dir, manifest)
    return manifest


def write_manifest(folder: Union[str, Path], manifest: Manifest) -> Path:
    """Write ``manifest`` as ``folder/manifest.json`` (atomically), after checking that it reads
    back: what is written is what :func:`read_manifest` accepts."""
    from samspt.runtime.files import atomic_write_text

    path = Path(folder) / MANIFEST
    data = manifest.to_dict()
    Manifest.from_dict(json.loads(json.dumps(data)), str(path))
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def _check_graphs_are_listed(where: str, manifest: Manifest) -> None:
    """Every file a graph names (the graph and its external data) lies inside the folder and is
    listed, with its hash, under ``files``: the runtime opens nothing it has not verified."""
    problems = []
    for kind, graphs in manifest.graphs.items():
        if not isinstance(graphs, dict) or not all(isinstance(g, dict) for g in graphs.values()):
            problems.append(f"the {kind} graphs are not records")
            continue
        for precision, graph in graphs.items():
            variants = graph.get("variants") or {}
            if not isinstance(variants, dict) or \
                    not all(isinstance(v, dict) for v in variants.values()):
                problems.append(f"the {precision} {kind} graph's variants are not records")
                variants = {}
            for label, entry in [(precision, graph)] + [(f"{precision}-{name}", variant)
                                                        for name, variant in variants.items()]:
                problems += _unlisted(manifest, f"the {label} {kind} graph", entry)
    head = manifest.scan_head
    if head is not None:
        problems += (_unlisted(manifest, "the scan head", head) if isinstance(head, dict)
                     else ["the scan_head entry is not a record"])
    if problems:
        raise ModelFolderError(f"{where} is inconsistent: {'; '.join(problems)}. Export the model "
                               "again; do not edit an exported model's manifest")


def _unlisted(manifest: Manifest, what: str, entry: Dict[str, Any]) -> List[str]:
    """Problems with the files of one GRAPH or VARIANT record (see the module doc)."""
    problems = []
    names = [entry.get("file")] + list(entry.get("external_data") or [])
    for name in names:
        where = f"{what}'s {name!r}"
        if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"{where} is not a file name inside the model folder")
        elif name not in manifest.files:
            problems.append(f"{where} is not listed under files (no hash to check it by)")
    return problems


def verify_files_against(model_dir: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists with its size and sha256."""
    problems: List[str] = []
    for name, info in manifest.files.items():
        path = model_dir / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != info.get("bytes"):
            problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says "
                            f"{info.get('bytes')} (truncated or replaced)")
        elif sha256_file(path) != info.get("sha256"):
            problems.append(f"{name} does not match its sha256 (edited or corrupted)")
    if problems:
        raise ModelFolderError(f"{model_dir} is damaged: {'; '.join(problems)}. Export the model "
                               "again; do not edit files of an exported model")


def file_entry(path: Path) -> Dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def graph_variant(entry: Dict[str, Any], variant: Optional[str]) -> Optional[Dict[str, Any]]:
    """The VARIANT record ``variant`` of a GRAPH record, or None (no such variant, or an older
    folder without variants)."""
    return (entry.get("variants") or {}).get(variant) if variant else None


def tensorrt_graph_files(graphs: Dict[str, Dict[str, Any]]) -> List[str]:
    """Graph files of a manifest's ``graphs`` that TensorRT may be given: every plain GRAPH
    record's; VARIANT records (ONNX Runtime only: the INT8 CPU variant's UINT8 activations are
    what TensorRT rejects) are left out."""
    return [record["file"] for kind in graphs for record in graphs[kind].values()]


def variant_for_provider(provider: str) -> Optional[str]:
    """The variant name made for an ONNX Runtime execution provider, or None."""
    return next((name for name, made_for in VARIANTS.items() if made_for == provider), None)


def _check_calibration(manifest: Manifest) -> None:
    """A calibration belongs to the graphs it was measured on (one carried over from another
    model is refused by hash) and its gate is the views' scan gate."""
    point = manifest.calibration
    if point is None:
        return
    foreign = [name for name, digest in point.graphs.items() if manifest.sha256(name) != digest]
    if foreign or not point.graphs:
        raise ModelFolderError(
            f"the manifest's calibration was measured on other graphs than this folder's "
            f"({', '.join(foreign) or 'none named'} differ): a calibration belongs to the model "
            "it was measured on; calibrate this model with samspt-calibrate")
    gate = manifest.views.scan_min_score if manifest.views is not None else None
    if gate != point.min_score:
        raise ModelFolderError(
            f"the manifest's scan gate ({gate}) is not its calibrated operating point "
            f"({point.min_score}): the manifest was edited; calibrate again")
