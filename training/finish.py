"""The finish stage of a training run: a verified model folder, its gates, and a model card.

    report = finish_run(run_dir, config, train_records, val_records, deadline=..., progress=...)

``run_dir`` holds what :class:`samspt.training.trainer.Trainer` wrote (``best.safetensors``,
``model.safetensors``, ``config.yaml``, ``split.json``, ``metrics.jsonl``, ``plots/``). The stage:

1. loads ``best.safetensors`` (the weights kept by validation final mIoU, ``log.keep_margin``;
   ``model.safetensors`` when the run has none); where the model has a scan head, fits it
   again on the frozen encoder's tokens of every training image's scan views
   (:mod:`samspt.training.scan_refit`) and writes the weights with it as
   ``finished.safetensors``, what the folder is exported from; exports its FP32
   graphs, unverified and with no gates, into a hidden probe folder inside the run
   (:func:`samspt.export.onnx_export.export_model`: about a second);
2. evaluates the probe through :class:`samspt.runtime.Inspector` on the validation records
   (:func:`samspt.training.evaluation.collect_results`: a tight box per defective image, a
   seeded random box per defect-free one, each with the model's score, and the prompt-free
   scan with no gate, whose trade-off gives the figures at every stricter gate from this one
   run);
3. chooses the prompts' gate from the boxes' scores
   (:func:`samspt.training.prompt_gate.choose_prompt_gate`; the figures reported are those at
   it) and the scan's gate from its trade-off
   (:func:`samspt.training.finish_report.choose_gate`);
4. exports the model folder once, ``RUN/model`` (FP32 and FP16 graphs, parity-verified against
   PyTorch on validation images, the gates in its manifest; built in a temporary folder and
   renamed, so a failed export leaves no folder; FP32 alone, with a note in the card, where the
   FP16 graphs miss their parity gate), checks that its FP32 graphs are the probe's
   byte for byte (so the figures are those of the shipped graphs) and opens it with the
   Inspector, which checks every file's sha256;
5. draws validation overlays with the exported model (each box's view enlarged), evaluates
   the baselines (box as mask; GrabCut, skipped when ``deadline`` is near) and writes
   ``RUN/MODEL_CARD.md`` and ``RUN/finish.json`` (:mod:`samspt.training.model_card`).

The gate rules: :func:`samspt.training.finish_report.choose_gate` (scan) and
:mod:`samspt.training.prompt_gate` (prompts).

Re-running the stage on a finished run: :func:`main_finish` (``samspt-train --finish-only RUN``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import CheckpointError, CheckpointNotFoundError, ConfigError, \
    ModelFolderError, SamsptError
from samspt.runtime.files import atomic_write_text, sha256_file
from samspt.runtime.manifest import GRAPH_KINDS
from samspt.training import model_card
from samspt.training.data.records import Record
from samspt.training.finish_report import (BOX, DEFAULT_FALSE_ALARM, GOALS, GRABCUT, Figures,
                                          FinishReport, HeldOutFigures, calibrated_point,
                                          check_goals,
                                          choose_gate, flagged_at, gate_of_point, goal_lines,
                                          scan_figures)
from samspt.training.prompt_gate import DEFAULT_TARGET_EMPTY, choose_flips, choose_prompt_gate

log = logging.getLogger(__name__)

MODEL_DIR = "model"
CARD = "MODEL_CARD.md"
REPORT = "finish.json"
OVERLAYS = "plots/model_overlays.png"
CURVES = "plots/curves.png"
VERIFY_IMAGES = 8          # validation images of the export's parity check
VERIFY_MAX_VIEWS = 200     # ... and the most views their boxes may take (8 MTD images: ~40; 8
#                            images of 1024 px in 64 px tiles: ~1,500, two minutes of export)
# Test-time flips the finish stage measures against none (samspt.runtime.flips).
FINISH_FLIPS = 4
OVERLAY_IMAGES = 8         # when the config does not say (log.overlay_images)
FINISHED_WEIGHTS = "finished.safetensors"   # the best weights with the refit scan head
CARD_RESERVE_S = 10.0      # seconds kept for the card when a deadline cuts GrabCut short
MIN_REFIT_IMAGES = 8       # fewer training images than this: the head stays as trained
FINISH_COMMAND = "samspt-train --finish-only {run}"

Progress = Callable[[str], None]

# ----------------------------------------------------------------------------- the stage
class _OutOfTime(Exception):
    pass


class _Stages:
    """Stage messages to the caller's ``progress`` and the log, and seconds per stage."""

    def __init__(self, progress: Optional[Progress]) -> None:
        self.progress = progress
        self.seconds: Dict[str, float] = {}

    def say(self, message: str) -> None:
        if self.progress is not None:
            log.debug("%s", message)      # the caller shows it
            self.progress(message)
        else:
            log.info("%s", message)

    @contextlib.contextmanager
    def stage(self, key: str, message: str) -> Iterator[None]:
        self.say(message)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = round(time.perf_counter() - start, 2)

    def counter(self, what: str, deadline: Optional[float] = None
                ) -> Callable[[int, int], None]:
        """An evaluate_records progress callback: a message at each quarter; raises
        _OutOfTime once ``deadline`` (minus the card's reserve) has passed, or, from the third
        image on, as soon as the pace so far says the images left would end after it."""
        start = time.time()

        def progress(done: int, total: int) -> None:
            now = time.time()
            if deadline is not None and done < total:
                end, pace = deadline - CARD_RESERVE_S, (now - start) / done
                if now > end or (done >= 3 and now + pace * (total - done) > end):
                    raise _OutOfTime
            if done == total or done % max(1, math.ceil(total / 4)) == 0:
                self.say(f"{what}: {done}/{total} images")
        return progress


