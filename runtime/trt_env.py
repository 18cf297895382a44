"""TensorRT and CUDA as the process finds them: lazy imports, the device context, the logger.

``tensorrt`` and ``pycuda`` are imported only when a function here is called, so this module
imports anywhere; when they are absent the functions raise :class:`BackendError` saying what to
install. Both the runtime (:mod:`samspt.runtime.trt_backend`) and the engine builder
(:mod:`samspt.export.trt_build`) reach TensorRT and CUDA through this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Dict, Iterator, Tuple

from samspt.runtime.build_record import GpuInfo
from samspt.runtime.errors import BackendError

# TensorRT's own messages, on a child of the TensorRT backend's logger (the name users configure).
trt_log = logging.getLogger("samspt.runtime.trt_backend.tensorrt")
TRACE = 5  # logging level of TensorRT's VERBOSE messages (below DEBUG)

INSTALL_HINT = ("install the TensorRT extra: pip install 'samspt[trt]' (tensorrt and pycuda; on "
                "Jetson, TensorRT comes with JetPack: pip install pycuda), or use the ONNX "
                "Runtime backend")


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


_CONTEXTS: Dict[int, Any] = {}
_CONTEXTS_LOCK = threading.Lock()


def primary_context(device: int = 0) -> Any:
    """CUDA device ``device``'s primary context (the one TensorRT and the CUDA runtime use),
    retained once for the life of the process, as the CUDA runtime itself does.

    One retain per process rather than one per open/close: pycuda's ``Context.detach`` only
    releases a retain in the thread that made it (from any other thread it does nothing), so a
    per-object retain leaks whenever an object is closed from another thread. The returned
    context is pushed and popped around each call (:func:`device_context`), from any thread.
    """
    cuda = import_cuda()
    with _CONTEXTS_LOCK:
        context = _CONTEXTS.get(device)
        if context is None:
            try:
                context = cuda.Device(device).retain_primary_context()
            except Exception as exc:  # noqa: BLE001
                raise BackendError(f"CUDA device {device} is not available ({exc}); this machine "
                                   f"has {_device_count(cuda)} device(s)") from None
            _CONTEXTS[device] = context
        return context


@contextlib.contextmanager
def device_context(device: int = 0) -> Iterator[Any]:
    """Make CUDA device ``device``'s primary context current in this thread for the block; CUDA
    errors inside it become :class:`BackendError`."""
    cuda = import_cuda()
    context = primary_context(device)
    context.push()
    try:
        yield context
    except cuda.Error as exc:
        raise BackendError(f"CUDA error: {exc}") from None
    finally:
        cuda.Context.pop()


def free_pinned(array: Any) -> None:
    """Free a pinned host array from ``pycuda.driver.pagelocked_empty`` now (its context must be
    current), rather than whenever it is collected, possibly with no context left to free it in."""
    allocation = getattr(array, "base", None)
    if allocation is not None and hasattr(allocation, "free"):
        with contextlib.suppress(Exception):
            allocation.free()


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
