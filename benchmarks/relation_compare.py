"""The relation adapter as built (:mod:`samspt.training.modeling.relation`) against its naive,
materialised form, at vit_b's size by default (T = 64x64 = 4096 tokens, C = 256 channels, one prompt).

Both compute ``R @ keys`` with ``R[i, j] = softmax_{j != i}(cos(n_i, n_j))`` from one image
embedding, construction included:

* built: ``ImageRelation.from_embedding(e).apply(keys)`` (self term removed algebraically, no
  running maximum, keys folded into the channel axis);
* materialized: the TxT cosine-similarity matrix, its diagonal set to -inf, a softmax over each
  row, times the keys.

Memory is also measured for a training step (forward with gradients and backward:
``relation_memory(train=True)``), and on ONNX Runtime, for both forms exported as graphs
(:func:`export_relation_graphs`; :func:`relation_memory_ort`).

Time is measured here (interleaved, float32). Memory is the peak above the resident baseline
during one call, measured in a fresh child process: on a CPU the resident-set high-water mark
(``VmHWM``, reset before each call) with glibc told to map every block >= 64 KiB on its own and
unmap it on free (so the resident set follows allocations); on a GPU PyTorch's
``max_memory_allocated`` above what was allocated before the call.
"""

from __future__ import annotations

import gc
import logging
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

from samspt.benchmarks import stats
from samspt.benchmarks.memory import MB, current_rss_mb, peak_rss_mb, reset_peak_rss, run_probe
from samspt.benchmarks.settings import VIT_B_CHANNELS, VIT_B_TOKENS
from samspt.training.modeling.relation import NORM_EPS, ImageRelation

log = logging.getLogger(__name__)

PROMPTS = 1


def materialized_relation_apply(image_embedding: torch.Tensor,
                                keys: torch.Tensor) -> torch.Tensor:
    """The naive form: TxT similarity, diagonal masked, softmax, times BxTxC keys (float32)."""
    tokens = image_embedding[0].flatten(1).transpose(0, 1).float()  # T x C
    unit = tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    similarity = unit @ unit.transpose(0, 1)  # T x T
    similarity.fill_diagonal_(float("-inf"))  # each token's similarity to itself excluded
    relation = torch.softmax(similarity, dim=-1)  # T x T
    return relation.to(keys.dtype) @ keys


def built_relation_apply(image_embedding: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The project's relation, as the decoder graph builds and applies it."""
    return ImageRelation.from_embedding(image_embedding).apply(keys)


VARIANTS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "built": built_relation_apply, "materialized": materialized_relation_apply}


class _Graph(torch.nn.Module):
    """One form as an exportable module (the naive form masks its diagonal with a stored TxT
    boolean: the tracer cannot export an in-place diagonal fill, and ONNX Runtime has no boolean
    EyeLike). The mask is a weight of the graph, loaded before the measured call."""

    def __init__(self, variant: str, tokens: int) -> None:
        super().__init__()
        self.variant = variant
        if variant != "built":
            self.register_buffer("eye", torch.eye(tokens, dtype=torch.bool))

    def forward(self, image_embedding: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.variant == "built":
            return built_relation_apply(image_embedding, keys)
        tokens = image_embedding[0].flatten(1).transpose(0, 1)
        unit = tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
        similarity = unit @ unit.transpose(0, 1)
        relation = torch.softmax(similarity.masked_fill(self.eye, float("-inf")), dim=-1)
        return relation @ keys


def export_relation_graphs(folder: Path, tokens: int, channels: int,
                           prompts: int) -> Dict[str, str]:
    """Both forms as ONNX graphs (opset 17, as the decoder graph holds the relation) in
    ``folder``: {variant: path}."""
    import warnings

    embedding, keys = relation_inputs(tokens, channels, prompts, "cpu")
    paths = {}
    for name in VARIANTS:
        path = folder / f"relation_{name}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Graph(name, tokens), (embedding, keys), str(path), dynamo=False,
                              opset_version=17, input_names=["image_embeddings", "keys"],
                              output_names=["mixed"])
        paths[name] = str(path)
    return paths


