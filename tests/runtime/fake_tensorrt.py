"""A stand-in for ``tensorrt`` and ``pycuda.driver``, for testing the TensorRT code without them.

Its "engines" are ONNX graphs run by ONNX Runtime (a plan is the ONNX model behind a small
header), its device memory is numpy, and it fails where the real thing fails: no current context
in *this* thread (one context stack per thread), async copies from unpinned memory, shapes outside
the profile, buffers too small, loggers that are not ``trt.ILogger``, a stale timing cache; copies
and execution queue on their stream and run only when it is synchronised (a result read earlier
is stale); freeing needs a current context; tensor types are the graph's own (FLOAT only where
the ONNX tensor is float32); a primary-context retain is released only by ``detach`` in the
thread that retained it (as pycuda); ``STRONGLY_TYPED`` has TensorRT 11's value under an 11.x
version. ``cuda.memory``, ``cuda.pinned`` and ``cuda.retains`` show what is still held.
:func:`install_fake_tensorrt` puts it in ``sys.modules`` for one test; :func:`fake_modules` gives
the modules themselves (for a subprocess).
"""

from __future__ import annotations

import json
import sys
import threading
import types
from typing import Dict, Tuple

import numpy as np

from samspt.runtime import trt_env

FAKE_GPU = "NVIDIA Fake GPU 24GB"
FAKE_VERSION = "10.3.0.26"


# A timing cache that starts with these bytes is one the stand-in refuses, as TensorRT refuses
# a cache that another TensorRT version or GPU wrote.
STALE_CACHE = b"stale"


def install_fake_tensorrt(monkeypatch, gpu_name: str = FAKE_GPU,
                          version: str = FAKE_VERSION) -> Tuple[types.ModuleType, types.ModuleType]:
    """Put fake ``tensorrt``, ``pycuda`` and ``pycuda.driver`` modules in ``sys.modules`` for the
    test that owns ``monkeypatch``; returns (trt, cuda). ``trt.calls`` records builder calls,
    ``cuda.allocations`` counts ``mem_alloc``."""
    modules = fake_modules(gpu_name, version)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trt_env, "_LOGGER", None)  # the logger singleton is per TensorRT module
    monkeypatch.setattr(trt_env, "_CONTEXTS", {})  # and the retained contexts per pycuda
    return modules["tensorrt"], modules["pycuda.driver"]


