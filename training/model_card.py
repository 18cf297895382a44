"""``RUN/MODEL_CARD.md``: the Markdown card the finish stage writes (:mod:`samspt.training.finish`).

:func:`render` turns a :class:`~samspt.training.finish_report.FinishReport` (what was measured)
and a :class:`RunInfo` (what the run's files say, gathered by :func:`run_info`: configuration,
split, training, the commands that reproduce it) into the card, in the
shape of the earlier hand-written card of the example model: model, data and split, training,
validation figures beside the baselines, the scan's trade-off and chosen gate, pictures, goals,
commands that reproduce it. Every figure is formatted by :func:`fmt` (means, 3 decimals) or
:func:`share` (percent, 1 decimal), so the card says exactly what the report holds.
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from samspt.runtime.find_segment import DEFAULT_GATE, REGION_SHARE
from samspt.runtime.scan_head import SCAN_HEAD_FILE
from samspt.training.evaluation import fmt_figure

if TYPE_CHECKING:  # pragma: no cover
    from samspt.training.finish_report import Figures, FinishReport


@dataclass
class RunInfo:
    """What the card says about the run beside the measured figures."""

    name: str
    model_config: Dict[str, Any]
    parameters: int
    trained_parameters: int
    mode: str
    data_root: str
    train_counts: Dict[str, int]
    val_counts: Dict[str, int]
    split_seed: Optional[int] = None
    val_fraction: Optional[float] = None
    recipe: Dict[str, Dict[str, Any]] = field(default_factory=dict)   # config sections
    steps: Optional[int] = None
    best_val: Optional[Tuple[int, float]] = None       # (step, final mIoU) during training
    keep_margin: float = 0.0                           # log.keep_margin: which weights are kept
    views_per_s: Optional[float] = None
    train_seconds: Optional[float] = None
    train_seconds_source: str = ""
    commands: Dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- run facts
def class_counts(records: Sequence[Any]) -> Dict[str, int]:
    """Images per class (``Record.defect_class``), classes sorted."""
    counts: Dict[str, int] = {}
    for record in records:
        counts[record.defect_class] = counts.get(record.defect_class, 0) + 1
    return dict(sorted(counts.items()))


def json_object(path: Path) -> Dict[str, Any]:
    """The JSON object in ``path``; {} where it is missing or unreadable (the card then leaves
    out what it would have said)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def training_time(run_dir: Path, given: Optional[float]) -> tuple:
    """(seconds, how they were measured) of the training, or (None, "")."""
    if given is not None:
        return float(given), "as measured by the training command"
    status = json_object(run_dir / "status.json")
    if status.get("state") == "trained" and isinstance(status.get("elapsed_s"), (int, float)):
        return float(status["elapsed_s"]), "as the training command recorded it (status.json)"
    start, end = run_dir / "config.yaml", run_dir / "model.safetensors"
    if start.is_file() and end.is_file() and end.stat().st_mtime > start.stat().st_mtime:
        return (end.stat().st_mtime - start.stat().st_mtime,
                "wall clock from config.yaml to model.safetensors being written (since the "
                "run's last start or resume)")
    return None, ""


