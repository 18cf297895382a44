"""Reproducible train/validation splits, stratified by (dataset, class), saved as JSON.

Images are split, not records: all records of one image (its classes, its components) go to the
same side, so validation never sees an image that training saw. An image's stratum is (its
dataset, its rarest class): the class held by the fewest images of the dataset, ties by name;
for an image of one class that is simply its class. Each stratum is shuffled by a generator
seeded with ``(seed, crc32 of the stratum's name)`` after sorting it by path, so a split depends
only on the seed, the fraction and the set of records: not on their order, nor on which other
classes exist (except through the rarest class of images holding several). Every stratum of two
or more images puts at least one in validation and one in training.

A split may also hold images out (``test_fraction``): taken first from each stratum's same
shuffled order, they are neither trained nor validated on, nor used to choose anything (kept
weights, gates), so their figures say what unseen images of the line will get. With no
held-out images the split is the same as one made without them.

Split files (version 2) list each record with its image, mask, class and dataset, and the keys
``mask_nonzero``, ``mask_value``, ``mask_region`` and ``component`` where they are set, and a
``test`` list where images are held out; files of version 1 (without the last three keys) are
read too.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from samspt.runtime.files import atomic_write_text
from samspt.training.data.records import DatasetError, Record, record_key

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
SPLIT_FORMAT = "samspt.split"
SPLIT_VERSION = 2
READS_VERSIONS = (1, 2)

_Stratum = Tuple[str, str]


def _images(records: Sequence[Record]) -> Dict[str, List[Record]]:
    """Records grouped by image path."""
    images: Dict[str, List[Record]] = {}
    for record in sorted(set(records), key=record_key):
        images.setdefault(record.image_path.as_posix(), []).append(record)
    return images


def _stratum(members: List[Record], frequency: Counter) -> _Stratum:
    """(dataset, rarest class) of one image's records."""
    dataset = members[0].dataset
    classes = sorted({r.defect_class for r in members})
    return dataset, min(classes, key=lambda c: (frequency[(dataset, c)], c))


def _strata(images: Dict[str, List[Record]]) -> Dict[_Stratum, List[str]]:
    """Stratum -> its images (paths), sorted by path."""
    frequency = Counter(pair for members in images.values()
                        for pair in {(m.dataset, m.defect_class) for m in members})
    strata: Dict[_Stratum, List[str]] = {}
    for path, members in images.items():
        strata.setdefault(_stratum(members, frequency), []).append(path)
    return {key: sorted(paths) for key, paths in sorted(strata.items())}


class Split(NamedTuple):
    """The three sides of a split, each sorted by (dataset, class, path)."""

    train: List[Record]
    val: List[Record]
    test: List[Record]


def split_records(records: Sequence[Record], val_fraction: float = 0.2,
                  seed: int = 0) -> Tuple[List[Record], List[Record]]:
    """(train, val), each sorted by (dataset, class, path), every image's records on one side.
    A stratum of n >= 2 images gives ``round(n * val_fraction)`` images to validation, clamped to
    1..n-1; a single image trains."""
    split = split_dataset(records, val_fraction=val_fraction, seed=seed)
    return split.train, split.val


