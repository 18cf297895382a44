"""``samspt-calibrate``: set the prompt-free scan's operating point on a station's own parts.

    samspt-calibrate models/example_cnn --normal good/ --out models/line3
    samspt-calibrate models/example_cnn --normal good/ --defective bad/ --min-recall 0.95 \\
        --out models/line3 --backend tensorrt --precision int8

Every image is scanned once with no gate (:mod:`samspt.runtime.operating_point`: one pass gives
the rates at every gate) on the graphs that will run (backend and precision: an INT8 graph
shifts scores), the gate is chosen for a false-alarm budget on the defect-free images (default
2 %; they alone suffice) or for a recall on the defective ones, and a copy of the model folder
is written to ``--out`` (atomically; the source is left as it was) whose manifest holds the gate
(``views.scan_min_score``) and the :class:`~samspt.runtime.operating_point.OperatingPoint`
(``calibration``: the rates, how many images they rest on, the graphs' hashes). Base install
only: numpy and the backend, never torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import InputError, ModelFolderError, SamsptError
from samspt.runtime.image_files import image_files, load_image
from samspt.runtime.backend import BACKENDS
from samspt.runtime.manifest import GRAPH_KINDS, PRECISIONS
from samspt.runtime.logs import configure_cli_logging, progress_enabled
from samspt.runtime.operating_point import (DEFAULT_MAX_FALSE_ALARM, OperatingPoint,
                                            check_counts, choose, image_scores)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def folder_scores(inspector, paths: Sequence[Path], progress: Optional[Progress] = None
                ) -> np.ndarray:
    """Each image's scan score at no gate (-inf: the scan answered nothing). The inspector's
    scan gate must be off (:func:`calibrate` opens it so)."""
    flagged, scores = [], []
    settings = inspector.view_settings
    for done, path in enumerate(paths, 1):
        image = load_image(path)
        if settings is not None and max(image.shape[:2]) < settings.min_side:
            raise InputError(
                f"{path} is {image.shape[1]}x{image.shape[0]} px: smaller than the model's "
                f"smallest view ({settings.min_side} px), so its scan would enlarge it more "
                f"than any view the model was trained on; calibrate on images from the "
                f"station's camera, as the model will see them")
        result = inspector.inspect(image)
        flagged.append(bool(result.pred_label[0]) or inspector.scan_scores_every_image)
        scores.append(float(result.scores[0]))
        if progress:
            progress(done, len(paths))
    return image_scores(flagged, scores)


def _images(folder: Optional[Path], what: str) -> List[Path]:
    if folder is None:
        return []
    paths = image_files(folder)
    if not paths:
        raise InputError(f"{folder} holds no image files ({what}); give a folder of the "
                         "station's images (png, jpg, bmp, tif, webp; subfolders are read)")
    seen = {}
    for path in paths:      # x.jpg beside x.png: masks kept beside their images (MTD's layout)
        twin = seen.setdefault(path.with_suffix(""), path)
        if twin != path:
            raise InputError(f"{folder} holds {twin.name} and {path.name} side by side: masks "
                             f"beside their images? Every file is read as an image to scan; "
                             f"give a folder that holds the {what} only")
    return paths


def calibrate(model_dir: Path, normal: Path, defective: Optional[Path] = None,
              max_false_alarm: Optional[float] = None, min_recall: Optional[float] = None,
              backend: str = "auto", precision: Optional[str] = None, threads: int = 0,
              progress: Optional[Callable[[str], Optional[Progress]]] = None
              ) -> OperatingPoint:
    """The scan's operating point of ``model_dir`` on the images under ``normal``
    (defect-free) and ``defective``: for ``min_recall`` if given, else for ``max_false_alarm``
    (default 2 %). ``progress(label)``: a callback factory for each image set's progress."""
    from samspt.runtime.inspector import Inspector

    if min_recall is None and max_false_alarm is None:
        max_false_alarm = DEFAULT_MAX_FALSE_ALARM
    if min_recall is not None:
        max_false_alarm = None
    normal_paths = _images(normal, "defect-free images")
    defective_paths = _images(defective, "defective images")
    check_counts(len(normal_paths), len(defective_paths), max_false_alarm, min_recall)
    with Inspector(model_dir, backend=backend, precision=precision, threads=threads,
                   warmup=False) as inspector:
        if inspector.view_settings is None:
            raise ModelFolderError(f"{model_dir} is a whole-image model: its scan is one view "
                                   "with no gate to set; export a view model to calibrate it")
        # Off: every view counts, so one pass gives the rates at every gate.
        inspector.view_settings = dataclasses.replace(inspector.view_settings,
                                                      scan_min_score=None)
        neg = folder_scores(inspector, normal_paths, progress and progress("defect-free"))
        pos = folder_scores(inspector, defective_paths, progress and progress("defective"))
        manifest = inspector.manifest
        used = {entry["file"]: manifest.sha256(entry["file"])
                for entry in (manifest.graph(kind, inspector.precision)
                              for kind in GRAPH_KINDS)}
        backend_name = inspector.backend.split(" ")[0]
        ran = inspector.precision
    point = choose(neg, pos, max_false_alarm=max_false_alarm, min_recall=min_recall)
    return dataclasses.replace(point, precision=ran, backend=backend_name, graphs=used)