def run_info(run_dir: Path, config: Any, model, train_records: Sequence[Any],
             val_records: Sequence[Any], metrics: List[Dict[str, Any]], *, model_dir: Path,
             finish_command: str, command: Optional[Sequence[str]] = None,
             data_root: Optional[Path] = None, train_seconds: Optional[float] = None) -> RunInfo:
    """What the card says about the run, from its files and ``config`` (a TrainConfig; its
    sections are listed as they are, so a new key shows up by itself): split, recipe, steps,
    speed, time, and the commands that reproduce it. ``model``: the exported SptSam."""
    split = json_object(run_dir / "split.json")
    data = getattr(config, "data", None)
    root = str(data_root or split.get("root") or getattr(data, "root", "DATA"))
    run = str(run_dir)
    steps = [r["step"] for r in metrics if "loss" in r]
    rates = [r["images_per_s"] for r in metrics if r.get("images_per_s")]
    val = [(r["step"], r["val"]["final"]["miou"]) for r in metrics
           if (((r.get("val") or {}).get("final") or {}).get("miou")) is not None]
    best = max(val, key=lambda v: v[1]) if val else None
    seconds, source = training_time(run_dir, train_seconds)
    sections = config.to_dict() if hasattr(config, "to_dict") else {}
    if command:
        train_command = shlex.join([str(part) for part in command])
    else:
        train_command = f"samspt-train --data {root} --out {run}"
    mode = getattr(getattr(config, "model", None), "mode", "full")
    trained = sum(p.numel() for p in model.parameters()) if mode == "full" else \
        sum(v.numel() for v in model.spt_state_dict().values())
    split_arg = f"--data {root} --split {run_dir / 'split.json'}"
    return RunInfo(
        name=run_dir.resolve().name, model_config=model.config.to_dict(),
        parameters=sum(p.numel() for p in model.parameters()), trained_parameters=trained,
        mode=mode, data_root=root,
        train_counts=class_counts(train_records), val_counts=class_counts(val_records),
        split_seed=split.get("seed", getattr(data, "split_seed", None)),
        val_fraction=split.get("val_fraction", getattr(data, "val_fraction", None)),
        recipe={k: v for k, v in sections.items() if isinstance(v, dict) and k != "log"},
        steps=max(steps) if steps else None,
        best_val=best,
        keep_margin=float(getattr(getattr(config, "log", None), "keep_margin", 0.0) or 0.0),
        views_per_s=float(median(rates)) if rates else None,
        train_seconds=seconds, train_seconds_source=source,
        commands={"train": train_command,
                  "eval": f"samspt-eval --model {model_dir} {split_arg}",
                  "eval_no_gate": f"samspt-eval --model {model_dir} {split_arg} "
                                  "--scan-min-score -1",
                  **({"eval_test": f"samspt-eval --model {model_dir} {split_arg} --subset test"}
                     if split.get("test") else {}),
                  "box": f"samspt-eval --baseline box {split_arg} --no-scan",
                  "grabcut": f"samspt-eval --baseline grabcut {split_arg} --no-scan",
                  "inspect": f"samspt-inspect {model_dir} image.jpg",
                  "finish": finish_command})


# ----------------------------------------------------------------------------- formats
def fmt(value: Optional[float]) -> str:
    """A mean (mIoU, bIoU, AUROC): 3 decimals, ``-`` where none was measured."""
    return fmt_figure(value)


def share(value: Optional[float]) -> str:
    """A share of images, in percent with 1 decimal; ``-`` where none was measured."""
    return "-" if value is None else f"{100 * value:.1f} %"


def gate_text(gate: Optional[float]) -> str:
    return "none" if gate is None else f"{gate:.2f}"


def _of(value: Optional[float], n: int) -> str:
    """``12.5 % (1 of 8)``: a share and the images behind it."""
    if value is None or not n:
        return share(value)
    return f"{share(value)} ({int(round(value * n))} of {n})"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def render(report: "FinishReport", info: RunInfo) -> str:
    parts = [_header(report, info), _model(report, info), _data(info), _training(report, info),
             _figures(report), _held_out(report), _scan(report), _overlays(report),
             _goals(report),
             _commands(info), _notes(report, info)]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


# ----------------------------------------------------------------------------- sections
def _header(report: "FinishReport", info: RunInfo) -> str:
    m, box = report.model, report.baselines.get("box as mask")
    gate = report.gate
    lines = [f"# Model card: `{info.name}`", "",
             f"Written by the finish stage of `samspt-train` on "
             f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Every figure "
             f"was measured on the exported model folder `model/` through "
             f"`samspt.runtime.Inspector` ({report.backend}), as the line runs it, on the run's "
             f"{m.n_defective + m.n_defect_free} validation images ({m.n_defective} defective, "
             f"{m.n_defect_free} defect-free)."]
    summary = f"With a tight box it reaches a final mIoU of **{fmt(m.final_miou)}**"
    if box is not None:
        summary += f" (the box itself as the mask: {fmt(box.final_miou)})"
    if m.n_defect_free:
        summary += (f", and answers {share(m.defect_free_empty)} of the boxes on defect-free "
                    "images with nothing")
    summary += "."
    if report.scan is not None:
        summary += (f" Its prompt-free scan, at gate {gate_text(gate.gate)}, flags "
                    f"{share(gate.defective_flagged)} of the defective and "
                    f"{share(gate.defect_free_flagged)} of the defect-free validation images.")
    held = report.held_out
    if held is not None:
        summary += (f" On {held.model.n_defective + held.model.n_defect_free} held-out images, "
                    "never trained, validated or chosen on: final mIoU "
                    f"**{fmt(held.model.final_miou)}** (box itself {fmt(held.box.final_miou)})")
        if held.model.n_defect_free:
            summary += (f", {share(held.model.defect_free_empty)} of the defect-free boxes "
                        "answered empty")
        if held.scan is not None:
            summary += (f"; the scan at its gate flags {share(held.defective_flagged)} of the "
                        f"defective and {share(held.defect_free_flagged)} of the defect-free "
                        "ones")
        summary += "."
    else:
        summary += (" The validation images chose the kept weights and the gates, so these "
                    "figures lean optimistic; hold images out (`--set data.test_fraction=0.2`) "
                    "for figures of images nothing was chosen on.")
    return "\n".join(lines + ["", summary])


