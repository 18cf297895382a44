"""What a memory-probe child process runs (started by :func:`samspt.benchmarks.memory.run_probe`).

The child reads a JSON spec on stdin and prints one JSON line:

* ``{"probe": "backend", "backend": "ort", "model": "small", "seed": 0, "device": "cpu",
  "model_dir": "...", "prompts": [1, 4], "threads": 0}``: open that one backend (an ONNX Runtime
  child never imports torch), then one inspection per prompt count, ascending, with the
  resident-set high-water mark reset before each: the peak host memory (MiB, whole process) of
  a process that runs only this backend. On a GPU also device memory: PyTorch's allocator peak
  for the PyTorch backends, the process's share in ``nvidia-smi`` for the others.
* ``{"probe": "relation", "tokens": 4096, "channels": 256, "prompts": 1, "device": "cpu"}``:
  :func:`samspt.benchmarks.relation_compare.relation_memory` (``"train": true``: forward and
  backward, a training step's share).
* ``{"probe": "relation_ort", "paths": {...}, "tokens": 4096, ...}``: the same on ONNX Runtime,
  :func:`samspt.benchmarks.relation_compare.relation_memory_ort`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

from samspt.benchmarks.memory import current_rss_mb, peak_rss_mb, process_device_mb, reset_peak_rss


def backend_probe(spec: Dict[str, Any]) -> Dict[str, Any]:
    from samspt.benchmarks.backends import OpenContext, open_pipeline
    from samspt.benchmarks.inputs import benchmark_inputs

    baseline = current_rss_mb()
    prompts = [int(k) for k in spec["prompts"]]
    _, image, boxes = benchmark_inputs(prompts, int(spec["seed"]))
    ctx = OpenContext(model_type=spec["model"], seed=int(spec["seed"]), device=spec["device"],
                      model_dir=Path(spec["model_dir"]), prompt_counts=prompts,
                      threads=int(spec.get("threads", 0)))
    pipeline = open_pipeline(spec["backend"], ctx)
    loaded = current_rss_mb()
    per_prompts: Dict[str, Dict[str, Any]] = {}
    resettable = True
    for count in prompts:
        resettable = reset_peak_rss() and resettable
        reset_device = getattr(pipeline, "reset_device_peak", None)
        if reset_device:
            reset_device()
        pipeline.run(image, boxes[count])
        device_peak = getattr(pipeline, "device_peak_mb", None)
        device_mb = device_peak() if device_peak else (
            process_device_mb() if pipeline.device == "cuda" else None)
        per_prompts[str(count)] = {"host_peak_mb": peak_rss_mb(), "device_mb": device_mb}
    pipeline.close()
    return {"backend": spec["backend"], "baseline_mb": baseline, "loaded_mb": loaded,
            "per_prompts": per_prompts, "torch_imported": "torch" in sys.modules,
            "peak_reset": resettable}


def child_main() -> int:
    spec = json.loads(sys.stdin.read())
    if spec.get("probe") == "backend":
        result = backend_probe(spec)
    elif spec.get("probe") == "relation":
        import torch

        from samspt.benchmarks.relation_compare import relation_memory

        if int(spec.get("threads", 0)):
            torch.set_num_threads(int(spec["threads"]))
        result = relation_memory(int(spec["tokens"]), int(spec["channels"]),
                                 int(spec["prompts"]), spec["device"],
                                 train=bool(spec.get("train", False)))
    elif spec.get("probe") == "relation_ort":
        from samspt.benchmarks.relation_compare import relation_memory_ort

        result = relation_memory_ort(spec["paths"], int(spec["tokens"]), int(spec["channels"]),
                                     int(spec["prompts"]), int(spec.get("threads", 0)))
    else:
        print(f"unknown probe {spec.get('probe')!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
