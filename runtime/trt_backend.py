"""TensorRT execution of a model's two engines: numpy in, numpy out, the embedding kept on the GPU.

:class:`TrtGraphs` offers what :class:`samspt.runtime.ort_backend.OrtGraphs` offers, so the
Inspector can drive either:

* ``embed(image)``: 1x3xSxS float32 preprocessed image -> :class:`DeviceEmbedding`, a handle to
  the 1xCxhxw float32 image embedding, which stays in GPU memory;
* ``decode(handle, coords, labels)``: ``point_coords`` BxNx2 float32 and ``point_labels`` BxN
  float32 -> (``draft_logits`` Bx1xLxL, ``logits`` Bx1xLxL, ``scores`` Bx1), float32 numpy.

**Handle lifetime.** A handle is valid until the next ``embed`` on the same :class:`TrtGraphs`
(there is one embedding buffer); ``decode`` with an older handle raises :class:`BackendError`
instead of answering for the wrong image. ``decode`` also takes a host 1xCxhxw numpy embedding
(uploaded to a buffer of its own; it does not disturb the device embedding), and
``download(handle)`` copies a device embedding to the host, for callers that cache embeddings.

**Threads.** Every call runs under ``self.lock`` (a re-entrant lock): one CUDA stream and one set
of buffers per instance, so calls from several threads are safe but run one at a time. A caller
that embeds in one thread and decodes in another holds ``with graphs.lock:`` around the pair so
no other ``embed`` slips in between. For parallel inference open one :class:`TrtGraphs` per
thread (each holds its own execution contexts and buffers).

**Memory.** Device buffers are allocated once, sized from the optimization profile's largest
shapes; host buffers are pinned (page-locked) so copies run asynchronously on the stream. No call
allocates. Outputs are copied back asynchronously, then the stream is synchronised once.

``tensorrt`` (10.x name-based API: ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) and ``pycuda`` are imported only when a :class:`TrtGraphs` is opened, so this
module imports anywhere. CUDA's primary context of the chosen device is used (the one TensorRT's
runtime uses), made current around every call, so any thread may call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from samspt.runtime import tensors
from samspt.runtime.engines import (GpuInfo, Profile, ShapeProfiles, build_command,
                                    check_compatible, check_sources, find_engine_dir,
                                    precision_entry, read_build_json, verify_engine_files)
from samspt.runtime.errors import BackendError, InputError

log = logging.getLogger(__name__)
trt_log = log.getChild("tensorrt")  # TensorRT's own messages
TRACE = 5  # logging level of TensorRT's VERBOSE messages (below DEBUG)

INSTALL_HINT = ("install the TensorRT extra: pip install 'samspt[trt]' (tensorrt and pycuda; on "
                "Jetson, TensorRT comes with JetPack: pip install pycuda), or use the ONNX "
                "Runtime backend")


# ---- lazy imports, logging bridge, device facts -------------------------------------------------

def import_cuda() -> Any:
    """``pycuda.driver`` with CUDA initialised; :class:`BackendError` when absent."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendError(f"pycuda is not importable ({exc}); {INSTALL_HINT}") from None
    try:
        cuda.init()
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own types
        raise BackendError(f"CUDA cannot start ({exc}): is there an NVIDIA GPU and driver? "
                           "Check with nvidia-smi, or use the ONNX Runtime backend") from None
    return cuda


def import_backend() -> Tuple[Any, Any]:
    """(tensorrt, pycuda.driver) with CUDA initialised; :class:`BackendError` when absent."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not importable ({exc}); {INSTALL_HINT}") from None
    return trt, import_cuda()


@contextlib.contextmanager
def device_context(device: int = 0) -> Iterator[Any]:
    """Make CUDA device ``device``'s primary context (the one TensorRT uses) current here."""
    cuda = import_cuda()
    try:
        context = cuda.Device(device).retain_primary_context()
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"CUDA device {device} is not available ({exc}); this machine has "
                           f"{_device_count(cuda)} device(s)") from None
    context.push()
    try:
        yield context
    finally:
        cuda.Context.pop()
        with contextlib.suppress(Exception):
            context.detach()


_LOGGER = None
_LOGGER_LOCK = threading.Lock()