def finish_run(run_dir: Path, config: Any, train_records: Sequence[Record],
               val_records: Sequence[Record], deadline: Optional[float] = None,
               progress: Optional[Progress] = None, *,
               goals: Optional[Mapping[str, float]] = None,
               false_alarm: float = DEFAULT_FALSE_ALARM,
               command: Optional[Sequence[str]] = None,
               data_root: Optional[Path] = None,
               train_seconds: Optional[float] = None,
               test_records: Sequence[Record] = ()) -> FinishReport:
    """Export, measure and document a trained run (see the module doc); returns the report.

    ``config``: the run's TrainConfig; ``train_records``/``val_records``: its split;
    ``deadline``: a ``time.time()`` by which to be done (GrabCut is skipped or cut short near
    it; the required steps always run); ``progress``: stage messages. ``goals``: e.g.
    ``{"final_miou": 0.80, "defect_free_empty": 0.95}`` (keys: :data:`GOALS`); ``false_alarm``:
    the gate rule's target share of defect-free images flagged; ``command``: the training
    command's argv, quoted in the card; ``data_root``: the dataset folder the split is relative
    to (default: the split file's, else the config's); ``train_seconds``: the training's wall
    time (default: from the run's files); ``test_records``: the split's held-out images
    (``data.test_fraction``), on which the exported folder is measured once more, as the line
    runs it, after everything is chosen (the card's *Held-out images*). Raises
    :class:`CheckpointError` when the run's weights cannot be read and
    :class:`samspt.export.verify.VerificationError` when the graphs miss parity; then no
    ``RUN/model`` is written (one from an earlier finish stays as it was).
    """
    run_dir = Path(run_dir)
    goals = check_goals(goals)
    if not 0 <= false_alarm < 1:
        raise ConfigError(f"false_alarm is a share of defect-free images in [0, 1), got "
                          f"{false_alarm}")
    val_records, train_records = list(val_records), list(train_records)
    if not val_records:
        raise ConfigError(f"{run_dir}: no validation images; the finish stage measures the "
                          "model on them (data.val_fraction > 0)")
    stages = _Stages(progress)
    notes: List[str] = []
    weights = _weights(run_dir)
    with _one_torch_thread():
        return _finish(run_dir, config, train_records, val_records, deadline, stages, notes,
                       weights, goals, false_alarm, command, data_root, train_seconds,
                       list(test_records))


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread while finishing, the caller's setting restored after. Its work here
    is small (tracing, parity masks of a few images), and on CPU cores that other processes
    share its OpenMP threads mostly wait for each other: exporting cnn_small took 150 s on two
    threads and 32 s on one on the 2-core VM under a training run's load (4 s unloaded)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finish(run_dir: Path, config: Any, train_records: List[Record], val_records: List[Record],
            deadline: Optional[float], stages: _Stages, notes: List[str], weights: Path,
            goals: Dict[str, float], false_alarm: float, command: Optional[Sequence[str]],
            data_root: Optional[Path], train_seconds: Optional[float],
            test_records: List[Record]) -> FinishReport:
    with stages.stage("load", f"loading {weights.name}"):
        model = _load(weights, config, run_dir)
    budget_s = 60.0 * config.budget.minutes if config.budget.minutes else None
    weights = _refit_scan_head(model, weights, run_dir, train_records, deadline, budget_s,
                               stages, notes)
    full_config = model.config
    views = full_config.view_settings is not None

    from samspt.export.onnx_export import (export_model, with_prompt_min_score,
                                           with_scan_min_score)
    from samspt.training.evaluation import RuntimePredictor, collect_results, summarize

    probe_root = Path(tempfile.mkdtemp(prefix=".finish-probe.", dir=run_dir))
    try:
        with stages.stage("probe_export", "exporting the FP32 graphs to measure them"):
            model.config = dataclasses.replace(full_config, scan_min_score=None,
                                               prompt_min_score=None)
            probe = export_model(model, probe_root / MODEL_DIR, run_dir.resolve().name,
                                 precision="fp32", verify=False)
        with stages.stage("evaluate", f"evaluating the exported graphs on {len(val_records)} "
                                      "validation images (boxes, and the scan with no gate)"):
            predictor = RuntimePredictor(probe.out_dir, flips=1)
            backend = f"{predictor.inspector.backend}, {predictor.inspector.precision}"
            started = time.monotonic()
            results, skipped = collect_results(predictor, val_records,
                                               progress=stages.counter("evaluating the model"))
            predictor.inspector.close()
        flipped = (_evaluate_flipped(probe.out_dir, val_records, results, deadline,
                                     time.monotonic() - started, stages, notes)
                   if views else None)
    finally:
        shutil.rmtree(probe_root, ignore_errors=True)
    target_empty = goals.get("defect_free_empty", DEFAULT_TARGET_EMPTY)
    prompt_gate = choose_prompt_gate(results, target_empty) if views else None
    flips = None
    if prompt_gate is not None and flipped is not None:
        flips = choose_flips({1: results, FINISH_FLIPS: flipped}, target_empty)
        stages.say(f"test-time flips: {flips.flips} ({flips.rule})")
        prompt_gate = flips.gate
        if flips.flips == FINISH_FLIPS:
            results = flipped
    if prompt_gate is not None:
        stages.say(f"prompt gate: {model_card.gate_text(prompt_gate.gate)} ({prompt_gate.rule})")
    gated = [r.gated(prompt_gate.gate if prompt_gate else None) for r in results]
    evaluation = summarize(gated, predictor_name=predictor.name, skipped=skipped)
    images = evaluation.pop("images")
    scan = scan_figures(evaluation) if views else None
    point = calibrated_point(images, false_alarm) if scan else None
    gate = (gate_of_point(point, false_alarm) if point is not None
            else choose_gate(scan, false_alarm, whole_image=not views))
    gate.per_class = {c: flagged_at([r for r in images if r["defect_class"] == c], gate.gate)
                      for c in evaluation["per_class"]} if scan else {}
    stages.say(f"scan gate: {model_card.gate_text(gate.gate)} ({gate.rule})")

    model_dir = run_dir / MODEL_DIR
    with stages.stage("export", f"exporting {model_dir} (FP32 + FP16, verified)"):
        model.config = (with_scan_min_score(full_config, gate.gate) if gate.gate is not None
                        else dataclasses.replace(full_config, scan_min_score=None))
        model.config = with_prompt_min_score(model.config,
                                             prompt_gate.gate if prompt_gate else None)
        if views:
            model.config = dataclasses.replace(model.config,
                                               view_flips=flips.flips if flips else 1)
        result = _export(model, model_dir, run_dir.resolve().name,
                         _verify_images(val_records, model.config), _sources(weights, config),
                         notes)
    shipped = result.manifest
    if point is not None:      # the operating point, with the graphs it was measured on
        from samspt.runtime.calibrate import write_calibrated

        fp32 = {probe.manifest.graph(kind, "fp32")["file"] for kind in GRAPH_KINDS}
        write_calibrated(model_dir, model_dir, dataclasses.replace(
            point, backend="onnxruntime", precision="fp32",
            graphs={name: shipped.sha256(name) for name in sorted(fp32)}))
    if any(entry["sha256"] != shipped.sha256(name)
           for name, entry in probe.manifest.files.items()):
        notes.append("The figures were measured on FP32 graphs traced a moment before the "
                     "shipped ones and not byte-identical to them (both from the same weights; "
                     "the shipped graphs passed parity with PyTorch).")
        log.warning("%s", notes[-1])

    from samspt.runtime.inspector import Inspector

    pictures: Dict[str, Path] = {}
    with Inspector(model_dir) as inspector:        # checks every file's sha256, warms up
        if views and (inspector.view_settings.scan_min_score != gate.gate
                      or inspector.view_settings.prompt_min_score != prompt_gate.gate
                      or inspector.flips != (flips.flips if flips else 1)):
            raise ModelFolderError(f"{model_dir}'s manifest holds gates (scan "
                                   f"{inspector.view_settings.scan_min_score}, prompts "
                                   f"{inspector.view_settings.prompt_min_score}) and flips "
                                   f"({inspector.flips}), not the chosen ({gate.gate}, "
                                   f"{prompt_gate.gate}; {flips.flips if flips else 1}); finish "
                                   "the run again")
        left = _time_left(deadline)
        if left is None or left > CARD_RESERVE_S:
            with stages.stage("overlays", "drawing validation overlays with the exported model"):
                count = int(getattr(getattr(config, "log", None), "overlay_images",
                                    OVERLAY_IMAGES) or OVERLAY_IMAGES)
                path = _overlays(inspector, val_records, count, run_dir / OVERLAYS)
                if path is not None:
                    pictures["overlays"] = path
        else:
            notes.append("Validation overlays: skipped (the deadline was near).")
    curves = _curves(run_dir)
    if curves is not None:
        pictures["curves"] = curves

    held_out = (_evaluate_held_out(model_dir, test_records, gate.gate, stages)
                if test_records else None)
    baselines = _baselines(val_records, deadline, stages, notes)
    metrics = _read_metrics(run_dir)
    report = FinishReport(
        run_dir=run_dir, model_dir=model_dir, card=run_dir / CARD,
        report_json=run_dir / REPORT, weights=weights, weights_step=_weights_step(weights),
        model=Figures.from_report(run_dir.resolve().name, evaluation), baselines=baselines,
        scan=scan, gate=gate, prompt_gate=prompt_gate, flips=flips, goals=[], pictures=pictures,
        notes=notes,
        seconds=stages.seconds, backend=backend,
        verification=_verification(result.manifest.verification), files=result.files,
        held_out=held_out)
    report.goals = goal_lines(report, goals)
    with stages.stage("card", f"writing {report.card}"):
        info = model_card.run_info(run_dir, config, model, train_records, val_records, metrics,
                                   model_dir=model_dir, command=command, data_root=data_root,
                                   finish_command=FINISH_COMMAND.format(run=run_dir),
                                   train_seconds=train_seconds)
        atomic_write_text(report.card, model_card.render(report, info))
        atomic_write_text(report.report_json, json.dumps(report.to_dict(), indent=2) + "\n")
    stages.say(f"finished {run_dir}: {model_dir}, {report.card}")
    return report