def _architecture(cfg: Dict[str, Any]) -> List[str]:
    tokens = cfg["image_size"] // cfg["patch_size"]
    if cfg.get("encoder") == "conv":
        encoder = (f"a conv encoder: `timm`'s {cfg.get('encoder_arch')} trunk cut at stride "
                   f"{cfg['patch_size']} and SAM's neck to {cfg['prompt_embed_dim']} channels")
    elif cfg.get("encoder") == "tinyvit":
        encoder = (f"MobileSAM's TinyViT encoder (stage widths "
                   f"{', '.join(map(str, cfg['encoder_stage_dims']))}, depths "
                   f"{', '.join(map(str, cfg['encoder_stage_depths']))})")
    elif cfg.get("encoder") == "hiera":
        encoder = (f"SAM 2.1's Hiera image path (first stage width {cfg['encoder_embed_dim']}, "
                   f"stage depths {', '.join(map(str, cfg['encoder_stage_depths']))}, FPN neck) "
                   "with SAM 2's object-score and IoU heads")
    else:
        encoder = (f"SAM's ViT encoder (width {cfg['encoder_embed_dim']}, depth "
                   f"{cfg['encoder_depth']}, {cfg['encoder_num_heads']} heads, patch "
                   f"{cfg['patch_size']})")
    extras = [name for key, name in (("high_res_features", "high-resolution features"),
                                     ("pixel_decoder", "a pixel decoder"),
                                     ("upscale_convs", "upscaling conv blocks"),
                                     ("box_dense_prompt", "the box as a dense prompt"),
                                     ("box_high_res", "the box at mask resolution"))
              if cfg.get(key)]
    clip = cfg.get("box_clip_margin")
    return [f"- **Architecture** (`{cfg['name']}`): {encoder}; {cfg['image_size']} px input, "
            f"{tokens}x{tokens} tokens; SAM's prompt encoder and SPT's draft and refine "
            f"decoders at width {cfg['prompt_embed_dim']} ({cfg['decoder_depth']} two-way "
            f"blocks, {cfg['decoder_num_heads']} heads, MLP {cfg['decoder_mlp_dim']}), "
            f"positional-encoding scale {cfg.get('pe_scale')}"
            + (f"; {', '.join(extras)}" if extras else "")
            + ("" if clip is None else f"; box clip margin {clip}") + "."]


def _prompt_gate(pick: Any) -> List[str]:
    """The prompts' gate line (``prompt_min_score``), with what it costs and gains."""
    if pick is None:
        return []
    line = (f"- **Prompt gate** (`prompt_min_score`, a box scored below it is answered empty): "
            f"{gate_text(pick.gate)}: {pick.rule}")
    if pick.gate is not None and pick.final_miou_no_gate is not None:
        line += (f". On the validation images it answers {share(pick.empty_rate)} of the "
                 f"defect-free boxes empty (no gate: {share(pick.empty_rate_no_gate)}) at a "
                 f"final mIoU of {fmt(pick.final_miou)} (no gate: "
                 f"{fmt(pick.final_miou_no_gate)})")
    return [line + "."]


def _flips(pick: Any) -> List[str]:
    """The test-time flips line (``flips``), each count's validation figures beside."""
    if pick is None:
        return []
    figures = "; ".join(f"{n}: final mIoU {fmt(pick.final_miou[n])}, "
                        f"{share(pick.empty_rate[n])} of defect-free boxes empty"
                        for n in sorted(pick.final_miou))
    return [f"- **Test-time flips** (`flips`, each box's mask voted over the image and its "
            f"mirror images): {pick.flips}: {pick.rule}. Validation, each at its prompt gate: "
            f"{figures}."]