def trt_logger() -> Any:
    """The process's one TensorRT logger (a ``trt.ILogger``), forwarding to Python ``logging``.

    TensorRT keeps one logger per process, so the builder and every runtime share this one.
    Severities: INTERNAL_ERROR -> CRITICAL, ERROR -> ERROR, WARNING -> WARNING, INFO -> DEBUG
    (TensorRT's INFO is chatty), VERBOSE -> level 5; on the ``samspt.runtime.trt_backend.tensorrt``
    logger.
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            import tensorrt as trt

            severity = trt.ILogger.Severity
            levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
                      severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG,
                      severity.VERBOSE: TRACE}

            class _LoggingBridge(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, sev, msg) -> None:  # called from TensorRT's threads too
                    level = levels.get(sev, logging.INFO)
                    if trt_log.isEnabledFor(level):
                        trt_log.log(level, "%s", msg)

            _LOGGER = _LoggingBridge()
        return _LOGGER


def tensorrt_version() -> str:
    trt, _ = import_backend()
    return str(trt.__version__)


def device_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device`` (as CUDA reports them)."""
    cuda = import_cuda()
    try:
        dev = cuda.Device(device)
        return GpuInfo(str(dev.name()), tuple(int(v) for v in dev.compute_capability()))
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"CUDA device {device} is not available ({exc}); this machine has "
                           f"{_device_count(cuda)} device(s)") from None


def cuda_versions() -> Dict[str, str]:
    """CUDA driver version and the CUDA version pycuda was built with, as "12.4"."""
    cuda = import_cuda()

    def text(value: Any) -> str:
        if isinstance(value, int):
            return f"{value // 1000}.{value % 1000 // 10}"
        return ".".join(str(v) for v in value[:2])

    out = {}
    with contextlib.suppress(Exception):
        out["driver"] = text(cuda.get_driver_version())
    with contextlib.suppress(Exception):
        out["pycuda"] = text(cuda.get_version())
    return out


def _device_count(cuda: Any) -> int:
    try:
        return int(cuda.Device.count())
    except Exception:  # noqa: BLE001
        return 0


# ---- pure-Python parts: handles and prompt limits -----------------------------------------------

@dataclass(frozen=True)
class DeviceEmbedding:
    """Handle to the 1xCxhxw float32 image embedding an ``embed`` left on the GPU.

    Valid until the next ``embed`` of the :class:`TrtGraphs` that issued it.
    """

    shape: Tuple[int, ...]
    generation: int
    _slot: "EmbeddingSlot" = field(repr=False, compare=False)


class EmbeddingSlot:
    """The one device embedding buffer's generation counter: issues and checks handles."""

    def __init__(self) -> None:
        self.generation = 0

    def invalidate(self) -> None:
        """Called before the buffer is overwritten: every issued handle becomes stale."""
        self.generation += 1

    def issue(self, shape: Tuple[int, ...]) -> DeviceEmbedding:
        return DeviceEmbedding(tuple(shape), self.generation, self)

    def check(self, handle: DeviceEmbedding) -> None:
        if handle._slot is not self:
            raise BackendError("this embedding handle was issued by another TrtGraphs; decode "
                               "with the backend that embedded the image")
        if handle.generation != self.generation:
            raise BackendError("stale embedding handle: another image was embedded since "
                               "(a handle is valid until the next embed). Embed the image "
                               "again, hold graphs.lock around embed+decode when threads share "
                               "the backend, or download(handle) to keep an embedding")


