"""``samspt-train --data DIR --out RUN``: one command from a dataset folder to trained weights
and the finish stage (export, evaluation, model card), within a wall-clock budget.

:func:`plan_run` checks every input before anything is written: the run folder (new, empty, a
run to continue, or a refusal), the dataset (layout detected, masks matching their images), the
checkpoint to start from (:func:`classify_init`), and resolves the configuration: the recipe
(:func:`samspt.training.recipe.default_recipe`), then the settings derived from the training
masks (:mod:`samspt.training.auto_views`) and the data size, then ``--set`` overrides, which
win. :func:`execute` trains (:class:`~samspt.training.trainer.Trainer` on a
:class:`~samspt.training.schedule.TimeBudget`, which measures a few steps and refuses a budget
too short before the run folder is made) and calls the finish stage with what is left of the
budget. A start that fails before the first checkpoint leaves the run folder as it found it.

Continuing: the same command on a run folder that holds an unfinished run resumes it with the
configuration and split saved there (the budget counts the time already spent); on a finished
run it says so; on a run of other data, or with another budget, checkpoint or ``--set``, it
refuses and says how to start anew.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from samspt.runtime.errors import CheckpointError, ConfigError
from samspt.training.auto_views import CPU_SIZES, SIZES, DerivedViews, collect_stats, derive_views
from samspt.training.data.records import DatasetError
from samspt.training.recipe import default_recipe
from samspt.training.run_files import RunFiles
from samspt.training.train_config import (TrainConfig, config_from_dict, load_train_config,
                                         merge_mappings)

log = logging.getLogger(__name__)

DEFAULT_BUDGET_MIN = 60.0
STATES = ("new", "resume", "finish", "finished")


# ------------------------------------------------------------------------ the checkpoint
@dataclass(frozen=True)
class InitCheckpoint:
    """What ``--init`` gives: ``kind`` ``sam`` (an official SAM checkpoint, SPT on it) or
    ``weights`` (samspt ``full`` weights to train on from); the model type and input size."""

    kind: str
    path: Path
    model_type: str
    image_size: int
    patch_size: int


def _wrong_kind(path: Path, found: str) -> CheckpointError:
    return CheckpointError(
        f"--init {path} is a checkpoint of the wrong kind: {found}. --init takes an official "
        "SAM checkpoint (.pth, e.g. sam_vit_b_01ec64.pth: SPT is trained on it) or samspt "
        "weights (.safetensors written by samspt-train, mode full: training goes on from "
        "them); without --init a conv model is trained from scratch")


def classify_init(path: Path) -> InitCheckpoint:
    """The kind of checkpoint ``path`` is, or a CheckpointError saying it is of the wrong
    kind (or missing) and what ``--init`` takes."""
    from samspt.training.checkpoints import (SAM_DECODER_PREFIX, SPT_FORMAT, in_sam_layout,
                                             infer_model_type, read_spt_weights,
                                             read_state_dict)
    from samspt.training.modeling.config import get_config

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"--init {path} does not exist; give the path of a SAM checkpoint "
                              "(.pth) or of samspt weights (.safetensors)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise _wrong_kind(path, f"not a readable safetensors file ({exc})") from None
        if meta.get("format") != SPT_FORMAT:
            raise _wrong_kind(path, "safetensors without samspt's metadata")
        _, info = read_spt_weights(path)
        if info.mode != "full":
            raise CheckpointError(
                f"--init {path} holds SPT weights of mode {info.mode} (LoRA tensors only), which "
                f"need the SAM checkpoint they were trained on: pass that as --init and these "
                f"weights with --set model.init_weights={path}")
        return InitCheckpoint("weights", path, info.config.name, info.config.image_size,
                              info.config.patch_size)
    if path.suffix not in (".pth", ".pt"):
        raise _wrong_kind(path, f"a {path.suffix or 'suffix-less'} file")
    state = in_sam_layout(read_state_dict(path))
    if any(".lora_A" in k or ".lora_B" in k for k in state):
        raise CheckpointError(f"--init {path} looks like the SPT authors' release (LoRA tensors "
                              f"in loralib's layout); convert it first: samspt-convert-spt {path} "
                              "--out spt.safetensors")
    model_type = infer_model_type(state)
    if model_type is None or not any(k.startswith(SAM_DECODER_PREFIX) for k in state):
        raise _wrong_kind(path, "a PyTorch state dict that is no SAM checkpoint (no image "
                                "encoder of a known size and mask decoder)")
    config = get_config(model_type)
    return InitCheckpoint("sam", path, model_type, config.image_size, config.patch_size)


# ---------------------------------------------------------------------------- planning
@dataclass
class OneCommandPlan:
    """What :func:`execute` does: ``state`` one of STATES, the resolved configuration, the
    split, the derived view settings (None when continuing a run)."""

    state: str
    config: TrainConfig
    out: Path
    train: List[Any] = field(default_factory=list)
    val: List[Any] = field(default_factory=list)
    test: List[Any] = field(default_factory=list)  # held out (data.test_fraction)
    derived: Optional[DerivedViews] = None
    start: str = "scratch"
    status: Dict[str, Any] = field(default_factory=dict)


def _folder_state(out: Path) -> str:
    """``new`` (missing or empty), ``run`` (holds a run's config.yaml), or a ConfigError."""
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the run (it is created)")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return "new"
    if (out / "config.yaml").is_file():
        return "run"
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    raise ConfigError(f"--out {out} is not a run folder: it holds other files ({shown}) and no "
                      "config.yaml; give a new or empty folder for the run")


def _epoch_images(train: Sequence[Any], defect_free_fraction: float) -> int:
    defective = sum(not r.is_defect_free for r in train)
    free = len(train) - defective
    return defective + min(free, int(round(defect_free_fraction * defective)))


def _flat(data: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix[:-1]: data}
    out: Dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def _same_path(a: Optional[str], b: Optional[Path]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _new_run(data: Path, out: Path, budget_min: float, init: Optional[Path],
             overrides: Sequence[str]) -> OneCommandPlan:
    from samspt.training.data.split import split_dataset
    from samspt.training.run_setup import VIEW_FIELDS, model_config_for, read_records

    checkpoint = classify_init(init) if init is not None else None
    start = checkpoint.kind if checkpoint else "scratch"
    # The data's absolute path: the run is continued and finished from any working folder.
    recipe = default_recipe(Path(os.path.abspath(data)), out, budget_min, start).to_dict()
    if checkpoint is not None and checkpoint.kind == "sam":
        recipe["model"].update(type=checkpoint.model_type, sam_checkpoint=str(checkpoint.path))
    elif checkpoint is not None:
        recipe["model"].update(type=checkpoint.model_type, init_weights=str(checkpoint.path))
    first = config_from_dict(recipe, overrides)   # the user's data settings, for reading

    records = read_records(first.data)
    train, val, test = split_dataset(records, val_fraction=first.data.val_fraction,
                                     seed=first.data.split_seed,
                                     test_fraction=first.data.test_fraction)
    if first.model.init_weights:
        sizes, patch = (checkpoint.image_size,), checkpoint.patch_size
        fixed_by = f"the weights {first.model.init_weights}"
    else:
        model = model_config_for(first.model)
        sizes, patch, fixed_by = SIZES, model.patch_size, ""
        if not _cuda_available():
            sizes, fixed_by = CPU_SIZES, ("training on a CPU (256 px views train about 6x "
                                          "slower; --set model.config.image_size=256 for them)")
        if "image_size" in first.model.config:
            sizes, fixed_by = (model.image_size,), "--set model.config.image_size"
        elif start == "sam":
            sizes, fixed_by = (model.image_size,), f"the SAM checkpoint ({model.name})"
    derived = derive_views(collect_stats(train, seed=first.data.split_seed), sizes, patch,
                           fixed_by)
    fitted = {"model": {"config": derived.model_overrides(with_size=start == "scratch")},
              "optim": {"batch_size": max(1, min(first.optim.batch_size, _epoch_images(
                  train, first.data.defect_free_fraction)))}}
    config = config_from_dict(merge_mappings(recipe, fitted), overrides)
    if config.run_dir.absolute() != out.absolute():
        raise ConfigError(f"--set name / out_dir would move the run to {config.run_dir}; with "
                          f"--data/--out the run folder is --out ({out}): leave them out")
    if config.model.init_weights:
        fixed_fields = sorted(set(config.model.config) - set(VIEW_FIELDS))
        if fixed_fields:
            raise ConfigError(f"model.config.{fixed_fields[0]} cannot change a model started "
                              f"from weights (--init); only {', '.join(VIEW_FIELDS)} may")
    else:
        model_config_for(config.model)  # a ConfigError now, not after the run folder exists
    return OneCommandPlan("new", config, out, list(train), list(val), list(test), derived,
                          start)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _existing_run(data: Path, out: Path, budget_min: Optional[float], init: Optional[Path],
                  overrides: Sequence[str]) -> OneCommandPlan:
    from samspt.training.data.split import read_split_dataset, split_dataset
    from samspt.training.run_setup import read_records

    files = RunFiles(out)
    saved = load_train_config(files.config)
    anew = f"to train anew, pass another --out (or delete {out})"
    if saved.budget.minutes <= 0:
        raise ConfigError(f"--out {out} holds a run trained by steps (samspt-train --config); "
                          f"continue it with samspt-train --config {files.config} --resume, or "
                          f"{anew}")
    if not _same_path(saved.data.root, data):
        raise ConfigError(f"--out {out} holds a run of other data ({saved.data.root}), not "
                          f"{Path(data).expanduser().absolute()}; continue it with --data "
                          f"{saved.data.root}, or {anew}")
    if budget_min is not None and abs(budget_min - saved.budget.minutes) > 1e-9:
        raise ConfigError(f"--out {out} holds a run with a budget of {saved.budget.minutes:g} "
                          f"min; continuing keeps it (the schedule is fitted to it): leave out "
                          f"--budget-min or pass {saved.budget.minutes:g}, or {anew}")
    started_from = saved.model.sam_checkpoint or saved.model.init_weights
    if init is not None and not _same_path(started_from, init):
        raise ConfigError(f"--out {out} holds a run started from {started_from or 'scratch'}, "
                          f"not {init}; leave out --init to continue it, or {anew}")
    was = _flat(saved.to_dict())
    again = _flat(config_from_dict(saved.to_dict(), overrides).to_dict())
    changed = [f"{k} (was {was.get(k)!r})" for k in sorted(again) if was.get(k) != again[k]]
    if changed:
        raise ConfigError(f"--out {out} holds a run whose configuration continuing keeps; --set "
                          f"changes {', '.join(changed)}; leave those --set out, or {anew}")
    config = config_from_dict(saved.to_dict(), [f"name={out.name}", f"out_dir={out.parent}"])
    status = files.read_status()
    state = {"finished": "finished", "trained": "finish"}.get(status.get("state"), "resume")
    if state == "finished":
        return OneCommandPlan(state, config, out, status=status)
    records = read_records(config.data)
    if files.split.exists():
        train, val, test = read_split_dataset(files.split, config.data.root)
        then = {r.image_path.resolve() for r in train + val + test}
        now = {r.image_path.resolve() for r in records}
        if then != now:
            raise DatasetError(
                f"the data in {config.data.root} changed since run {out} started: "
                f"{len(then - now)} of its images are gone, {len(now - then)} are new; "
                f"{anew}")
    else:   # stopped before its split was written: the same split again
        train, val, test = split_dataset(records, val_fraction=config.data.val_fraction,
                                         seed=config.data.split_seed,
                                         test_fraction=config.data.test_fraction)
    return OneCommandPlan(state, config, out, list(train), list(val), list(test), None, "",
                          status)


def plan_run(data: Path, out: Path, budget_min: Optional[float] = None,
             init: Optional[Path] = None, overrides: Sequence[str] = ()) -> OneCommandPlan:
    """Check the inputs and resolve what :func:`execute` will do; writes nothing."""
    data, out = Path(data).expanduser(), Path(out).expanduser()
    if budget_min is not None and not budget_min > 0:
        raise ConfigError(f"--budget-min must be > 0 minutes, got {budget_min:g}")
    if _folder_state(out) == "run":
        return _existing_run(data, out, budget_min, init, overrides)
    return _new_run(data, out, DEFAULT_BUDGET_MIN if budget_min is None else budget_min, init,
                    overrides)


# --------------------------------------------------------------------------- executing
@dataclass
class OneCommandResult:
    state: str  # the plan's state
    run_dir: Path
    train: Optional[Any] = None  # TrainResult of this call's training
    finish: Optional[Any] = None  # what finish_run returned
    deadline: Optional[float] = None  # time.time() by which the command was to end
    status: Dict[str, Any] = field(default_factory=dict)


def _undo_start(out: Path, existed: bool) -> None:
    """Remove what a failed start wrote: the folder it made, or the contents of the empty
    folder it was given."""
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in out.iterdir():
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()


def execute(plan: OneCommandPlan, dist=None, progress: Optional[Callable] = None,
            started: Optional[float] = None, command: Optional[Sequence[str]] = None,
            finish_progress: Optional[Callable[[str], None]] = None) -> OneCommandResult:
    """Train (new run or continued) and call the finish stage with the rest of the budget:
    ``finish_run(run_dir, config, train_records, val_records, deadline=...)``, ``deadline`` a
    ``time.time()`` value, and ``progress`` (``finish_progress``, stage messages),
    ``command`` (the training command's argv) and ``train_seconds`` where it takes them."""
    from samspt.training.distributed import DistInfo
    from samspt.training.trainer import Trainer

    dist = dist if dist is not None else DistInfo()
    started = time.perf_counter() if started is None else started
    files, config = RunFiles(plan.out), plan.config
    result = OneCommandResult(plan.state, plan.out, status=plan.status)
    if plan.state == "finished":
        return result
    total_s = config.budget.minutes * 60.0
    if plan.state in ("new", "resume"):
        existed = plan.out.exists()
        trainer = Trainer(config, dist, progress, records=(plan.train, plan.val, plan.test),
                          started=started)
        try:
            trained = trainer.run(resume=files.latest() is not None)
        except BaseException:
            if plan.state == "new" and dist.is_main and files.latest() is None:
                _undo_start(plan.out, existed)
            raise
        result.train = trained
        elapsed = trained.elapsed_s
        if dist.is_main:
            files.write_status(state="trained", step=trained.step,
                               elapsed_s=round(elapsed, 2), budget_min=config.budget.minutes,
                               weights=files.final.name,
                               best=files.best.name if files.best.exists() else None)
    else:   # trained before, the finish stage did not complete
        elapsed = float(plan.status.get("elapsed_s", 0.0)) + time.perf_counter() - started
    result.deadline = time.time() + max(0.0, total_s - elapsed)
    if not dist.is_main:
        return result
    from samspt.training.finish import finish_run

    log.info("finish stage: %.0f s of the budget left", result.deadline - time.time())
    finish_start = time.time()
    result.finish = finish_run(
        plan.out, config, plan.train, plan.val, deadline=result.deadline,
        progress=finish_progress, command=command, test_records=plan.test,
        train_seconds=result.train.elapsed_s if result.train is not None else None)
    files.write_status(state="finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       elapsed_s=round(elapsed + time.time() - finish_start, 2))
    result.status = files.read_status()
    return result
