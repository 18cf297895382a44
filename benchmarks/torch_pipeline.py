"""The PyTorch pipelines: eager FP32, eager FP16 (autocast, CUDA) and CUDA graphs (FP16, CUDA).

One image with K box prompts goes through the steps of :func:`samspt.training.predict.predict`
(the runtime's numpy pre/post-processing around the LoRA-merged SPT model), with a clock
between the stages and a CUDA synchronisation before each reading. ``postprocess`` includes
copying the low-res logits to the host (the Inspector counts that copy in its decoder stage on
TensorRT; on a CPU there is none).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from samspt.benchmarks.backends import BackendSpec, OpenContext
from samspt.benchmarks.models import merged_model
from samspt.runtime.postprocess import MASK_THRESHOLD, upscale_logits
from samspt.runtime.preprocess import as_rgb_uint8, preprocess_image
from samspt.runtime.prompts import pack_prompts, scale_coords
from samspt.runtime.errors import BackendError

log = logging.getLogger(__name__)


class CapturedGraph:
    """``fn(*inputs)`` captured once as a CUDA graph; calls copy new inputs into the captured
    (static) ones and replay it. The returned tensors are overwritten by the next call."""

    def __init__(self, fn: Callable[..., Tuple[torch.Tensor, ...]],
                 *static_inputs: torch.Tensor) -> None:
        self.inputs = static_inputs
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up outside the capture (cuBLAS handles, autotuning)
            for _ in range(3):
                fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*static_inputs)

    def __call__(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        for static, value in zip(self.inputs, inputs):
            static.copy_(value)
        self.graph.replay()
        return self.outputs


class TorchPipeline:
    """PyTorch eager (FP32; FP16 autocast on CUDA) or CUDA graphs of the merged SPT model."""

    def __init__(self, spec: BackendSpec, ctx: OpenContext) -> None:
        if ctx.device == "cuda" and not torch.cuda.is_available():
            raise BackendError("PyTorch sees no CUDA device; use --device cpu")
        self.spec = spec
        self.device = ctx.device
        if ctx.threads:
            torch.set_num_threads(ctx.threads)
        model = ctx.model if ctx.model is not None else merged_model(ctx.model_type, ctx.seed)
        self.model = model.to(self.device).eval()
        self.config = self.model.config
        self.fp16 = spec.precision == "fp16"
        self.graphs = spec.name == "torch-cudagraph"
        mode = "CUDA graphs" if self.graphs else "eager"
        self.runtime = f"torch {torch.__version__} {mode} ({self.device})"
        self._decoders: Dict[int, CapturedGraph] = {}
        self._encoder: Optional[CapturedGraph] = None
        self.last_masks: Tuple[np.ndarray, ...] = ()
        if self.graphs:
            self._capture(ctx.prompt_counts)

    # ----------------------------------------------------------------------- model calls
    def _autocast(self):
        if not self.fp16:
            return contextlib.nullcontext()
        # No weight-cast cache: cached casts must not outlive a CUDA graph capture.
        return torch.autocast("cuda", dtype=torch.float16, cache_enabled=False)

    def _encode_eager(self, image: torch.Tensor) -> Tuple[torch.Tensor]:
        with torch.no_grad(), self._autocast():
            return (self.model.image_encoder(image),)

    def _decode_eager(self, embedding: torch.Tensor, coords: torch.Tensor,
                      labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), self._autocast():
            out = self.model.decode(embedding, coords, labels)
        return out.draft_logits, out.logits

    def _capture(self, prompt_counts) -> None:
        """Capture the encoder and one decoder per prompt count. An encoder that cannot be
        captured (segment-anything indexes its relative positions with a CPU tensor, a host
        sync some PyTorch versions refuse during capture) runs eagerly, in FP16, and says so."""
        size = self.config.image_size
        image = torch.zeros(1, 3, size, size, device=self.device)
        try:
            self._encoder = CapturedGraph(self._encode_eager, image)
            embedding = self._encoder.outputs[0]
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or ["unknown error"])[0]
            log.warning("the image encoder cannot be captured as a CUDA graph (%s); it runs "
                        "eagerly (FP16), the decoder as CUDA graphs", reason)
            self._encoder = None
            self.runtime += "; encoder eager (not capturable)"
            embedding = self._encode_eager(image)[0]
        try:
            for count in prompt_counts:
                self._capture_decoder(count, embedding)
        except RuntimeError as exc:
            raise BackendError(f"CUDA graph capture of the decoder failed: {exc}") from None

    def _capture_decoder(self, count: int, embedding: torch.Tensor) -> CapturedGraph:
        size = self.config.image_size
        coords = torch.rand(count, 2, 2, device=self.device) * size
        coords[:, 1] = coords[:, 1].clamp_min(coords[:, 0] + 1)
        labels = torch.tensor([[2.0, 3.0]], device=self.device).repeat(count, 1)
        graph = CapturedGraph(self._decode_eager, embedding.clone(), coords, labels)
        self._decoders[count] = graph
        log.debug("captured the decoder for %d prompts as a CUDA graph", count)
        return graph

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    # ------------------------------------------------------------------------------- run
    def run(self, image: np.ndarray, boxes: np.ndarray) -> Dict[str, float]:
        """One HxWx3 uint8 image, Kx4 boxes (image pixels) -> milliseconds per stage."""
        config = self.config
        start = time.perf_counter()
        rgb = as_rgb_uint8(image)
        original = rgb.shape[:2]
        tensor, resized = preprocess_image(rgb, config.image_size, config.pixel_mean,
                                              config.pixel_std)
        coords, labels = pack_prompts(boxes)
        coords = scale_coords(coords, original, resized)
        image_t = torch.from_numpy(tensor).to(self.device)
        coords_t = torch.from_numpy(coords).to(self.device)
        labels_t = torch.from_numpy(labels).to(self.device)
        self._sync()
        prep = time.perf_counter()
        if self._encoder is not None:
            embedding = self._encoder(image_t)[0]
        else:
            embedding = self._encode_eager(image_t)[0]
        self._sync()
        encoded = time.perf_counter()
        if self.graphs:
            graph = self._decoders.get(len(boxes)) or self._capture_decoder(len(boxes), embedding)
            draft, logits = graph(embedding, coords_t, labels_t)
        else:
            draft, logits = self._decode_eager(embedding, coords_t, labels_t)
        self._sync()
        decoded = time.perf_counter()
        draft = draft.float().cpu().numpy()
        logits = logits.float().cpu().numpy()
        size = config.image_size
        self.last_masks = (upscale_logits(logits, resized, original, size) > MASK_THRESHOLD,
                           upscale_logits(draft, resized, original, size) > MASK_THRESHOLD)
        end = time.perf_counter()
        return {"preprocess": (prep - start) * 1e3, "encoder": (encoded - prep) * 1e3,
                "decoder": (decoded - encoded) * 1e3, "postprocess": (end - decoded) * 1e3,
                "end_to_end": (end - start) * 1e3}

    def reset_device_peak(self) -> None:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def device_peak_mb(self) -> Optional[float]:
        """Peak GPU memory PyTorch allocated since :meth:`reset_device_peak` (MiB)."""
        return torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None

    def close(self) -> None:
        self._decoders.clear()
        self._encoder = None
