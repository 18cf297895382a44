"""What the values of mask files mean, decided per dataset, and the records a mask becomes.

Masks of the ``folder``, ``mmseg`` and ``spt`` layouts come from any tool, so their meaning is read
from the values found in all masks of a dataset (``mask_values="auto"``; palette images by their
indices), each bit depth (8-bit, 16-bit, ...) on its own:

``binary``     the non-zero values are all 1, or all the type's top value (255 for 8 bits,
               65535 for 16): defect where the value is not 0. The class is the layout's (a class
               subfolder, ``defect``, the dataset's name).
``class_ids``  8-bit masks whose non-zero values all lie in 1..:data:`MAX_CLASS_ID` (64), no mask
               holding :data:`MANY_VALUES` (16) or more of them (label tools' exports, NEU-Seg,
               ADE20K): each value is a class id. Its name is line ``id`` of ``classes.txt`` (or
               ``class_names.txt``; line 0 names the background) in the dataset's folder, else
               ``class_<id>``. Masks holding only the value 1 are binary unless such a file
               exists.
``threshold``  anti-aliased grey (as MTD's): some value is above half the range, and either no
               value lies in 1..64 or some mask holds 16 or more distinct values (soft edges):
               defect where the value is above half the range (> 127 for 8 bits).

Anything else is ambiguous, and a :class:`DatasetError` names the values found: 1 and 255 in one
dataset, 16-bit masks of small values only, values of which none is above half the range, ...
``mask_values="binary"|"threshold"|"class_ids"`` says what they mean. Masks that are all empty
are an error too (nothing to learn from).

Records of class-id masks (``mask_records``):

``class``      (default) one record per class id present in an image; mask: the pixels of that
               id; class: its name.
``image``      one record per image (the SPT paper's one-box-per-image protocol): every
               non-zero pixel is defect; class: the name of the image's one class, or
               :data:`MIXED_CLASS` (``mixed``) when it holds several.
``component``  one record per 8-connected component of a class with at least
               ``min_component_area`` pixels (a class whose components are all smaller keeps its
               largest); mask: that class's pixels inside the component's bounding box, so other
               blobs of the class within the box are not called background. Named
               ``<class>/<stem>_c<k>``, k = 1, 2, ... by decreasing area.

Binary and threshold masks (and the ``mtd``, ``mvtec`` and ``visa`` layouts) name one class per
image: ``class`` and ``image`` give one record per image, ``component`` one per connected
component of its defect mask.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from samspt.training.data.records import DEFECT_FREE, DatasetError, Record

log = logging.getLogger(__name__)

#: Layouts whose mask values this module's rule reads (the others have a convention of their own).
VALUE_LAYOUTS = ("mmseg", "folder", "spt")
MASK_VALUES = ("auto", "binary", "threshold", "class_ids")
MASK_RECORDS = ("class", "image", "component")
#: Largest value read as a class id by ``mask_values="auto"``.
MAX_CLASS_ID = 64
#: A mask holding this many distinct non-zero values has soft (anti-aliased) edges.
MANY_VALUES = 16
#: Class of an ``image`` record whose class-id mask holds several classes.
MIXED_CLASS = "mixed"
#: Smallest connected component (pixels) that is a record of its own (``component``).
MIN_COMPONENT_AREA = 4
CLASS_NAME_FILES = ("classes.txt", "class_names.txt")
HOW_TO_SAY = ("say what they mean with mask_values: 'binary' (every non-zero pixel is defect), "
              "'threshold' (defect above half the range, > 127 for 8 bits) or 'class_ids' (each "
              "value is a class id) (read_dataset(..., mask_values=...), samspt-eval "
              "--mask-values, data.mask_values of a training configuration)")

Box = Tuple[int, int, int, int]


# ----------------------------------------------------------------------------- options
def check_options(mask_values: str, mask_records: str, min_component_area: int) -> None:
    """A DatasetError unless the three options hold allowed values."""
    if mask_values not in MASK_VALUES:
        raise DatasetError(f"mask_values {mask_values!r} is not one of {', '.join(MASK_VALUES)}")
    if mask_records not in MASK_RECORDS:
        raise DatasetError(f"mask_records {mask_records!r} is not one of "
                           f"{', '.join(MASK_RECORDS)}")
    if isinstance(min_component_area, bool) or not isinstance(min_component_area, int) or \
            min_component_area < 1:
        raise DatasetError(f"min_component_area must be a whole number of pixels >= 1, got "
                           f"{min_component_area!r}")


# ----------------------------------------------------------------------------- values
@dataclass(frozen=True)
class MaskValues:
    """The values of one mask file: its array's dtype name and the pixels of each non-zero
    value (``counts``: value -> pixel count)."""

    dtype: str
    counts: Dict[float, int] = field(default_factory=dict)


def values_of(record: Record) -> MaskValues:
    """The values of ``record``'s mask file (palette images by index)."""
    arr = record.mask_array(by_index=True)
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        bins = np.bincount(arr.ravel())
        counts = {int(v): int(bins[v]) for v in np.flatnonzero(bins) if v != 0}
    else:
        found, pixels = np.unique(arr, return_counts=True)
        counts = {v.item(): int(n) for v, n in zip(found, pixels) if v != 0}
    return MaskValues(arr.dtype.name, counts)