# ----------------------------------------------------------------------------- helpers
def _evaluate_flipped(probe_dir: Path, val_records: Sequence[Record], results: list,
                      deadline: Optional[float], seconds: float, stages: _Stages,
                      notes: List[str]) -> Optional[list]:
    """The validation boxes answered with :data:`FINISH_FLIPS` test-time flips (the scan
    figures, which flips leave alone, copied from ``results``); None where the deadline leaves
    no time for it (about ``FINISH_FLIPS`` times the first evaluation's ``seconds``)."""
    from samspt.training.evaluation import RuntimePredictor, collect_results

    left = _time_left(deadline)
    if left is not None and left < FINISH_FLIPS * seconds + CARD_RESERVE_S:
        notes.append("Test-time flips: not evaluated (the deadline was near); the folder "
                     "answers each box once.")
        return None
    with stages.stage("evaluate_flips", f"evaluating the boxes with {FINISH_FLIPS} test-time "
                                        "flips"):
        predictor = RuntimePredictor(probe_dir, flips=FINISH_FLIPS)
        try:
            flipped, _ = collect_results(predictor, val_records, scan=False,
                                         progress=stages.counter("evaluating with flips"))
        finally:
            predictor.inspector.close()
    # Both runs answer the same records in the same order (skips depend on the record only).
    return [dataclasses.replace(r, scores={**r.scores, **{k: v for k, v in first.scores.items()
                                                          if k.startswith("scan_")}})
            for r, first in zip(flipped, results)]