def split_dataset(records: Sequence[Record], val_fraction: float = 0.2, seed: int = 0,
                  test_fraction: float = 0.0) -> Split:
    """:func:`split_records` that also holds ``round(n * test_fraction)`` images of each
    stratum out (``test``), the first of the stratum's shuffled order, as many as leave one
    image to train and validation's share to validate (a stratum of fewer than three images
    holds none out). ``test_fraction`` 0 gives :func:`split_records`' sides and no test."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DatasetError(f"test_fraction must be in [0, 1) and leave images to train "
                           f"(val_fraction + test_fraction < 1), got {test_fraction} with "
                           f"val_fraction {val_fraction}")
    if not records:
        raise DatasetError("no records to split; read a dataset first (read_dataset)")
    images = _images(records)
    sides: Tuple[List[Record], List[Record], List[Record]] = ([], [], [])
    for (dataset, defect_class), paths in _strata(images).items():
        n = len(paths)
        n_val = 0 if n < 2 else min(n - 1, max(1, int(math.floor(n * val_fraction + 0.5))))
        n_test = (0 if n < 3 or test_fraction <= 0 else
                  min(n - 1 - n_val, max(1, int(math.floor(n * test_fraction + 0.5)))))
        rng = np.random.default_rng([seed, zlib.crc32(f"{dataset}\0{defect_class}".encode())])
        order = rng.permutation(n)
        # Validation keeps the first n_val of the order, as a split with nothing held out;
        # held-out images come next, so adding them never moves an image into validation.
        for side, picked in ((1, order[:n_val]), (2, order[n_val:n_val + n_test]),
                             (0, order[n_val + n_test:])):
            sides[side].extend(r for i in picked for r in images[paths[i]])
        log.debug("split %s/%s: %d train, %d val, %d test images", dataset, defect_class,
                  n - n_val - n_test, n_val, n_test)
    return Split(*(sorted(side, key=record_key) for side in sides))


def _relative(path: Path, root: Path) -> str:
    for base, target in ((root, path), (root.resolve(), path.resolve())):
        try:
            return target.relative_to(base).as_posix()
        except ValueError:
            continue
    raise DatasetError(f"{path} is not inside the dataset root {root}; write the split with the "
                       "root the records were read from")


def _entry(record: Record, root: Path) -> Dict[str, object]:
    entry: Dict[str, object] = {
        "image": _relative(record.image_path, root),
        "mask": None if record.mask_path is None else _relative(record.mask_path, root),
        "class": record.defect_class,
        "dataset": record.dataset,
    }
    if record.mask_nonzero:
        entry["mask_nonzero"] = True
    if record.mask_value is not None:
        entry["mask_value"] = int(record.mask_value)
    if record.mask_region is not None:
        entry["mask_region"] = [int(v) for v in record.mask_region]
    if record.component is not None:
        entry["component"] = int(record.component)
    return entry


def write_split(path: PathLike, train: Sequence[Record], val: Sequence[Record], root: PathLike,
                seed: Optional[int] = None, val_fraction: Optional[float] = None,
                test: Sequence[Record] = (), test_fraction: Optional[float] = None) -> None:
    """Write the split as JSON (paths relative to ``root``) atomically.

    ``{"format", "version", "seed", "val_fraction", "root", "train": [...], "val": [...]}``
    and, where images are held out, ``"test_fraction"`` and ``"test": [...]``; each entry
    ``{"image", "mask" (or null), "class", "dataset"}`` plus, where set, ``mask_nonzero``
    (true), ``mask_value`` (int), ``mask_region`` ([x0, y0, x1, y1]) and ``component`` (int).
    """
    base = Path(root).expanduser().absolute()
    doc = {
        "format": SPLIT_FORMAT,
        "version": SPLIT_VERSION,
        "seed": seed,
        "val_fraction": val_fraction,
        "root": str(base),
        "train": [_entry(r, base) for r in train],
        "val": [_entry(r, base) for r in val],
    }
    if test:
        doc["test_fraction"] = test_fraction
        doc["test"] = [_entry(r, base) for r in test]
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    log.info("wrote split %s: %d train, %d val, %d test", path, len(train), len(val), len(test))


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_int(entry: dict, key: str, where: str) -> Optional[int]:
    value = entry.get(key)
    if value is not None and not _whole(value):
        raise DatasetError(f"{where}: {key} must be a whole number, got {value!r} in {entry!r}")
    return value


def _region(entry: dict, where: str) -> Optional[Tuple[int, int, int, int]]:
    region = entry.get("mask_region")
    if region is None:
        return None
    if not isinstance(region, list) or len(region) != 4 or not all(_whole(v) for v in region):
        raise DatasetError(f"{where}: mask_region must be [x0, y0, x1, y1] (whole numbers), got "
                           f"{region!r}")
    return tuple(region)


def _record(entry: object, base: Path, where: str) -> Record:
    if not isinstance(entry, dict) or not {"image", "mask", "class", "dataset"} <= set(entry):
        raise DatasetError(f"{where}: each entry needs image, mask, class and dataset; got "
                           f"{entry!r}")
    mask = entry["mask"]
    return Record(base / entry["image"], None if mask is None else base / mask,
                  str(entry["class"]), str(entry["dataset"]), bool(entry.get("mask_nonzero")),
                  mask_value=_optional_int(entry, "mask_value", where),
                  mask_region=_region(entry, where),
                  component=_optional_int(entry, "component", where))


def _with_coco_masks(parts: List[List[Record]], path: Path) -> List[List[Record]]:
    """Records whose mask is a COCO JSON file (their annotations rasterise the mask) read back
    from that file, so a split of a COCO dataset loads its masks as the reader gave them."""
    by_file: Dict[Path, Dict[Path, Record]] = {}

    def resolve(record: Record) -> Record:
        if record.mask_path is None or record.mask_path.suffix.lower() != ".json":
            return record
        if record.mask_path not in by_file:
            from samspt.training.data.coco import read_coco

            by_file[record.mask_path] = {r.image_path.absolute(): r
                                         for r in read_coco(record.mask_path)}
        found = by_file[record.mask_path].get(record.image_path.absolute())
        if found is None:
            raise DatasetError(f"split {path} names {record.image_path} with annotations "
                               f"{record.mask_path}, which no longer annotates it; make a new "
                               "split")
        return found

    return [[resolve(r) for r in part] for part in parts]


def read_split(path: PathLike, root: PathLike) -> Tuple[List[Record], List[Record]]:
    """(train, val) Records of a split written by :func:`write_split`, paths joined to ``root``.

    DatasetError if the file is missing or malformed, or if images it names are not under
    ``root`` (the dataset moved: pass its new root)."""
    split = read_split_dataset(path, root)
    return split.train, split.val


def read_split_dataset(path: PathLike, root: PathLike) -> Split:
    """:func:`read_split` with the held-out images (``test``: empty where none were)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file {path} not found; create it with split_records and "
                           "write_split")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"split file {path} is not readable JSON ({exc}); delete it to make "
                           "a new split") from None
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT:
        raise DatasetError(f"{path} is not a samspt split file (format {SPLIT_FORMAT!r})")
    if doc.get("version") not in READS_VERSIONS:
        raise DatasetError(f"{path} is split format version {doc.get('version')}; this samspt "
                           f"reads versions {', '.join(map(str, READS_VERSIONS))}: make a new "
                           "split with this samspt (or read it with the samspt that wrote it)")
    base = Path(root).expanduser().absolute()
    parts = []
    for part in ("train", "val", "test"):
        entries = doc.get(part, [] if part == "test" else None)
        if not isinstance(entries, list):
            raise DatasetError(f"{path}: {part!r} must be a list of entries")
        parts.append([_record(e, base, f"{path} {part}") for e in entries])
    parts = _with_coco_masks(parts, path)
    missing = [r.image_path for part in parts for r in part if not r.image_path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) of split {path} are not under {base}, e.g. "
                           f"{missing[0]}; pass the root the split was written with "
                           f"({doc.get('root')}) or the dataset's new location")
    log.info("read split %s (seed %s, val_fraction %s): %d train, %d val, %d test", path,
             doc.get("seed"), doc.get("val_fraction"), *map(len, parts))
    return Split(*parts)
