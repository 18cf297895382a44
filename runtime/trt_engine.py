"""One TensorRT engine and what guards its inputs: buffers, profile limits, embedding handles.

* :class:`TrtEngine`: a deserialized engine, its execution context, and device and pinned host
  buffers sized once for its optimization profile's largest shapes;
* :func:`check_engine_pair`: the encoder and decoder engines have samspt's tensors and agree on
  the image embedding;
* :func:`check_profile_limits`: BxNx2 prompts against the decoder's profile (pure Python);
* :class:`DeviceEmbedding` and :class:`EmbeddingSlot`: handles to the embedding left on the GPU,
  and the generation counter that makes stale ones fail (pure Python).

The ``tensorrt`` and ``pycuda.driver`` modules are passed in (see :mod:`samspt.runtime.trt_env`),
so this module imports anywhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np

from samspt.runtime import tensors
from samspt.runtime.build_record import Profile, ShapeProfiles
from samspt.runtime.engines import build_command
from samspt.runtime.errors import BackendError, InputError
from samspt.runtime.trt_env import free_pinned


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


def as_float32(array: Any, name: str) -> np.ndarray:
    """``array`` as a C-contiguous float32 numpy array; :class:`InputError` when not an array."""
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(array).__name__}")
    return np.ascontiguousarray(array, dtype=np.float32)


# ---- TensorRT-dependent parts -------------------------------------------------------------------

class TrtEngine:
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
        """Free the device and pinned host buffers (call with the engine's context current)."""
        for buffer in self.device.values():
            with contextlib.suppress(Exception):
                buffer.free()
        for array in self.host.values():
            free_pinned(array)
        self.device.clear()
        self.host.clear()
        self.context = None
        self.engine = None


def check_engine_pair(enc: TrtEngine, dec: TrtEngine) -> None:
    """The encoder and decoder engines have samspt's tensors and agree on the image embedding;
    :class:`BackendError` saying what to rebuild otherwise."""
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
    if enc.max_shapes[emb][1:] != dec.max_shapes[emb][1:] or \
            dec.min_shapes[emb] != dec.max_shapes[emb] or dec.max_shapes[emb][0] != 1:
        raise BackendError(f"the encoder gives {emb} {enc.max_shapes[emb]} but the decoder "
                           f"takes {dec.min_shapes[emb]}..{dec.max_shapes[emb]}: the engines "
                           "come from different models; rebuild both")
    if tensors.POINT_COORDS not in dec.min_shapes:
        raise BackendError("the decoder engine has no point_coords input; rebuild it")