def _evaluate_held_out(model_dir: Path, records: List[Record], gate: Optional[float],
                       stages: _Stages) -> HeldOutFigures:
    """The exported folder measured on the held-out ``records`` as the line runs it (its
    prompt gate and flips), its scan scanned once with no gate (every gate's figures from one
    pass) and read at ``gate``; the box-as-mask baseline on the same images."""
    from samspt.training.baselines import BoxAsMask
    from samspt.training.evaluation import (RuntimePredictor, collect_results, evaluate_records,
                                            summarize)

    with stages.stage("held_out", f"measuring {model_dir} on {len(records)} held-out images"):
        predictor = RuntimePredictor(model_dir)
        inspector = predictor.inspector
        if inspector.view_settings is not None:
            inspector.view_settings = dataclasses.replace(inspector.view_settings,
                                                          scan_min_score=None)
        try:
            results, skipped = collect_results(predictor, records,
                                               progress=stages.counter("held-out images"))
        finally:
            inspector.close()
        report = summarize(results, predictor_name=predictor.name, skipped=skipped)
        images = report.pop("images")
        box = evaluate_records(BoxAsMask(), records, scan=False)
    scan = scan_figures(report) if inspector.view_settings is not None else None
    free = [r for r in images if r.get("defect_free")]
    defective = [r for r in images if not r.get("defect_free")]
    return HeldOutFigures(
        Figures.from_report(model_dir.parent.resolve().name, report),
        Figures.from_report(BOX, box), scan, gate,
        flagged_at(defective, gate) if scan and defective else None,
        flagged_at(free, gate) if scan and free else None)