def relation_memory_ort(paths: Dict[str, str], tokens: int, channels: int, prompts: int,
                        threads: int = 0, rounds: int = 2) -> Dict[str, object]:
    """Peak memory (MiB) above the baseline during one ONNX Runtime call of each form's graph
    (run in a child that never imports torch), opened as the runtime opens the decoder graph
    (:data:`samspt.runtime.ort_backend.DISABLED_OPTIMIZERS`). ONNX Runtime's CPU arena and
    memory patterns are off, so every tensor is its own allocation and freed after its last use: the resident set
    follows what the graph holds at once. Also the largest difference between the two forms'
    outputs (they must compute the same numbers)."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feed = {"image_embeddings": rng.standard_normal((1, channels, 1, tokens), np.float32),
            "keys": rng.standard_normal((prompts, tokens, channels), np.float32)}
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    from samspt.runtime.ort_backend import DISABLED_OPTIMIZERS

    sessions = {name: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                           disabled_optimizers=list(DISABLED_OPTIMIZERS))
                for name, path in paths.items()}
    outputs = {name: s.run(None, feed)[0] for name, s in sessions.items()}  # warm-up
    peaks = {name: 0.0 for name in sessions}
    exact = True
    for _ in range(rounds):
        for name, session in sessions.items():
            gc.collect()
            exact = reset_peak_rss() and exact
            base = current_rss_mb()
            result = session.run(None, feed)
            peaks[name] = max(peaks[name], peak_rss_mb() - base)
            del result
    return {"built_mb": peaks["built"], "materialized_mb": peaks["materialized"],
            "max_abs_difference": float(np.abs(outputs["built"]
                                               - outputs["materialized"]).max()),
            "method": "ONNX Runtime CPU, arena and memory patterns off: peak resident set "
                      "(VmHWM, reset per call) above the resident set before the call, fresh "
                      "process, glibc mmap threshold 64 KiB" if exact else
                      "ru_maxrss above the resident set before the call (an upper bound)",
            "txt_matrix_mb": tokens * tokens * 4 / MB}


def relation_inputs(tokens: int, channels: int, prompts: int, device: str,
                    seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(image embedding 1xCx1xT, keys BxTxC), float32, seeded."""
    gen = torch.Generator().manual_seed(seed)
    embedding = torch.randn(1, channels, 1, tokens, generator=gen)
    keys = torch.randn(prompts, tokens, channels, generator=gen)
    return embedding.to(device), keys.to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_relation(tokens: int, channels: int, prompts: int, device: str, reps: int,
                  warmup: int, tick: Optional[Callable[[], None]] = None) -> Dict[str, dict]:
    """Latency statistics of both forms, run interleaved."""
    embedding, keys = relation_inputs(tokens, channels, prompts, device)

    def call(fn):
        def run():
            with torch.no_grad():
                fn(embedding, keys)
            _sync(device)
        return run

    samples = stats.interleaved({name: call(fn) for name, fn in VARIANTS.items()}, reps, warmup,
                                tick)
    return {name: stats.summarize(values) for name, values in samples.items()}


def relation_memory(tokens: int, channels: int, prompts: int, device: str,
                    rounds: int = 2, train: bool = False) -> Dict[str, object]:
    """Peak memory (MiB) above the baseline during one call of each form (run in a child).
    ``train``: a training step's share instead: forward with gradients, then backward from a
    loss on the output (gradients reach the embedding and the keys)."""
    embedding, keys = relation_inputs(tokens, channels, prompts, device)
    if train:
        embedding.requires_grad_(True)
        keys.requires_grad_(True)

    def step(fn):
        result = fn(embedding, keys)
        if train:
            result.square().sum().backward()
            embedding.grad = keys.grad = None
        return result

    peaks = {name: 0.0 for name in VARIANTS}
    exact = True
    with torch.set_grad_enabled(train):
        for fn in VARIANTS.values():  # warm-up: thread pools, kernels, workspaces
            step(fn)
        for _ in range(rounds):
            for name, fn in VARIANTS.items():
                gc.collect()
                _sync(device)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated() / MB
                else:
                    exact = reset_peak_rss() and exact
                    base = current_rss_mb()
                result = step(fn)
                _sync(device)
                peak = torch.cuda.max_memory_allocated() / MB if device == "cuda" \
                    else peak_rss_mb()
                del result
                peaks[name] = max(peaks[name], peak - base)
    method = ("torch.cuda.max_memory_allocated above the allocation before the call"
              if device == "cuda" else
              "peak resident set (VmHWM, reset per call) above the resident set before the "
              "call, fresh process, glibc mmap threshold 64 KiB" if exact else
              "ru_maxrss above the resident set before the call (peak not resettable here: "
              "an upper bound at best)")
    return {"built_mb": peaks["built"], "materialized_mb": peaks["materialized"],
            "method": method, "txt_matrix_mb": tokens * tokens * 4 / MB}


def compare_relation(device: str, reps: int, warmup: int, tokens: int = VIT_B_TOKENS,
                     channels: int = VIT_B_CHANNELS, prompts: int = PROMPTS, threads: int = 0,
                     tick: Optional[Callable[[], None]] = None) -> Dict[str, object]:
    """Time (here) and memory (child process) of both forms, with their ratios."""
    log.info("relation adapter vs materialized form: %d tokens, %d channels, %d prompt(s)",
             tokens, channels, prompts)
    timing = time_relation(tokens, channels, prompts, device, reps, warmup, tick)
    memory = run_probe({"probe": "relation", "tokens": tokens, "channels": channels,
                        "prompts": prompts, "device": device, "threads": threads},
                       exact_malloc=device == "cpu")
    memory_train = run_probe({"probe": "relation", "tokens": tokens, "channels": channels,
                              "prompts": prompts, "device": device, "threads": threads,
                              "train": True}, exact_malloc=device == "cpu")
    with tempfile.TemporaryDirectory(prefix="samspt-relation-") as folder:
        paths = export_relation_graphs(Path(folder), tokens, channels, prompts)
        memory_ort = run_probe({"probe": "relation_ort", "paths": paths, "tokens": tokens,
                                "channels": channels, "prompts": prompts, "threads": threads},
                               exact_malloc=True)
    return {
        "tokens": tokens, "channels": channels, "prompts": prompts, "device": device,
        "precision": "fp32", "timing": timing, "memory": memory,
        "time_ratio": stats.ratio(timing["built"]["median_ms"],
                                  timing["materialized"]["median_ms"]),
        "mem_ratio": stats.ratio(memory.get("built_mb"), memory.get("materialized_mb")),
        "memory_train": memory_train,
        "mem_ratio_train": stats.ratio(memory_train.get("built_mb"),
                                       memory_train.get("materialized_mb")),
        "memory_ort": memory_ort,
        "mem_ratio_ort": stats.ratio(memory_ort.get("built_mb"),
                                     memory_ort.get("materialized_mb")),
    }