def _model(report: "FinishReport", info: RunInfo) -> str:
    cfg = info.model_config
    lines = ["## Model", ""] + _architecture(cfg)
    lines.append(f"- **Parameters**: {info.parameters:,}; trained: {info.trained_parameters:,} "
                 f"(`{info.mode}` mode).")
    step = "" if report.weights_step is None else f", step {report.weights_step}"
    kept = "the best validation final mIoU during training" if not info.keep_margin else \
        (f"the latest validated weights within {info.keep_margin:g} final mIoU of the best "
         "validation during training")
    why = {"best.safetensors": kept,
           "finished.safetensors": f"{kept}, their scan head fitted again by the finish stage"
           }.get(report.weights.name, "the last weights: the run has no best.safetensors")
    lines.append(f"- **Weights**: `{report.weights.name}`{step} ({why}).")
    if cfg.get("view_context") is not None:
        lines.append(f"- **Views** (`manifest.json` -> `views`): each box is seen in a square "
                     f"window of {cfg['view_context']}x its long side (at least "
                     f"{cfg['view_min_side']} px), resized to {cfg['image_size']} px; the scan "
                     f"covers the image with {cfg['scan_side']} px views overlapping by "
                     f"{cfg['scan_overlap']}" + (f", boxes over {cfg['view_max_side']} px by "
                                                 f"tiles" if cfg.get("view_max_side") else "")
                     + ".")
        lines.append(f"- **Scan gate** (`scan_min_score`): {gate_text(report.gate.gate)}: "
                     f"{report.gate.rule} (see *The scan's operating point*).")
        lines += _prompt_gate(report.prompt_gate)
        lines += _flips(getattr(report, "flips", None))
    else:
        lines.append("- **Views**: none, a whole-image model (SAM's protocol).")
    files = ", ".join(f"`{name}` {size / 1e6:.1f} MB" for name, size in report.files.items())
    lines.append(f"- **Folder** `model/`: {files}, `manifest.json` (sha256 of every file).")
    ver = report.verification or {}
    checks = [f"{label.upper()} mean mask IoU {v['mean_iou']:.4f}, minimum {v['min_iou']:.4f}"
              for label, v in ver.items() if isinstance(v, dict)]
    if checks:
        lines.append(f"- **Parity with PyTorch** at export ({ver.get('images')} validation "
                     f"images, box prompts in their views): {'; '.join(checks)}.")
    return "\n".join(lines)


def _data(info: RunInfo) -> str:
    classes = sorted(set(info.train_counts) | set(info.val_counts))
    train, val = sum(info.train_counts.values()), sum(info.val_counts.values())
    lines = ["## Data and split", "",
             f"- Data: `{info.data_root}`; split `split.json` (seed {info.split_seed}, "
             f"validation fraction {info.val_fraction}, stratified by class): **{train} "
             f"training / {val} validation** images.", "",
             "| class | training | validation |", "|---|---:|---:|"]
    lines += [f"| {_cell(c)} | {info.train_counts.get(c, 0)} | {info.val_counts.get(c, 0)} |"
              for c in classes]
    lines.append(f"| **all** | {train} | {val} |")
    return "\n".join(lines)


def _recipe_line(section: str, values: Dict[str, Any]) -> str:
    shown = [f"{k} {v}" for k, v in values.items()
             if v not in (None, "", [], {}) and k not in ("root",)]
    return f"  - `{section}`: {', '.join(shown)}"


def _training(report: "FinishReport", info: RunInfo) -> str:
    lines = ["## How it was trained", "", "- Recipe (`config.yaml`):"]
    lines += [_recipe_line(section, values) for section, values in info.recipe.items()]
    facts = []
    if info.steps is not None:
        facts.append(f"{info.steps} optimizer steps")
    if info.train_seconds is not None:
        facts.append(f"{info.train_seconds / 60:.1f} min ({info.train_seconds_source})")
    if info.views_per_s is not None:
        facts.append(f"about {info.views_per_s:.1f} views a second (median of the logged "
                     "windows)")
    if facts:
        lines.append(f"- Reached: {'; '.join(facts)}.")
    if info.best_val is not None:
        lines.append(f"- Best validation during training (PyTorch, the trainer's check): final "
                     f"mIoU {fmt(info.best_val[1])} at step {info.best_val[0]}.")
    if "curves" in report.pictures:
        lines += ["", f"![training curves]({_rel(report, report.pictures['curves'])})"]
    return "\n".join(lines)


def _rel(report: "FinishReport", path) -> str:
    try:
        return path.relative_to(report.run_dir).as_posix()
    except ValueError:
        return str(path)


