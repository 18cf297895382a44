"""TensorRT execution of a model's two engines: numpy in, numpy out, the embedding kept on the GPU.

:class:`TrtGraphs` is a :class:`samspt.runtime.backend.Backend`, as
:class:`samspt.runtime.ort_backend.OrtGraphs` is, so the Inspector can drive either:

* ``encode(views)``: Vx3xSxS float32 preprocessed views -> VxC'xhxw float32 host embeddings, up
  to the engine's ``views`` profile maximum per engine run (``samspt-build --views``; engines
  built for one view run one at a time);
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
``execute_async_v3``) and ``pycuda`` are imported only when a :class:`TrtGraphs` is opened (through
:mod:`samspt.runtime.trt_env`), so this module imports anywhere. Each engine with its buffers is a
:class:`samspt.runtime.trt_engine.TrtEngine`. CUDA's primary context of the chosen device is used
(the one TensorRT's runtime uses), retained once per process and made current around every call,
so any thread may call, ``close`` included; ``close`` frees every buffer, pinned ones too, while
the context is current.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple, Union

import numpy as np

from samspt.runtime import tensors
from samspt.runtime.build_record import BuildRecord, Profile, ShapeProfiles
from samspt.runtime.engines import (check_compatible, check_sources, find_engine_dir,
                                    precision_entry, read_build_json, verify_engine_files)
from samspt.runtime.errors import BackendError, InputError
from samspt.runtime.manifest import Manifest
from samspt.runtime.trt_engine import (DeviceEmbedding, EmbeddingSlot, TrtEngine, as_float32,
                                       check_engine_pair, check_profile_limits)
from samspt.runtime.trt_env import (device_info, free_pinned, import_backend, primary_context,
                                    trt_logger)

log = logging.getLogger(__name__)


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
        self.build: Optional[BuildRecord] = read_build_json(self.engine_dir)
        self.precision, entry = precision_entry(self.build, precision, self.model_dir)
        check_compatible(self.build, device_info(device), str(trt.__version__), self.model_dir)
        if verify_files:
            paths = verify_engine_files(self.engine_dir, entry)
        else:
            paths = {k: self.engine_dir / e.file for k, e in entry.engines.items()}
        self._open(trt, cuda, paths["encoder"], paths["decoder"], device)

    @classmethod
    def from_model_dir(cls, model_dir: Union[str, Path], precision: Optional[str] = None,
                       device: int = 0, manifest: Optional[Manifest] = None) -> "TrtGraphs":
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
        graphs.build, graphs.precision = None, None
        graphs._open(trt, cuda, Path(encoder_path), Path(decoder_path), device)
        return graphs

    # -- set-up and tear-down --

    def _open(self, trt: Any, cuda: Any, encoder_path: Path, decoder_path: Path,
              device: int) -> None:
        self._cuda = cuda
        self.lock = threading.RLock()
        self._slot = EmbeddingSlot()
        self._encoder = self._decoder = None
        self._upload = self._upload_host = None
        self._context = primary_context(device)
        try:
            with self._active():
                self._runtime = trt.Runtime(trt_logger())
                self._encoder = TrtEngine(trt, cuda, self._runtime, encoder_path.read_bytes(),
                                          "encoder")
                self._decoder = TrtEngine(trt, cuda, self._runtime, decoder_path.read_bytes(),
                                          "decoder", external=(tensors.IMAGE_EMBEDDINGS,))
                check_engine_pair(self._encoder, self._decoder)
                emb_shape = (1,) + self._encoder.max_shapes[tensors.IMAGE_EMBEDDINGS][1:]
                self._upload = cuda.mem_alloc(int(np.prod(emb_shape)) * 4)
                self._upload_host = cuda.pagelocked_empty(int(np.prod(emb_shape)), np.float32)
                self._stream = cuda.Stream()
        except Exception:
            with self._active():
                self._release()
            self._context = None
            raise
        enc, image = self._encoder, tensors.IMAGE
        # one view's shapes (the encoder takes up to the views profile's maximum per run)
        self.image_shape = (1,) + enc.max_shapes[image][1:]
        self.embedding_shape = (1,) + enc.max_shapes[tensors.IMAGE_EMBEDDINGS][1:]
        dec, coords = self._decoder, tensors.POINT_COORDS
        low, opt, high = (dec.min_shapes[coords], dec.opt_shapes[coords], dec.max_shapes[coords])
        self.profiles = ShapeProfiles(
            prompts=Profile(low[0], opt[0], high[0]), points=Profile(low[1], opt[1], high[1]),
            views=Profile(enc.min_shapes[image][0], enc.opt_shapes[image][0],
                          enc.max_shapes[image][0]))
        self.name = "tensorrt"
        self.files = (encoder_path.name, decoder_path.name)
        log.info("TensorRT engines open from %s (%s, prompts %s, points %s, views %s)",
                 self.engine_dir, self.precision or "unrecorded precision",
                 self.profiles.prompts.text(), self.profiles.points.text(),
                 self.profiles.views.text())

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
        if self._upload_host is not None:
            free_pinned(self._upload_host)
        self._upload = self._upload_host = None
        self._encoder = self._decoder = None
        self._runtime = None

    def close(self) -> None:
        """Free the engines and every device and pinned host buffer, in the device's context
        (idempotent; any thread). Handles become stale. The primary context itself stays
        retained for the process (see :func:`samspt.runtime.trt_env.primary_context`)."""
        with self.lock:
            if getattr(self, "_context", None) is None:
                return
            with self._active():
                self._slot.invalidate()
                self._release()
                self._stream = None
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

    @property
    def max_views(self) -> int:
        return self.profiles.views.max

    def encode(self, views: np.ndarray) -> np.ndarray:
        """Vx3xSxS float32 preprocessed views -> VxC'xhxw float32 embeddings on the host, at
        most :attr:`max_views` per engine run. The lock is held for each run's GPU work and
        copies only. The device embedding of the last :meth:`embed` becomes stale."""
        views = as_float32(views, "views")
        if views.ndim != 4 or views.shape[1:] != self.image_shape[1:] or not len(views):
            raise InputError(f"views must be Vx{'x'.join(map(str, self.image_shape[1:]))} "
                             f"float32 (what the views' input_tensor gives for this model), got "
                             f"{views.shape}")
        per_view = self.embedding_shape[1:]
        size = int(np.prod(per_view))
        out = np.empty((len(views),) + per_view, np.float32)
        name = tensors.IMAGE_EMBEDDINGS
        for start in range(0, len(views), self.max_views):
            chunk = views[start:start + self.max_views]
            with self.lock:
                self._require_open()
                with self._active():
                    self._run_encoder(chunk)
                    host = self._encoder.host[name][: size * len(chunk)]
                    self._cuda.memcpy_dtoh_async(host, self._encoder.device[name], self._stream)
                    self._stream.synchronize()
                    out[start:start + len(chunk)] = host.reshape((len(chunk),) + per_view)
        return out

    def embed(self, image: np.ndarray) -> DeviceEmbedding:
        """1x3xSxS float32 preprocessed image -> handle to the 1xCxhxw embedding on the GPU."""
        image = as_float32(image, "image")
        if image.shape != self.image_shape:
            raise InputError(f"image must be {'x'.join(map(str, self.image_shape))} float32 (what "
                             f"preprocess_image gives for this model), got {image.shape}")
        with self.lock:
            self._require_open()
            with self._active():
                self._run_encoder(image)
                self._stream.synchronize()
                return self._slot.issue(self.embedding_shape)

    def _run_encoder(self, batch: np.ndarray) -> None:
        """Queue one encoder run on ``batch`` (lock held, context active); the device embedding
        of the last :meth:`embed` becomes stale."""
        self._slot.invalidate()
        self._encoder.put(self._cuda, tensors.IMAGE, batch, self._stream)
        self._encoder.execute(self._stream)

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
        coords = as_float32(coords, "point_coords")
        labels = as_float32(labels, "point_labels")
        check_profile_limits(coords, labels, self.profiles, self.model_dir)
        if not isinstance(embedding, DeviceEmbedding):
            embedding = as_float32(embedding, "image_embeddings")
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


def open_engines(model_dir: Union[str, Path], manifest: Optional[Manifest] = None,
                 precision: Optional[str] = None, device: int = 0) -> TrtGraphs:
    """:meth:`TrtGraphs.from_model_dir`: this GPU's engines of ``model_dir``, checked.

    Raises :class:`BackendError` when TensorRT, pycuda or the GPU are unavailable, and
    :class:`samspt.runtime.errors.ModelFolderError` when the model folder has no usable engines
    for this GPU, TensorRT version and ``precision`` (the message says how to build them).
    """
    return TrtGraphs.from_model_dir(model_dir, precision, device, manifest)
