"""One benchmark run: export once, time every backend's stages interleaved, measure the tracked
ratios and the relation adapter, then probe memory, one child process per backend.

Returns the figures of a record (:mod:`samspt.benchmarks.record` adds machine, versions, git).
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from samspt.benchmarks import stats
from samspt.benchmarks.backends import BACKENDS, STAGES, OpenContext, open_pipeline
from samspt.benchmarks.flops import encoder_figures, encoder_flops
from samspt.benchmarks.inputs import benchmark_inputs, random_boxes
from samspt.benchmarks.memory import run_probe
from samspt.benchmarks.models import export_folder, spt_model, vanilla_sam
from samspt.benchmarks.ratios import BATCH, measure_ratios
from samspt.benchmarks.relation_compare import compare_relation
from samspt.benchmarks.settings import Settings
from samspt.runtime.errors import ModelFolderError
from samspt.training.config import get_config

log = logging.getLogger(__name__)


class Progress:
    """Where a run reports progress: ``phase`` starts a phase of ``total`` steps, ``step`` ends
    one. This one does nothing; the command line shows a bar on a terminal."""

    def phase(self, text: str, total: int) -> None:
        log.info("%s", text)

    def step(self) -> None:
        pass


def open_pipelines(names: List[str], ctx: OpenContext) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The pipelines that open, and ``{name: reason}`` for those skipped (logged)."""
    pipelines, skipped = {}, {}
    for name in names:
        try:
            pipelines[name] = open_pipeline(name, ctx)
        except (RuntimeError, ModelFolderError) as exc:  # BackendError is a RuntimeError
            skipped[name] = str(exc)
            log.warning("skipping backend %s: %s", name, exc)
    return pipelines, skipped


def time_stages(pipelines: Dict[str, Any], image, boxes: Dict[int, Any], reps: int, warmup: int,
                progress: Progress) -> Dict[Tuple[str, int], Dict[str, List[float]]]:
    """Stage latencies (ms) per (backend, prompts); one round runs every pair once, so the
    backends alternate within each repetition."""
    keys = [(name, count) for count in boxes for name in pipelines]
    samples: Dict[Tuple[str, int], Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    progress.phase(f"timing {len(pipelines)} backend(s) x {len(boxes)} prompt counts",
                   len(keys) * (reps + warmup))
    for rep, (name, count) in stats.schedule(keys, reps, warmup):
        stages = pipelines[name].run(image, boxes[count])
        if rep is not None:
            for stage, ms in stages.items():
                samples[(name, count)][stage].append(ms)
        progress.step()
    return samples


def _results(samples, pipelines: Dict[str, Any], memory: Dict[str, Dict[str, Any]],
             flops: int) -> Tuple[List[Dict[str, Any]], Dict[str, Dict[str, Any]]]:
    results, backends = [], {}
    for (name, count), stage_samples in samples.items():
        stages = {stage: stats.summarize(stage_samples[stage]) for stage in STAGES}
        probe = memory.get(name, {}).get("per_prompts", {}).get(str(count), {})
        results.append({"backend": name, "prompts": count, "stages": stages,
                        "throughput": stats.throughput(stages["end_to_end"]["median_ms"], count),
                        "memory": {"host_peak_mb": probe.get("host_peak_mb"),
                                   "device_mb": probe.get("device_mb")}})
    for name, pipeline in pipelines.items():
        encoder = [ms for (n, _), s in samples.items() if n == name for ms in s["encoder"]]
        median = stats.percentile(encoder, 50)
        probe = memory.get(name, {})
        backends[name] = {
            "description": BACKENDS[name].description, "runtime": pipeline.runtime,
            "device": pipeline.device, "precision": BACKENDS[name].precision,
            "encoder_median_ms": median, "encoder_tflops_achieved": flops / median / 1e9,
            "memory": {k: probe.get(k) for k in ("baseline_mb", "loaded_mb", "torch_imported",
                                                 "peak_reset", "error") if k in probe}}
    return results, backends


def run_benchmark(settings: Settings, progress: Progress = Progress()) -> Dict[str, Any]:
    """Every figure of one run (see the module doc); ``settings`` are resolved here."""
    settings = settings.resolved()
    config = get_config(settings.model)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    image_name, image, boxes = benchmark_inputs(settings.prompts, settings.seed)
    ratio_boxes = random_boxes(BATCH, image.shape[0], image.shape[1], settings.seed + 1000)
    with tempfile.TemporaryDirectory(prefix="samspt-bench-") as tmp:
        progress.phase(f"exporting {settings.model} to ONNX (FP32 + FP16)", 1)
        spt = spt_model(settings.model, settings.seed)
        model_dir = export_folder(spt, Path(tmp) / "model")
        merged = spt.merged().eval()
        del spt
        progress.step()
        ctx = OpenContext(settings.model, settings.seed, settings.device, model_dir,
                          settings.prompts, settings.threads, model=merged)
        pipelines, skipped = open_pipelines(settings.backends, ctx)
        try:
            samples = time_stages(pipelines, image, boxes, settings.reps, settings.warmup,
                                  progress)
        finally:
            for pipeline in pipelines.values():
                pipeline.close()
        rounds = settings.reps + settings.warmup
        progress.phase(f"relation adapter at {settings.relation_tokens} tokens", 2 * rounds)
        relation = compare_relation(settings.device, settings.reps, settings.warmup,
                                    settings.relation_tokens, settings.relation_channels,
                                    threads=settings.threads, tick=progress.step)
        progress.phase("tracked ratios", 11 * rounds)
        sam = vanilla_sam(settings.model, settings.seed).to(settings.device)
        ratios = measure_ratios(merged.to(settings.device), sam, model_dir, settings.device,
                                image, ratio_boxes, settings.reps, settings.warmup, relation,
                                settings.threads, tick=progress.step)
        del sam
        progress.phase("peak memory, one process per backend", len(pipelines))
        memory = {}
        for name in pipelines:
            memory[name] = run_probe({"probe": "backend", "backend": name,
                                      "model": settings.model, "seed": settings.seed,
                                      "device": settings.device, "model_dir": str(model_dir),
                                      "prompts": settings.prompts, "threads": settings.threads})
            progress.step()
    flops = encoder_flops(config)
    results, backends = _results(samples, pipelines, memory, flops)
    order = {name: i for i, name in enumerate(settings.backends)}
    results.sort(key=lambda e: (order[e["backend"]], e["prompts"]))
    return {"settings": settings.to_dict(),
            "inputs": {"image": image_name, "image_hw": list(image.shape[:2]),
                       "prompt": "box", "boxes_seed": settings.seed},
            "model": {"name": config.name, "image_size": config.image_size,
                      "tokens": config.num_tokens, "encoder": encoder_figures(config)},
            "backends": backends, "skipped": skipped, "results": results,
            "ratios": ratios["ratios"], "ratio_details": ratios["details"],
            "relation": relation}
