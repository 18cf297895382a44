"""The files of a training run: resolved config, split, metrics, checkpoints, final weights.

    runs/<name>/config.yaml             the resolved configuration
    runs/<name>/split.json              the train/validation split
    runs/<name>/metrics.jsonl           one JSON object per logged step or validation
    runs/<name>/checkpoints/step_0000200.safetensors   SPT weights (safetensors)
    runs/<name>/checkpoints/step_0000200.state.pt      optimizer, scheduler, scaler, step
    runs/<name>/checkpoints/latest.json  the newest complete checkpoint (written last)
    runs/<name>/model.safetensors       final weights; best.safetensors: kept by validation
                                        (log.keep_margin)
    runs/<name>/status.json             the one command's state: training, trained, finished

Every file is written atomically; ``latest.json`` only names a checkpoint once both of its files
are complete, so an interrupted run always resumes from a whole checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from samspt.runtime.errors import CheckpointError
from samspt.runtime.files import atomic_path, atomic_write_text
from samspt.training.checkpoints import read_spt_weights, save_spt_weights, apply_spt_weights
from samspt.training.modeling.model import SptSam

log = logging.getLogger(__name__)


class RunFiles:
    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir)
        self.checkpoints = self.root / "checkpoints"
        self.metrics = self.root / "metrics.jsonl"
        self.config = self.root / "config.yaml"
        self.split = self.root / "split.json"
        self.plots = self.root / "plots"
        self.final = self.root / "model.safetensors"
        self.best = self.root / "best.safetensors"
        self.status = self.root / "status.json"

    # -------------------------------------------------------------------------- status
    def read_status(self) -> Dict[str, Any]:
        """The one command's record of the run (``{}`` when there is none)."""
        if not self.status.exists():
            return {}
        try:
            found = json.loads(self.status.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise CheckpointError(f"{self.status} is damaged; delete it to continue the run "
                                  "from its newest checkpoint") from None
        return found if isinstance(found, dict) else {}

    def write_status(self, **fields: Any) -> None:
        """Update ``status.json`` with ``fields`` (atomically)."""
        status = self.read_status()
        status.update(fields)
        atomic_write_text(self.status, json.dumps(status, indent=1, sort_keys=True) + "\n")

    # ------------------------------------------------------------------------- metrics
    def append_metrics(self, record: Dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash: skip it
                continue
        return out

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step`` (resuming from a checkpoint repeats those steps)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                for r in kept))

    # --------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, model: SptSam, mode: str, state: Dict[str, Any],
                        keep: int = 2, extra: Optional[Dict[str, str]] = None) -> Path:
        """Weights and training state of ``step``; then ``latest.json``; then prune old ones.
        ``extra``: more metadata for the weights file (the step is always there)."""
        stem = self.checkpoints / f"step_{step:07d}"
        weights = stem.with_suffix(".safetensors")
        save_spt_weights(model, weights, mode=mode, extra={"step": str(step), **(extra or {})})
        with atomic_path(stem.with_suffix(".state.pt")) as tmp:
            torch.save(state, tmp)
        atomic_write_text(self.checkpoints / "latest.json",
                          json.dumps({"step": step, "weights": weights.name,
                                      "state": stem.with_suffix(".state.pt").name}))
        self._prune(keep)
        return weights

    def _prune(self, keep: int) -> None:
        steps = sorted(self.checkpoints.glob("step_*.safetensors"))
        for old in steps[:-keep] if keep > 0 else []:
            old.unlink(missing_ok=True)
            old.with_suffix(".state.pt").unlink(missing_ok=True)

    def latest(self) -> Optional[Dict[str, Any]]:
        path = self.checkpoints / "latest.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            raise CheckpointError(f"{path} is damaged; delete it to resume from an earlier "
                                  "checkpoint, or start a new run") from None

    def load_checkpoint(self, model: SptSam, map_location: Any = "cpu") -> Dict[str, Any]:
        """Load the newest checkpoint's weights into ``model``; returns its training state."""
        latest = self.latest()
        if latest is None:
            raise CheckpointError(f"nothing to resume in {self.root}: no checkpoints/latest.json; "
                                  "start without --resume")
        tensors, info = read_spt_weights(self.checkpoints / latest["weights"])
        apply_spt_weights(model, tensors, info, source=latest["weights"])
        state = torch.load(self.checkpoints / latest["state"], map_location=map_location,
                           weights_only=True)
        log.info("resuming from step %d (%s)", latest["step"], latest["weights"])
        return state