def write_calibrated(model_dir: Path, out: Path, point: OperatingPoint) -> Path:
    """A copy of ``model_dir`` at ``out`` (atomically replaced; ``out`` may be ``model_dir``)
    whose manifest holds ``point`` and its gate. Every other file is copied as it is, so its
    hash, and the engines built from the graphs, stay valid."""
    from samspt.runtime.files import atomic_dir
    from samspt.runtime.manifest import MANIFEST, read_manifest, write_manifest

    model_dir, out = Path(model_dir), Path(out)
    manifest = read_manifest(model_dir)
    if manifest.views is None:
        raise ModelFolderError(f"{model_dir} is a whole-image model: it has no scan gate to set")
    manifest = dataclasses.replace(
        manifest, views=dataclasses.replace(manifest.views, scan_min_score=point.min_score),
        calibration=point)
    with atomic_dir(out) as tmp:
        for item in model_dir.iterdir():
            if item.name == MANIFEST:
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        write_manifest(tmp, manifest)   # checks that the point belongs to these graphs
    read_manifest(out)
    return out


def report_lines(point: OperatingPoint) -> List[str]:
    """The printed report: the gate, the rates it was measured at and on how many images."""
    lines = [f"scan gate (views.scan_min_score): {point.min_score:.4f}, set for "
             + (f"at most {100 * point.target:g} % of defect-free images flagged"
                if point.objective == "max_false_alarm"
                else f"at least {100 * point.target:g} % of defective images flagged")
             + f" on {point.backend} {point.precision}",
             f"defect-free images flagged: {point.normal_flagged} of {point.normal_images} "
             f"({100 * (point.false_alarm_rate or 0):.1f} %)"]
    if point.defective_images:
        lines.append(f"defective images flagged: {point.defective_flagged} of "
                     f"{point.defective_images} ({100 * (point.recall or 0):.1f} %)")
    if point.auroc is not None:
        lines.append(f"image AUROC: {point.auroc:.3f}")
    if point.normal_images and point.normal_images * point.target < 3 and \
            point.objective == "max_false_alarm":
        lines.append(f"note: {point.normal_images} defect-free images measure a "
                     f"{100 * point.target:g} % rate coarsely; {int(np.ceil(3 / point.target))} "
                     "or more make it one to rely on")
    lines.append(f"pred_score: 0.5 at the gate, 0 at score {point.low:.3f}, 1 at "
                 f"{point.high:.3f}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-calibrate",
        description="Set the prompt-free scan's operating point on the station's own images: "
                    "scan every image once on the graphs that will run, choose the gate for a "
                    "false-alarm budget (defect-free images alone suffice) or a recall, and "
                    "write a complete, hashed copy of the model folder whose manifest holds the "
                    "gate and the rates it was measured at.")
    parser.add_argument("model_dir", type=Path, help="an exported model folder (samspt-export)")
    parser.add_argument("--normal", type=Path, required=True, metavar="DIR",
                        help="folder of defect-free images of the station's parts (subfolders "
                             "are read)")
    parser.add_argument("--defective", type=Path, default=None, metavar="DIR",
                        help="folder of defective images (optional for a false-alarm budget: "
                             "the recall it reaches is then reported; needed for --min-recall)")
    goal = parser.add_mutually_exclusive_group()
    goal.add_argument("--max-false-alarm", type=float, default=None, metavar="RATE",
                      help=f"at most this share of defect-free images flagged (default "
                           f"{DEFAULT_MAX_FALSE_ALARM}); needs at least 1/RATE of them")
    goal.add_argument("--min-recall", type=float, default=None, metavar="RATE",
                      help="at least this share of defective images flagged (the highest gate "
                           "that reaches it)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the calibrated model folder to write (replaced atomically; may be "
                             "MODEL_DIR itself)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="the backend the line runs (default: auto, as the Inspector)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="the graphs the line runs (default: the Inspector's: FP16 engines "
                             "on TensorRT, FP32 on ONNX Runtime)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime threads (default 0: one per core)")
    add_verbose_flag(parser)
    return parser


def _progress_factory():
    if not progress_enabled():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    def factory(label: str) -> Progress:
        bar = {}

        def update(done: int, total: int) -> None:
            if "bar" not in bar:
                bar["bar"] = tqdm(total=total, desc=f"scanning {label}", unit="image")
            bar["bar"].update(1)
            if done == total:
                bar["bar"].close()
        return update
    return factory


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    try:            # the targets' ranges: operating_point.check_counts, before any scan
        point = calibrate(args.model_dir, args.normal, args.defective, args.max_false_alarm,
                          args.min_recall, args.backend, args.precision, args.threads,
                          progress=_progress_factory())
        write_calibrated(args.model_dir, args.out, point)
    except SamsptError as exc:
        return error_exit(exc)
    for line in report_lines(point):
        print(line)
    print(f"calibrated model folder: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
