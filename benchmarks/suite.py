"""One benchmark run: export once, time every backend's stages interleaved, measure the tracked
ratios and the relation adapter, then probe memory, one child process per backend.

Returns the figures of a record (:mod:`samspt.benchmarks.record` adds machine, versions, git).
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from samspt.benchmarks import stats
from samspt.benchmarks.backends import BACKENDS, STAGES, OpenContext, open_pipeline
from samspt.benchmarks.flops import encoder_figures, encoder_flops, graph_macs
from samspt.benchmarks.inputs import benchmark_inputs, random_boxes
from samspt.benchmarks.machine import gpu_info
from samspt.benchmarks.memory import run_probe
from samspt.benchmarks.models import export_folder, spt_model, vanilla_sam
from samspt.benchmarks.ort_choices import choice_ratios, measure_choices
from samspt.benchmarks.peak import device_peak
from samspt.benchmarks.ratios import BATCH, RESULT_BASIS, measure_ratios, result_ratios
from samspt.benchmarks.relation_compare import compare_relation
from samspt.benchmarks.settings import Settings
from samspt.runtime.errors import ModelFolderError
from samspt.runtime.manifest import read_manifest
from samspt.training.modeling.config import get_config

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


def encoder_flops_of(pipeline: Any, config, model_dir: Path,
                     model: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
    """FLOPs of one view through a backend's encoder: counted from the configuration for the ViT
    family (:func:`encoder_flops`), from the exported graph's shapes otherwise (the conv family,
    the shipped example model), and by PyTorch's FLOP counter on ``model`` (the run's merged
    model) where the graph's shapes do not resolve (TinyViT computes its reshape sizes)."""
    folder = getattr(pipeline, "model_dir", model_dir)
    if folder == model_dir and config.encoder == "vit":
        return {"flops": encoder_flops(config), "counted_from": "configuration (ViT)"}
    graph = folder / read_manifest(folder, verify_files=False).graph("encoder", "fp32")["file"]
    try:
        return {"flops": 2 * graph_macs(graph), "counted_from": f"graph {graph.name} "
                "(Conv/ConvTranspose/MatMul/Gemm shapes)"}
    except ValueError:
        if folder != model_dir or model is None:
            raise
    from samspt.benchmarks.family_encoders import encoder_gflop

    return {"flops": encoder_gflop(model, config.image_size) * 1e9,
            "counted_from": "PyTorch's FLOP counter on the merged encoder"}


def _results(samples, pipelines: Dict[str, Any], memory: Dict[str, Dict[str, Any]],
             flops: Dict[str, Dict[str, Any]]
             ) -> Tuple[List[Dict[str, Any]], Dict[str, Dict[str, Any]]]:
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
        achieved = flops[name]["flops"] / median / 1e9
        peak = device_peak(pipeline.device, BACKENDS[name].precision,
                           (gpu_info() or {}).get("name"))
        backends[name] = {
            "description": BACKENDS[name].description, "runtime": pipeline.runtime,
            "device": pipeline.device, "precision": BACKENDS[name].precision,
            "encoder_median_ms": median, "encoder_gflop": flops[name]["flops"] / 1e9,
            "encoder_flops_counted_from": flops[name]["counted_from"],
            "encoder_tflops_achieved": achieved,
            "encoder_peak_tflops": peak["tflops"] if peak else None,
            "encoder_peak_basis": peak["basis"] if peak else "unknown device peak",
            "encoder_peak_share": achieved / peak["tflops"] if peak else None,
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
        flops = {name: encoder_flops_of(p, config, model_dir, merged)
                 for name, p in pipelines.items()}
        run_flops = encoder_flops_of(None, config, model_dir, merged)
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
        progress.phase("ONNX Runtime session choices and INT8 variants", 2 * 8 * rounds)
        choices = measure_choices(model_dir, settings.reps, settings.warmup, settings.threads,
                                  tick=progress.step)
        ratios["ratios"].update(choice_ratios(choices))
        progress.phase("peak memory, one process per backend", len(pipelines))
        memory = {}
        for name in pipelines:
            memory[name] = run_probe({"probe": "backend", "backend": name,
                                      "model": settings.model, "seed": settings.seed,
                                      "device": settings.device, "model_dir": str(model_dir),
                                      "prompts": settings.prompts, "threads": settings.threads})
            progress.step()
    training: Dict[str, Any] = {"train_views_per_s": None, "train_compute_share": None}
    if settings.train_steps:
        from samspt.benchmarks.train_rate import measure_train_rate

        progress.phase(f"{settings.train_steps} steps of samspt-train's default recipe", 1)
        training = measure_train_rate(settings.train_steps, settings.threads, settings.device)
        progress.step()
    from samspt.benchmarks.scan_cost import measure_scan_cost
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR

    progress.phase("a 2048 px scan beside its encoder runs", 1)
    scan_cost = measure_scan_cost(Path(settings.scan_model or EXAMPLE_MODEL_DIR),
                                  settings.threads, settings.reps, settings.warmup)
    progress.step()
    from samspt.benchmarks.family_encoders import BASIS as FAMILY_BASIS, compare_families

    progress.phase(f"encoder families against ViT-B at 1024 px: "
                   f"{', '.join(settings.families) or 'none'}",
                   (settings.reps + settings.warmup) * (len(settings.families) + 1)
                   if settings.families else 0)
    families = compare_families(settings.families, settings.reps, settings.warmup,
                                settings.threads, settings.seed, tick=progress.step)
    ratios["ratios"].update(families["ratios"])
    ratios["details"]["basis"].update(FAMILY_BASIS)
    results, backends = _results(samples, pipelines, memory, flops)
    order = {name: i for i, name in enumerate(settings.backends)}
    results.sort(key=lambda e: (order[e["backend"]], e["prompts"]))
    ratios["ratios"].update(result_ratios(results, backends))
    ratios["details"]["basis"].update(RESULT_BASIS)
    return {"settings": settings.to_dict(),
            "inputs": {"image": image_name, "image_hw": list(image.shape[:2]),
                       "prompt": "box", "boxes_seed": settings.seed},
            "model": {"name": config.name, "image_size": config.image_size,
                      "tokens": config.num_tokens,
                      "encoder": (encoder_figures(config) if config.encoder == "vit" else
                                  {"gflop": run_flops["flops"] / 1e9,
                                   "counting": run_flops["counted_from"]})},
            "backends": backends, "skipped": skipped, "results": results,
            "ratios": ratios["ratios"], "ratio_details": ratios["details"],
            "relation": relation, "ort_choices": choices, **training, **scan_cost,
            "family_encoders": families["encoders"]}