def describe_values(values: Iterable[float]) -> str:
    """``1, 2, 3`` or ``200 values from 1 to 255``."""
    values = sorted(values)
    if not values:
        return "none (every value 0)"
    if len(values) <= 12:
        return ", ".join(f"{v:g}" for v in values)
    return f"{len(values)} values from {values[0]:g} to {values[-1]:g}"


def _top(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def _why_ambiguous(dtype: np.dtype, values: set, small: set, most: int) -> str:
    top = _top(dtype)
    if dtype.kind == "f":
        return "float masks are read as a share in 0..1 but these hold values above 1"
    if dtype != np.uint8 and values == small:
        return (f"{dtype.itemsize * 8}-bit masks of small values only may be class ids or a "
                "faint grey mask")
    if max(values) <= top / 2 and not values <= small:
        return (f"none is above half the range ({top / 2:g}), so a threshold would read every "
                "mask as empty")
    if values <= small:
        return (f"one mask holds {most} distinct values: too many for class ids, and none is "
                "above half the range for a threshold")
    return ("the small values look like class ids (or a 0/1 binary mask) and the large ones like "
            "a grey mask: one dataset cannot be both")


def infer_mode(found: Sequence[MaskValues], named: bool, where: str) -> str:
    """The meaning (``binary``, ``class_ids``, ``threshold``) of masks of one dtype, by the
    module's rule; a DatasetError when ambiguous or when every mask is empty. ``named``: a class
    names file exists (then masks of only the value 1 are class ids)."""
    dtype = np.dtype(found[0].dtype)
    values = set().union(*(m.counts for m in found))
    if not values:
        raise DatasetError(
            f"every one of the {len(found)} masks of {where} is empty (only the value 0): "
            "nothing marks a defect. If the images are all defect-free, remove the masks "
            "(the folder layout reads a folder without masks/ when given allow_no_masks=True); "
            "otherwise the masks were written wrongly")
    most = max(len(m.counts) for m in found)
    small = {v for v in values if 1 <= v <= MAX_CLASS_ID} if dtype.kind in "ui" else set()
    top = _top(dtype)
    if values == {1} and not (named and dtype == np.uint8):
        return "binary"
    if dtype == np.uint8 and values == small and most < MANY_VALUES:
        return "class_ids"
    if values == {top}:
        return "binary"
    if top / 2 < max(values) <= top and (not small or most >= MANY_VALUES):
        return "threshold"
    raise DatasetError(
        f"the {dtype.name} masks of {where} ({len(found)} files) hold the non-zero values "
        f"{describe_values(values)}: {_why_ambiguous(dtype, values, small, most)}. samspt "
        f"cannot tell what they mean; {HOW_TO_SAY}")


def describe_meaning(record: Record) -> str:
    """How ``record`` reads its mask file, in words."""
    if record.mask_value is not None:
        return f"the pixels of value {record.mask_value}"
    if record.mask_nonzero:
        return "every non-zero pixel"
    return "values above half the range (> 127 for 8 bits)"


# ----------------------------------------------------------------------------- class names
def class_names_file(folders: Sequence[Path]) -> Optional[Path]:
    """The first ``classes.txt`` / ``class_names.txt`` in ``folders`` (in order), or None; a
    DatasetError when one folder holds both."""
    for folder in folders:
        found = [folder / n for n in CLASS_NAME_FILES if (folder / n).is_file()]
        if len(found) > 1:
            raise DatasetError(f"{folder} holds both {' and '.join(p.name for p in found)}; keep "
                               "one class names file")
        if found:
            return found[0]
    return None


class ClassNames:
    """Names of class ids: line ``id`` of a names file (line 0: the background), else
    ``class_<id>``."""

    def __init__(self, path: Optional[Path] = None):
        self.path = path
        self.names: Optional[List[str]] = None if path is None else _read_names(path)

    def __call__(self, class_id: int) -> str:
        if self.names is None:
            return f"class_{class_id}"
        if class_id >= len(self.names) or not self.names[class_id]:
            raise DatasetError(
                f"masks hold the class id {class_id} but {self.path} names ids 0.."
                f"{len(self.names) - 1} (line {class_id + 1} is "
                f"{'empty' if class_id < len(self.names) else 'missing'}); add its name")
        return self.names[class_id]


def _read_names(path: Path) -> List[str]:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read class names file {path}: {exc}") from None
    while lines and not lines[-1]:
        lines.pop()
    seen: Dict[str, int] = {}
    for i, name in enumerate(lines[1:], start=1):
        if not name:
            continue
        if name in (DEFECT_FREE, MIXED_CLASS) or "/" in name:
            raise DatasetError(f"{path} line {i + 1}: class name {name!r} is reserved or holds "
                               f"'/'; samspt uses {DEFECT_FREE!r} and {MIXED_CLASS!r} itself")
        if name in seen:
            raise DatasetError(f"{path} names ids {seen[name]} and {i} both {name!r}; class "
                               "names must differ")
        seen[name] = i
    if not seen:
        raise DatasetError(f"{path} names no class (line 1 is the background, line 2 class id 1, "
                           "...)")
    return lines


# ----------------------------------------------------------------------------- components
def component_boxes(mask: np.ndarray, min_area: int) -> Tuple[List[Box], int]:
    """Inclusive boxes (x0, y0, x1, y1) of the 8-connected components of the HxW bool ``mask``
    with at least ``min_area`` pixels (none: the largest), largest first (ties: top, then left),
    and how many smaller components were left out."""
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    ids = sorted(range(1, count), key=lambda i: (-stats[i, cv2.CC_STAT_AREA],
                                                 stats[i, cv2.CC_STAT_TOP],
                                                 stats[i, cv2.CC_STAT_LEFT]))
    kept = [i for i in ids if stats[i, cv2.CC_STAT_AREA] >= min_area] or ids[:1]
    boxes = []
    for i in kept:
        x, y = int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP])
        w, h = int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])
        boxes.append((x, y, x + w - 1, y + h - 1))
    return boxes, len(ids) - len(kept)