def check_profile_limits(coords: np.ndarray, labels: np.ndarray, profiles: ShapeProfiles,
                         model_dir: Union[str, Path, None] = None) -> Tuple[int, int]:
    """Check BxNx2 ``coords`` and BxN ``labels`` against the engines' profile; returns (B, N).

    Raises :class:`InputError` for malformed prompts and for sizes outside the profile, saying
    the limit and how to rebuild the engines with a larger one.
    """
    if coords.ndim != 3 or coords.shape[2] != 2:
        raise InputError(f"point_coords must be BxNx2, got shape {coords.shape}; build prompts "
                         "with samspt.runtime.preprocess.pack_prompts")
    if labels.shape != coords.shape[:2]:
        raise InputError(f"point_labels must be BxN = {coords.shape[:2]} to match point_coords, "
                         f"got {labels.shape}")
    batch, points = coords.shape[:2]
    where = model_dir if model_dir is not None else "MODEL_DIR"
    p, n = profiles.prompts, profiles.points
    if batch > p.max:
        raise InputError(
            f"{batch} prompts in one call, but these TensorRT engines take at most {p.max} (their "
            f"optimization profile is --prompts {p.text()}); split the prompts into batches of "
            f"{p.max}, or rebuild with a larger profile: "
            f"`{build_command(where, prompts=Profile(p.min, p.opt, batch), points=n)}`")
    if batch < p.min:
        raise InputError(f"{batch} prompts, but these engines need at least {p.min} (profile "
                         f"--prompts {p.text()}); rebuild with "
                         f"`{build_command(where, prompts=Profile(max(batch, 1), p.opt, p.max))}`"
                         if batch else "no prompts: give at least one box or point")
    if not n.min <= points <= n.max:
        wider = Profile(min(n.min, points), n.opt, max(n.max, points))
        raise InputError(
            f"{points} points per prompt, but these engines take {n.min} to {n.max} (their "
            f"optimization profile is --points {n.text()}; a box counts 2 points, a prompt "
            f"without a box gets 1 padding point); rebuild with "
            f"`{build_command(where, prompts=p, points=wider)}`")
    return batch, points


def _as_float32(array: Any, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(array).__name__}")
    return np.ascontiguousarray(array, dtype=np.float32)


# ---- TensorRT-dependent parts -------------------------------------------------------------------