def fake_modules(gpu_name: str = FAKE_GPU,
                 version: str = FAKE_VERSION) -> Dict[str, types.ModuleType]:
    """New fake modules, by the names they take in ``sys.modules``: ``tensorrt``, ``pycuda``,
    ``pycuda.driver``. The stand-in's network parser reads graphs with onnx (the export
    extra): without it the test is skipped, as in the base install's lane."""
    import onnxruntime as ort
    import pytest

    onnx = pytest.importorskip("onnx")

    cuda = types.ModuleType("pycuda.driver")
    cuda.Error = type("Error", (Exception,), {})
    # Device memory by address; pinned host allocations alive; allocation count; primary-context
    # retains not yet released; each thread's own context stack (as CUDA keeps one per thread).
    cuda.memory, cuda.pinned, cuda.allocations, cuda.retains = {}, {}, [0], [0]
    local = threading.local()

    def stack():
        if not hasattr(local, "stack"):
            local.stack = []
        return local.stack

    cuda.thread_stack = stack

    def need_context():
        if not stack():
            raise cuda.Error("no current CUDA context in this thread")

    class PinnedArray(np.ndarray):
        @property
        def base(self):  # pycuda's pinned arrays have their HostAllocation as ``base``
            return self.__dict__.get("allocation", super().base)

    class HostAllocation:
        """What pycuda sets as a pinned array's ``base``; freeing it needs a current context."""

        def __init__(self, nbytes):
            self.nbytes, self.live = nbytes, True
            cuda.pinned[id(self)] = self

        def free(self):
            need_context()
            if self.live:
                self.live = False
                cuda.pinned.pop(id(self), None)

    class Alloc:
        def __init__(self, nbytes):
            need_context()
            self.ptr = 0x1000 * (max(cuda.memory, default=0) // 0x1000 + 1)
            cuda.memory[self.ptr] = np.zeros(nbytes, np.uint8)
            cuda.allocations[0] += 1

        def __int__(self):
            return self.ptr

        def free(self):
            need_context()
            cuda.memory.pop(self.ptr, None)

    class Context:
        def __init__(self):
            self.owner, self.attached = threading.get_ident(), True

        def push(self):
            stack().append(self)

        @staticmethod
        def pop():
            if not stack():
                raise cuda.Error("no context to pop in this thread")
            stack().pop()

        def detach(self):
            # As pycuda: only the retaining thread releases the retain; elsewhere it is a no-op.
            if self.attached and threading.get_ident() == self.owner:
                cuda.retains[0] -= 1
            self.attached = False

    class Device:
        def __init__(self, index):
            if index != 0:
                raise cuda.Error(f"invalid device ordinal {index}")

        @staticmethod
        def count():
            return 1

        def name(self):
            return gpu_name

        def compute_capability(self):
            return (8, 9)

        def retain_primary_context(self):
            cuda.retains[0] += 1
            return Context()

    class Stream:
        """Work queued on a stream runs when the stream is synchronised, not before, so a host
        buffer read before ``synchronize`` holds stale data, as on a GPU."""

        def __init__(self):
            need_context()
            self.handle = 0x7000 + len(streams)
            streams[self.handle] = self
            self.queue = []

        def enqueue(self, work):
            need_context()
            self.queue.append(work)

        def synchronize(self):
            need_context()
            while self.queue:
                self.queue.pop(0)()

    streams: Dict[int, Stream] = {}

    def htod(dest, src, stream):
        assert isinstance(src, PinnedArray), "async copies need pinned host memory"
        buf = cuda.memory[int(dest)]
        assert src.nbytes <= buf.size, "host-to-device copy overflows the device buffer"

        def copy():  # reads the host buffer when the copy runs, as a GPU does
            raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
            buf[: raw.size] = raw

        stream.enqueue(copy)

    def dtoh(dest, src, stream):
        assert isinstance(dest, PinnedArray), "async copies need pinned host memory"
        buf = cuda.memory[int(src)]
        assert dest.nbytes <= buf.size

        def copy():
            dest.view(np.uint8).reshape(-1)[:] = buf[: dest.nbytes]

        stream.enqueue(copy)

    def pagelocked_empty(shape, dtype):
        need_context()
        pinned = np.zeros(shape, dtype).view(PinnedArray)
        pinned.allocation = HostAllocation(pinned.nbytes)
        return pinned

    cuda.init = lambda: None
    cuda.Device, cuda.Context, cuda.Stream, cuda.mem_alloc = Device, Context, Stream, Alloc
    cuda.pagelocked_empty, cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = (
        pagelocked_empty, htod, dtoh)
    cuda.get_driver_version = lambda: 12040
    cuda.get_version = lambda: (12, 2, 0)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []

    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        pass

    ILogger.Severity = Severity
    trt.ILogger = ILogger
    trt.DataType = types.SimpleNamespace(FLOAT="float32", HALF="float16", BF16="bfloat16",
                                         INT8="int8", INT32="int32", INT64="int64",
                                         BOOL="bool", UINT8="uint8")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    # TensorRT 10: EXPLICIT_BATCH = 0 (deprecated), STRONGLY_TYPED = 1; TensorRT 11 drops
    # EXPLICIT_BATCH, so STRONGLY_TYPED = 0 (and is ignored: every network is strongly typed).
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
        STRONGLY_TYPED=0 if int(version.split(".")[0]) >= 11 else 1)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")

    ORT_TYPES = {"tensor(float)": trt.DataType.FLOAT, "tensor(float16)": trt.DataType.HALF,
                 "tensor(bfloat16)": trt.DataType.BF16, "tensor(int8)": trt.DataType.INT8,
                 "tensor(int32)": trt.DataType.INT32, "tensor(int64)": trt.DataType.INT64,
                 "tensor(bool)": trt.DataType.BOOL, "tensor(uint8)": trt.DataType.UINT8}

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.onnx = flags, [], b""

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            assert isinstance(logger, ILogger)
            self.network = network

        def parse_from_file(self, path):
            model = onnx.load(path)
            for value in model.graph.input:
                dims = tuple(d.dim_value if not d.dim_param else -1
                             for d in value.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(value.name, dims))
            self.network.onnx = model.SerializeToString()
            return True

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = [list(low), list(opt), list(high)]

    class Config:
        def __init__(self):
            self.profiles, self.flags, self.pools, self.cache = [], [], {}, None

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def create_timing_cache(self, data):
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            # As TensorRT refuses a cache another version or GPU wrote (without ignore_mismatch).
            if cache.data.startswith(STALE_CACHE) and not ignore_mismatch:
                return False
            self.cache = cache
            return True

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_flag(self, flag):
            self.flags.append(flag)

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, ILogger)

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls.append({"flags": network.flags, "precision_flags": list(config.flags),
                              "pools": dict(config.pools), "cache": config.cache,
                              "profiles": [p.shapes for p in config.profiles]})
            dynamic = [t.name for t in network.inputs if -1 in t.shape]
            shapes = config.profiles[0].shapes if config.profiles else {}
            if any(name not in shapes for name in dynamic):
                return None
            config.cache.data += b"+"  # the timing cache learns something each build
            header = json.dumps({"profiles": shapes}).encode()
            return b"FAKEPLAN\n" + header + b"\n" + network.onnx

    class Engine:
        def __init__(self, plan):
            magic, header, model = plan.split(b"\n", 2)
            if magic != b"FAKEPLAN":
                raise ValueError("not a plan")
            self.profiles = json.loads(header)["profiles"]
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(model, options,
                                                providers=["CPUExecutionProvider"])
            self.io = [(v.name, trt.TensorIOMode.INPUT, v.shape)
                       for v in self.session.get_inputs()]
            self.io += [(v.name, trt.TensorIOMode.OUTPUT, v.shape)
                        for v in self.session.get_outputs()]
            self.types = {v.name: v.type for v in self.session.get_inputs()
                          + self.session.get_outputs()}

        num_io_tensors = property(lambda self: len(self.io))

        def _spec(self, name):
            return next(s for s in self.io if s[0] == name)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return self._spec(name)[1]

        def get_tensor_dtype(self, name):  # the graph's own type, as a strongly typed build
            return ORT_TYPES[self.types[name]]

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in self._spec(name)[2])

        def get_tensor_profile_shape(self, name, index):
            assert index == 0
            return self.profiles[name]

        def create_execution_context(self):
            return ExecutionContext(self)

    class ExecutionContext:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            static = self.engine.get_tensor_shape(name)
            if -1 in static:
                low, _, high = self.engine.profiles[name]
                ok = len(shape) == len(low) and all(a <= s <= b
                                                    for a, s, b in zip(low, shape, high))
            else:
                ok = tuple(shape) == static
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def get_tensor_shape(self, name):
            spec = self.engine._spec(name)
            if spec[1] == trt.TensorIOMode.INPUT:
                return self.shapes.get(name, self.engine.get_tensor_shape(name))
            sizes = {}
            for iname, mode, ishape in self.engine.io:
                if mode == trt.TensorIOMode.INPUT and iname in self.shapes:
                    sizes.update({d: v for d, v in zip(ishape, self.shapes[iname])
                                  if isinstance(d, str)})
            return tuple(d if isinstance(d, int) else sizes.get(d, -1) for d in spec[2])

        def execute_async_v3(self, stream_handle):
            need_context()
            streams[stream_handle].enqueue(self._run)  # runs when the stream is synchronised
            return True

        def _run(self):
            feed = {}
            for name, mode, _ in self.engine.io:
                shape = self.get_tensor_shape(name)
                if mode == trt.TensorIOMode.INPUT:
                    raw = cuda.memory[self.addresses[name]].view(np.float32)
                    feed[name] = raw[: int(np.prod(shape))].reshape(shape).copy()
            outputs = self.engine.session.run(None, feed)
            for (name, _, _), value in zip(self.engine.io[len(feed):], outputs):
                raw = value.astype(np.float32).view(np.uint8).reshape(-1)
                buf = cuda.memory[self.addresses[name]]
                assert raw.size <= buf.size, f"output {name} overflows its buffer"
                buf[: raw.size] = raw

    class Runtime:
        def __init__(self, logger):
            assert isinstance(logger, ILogger)

        def deserialize_cuda_engine(self, data):
            need_context()
            try:
                return Engine(bytes(data))
            except ValueError:
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return {"tensorrt": trt, "pycuda": pycuda, "pycuda.driver": cuda}