class _Tally:
    """Components left out for being small, counted over a dataset for one log line."""

    def __init__(self) -> None:
        self.kept = 0
        self.small = 0


def component_records(record: Record, min_area: int, tally: Optional[_Tally] = None,
                      arr: Optional[np.ndarray] = None) -> List[Record]:
    """One record per component of ``record``'s mask (``record`` itself when it is empty)."""
    if arr is None:
        arr = record.mask_array()
    boxes, small = component_boxes(record.mask_from(arr), min_area)
    if tally is not None:
        tally.kept += len(boxes)
        tally.small += small
    if not boxes:
        return [record]
    return [dataclasses.replace(record, mask_region=box, component=k)
            for k, box in enumerate(boxes, start=1)]


def split_components(records: Sequence[Record], min_area: int) -> List[Record]:
    """Records with masks split into one record per component (layouts that name one class per
    image: mtd, mvtec, visa)."""
    tally = _Tally()
    out: List[Record] = []
    for record in records:
        out += [record] if record.mask_path is None else \
            component_records(record, min_area, tally)
    _log_components(tally, min_area)
    return out


def _log_components(tally: _Tally, min_area: int) -> None:
    log.info("component records: %d component(s); %d smaller than %d px are no record of their "
             "own", tally.kept, tally.small, min_area)


