"""A TensorRT engine from an ONNX graph: strongly typed network, workspace limit, the decoder's
optimization profile, the shared timing cache. Takes the ``tensorrt`` module and a builder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Tuple

from samspt.export.trt_options import BuildOptions
from samspt.runtime import tensors
from samspt.runtime.errors import BackendError

log = logging.getLogger(__name__)


def build_plan(trt: Any, builder: Any, logger: Any, onnx_path: Path, options: BuildOptions,
               cache: Any) -> Tuple[bytes, Any]:
    """(the serialized engine (plan) of ``onnx_path``, the timing cache the build used);
    :class:`BackendError` when TensorRT's parser or builder refuses it. A timing cache TensorRT
    refuses (another TensorRT or GPU wrote it) is replaced by a new empty one, so the stale one is
    never written back."""
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT's ONNX parser rejects {onnx_path.name}: {errors}. Export "
                           "the model again with this samspt (opset 17), or report it")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if not config.set_timing_cache(cache, False):
        log.warning("TensorRT refuses the stored timing cache (written by another TensorRT or "
                    "GPU); building with a new one, which replaces it")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    shapes = options.profiles.shapes()
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(d < 0 for d in tuple(network.get_input(i).shape))]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            if tensor.name == tensors.IMAGE:
                # The encoder graph takes V views: as many per call as the views profile.
                fixed = tuple(tensor.shape)[1:]
                profile.set_shape(tensor.name, *((v,) + fixed for v in options.profiles.views))
                continue
            if tensor.name not in shapes:
                raise BackendError(f"{onnx_path.name} has a dynamic input {tensor.name} "
                                   f"{tuple(tensor.shape)} that samspt has no profile for; export "
                                   "the model again with this samspt")
            profile.set_shape(tensor.name, *shapes[tensor.name])
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT could not build an engine from {onnx_path.name} (its errors "
                           "are in the log above); a larger --workspace-mb or smaller --prompts/"
                           "--points maximum may help")
    return bytes(memoryview(plan)), cache