def _time_left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else deadline - time.time()


def _refit_scan_head(model, weights: Path, run_dir: Path, train_records: List[Record],
                     deadline: Optional[float], budget_s: Optional[float], stages: _Stages,
                     notes: List[str]) -> Path:
    """The scan head fitted again on the training images' scan views
    (:mod:`samspt.training.scan_refit`), the weights with it written to ``RUN/finished.
    safetensors``, which the folder is then exported from; ``weights`` unchanged where the
    model has no scan head, the split no defect, or the deadline no room. It takes at most
    a third of the time left and REFIT_SHARE of the run's budget ``budget_s`` (None: no
    budget): beyond that it reads a subset of the training images
    (:func:`~samspt.training.scan_refit.plan_refit`)."""
    from samspt.training.checkpoints import read_spt_info, save_spt_weights
    from samspt.training.scan_refit import (REFIT_SHARE, can_refit, estimate_s, plan_refit,
                                            refit_scan_head)

    if not can_refit(model) or not train_records:
        return weights
    if all(r.is_defect_free for r in train_records) or \
            all(not r.is_defect_free for r in train_records):
        notes.append("Scan head: as trained (the training split lacks defect-free or defective "
                     "images to fit it again on).")
        return weights
    left = _time_left(deadline)
    allowed = None if left is None else (left - CARD_RESERVE_S) / 3
    if budget_s:
        allowed = min(REFIT_SHARE * budget_s, allowed if allowed is not None else math.inf)
    plan = plan_refit(train_records, model.config, allowed)
    free = sum(1 for r in plan.records if r.is_defect_free)
    if plan.images < min(MIN_REFIT_IMAGES, plan.all_images) or not free or \
            free == len(plan.records):
        notes.append(f"Scan head: as trained ({allowed or 0:.0f} s were left for it, too few "
                     f"to fit it again on both defect-free and defective training images: "
                     f"{plan.all_views} scan views would take about "
                     f"{estimate_s(plan.all_views, model.config.embedding_size ** 2):.0f} s).")
        return weights
    subset = "" if plan.images == plan.all_images else \
        f" (of {plan.all_images}: their {plan.all_views} scan views would not fit the time)"
    start = time.time()
    try:
        with stages.stage("scan_head", f"fitting the scan head again on the scan views of "
                                       f"{plan.images} training images{subset}"):
            figures = refit_scan_head(
                model, plan.records, progress=stages.counter(
                    "reading scan views", None if allowed is None
                    else start + 2 * allowed + CARD_RESERVE_S))
    except _OutOfTime:
        notes.append(f"Scan head: as trained (reading the scan views of {plan.images} images "
                     f"took over twice the {plan.seconds:.0f} s expected; stopped).")
        return weights
    info = read_spt_info(weights)       # the header: the tensors are the loaded model's
    path = save_spt_weights(model, run_dir / FINISHED_WEIGHTS, mode=info.mode,
                            extra={**info.extra, "scan_head": f"refit on {figures.images} "
                                                              "training images"})
    notes.append(f"Scan head: fitted again on the frozen encoder's tokens of the scan views of "
                 f"{figures.images} training images{subset} ({figures.tokens} tokens, "
                 f"{figures.defect_tokens} of them defect; width {figures.hidden}; "
                 f"{figures.seconds:.0f} s), saved with {weights.name}'s other weights as "
                 f"{path.name}, which the folder is exported from.")
    return path