def _row(label: str, f: Optional["Figures"], skipped: str = "skipped") -> str:
    if f is None:
        return f"| {label} | {skipped} | | | | | |"
    empty = share(f.defect_free_empty) if f.n_defect_free else "-"
    return (f"| {label} | {fmt(f.final_miou)} | {fmt(f.final_biou)} | {fmt(f.draft_miou)} | "
            f"{fmt(f.draft_biou)} | {fmt(f.class_mean_miou)} | {empty} |")


def _figures(report: "FinishReport") -> str:
    m = report.model
    box, grab = report.baselines.get("box as mask"), report.baselines.get("GrabCut")
    lines = ["## Validation figures", "",
             "Box protocol: one tight box around the ground truth per defective image, one seeded "
             "random box (sides 10-50 % of the image's) per defect-free image. mIoU and boundary "
             f"IoU are means over the {m.n_defective} defective images; the class mean averages "
             f"the means of the {len(m.per_class)} defect "
             f"{'class' if len(m.per_class) == 1 else 'classes'}.", "",
             "| | final mIoU | final bIoU | draft mIoU | draft bIoU | class-mean final mIoU | "
             "defect-free boxes answered empty |", "|---|---:|---:|---:|---:|---:|---:|",
             _row(f"**{_cell(m.name)}** (exported, Inspector)", m),
             _row("box as mask (baseline)", box),
             _row("OpenCV GrabCut, 5 iterations (baseline)", grab,
                  "skipped (see the notes)")]
    scan_col = report.scan is not None
    head = "| class | images | final mIoU (draft) | box as mask | GrabCut |"
    rule = "|---|---:|---:|---:|---:|"
    if scan_col:
        head += f" scan flagged (gate {gate_text(report.gate.gate)}) |"
        rule += "---:|"
    lines += ["", "Per class:", "", head, rule]
    for cls, block in m.per_class.items():
        row = (f"| {_cell(cls)} | {block['n_images']} | {fmt(block['final_miou'])} "
               f"({fmt(block['draft_miou'])}) | {_class(box, cls)} | {_class(grab, cls)} |")
        if scan_col:
            row += f" {share(report.gate.per_class.get(cls))} |"
        lines.append(row)
    return "\n".join(lines)


def _class(figures: Optional["Figures"], cls: str) -> str:
    if figures is None or cls not in figures.per_class:
        return "-"
    return fmt(figures.per_class[cls]["final_miou"])


def _trimmed(points: Sequence[Any], chosen: Optional[float]) -> List[Any]:
    """The trade-off's rows up to the first gate that flags no image at all (and at least to
    the ``chosen`` one)."""
    out = []
    for point in points:
        out.append(point)
        if point.gate is not None and not point.defective_flagged and \
                not point.defect_free_flagged and (chosen is None or point.gate >= chosen):
            break
    return out


def _held_out(report: "FinishReport") -> str:
    held = report.held_out
    if held is None:
        return ""
    m = held.model
    lines = ["## Held-out images", "",
             f"{m.n_defective + m.n_defect_free} images of the split's `test` side "
             f"({m.n_defective} defective, {m.n_defect_free} defect-free; "
             "`data.test_fraction`): not trained on, not validated on, not used to choose the "
             "kept weights, the gates or the flips. The exported folder answers them as the line "
             "runs it (its prompt gate and flips), with the box protocol of the validation "
             "figures:", "",
             "| | final mIoU | final bIoU | draft mIoU | draft bIoU | class-mean final mIoU | "
             "defect-free boxes answered empty |", "|---|---:|---:|---:|---:|---:|---:|",
             _row(f"**{_cell(m.name)}** (exported, Inspector)", m),
             _row("box as mask (baseline)", held.box), "",
             "| class | images | final mIoU (draft) | box as mask |", "|---|---:|---:|---:|"]
    for cls, block in m.per_class.items():
        lines.append(f"| {_cell(cls)} | {block['n_images']} | {fmt(block['final_miou'])} "
                     f"({fmt(block['draft_miou'])}) | {_class(held.box, cls)} |")
    if held.scan is not None:
        lines += ["", f"The scan at its gate ({gate_text(held.gate)}) flags "
                      f"{_of(held.defective_flagged, held.scan.n_defective)} of the defective and "
                      f"{_of(held.defect_free_flagged, held.scan.n_defect_free)} of the "
                      f"defect-free held-out images (image AUROC {fmt(held.scan.auroc)})."]
    return "\n".join(lines)