# ----------------------------------------------------------------------------- records
def records_of(record: Record, mode: str, found: Optional[MaskValues], mask_records: str,
               names: ClassNames, min_area: int, tally: _Tally) -> List[Record]:
    """The records ``record`` (one image, its mask file) becomes when its masks mean ``mode``."""
    if mode != "class_ids":
        base = dataclasses.replace(record, mask_nonzero=mode == "binary", mask_value=None)
        if mask_records == "component":
            return component_records(base, min_area, tally)
        return [base]
    ids = sorted(int(v) for v in found.counts)
    if not ids or mask_records == "image":
        defect_class = record.defect_class if not ids else \
            names(ids[0]) if len(ids) == 1 else MIXED_CLASS
        return [dataclasses.replace(record, mask_nonzero=True, mask_value=None,
                                    defect_class=defect_class)]
    per_class = [dataclasses.replace(record, mask_nonzero=False, mask_value=v,
                                     defect_class=names(v)) for v in ids]
    if mask_records == "class":
        return per_class
    arr = record.mask_array(by_index=True)
    return [part for one in per_class for part in component_records(one, min_area, tally, arr)]


def _modes(found: Sequence[MaskValues], mask_values: str, named: bool,
           where: str) -> Dict[str, str]:
    """dtype name -> meaning, for the masks ``found`` of one dataset."""
    by_dtype: Dict[str, List[MaskValues]] = {}
    for one in found:
        by_dtype.setdefault(one.dtype, []).append(one)
    if mask_values != "auto":
        floats = [d for d in by_dtype if np.dtype(d).kind == "f"]
        if mask_values == "class_ids" and floats:
            raise DatasetError(f"{where} has masks of floating-point values ({floats[0]}): they "
                               "cannot be class ids; use mask_values 'threshold' or 'binary'")
        return {d: mask_values for d in by_dtype}
    return {d: infer_mode(masks, named, where) for d, masks in by_dtype.items()}


def resolve_records(records: Sequence[Record], mask_values: str, mask_records: str,
                    group_of: Callable[[Record], str],
                    names_dirs: Callable[[Record], Sequence[Path]],
                    min_component_area: int = MIN_COMPONENT_AREA) -> List[Record]:
    """Records of a layout whose masks mean what their values say (module docstring): each
    group (``group_of``: a dataset) is decided on its own masks; class names come from the first
    names file in ``names_dirs`` of the group's first record. Records without a mask pass
    unchanged."""
    check_options(mask_values, mask_records, min_component_area)
    out = [r for r in records if r.mask_path is None]
    groups: Dict[str, List[Record]] = {}
    for record in records:
        if record.mask_path is not None:
            groups.setdefault(group_of(record), []).append(record)
    tally = _Tally()
    for where, members in groups.items():
        names = ClassNames(class_names_file(names_dirs(members[0])))
        out += _resolve_group(where, members, mask_values, mask_records, names,
                              min_component_area, tally)
    if mask_records == "component":
        _log_components(tally, min_component_area)
    return out


def _resolve_group(where: str, members: List[Record], mask_values: str, mask_records: str,
                   names: ClassNames, min_area: int, tally: _Tally) -> List[Record]:
    if mask_values in ("auto", "class_ids"):
        found: List[Optional[MaskValues]] = [values_of(r) for r in members]
        modes = _modes(found, mask_values, names.path is not None, where)
    else:
        found, modes = [None] * len(members), {}
    out: List[Record] = []
    for record, values in zip(members, found):
        mode = mask_values if values is None else modes[values.dtype]
        out += records_of(record, mode, values, mask_records, names, min_area, tally)
    log.info("masks of %s: %s (%d files%s) -> %d record(s)", where,
             ", ".join(f"{d} {m}" for d, m in sorted(modes.items())) or mask_values,
             len(members), "" if names.path is None else f", names from {names.path}",
             len(out))
    return out