def _weights(run_dir: Path) -> Path:
    for name in ("best.safetensors", "model.safetensors"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointNotFoundError(f"{run_dir} holds neither best.safetensors nor "
                                  "model.safetensors: training has not written its weights; "
                                  "finish the training (or resume it) first")


def _load(weights: Path, config: Any, run_dir: Path):
    from samspt.training.checkpoints import load_spt_model

    sam = getattr(getattr(config, "model", None), "sam_checkpoint", None)
    try:
        return load_spt_model(weights, sam).float().eval()
    except CheckpointError as exc:
        raise type(exc)(f"cannot finish {run_dir}: {exc} No model folder was written; "
                        "resume or repeat the training to write the weights again") from None


def _weights_step(weights: Path) -> Optional[int]:
    """The training step the trainer wrote into the weights' metadata, if any (the header
    only: the tensors are not read again)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            return int((handle.metadata() or {}).get("step"))
    except (SafetensorError, OSError, TypeError, ValueError):
        return None


def _sources(weights: Path, config: Any) -> Dict[str, Any]:
    sources = {"weights": {"name": weights.name, "sha256": sha256_file(weights)}}
    sam = getattr(getattr(config, "model", None), "sam_checkpoint", None)
    if sam:
        sources["checkpoint"] = {"name": Path(sam).name, "sha256": sha256_file(sam)}
    return sources


def _export(model, model_dir: Path, name: str, verify_images, sources: Dict[str, Any],
            notes: List[str]):
    """FP32 + FP16 graphs, verified, into ``model_dir`` (replaced only on success). Where the
    FP16 graphs miss their parity gate, the verified FP32 graphs alone, and a note says why: the
    run's model still ships, as ONNX Runtime runs it. A VerificationError when FP32 misses too."""
    from samspt.export.onnx_export import export_model
    from samspt.export.verify import VerificationError

    def export(precision: str):
        return export_model(model, model_dir, name, precision=precision,
                            verify_images=verify_images, sources=sources,
                            stage=lambda text: log.info("export: %s", text))

    try:
        return export("both")
    except VerificationError as exc:
        missed = str(exc)
    log.warning("the graphs missed parity (%s); exporting the FP32 graphs alone", missed)
    result = export("fp32")
    notes.append(f"FP16 graphs: not in the folder, they missed parity with PyTorch ({missed}). "
                 "It holds the verified FP32 graphs only (what ONNX Runtime runs by default).")
    return result


def _round_robin(records: Sequence[Record]) -> List[Record]:
    by_class: Dict[str, List[Record]] = {}
    for record in records:
        by_class.setdefault(record.defect_class, []).append(record)
    return [r for group in itertools.zip_longest(*by_class.values()) for r in group if r]


def _verify_images(records: Sequence[Record], config) -> Optional[list]:
    """Up to VERIFY_IMAGES validation images, classes mixed, with seeded box prompts (the
    export's parity check runs on the run's own kind of image): fewer where their boxes' views
    (``config``'s) would pass VERIFY_MAX_VIEWS (large images tiled into small views), at least
    one."""
    from samspt.runtime.samples import prompt_boxes
    from samspt.runtime.views import plan_views

    rng = np.random.default_rng(0)
    out, views = [], 0
    for record in _round_robin(records)[:VERIFY_IMAGES]:
        image = record.load_image()
        boxes = prompt_boxes(record.load_mask(image.shape[:2]), rng)
        if config.view_settings is not None:
            count = len(plan_views(image.shape[:2], config.image_size, config.view_settings,
                                   "auto", boxes=boxes).views)
            if out and views + count > VERIFY_MAX_VIEWS:
                break
            views += count
        out.append((record.name, image, boxes))
    return out or None


def _verification(figures: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if not figures:
        return None
    out: Dict[str, Any] = {"images": figures.get("images")}
    for label, block in figures.items():
        if isinstance(block, dict) and "mean_iou" in block:
            out[label] = {"mean_iou": block["mean_iou"], "min_iou": block["min_iou"]}
    return out


def _overlays(inspector, records: Sequence[Record], count: int, path: Path) -> Optional[Path]:
    """Rows of defective validation images (classes in turn): the exported model's answer to
    each tight box, its view enlarged (:func:`samspt.training.plots.overlay_grid`)."""
    from samspt.runtime.prompts import mask_box
    from samspt.training.plots import overlay_grid

    rows = []
    for record in _round_robin([r for r in records if not r.is_defect_free]):
        if len(rows) >= count:
            break
        image = record.load_image()
        truth = record.load_mask(image.shape[:2])
        if not truth.any():
            continue
        box = mask_box(truth)
        result = inspector.inspect(image, boxes=box[None])
        rows.append((record.name, image, truth, result.draft_masks[0], result.masks[0], box,
                     result.views[0] if result.views else None))
    if not rows:
        return None
    return overlay_grid(rows, path, title="validation: the exported model through the "
                                          "Inspector (tight boxes)")


def _read_metrics(run_dir: Path) -> List[Dict[str, Any]]:
    from samspt.training.run_files import RunFiles

    return RunFiles(run_dir).read_metrics()


def _curves(run_dir: Path) -> Optional[Path]:
    """plots/curves.png: the trainer's, or drawn here from metrics.jsonl when it is missing."""
    path = run_dir / CURVES
    if path.is_file():
        return path
    metrics = _read_metrics(run_dir)
    if not any("loss" in r for r in metrics):
        return None
    from samspt.training.plots import plot_curves

    return plot_curves(metrics, path)


def _baselines(records: Sequence[Record], deadline: Optional[float], stages: _Stages,
               notes: List[str]) -> Dict[str, Optional[Figures]]:
    from samspt.training.baselines import BoxAsMask, GrabCut
    from samspt.training.evaluation import evaluate_records

    out: Dict[str, Optional[Figures]] = {}
    with stages.stage("baseline_box", "baseline: the box as the mask"):
        out[BOX] = Figures.from_report(BOX, evaluate_records(BoxAsMask(), records, scan=False))
    left = _time_left(deadline)
    if left is not None and left < 2 * CARD_RESERVE_S:
        out[GRABCUT] = None
        notes.append(f"GrabCut baseline: skipped ({left:.0f} s were left before the deadline).")
        return out
    try:
        with stages.stage("baseline_grabcut", "baseline: OpenCV GrabCut, 5 iterations"):
            report = evaluate_records(GrabCut(), records, scan=False,
                                      progress=stages.counter("GrabCut", deadline))
        out[GRABCUT] = Figures.from_report(GRABCUT, report)
    except _OutOfTime:
        out[GRABCUT] = None
        notes.append("GrabCut baseline: stopped part-way, it would have ended after the "
                     "deadline; not reported.")
    return out


# ----------------------------------------------------------------------------- command line
def build_finish_parser(prog: str = "samspt-train --finish-only") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Finish a trained run again: export RUN/model (FP32 + FP16, "
        "verified), measure it on the run's validation split through the Inspector, choose "
        "the scan's gate, write RUN/MODEL_CARD.md.")
    parser.add_argument("run", type=Path, metavar="RUN", help="the run folder (config.yaml, "
                        "split.json, best.safetensors or model.safetensors)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder the split is relative to (default: the one the "
                             "split was written with)")
    parser.add_argument("--false-alarm", type=float, default=DEFAULT_FALSE_ALARM, metavar="P",
                        help="the gate rule's target share of defect-free validation images "
                             f"the scan flags (default {DEFAULT_FALSE_ALARM})")
    parser.add_argument("--goal", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a goal line in the card (repeatable); keys: {', '.join(GOALS)}")
    parser.add_argument("--minutes", type=float, default=None,
                        help="time to finish in; GrabCut is skipped when it runs short")
    add_verbose_flag(parser)
    return parser


def main_finish(argv: Optional[List[str]] = None) -> int:
    """``samspt-train --finish-only RUN [...]``: :func:`finish_run` on a finished run's files."""
    from samspt.runtime.logs import configure_cli_logging

    args = build_finish_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    start = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {text}", file=sys.stderr, flush=True)

    try:
        goals = _parse_goals(args.goal)
        config, (train, val, test), root = _read_run(args.run, args.data)
        deadline = None if args.minutes is None else time.time() + 60 * args.minutes
        report = finish_run(args.run, config, train, val, deadline, progress, goals=goals,
                            false_alarm=args.false_alarm, data_root=root, test_records=test)
    except SamsptError as exc:
        return error_exit(exc)
    except OSError as exc:
        return error_exit(exc, f"cannot write into {args.run}")
    m = report.model
    print(f"model folder: {report.model_dir}\nmodel card:   {report.card}")
    print(f"final mIoU {model_card.fmt(m.final_miou)} (draft {model_card.fmt(m.draft_miou)}, "
          f"box as mask {model_card.fmt(report.baselines[BOX].final_miou)}); defect-free boxes "
          f"answered empty {model_card.share(m.defect_free_empty)}")
    if report.prompt_gate is not None:
        pick = report.prompt_gate
        print(f"prompt gate: {model_card.gate_text(pick.gate)} (no gate: final mIoU "
              f"{model_card.fmt(pick.final_miou_no_gate)}, defect-free boxes answered empty "
              f"{model_card.share(pick.empty_rate_no_gate)})")
    print(f"scan gate: {model_card.gate_text(report.gate.gate)}: defective flagged "
          f"{model_card.share(report.gate.defective_flagged)}, defect-free flagged "
          f"{model_card.share(report.gate.defect_free_flagged)}")
    return 0


def _parse_goals(pairs: Sequence[str]) -> Dict[str, float]:
    goals = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            goals[key] = float(value)
        except ValueError:
            raise ConfigError(f"--goal takes KEY=NUMBER (e.g. final_miou=0.8), got {pair!r}; "
                              f"keys: {', '.join(GOALS)}") from None
    return check_goals(goals)


def _read_run(run: Path, data: Optional[Path]):
    """(TrainConfig, its split (train, val, test records), data root) of a run folder."""
    from samspt.training.data.split import read_split_dataset
    from samspt.training.train_config import load_train_config

    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} has no config.yaml: it is not a samspt-train run folder")
    config = load_train_config(run / "config.yaml")
    root = data or model_card.json_object(run / "split.json").get("root") or \
        config.data.root
    return config, read_split_dataset(run / "split.json", root), Path(root)