def _scan(report: "FinishReport") -> str:
    scan, gate = report.scan, report.gate
    if scan is None:
        return ""
    how = ("With no prompt the Inspector scans the image with overlapping views, and the scan "
           "head marks the tokens that hold a defect: the image's score is the highest defect "
           "probability of its anomaly map, an image is flagged where it reaches the gate, and "
           f"each region that reaches the gate, drawn to where the map reaches {REGION_SHARE:g} "
           "of it, is answered as a box prompt (find, then segment). One "
           "scan of every validation image gives every gate's figures "
           if SCAN_HEAD_FILE in report.files else
           "With no prompt the Inspector scans the image with overlapping views; a view's mask "
           "counts where the model's own score for it (its predicted mask IoU) reaches the "
           "gate. One scan of every validation image with no gate gives every gate's figures ")
    lines = ["## The scan's operating point", "",
             how +
             f"(image AUROC **{fmt(scan.auroc)}** on {scan.n_defective} defective and "
             f"{scan.n_defect_free} defect-free images; merged-mask mIoU on defective images, "
             f"{f'gate {DEFAULT_GATE:g}' if SCAN_HEAD_FILE in report.files else 'no gate'}: "
             f"{fmt(scan.miou_no_gate)}):", "",
             "| gate (`scan_min_score`) | defective images flagged | defect-free images "
             "flagged |", "|---:|---:|---:|"]
    for point in _trimmed(scan.points, gate.gate):
        mark = " (chosen)" if point.gate == gate.gate else ""
        lines.append(f"| {gate_text(point.gate)}{mark} | {share(point.defective_flagged)} | "
                     f"{share(point.defect_free_flagged)} |")
    lines += ["", f"**Chosen gate: {gate_text(gate.gate)}**: {gate.rule}. Expected on images "
                  f"like the validation split: defective images flagged "
                  f"{_of(gate.defective_flagged, gate.n_defective)}, defect-free images flagged "
                  f"{_of(gate.defect_free_flagged, gate.n_defect_free)}."]
    if gate.n_defect_free:
        lines.append(f"These rates rest on {gate.n_defect_free} defect-free and "
                     f"{gate.n_defective} defective images: one defect-free image is "
                     f"{share(1 / gate.n_defect_free)} of them, so a target of "
                     f"{share(gate.false_alarm)} is only as fine as that.")
    lines.append("The gate is written in `model/manifest.json`; override it with "
                 "`Inspector(..., scan_min_score=S)` or `samspt-inspect --scan-min-score S`.")
    return "\n".join(lines)


def _overlays(report: "FinishReport") -> str:
    if "overlays" not in report.pictures:
        return ""
    return ("## Validation overlays\n\nThe exported model's answers to tight boxes on validation "
            "images (ground truth green, draft orange, final red; each box's view enlarged in "
            f"the last column):\n\n![validation overlays]"
            f"({_rel(report, report.pictures['overlays'])})")


def _goals(report: "FinishReport") -> str:
    if not report.goals:
        return ""
    lines = ["## Goals", "", "| goal | reached | |", "|---|---|---|"]
    for goal in report.goals:
        show = share if goal.share else fmt
        reached = "not measured" if goal.reached is None else show(goal.reached)
        lines.append(f"| {goal.what} {goal.comparison} {show(goal.target)} | {reached} | "
                     f"**{'met' if goal.met else 'not met'}** |")
    return "\n".join(lines)


def _commands(info: RunInfo) -> str:
    c = info.commands
    rows = [(c.get("train"), "train (this run)"),
            (c.get("finish"), "this finish stage again: export, figures, gate, card"),
            (c.get("eval"), "the model's figures (the scan at its gate)"),
            (c.get("eval_no_gate"), "the scan's trade-off, no gate"),
            (c.get("eval_test"), "the held-out images' figures"),
            (c.get("box"), "baseline: box as mask"),
            (c.get("grabcut"), "baseline: GrabCut"),
            (c.get("inspect"), "inspect an image (no --box: the scan)")]
    lines = ["## Reproduce", "", "```bash"]
    lines += [f"{command}    # {what}" for command, what in rows if command]
    return "\n".join(lines + ["```"])


def _notes(report: "FinishReport", info: RunInfo) -> str:
    lines = ["## Notes", ""]
    lines += [f"- {note}" for note in report.notes]
    lines.append(f"- The figures rest on {report.model.n_defective} defective and "
                 f"{report.model.n_defect_free} defect-free validation images: check them on "
                 "your own images before passing or failing parts with this model.")
    seconds = sum(report.seconds.values())
    lines.append(f"- The finish stage took {seconds:.0f} s ("
                 + ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items()) + ").")
    return "\n".join(lines)