class _Engine:
    """One engine, its execution context, and buffers sized for its profile's largest shapes.

    ``external``: input names whose device address the caller sets per call (no buffer here).
    """

    def __init__(self, trt: Any, cuda: Any, runtime: Any, data: bytes, label: str,
                 external: Sequence[str] = ()) -> None:
        self.label = label
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT cannot load the {label} engine (see TensorRT's error "
                               "above: usually another TensorRT version or GPU built it)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"TensorRT cannot create an execution context for the {label} "
                               "engine (out of GPU memory?)")
        self.inputs, self.outputs = [], []
        self.min_shapes: Dict[str, Tuple[int, ...]] = {}
        self.opt_shapes: Dict[str, Tuple[int, ...]] = {}
        self.max_shapes: Dict[str, Tuple[int, ...]] = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            if self.engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise BackendError(f"the {label} engine's tensor {name} is "
                                   f"{self.engine.get_tensor_dtype(name)}; samspt engines take "
                                   "and give float32: rebuild them from samspt's ONNX graphs")
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(self.engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    low, opt, high = self.engine.get_tensor_profile_shape(name, 0)
                    self.min_shapes[name], self.opt_shapes[name], self.max_shapes[name] = (
                        tuple(low), tuple(opt), tuple(high))
                else:
                    self.min_shapes[name] = self.opt_shapes[name] = self.max_shapes[name] = shape
                self.set_shape(name, self.max_shapes[name])
                self.inputs.append(name)
            else:
                self.outputs.append(name)
        for name in self.outputs:
            self.max_shapes[name] = self.shape(name)
        self.device: Dict[str, Any] = {}
        self.host: Dict[str, np.ndarray] = {}
        for name in self.inputs + self.outputs:
            if name in external:
                continue
            count = max(1, int(np.prod(self.max_shapes[name])))
            self.device[name] = cuda.mem_alloc(count * 4)
            self.host[name] = cuda.pagelocked_empty(count, np.float32)
            self.set_address(name, int(self.device[name]))

    def set_shape(self, name: str, shape: Tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, tuple(int(d) for d in shape)):
            low, high = self.min_shapes.get(name), self.max_shapes.get(name)
            raise BackendError(f"the {self.label} engine rejects {name} of shape {shape} "
                               f"(profile {low}..{high})")

    def set_address(self, name: str, address: int) -> None:
        if not self.context.set_tensor_address(name, address):
            raise BackendError(f"the {self.label} engine rejects the address of {name}")

    def shape(self, name: str) -> Tuple[int, ...]:
        shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise BackendError(f"the {self.label} engine cannot infer the shape of {name} "
                               f"({shape}); rebuild the engines")
        return shape

    def put(self, cuda: Any, name: str, array: np.ndarray, stream: Any) -> None:
        """Set ``name``'s shape and copy ``array`` into its device buffer (async, pinned)."""
        self.set_shape(name, array.shape)
        staged = self.host[name][: array.size]
        staged[...] = array.reshape(-1)
        cuda.memcpy_htod_async(self.device[name], staged, stream)

    def execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(stream.handle):
            raise BackendError(f"TensorRT failed to run the {self.label} engine (see its error "
                               "in the log)")

    def release(self) -> None:
        for buffer in self.device.values():
            with contextlib.suppress(Exception):
                buffer.free()
        self.device.clear()
        self.host.clear()
        self.context = None
        self.engine = None


class TrtGraphs:
    """TensorRT engines of a model's ``encoder`` and ``decoder`` graphs on one CUDA device.

    ``engine_dir``: a finished engine folder (``MODEL_DIR/engines/<gpu>-trt<version>``);
    ``precision``: ``fp16``/``fp32``, default fp16 when built, else the one built. Engines built
    for another GPU or TensorRT version are refused with the command that rebuilds them; engine
    files are checked against their sha256 in ``build.json`` unless ``verify_files=False``.
    See the module docstring for handle lifetime, threads and memory.
    """

    def __init__(self, engine_dir: Union[str, Path], precision: Optional[str] = None,
                 device: int = 0, verify_files: bool = True) -> None:
        trt, cuda = import_backend()
        self.engine_dir = Path(engine_dir)
        self.model_dir: Optional[Path] = self.engine_dir.parent.parent
        self.build = read_build_json(self.engine_dir)
        self.precision, entry = precision_entry(self.build, precision, self.model_dir)
        check_compatible(self.build, device_info(device), str(trt.__version__), self.model_dir)
        if verify_files:
            paths = verify_engine_files(self.engine_dir, entry)
        else:
            paths = {k: self.engine_dir / entry["engines"][k]["file"] for k in ("encoder",
                                                                                "decoder")}
        self._open(trt, cuda, paths["encoder"], paths["decoder"], device)

    @classmethod
    def from_model_dir(cls, model_dir: Union[str, Path], precision: Optional[str] = None,
                       device: int = 0, manifest: Optional[Dict[str, Any]] = None) -> "TrtGraphs":
        """The engines of ``model_dir`` for this GPU and TensorRT version, checked against the
        model folder's ``manifest.json`` (engines of an older export are refused)."""
        from samspt.runtime.manifest import read_manifest

        trt, _ = import_backend()
        engine_dir = find_engine_dir(model_dir, device_info(device).name, str(trt.__version__))
        build = read_build_json(engine_dir)
        chosen, _ = precision_entry(build, precision, model_dir)
        check_sources(build, manifest or read_manifest(model_dir), chosen, model_dir)
        return cls(engine_dir, chosen, device)

    @classmethod
    def from_engine_files(cls, encoder_path: Union[str, Path], decoder_path: Union[str, Path],
                          device: int = 0) -> "TrtGraphs":
        """Open two engine files directly, without ``build.json`` or any compatibility check
        (the builder uses it to verify engines before it records them)."""
        trt, cuda = import_backend()
        graphs = cls.__new__(cls)
        graphs.engine_dir, graphs.model_dir = Path(encoder_path).parent, None
        graphs.build, graphs.precision = {}, None
        graphs._open(trt, cuda, Path(encoder_path), Path(decoder_path), device)
        return graphs

    # -- set-up and tear-down --

    def _open(self, trt: Any, cuda: Any, encoder_path: Path, decoder_path: Path,
              device: int) -> None:
        self._cuda = cuda
        self.lock = threading.RLock()
        self._slot = EmbeddingSlot()
        self._encoder = self._decoder = None
        self._upload = None
        try:
            self._context = cuda.Device(device).retain_primary_context()
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"CUDA device {device} is not available ({exc})") from None
        try:
            with self._active():
                self._runtime = trt.Runtime(trt_logger())
                self._encoder = _Engine(trt, cuda, self._runtime, encoder_path.read_bytes(),
                                        "encoder")
                self._decoder = _Engine(trt, cuda, self._runtime, decoder_path.read_bytes(),
                                        "decoder", external=(tensors.IMAGE_EMBEDDINGS,))
                self._check_io()
                emb_shape = self._encoder.max_shapes[tensors.IMAGE_EMBEDDINGS]
                self._upload = cuda.mem_alloc(int(np.prod(emb_shape)) * 4)
                self._upload_host = cuda.pagelocked_empty(int(np.prod(emb_shape)), np.float32)
                self._stream = cuda.Stream()
        except Exception:
            with self._active():
                self._release()
            with contextlib.suppress(Exception):
                self._context.detach()
            self._context = None
            raise
        self.image_shape = self._encoder.max_shapes[tensors.IMAGE]
        self.embedding_shape = self._encoder.max_shapes[tensors.IMAGE_EMBEDDINGS]
        dec, coords = self._decoder, tensors.POINT_COORDS
        low, opt, high = (dec.min_shapes[coords], dec.opt_shapes[coords], dec.max_shapes[coords])
        self.profiles = ShapeProfiles(prompts=Profile(low[0], opt[0], high[0]),
                                      points=Profile(low[1], opt[1], high[1]))
        log.info("TensorRT engines open from %s (%s, prompts %s, points %s)", self.engine_dir,
                 self.precision or "unrecorded precision", self.profiles.prompts.text(),
                 self.profiles.points.text())

    def _check_io(self) -> None:
        enc, dec = self._encoder, self._decoder
        if enc.inputs != list(tensors.ENCODER_INPUTS) or \
                enc.outputs != list(tensors.ENCODER_OUTPUTS):
            raise BackendError(f"the encoder engine has tensors {enc.inputs} -> {enc.outputs}, "
                               f"not {list(tensors.ENCODER_INPUTS)} -> "
                               f"{list(tensors.ENCODER_OUTPUTS)}: rebuild it from samspt's graphs")
        if sorted(dec.inputs) != sorted(tensors.DECODER_INPUTS) or \
                sorted(dec.outputs) != sorted(tensors.DECODER_OUTPUTS):
            raise BackendError(f"the decoder engine has tensors {dec.inputs} -> {dec.outputs}, "
                               f"not {list(tensors.DECODER_INPUTS)} -> "
                               f"{list(tensors.DECODER_OUTPUTS)}: rebuild it from samspt's graphs")
        emb = tensors.IMAGE_EMBEDDINGS
        if enc.max_shapes[emb] != dec.max_shapes[emb] or dec.min_shapes[emb] != dec.max_shapes[emb]:
            raise BackendError(f"the encoder gives {emb} {enc.max_shapes[emb]} but the decoder "
                               f"takes {dec.min_shapes[emb]}..{dec.max_shapes[emb]}: the engines "
                               "come from different models; rebuild both")
        if tensors.POINT_COORDS not in dec.min_shapes:
            raise BackendError("the decoder engine has no point_coords input; rebuild it")

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """Make the device's primary context current in this thread; CUDA errors -> BackendError."""
        self._context.push()
        try:
            yield
        except self._cuda.Error as exc:
            raise BackendError(f"CUDA error in the TensorRT backend: {exc}") from None
        finally:
            self._cuda.Context.pop()

    def _release(self) -> None:
        for engine in (self._decoder, self._encoder):
            if engine is not None:
                engine.release()
        if self._upload is not None:
            with contextlib.suppress(Exception):
                self._upload.free()
        self._upload = None
        self._encoder = self._decoder = None
        self._runtime = None

    def close(self) -> None:
        """Free the engines and buffers (idempotent). Handles become stale."""
        with self.lock:
            if getattr(self, "_context", None) is None:
                return
            with self._active():
                self._slot.invalidate()
                self._release()
                self._stream = None
            with contextlib.suppress(Exception):
                self._context.detach()
            self._context = None

    def __enter__(self) -> "TrtGraphs":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _require_open(self) -> None:
        if getattr(self, "_context", None) is None or self._encoder is None:
            raise BackendError("this TrtGraphs is closed; open the engines again")

    # -- inference --

    @property
    def max_prompts(self) -> int:
        return self.profiles.prompts.max

    def embed(self, image: np.ndarray) -> DeviceEmbedding:
        """1x3xSxS float32 preprocessed image -> handle to the 1xCxhxw embedding on the GPU."""
        image = _as_float32(image, "image")
        if image.shape != self.image_shape:
            raise InputError(f"image must be {'x'.join(map(str, self.image_shape))} float32 (what "
                             f"preprocess_image gives for this model), got {image.shape}")
        with self.lock:
            self._require_open()
            with self._active():
                self._slot.invalidate()
                self._encoder.put(self._cuda, tensors.IMAGE, image, self._stream)
                self._encoder.execute(self._stream)
                self._stream.synchronize()
                return self._slot.issue(self.embedding_shape)

    def download(self, handle: DeviceEmbedding) -> np.ndarray:
        """Copy a device embedding to a new 1xCxhxw float32 host array."""
        with self.lock:
            self._require_open()
            self._slot.check(handle)
            name = tensors.IMAGE_EMBEDDINGS
            with self._active():
                host = self._encoder.host[name]
                self._cuda.memcpy_dtoh_async(host, self._encoder.device[name], self._stream)
                self._stream.synchronize()
                return host[: int(np.prod(self.embedding_shape))].reshape(
                    self.embedding_shape).copy()

    def decode(self, embedding: Union[DeviceEmbedding, np.ndarray], coords: np.ndarray,
               labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (draft_logits Bx1xLxL, logits Bx1xLxL, scores Bx1), float32 numpy arrays.

        ``embedding``: a handle from :meth:`embed` (still current) or a 1xCxhxw float32 array.
        """
        coords = _as_float32(coords, "point_coords")
        labels = _as_float32(labels, "point_labels")
        check_profile_limits(coords, labels, self.profiles, self.model_dir)
        if not isinstance(embedding, DeviceEmbedding):
            embedding = _as_float32(embedding, "image_embeddings")
            if embedding.shape != self.embedding_shape:
                raise InputError(f"image_embeddings must be "
                                 f"{'x'.join(map(str, self.embedding_shape))}, got "
                                 f"{embedding.shape}")
        cuda = self._cuda
        with self.lock:
            self._require_open()
            dec, stream = self._decoder, self._stream
            with self._active():
                if isinstance(embedding, DeviceEmbedding):
                    self._slot.check(embedding)
                    address = int(self._encoder.device[tensors.IMAGE_EMBEDDINGS])
                else:
                    self._upload_host[...] = embedding.reshape(-1)
                    cuda.memcpy_htod_async(self._upload, self._upload_host, stream)
                    address = int(self._upload)
                dec.set_address(tensors.IMAGE_EMBEDDINGS, address)
                dec.put(cuda, tensors.POINT_COORDS, coords, stream)
                dec.put(cuda, tensors.POINT_LABELS, labels, stream)
                dec.execute(stream)
                shapes = {name: dec.shape(name) for name in tensors.DECODER_OUTPUTS}
                views = {}
                for name, shape in shapes.items():
                    views[name] = dec.host[name][: int(np.prod(shape))]
                    cuda.memcpy_dtoh_async(views[name], dec.device[name], stream)
                stream.synchronize()
                draft, logits, scores = (views[name].reshape(shapes[name]).copy()
                                         for name in tensors.DECODER_OUTPUTS)
        return draft, logits, scores


def open_engines(model_dir: Union[str, Path], manifest: Optional[Dict[str, Any]] = None,
                 precision: Optional[str] = None, device: int = 0) -> TrtGraphs:
    """:meth:`TrtGraphs.from_model_dir`: this GPU's engines of ``model_dir``, checked.

    Raises :class:`BackendError` when TensorRT, pycuda or the GPU are unavailable, and
    :class:`samspt.runtime.errors.ModelFolderError` when the model folder has no usable engines
    for this GPU, TensorRT version and ``precision`` (the message says how to build them).
    """
    return TrtGraphs.from_model_dir(model_dir, precision, device, manifest)
