"""Readers of defect-dataset folders: each returns ``List[Record]``, sorted, paths absolute.

Layouts (``read_dataset(root, layout="auto")`` tells them apart):

``mtd``     Magnetic Tile Defect: ``MT_<Class>/Imgs/<stem>.jpg`` + mask ``<stem>.png``. Class
            ``Free`` is defect-free. Class = ``<Class>``, dataset ``mtd``.
``mvtec``   MVTec AD: ``<category>/test/<defect>/<stem>.png`` + mask
            ``<category>/ground_truth/<defect>/<stem>_mask.png``; ``good`` is defect-free. Root is
            the MVTec folder or one category. Class = ``<defect>``, dataset ``mvtec/<category>``
            (``mvtec/<category>/train`` for ``train/good``, read with ``include_train=True``).
``visa``    VisA: ``split_csv/1cls.csv`` (``object,split,label,image,mask``, paths relative to
            root). Class ``anomaly`` (the CSV's label; it names no defect type) or defect-free,
            dataset ``visa/<object>``. Masks are VisA's raw label maps: any non-zero value is a
            defect. ``splits`` picks the CSV's splits (default ``("test",)``).
``mmseg``   mmsegmentation / ADE20K (NEU-Seg): ``images/<split>/<stem>.*`` with the label map
            ``annotations/<split>/<stem>.png`` (or ``<stem>_mask.*``, any image extension);
            every split folder present is read, and images directly in ``images/`` pair with
            ``annotations/``. Every image needs its label map (all 0: defect-free). Dataset =
            ``<root name>/<split>`` (the root's name for images directly in ``images/``); class
            (binary or grey masks) ``defect``.
``folder``  Generic: ``images/`` and ``masks/`` with matching stems (``<stem>.*`` or
            ``<stem>_mask.*``, any image extension). Images directly in ``images/`` get class
            ``defect``; images in ``images/<sub>/`` (one level) get class ``<sub>`` and their masks
            are looked up in ``masks/<sub>/``. An image without a mask is defect-free; no
            ``masks/`` folder at all is an error unless ``allow_no_masks=True`` (every image
            defect-free). Dataset = the root folder's name.
``spt``     The SPT paper's evaluation data: ``<dataset>/test/<stem>.jpg`` + ``<stem>.png`` beside
            it; root is the folder of datasets or one dataset. Class = dataset = ``<dataset>``;
            an image without a mask is defect-free.
``coco``    COCO instance-segmentation JSON (CVAT, Label Studio exports): root is the JSON file
            or a folder holding one (directly or in ``annotations/``); see
            :mod:`samspt.training.data.coco`. Class = category name, unannotated images are
            defect-free, dataset = the JSON's folder name.

Where the layout itself says an image is defective (MTD, MVTec, VisA) but its mask file is
missing, the image is skipped with a warning (it would otherwise teach "no defect here").
A mask file without its image (mmseg, folder, spt) is an error.

Mask values: MTD and MVTec masks are grey (defect above half the range), VisA's any non-zero
value. Masks of the mmseg, folder and spt layouts may be binary, grey or class-id maps: the values
of a dataset's masks decide, or ``mask_values=`` says; class-id masks become one record per class
in an image (``mask_records="class"``), per image (``"image"``) or per connected component
(``"component"``); see :mod:`samspt.training.data.mask_values` for the rule.

:func:`check_records` (``check_masks=True``) opens every image and mask: unreadable files and
masks of another size are errors; so is a mask whose non-zero values all read as background
(lost data) and a dataset whose masks are all empty. An all-zero mask of a defect class reads
as defect-free, with a warning.
"""

from __future__ import annotations

import csv
import inspect
import logging
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from samspt.runtime.image_files import IMAGE_EXTENSIONS, is_image_file
from samspt.training.data.checks import check_records
from samspt.training.data.coco import coco_files, read_coco
from samspt.training.data.mask_values import (MIN_COMPONENT_AREA, VALUE_LAYOUTS, check_options,
                                              resolve_records, split_components)
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record, record_key

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
FOLDER_DEFAULT_CLASS = "defect"
_Pair = Tuple[Path, Optional[Path]]  # an image and its mask (None: it has none)

LAYOUTS: Dict[str, str] = {
    "mtd": "MT_<Class>/Imgs/<stem>.jpg with mask <stem>.png (Magnetic Tile Defect)",
    "mvtec": "<category>/test/<defect>/*.png with <category>/ground_truth/<defect>/*_mask.png "
             "(MVTec AD; root = the MVTec folder or one category)",
    "visa": "split_csv/1cls.csv listing object,split,label,image,mask (VisA)",
    "spt": "<dataset>/test/<stem>.jpg with mask <stem>.png beside it (SPT paper's evaluation data)",
    "mmseg": "images/<split>/<stem>.* with label maps annotations/<split>/<stem>.png "
             "(mmsegmentation / ADE20K, NEU-Seg; split folders optional)",
    "folder": "images/<stem>.* with masks/<stem>.* (optionally one level of class subfolders)",
    "coco": "a COCO instance-segmentation .json (images, annotations, categories; polygons or "
            "RLE), given as root or alone in the folder or its annotations/",
}


_is_image = is_image_file  # one rule for what an image file is (samspt.runtime.image_files)


def _images(folder: Path, suffixes: Sequence[str] = IMAGE_EXTENSIONS) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_image(p) and p.suffix.lower() in suffixes)


def _subdirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _sort(records: Iterable[Record]) -> List[Record]:
    return sorted(records, key=record_key)


def _warn_skipped(skipped: List[Path], what: str) -> None:
    if skipped:
        log.warning("skipped %d defective image(s) without a mask (%s), e.g. %s", len(skipped),
                    what, ", ".join(str(p) for p in skipped[:3]))


# ----------------------------------------------------------------------------- readers
def read_mtd(root: PathLike) -> List[Record]:
    """Magnetic Tile Defect: ``MT_<Class>/Imgs/<stem>.jpg`` with mask ``<stem>.png``."""
    root = _existing_dir(root)
    records, skipped = [], []
    for class_dir in sorted(root.glob("MT_*")):
        imgs = class_dir / "Imgs"
        if not imgs.is_dir():
            continue
        name = class_dir.name[len("MT_"):]
        free = name.lower() == "free"
        for image in _images(imgs, (".jpg", ".jpeg")):
            mask = image.with_suffix(".png")
            if free:
                records.append(Record(image, None, DEFECT_FREE, "mtd"))
            elif mask.is_file():
                records.append(Record(image, mask, name, "mtd"))
            else:
                skipped.append(image)
    _warn_skipped(skipped, "MTD mask <stem>.png")
    return _sort(records)


def _mvtec_categories(root: Path) -> List[Path]:
    if (root / "test").is_dir():
        return [root]
    return [c for c in _subdirs(root) if (c / "test").is_dir()]


def read_mvtec(root: PathLike, include_train: bool = False) -> List[Record]:
    """MVTec AD (the whole folder or one category). ``include_train``: also ``train/good``."""
    root = _existing_dir(root)
    records, skipped = [], []
    for category in _mvtec_categories(root):
        dataset = f"mvtec/{category.name}"
        for defect_dir in _subdirs(category / "test"):
            defect = defect_dir.name
            for image in _images(defect_dir):
                if defect == "good":
                    records.append(Record(image, None, DEFECT_FREE, dataset))
                    continue
                gt = category / "ground_truth" / defect
                mask = next((m for m in (gt / f"{image.stem}_mask.png", gt / f"{image.stem}.png")
                             if m.is_file()), None)
                if mask is None:
                    skipped.append(image)
                else:
                    records.append(Record(image, mask, defect, dataset))
        if include_train:
            records += [Record(image, None, DEFECT_FREE, f"{dataset}/train")
                        for image in _images(category / "train" / "good")]
    _warn_skipped(skipped, "MVTec ground_truth/<defect>/<stem>_mask.png")
    return _sort(records)


def read_visa(root: PathLike, splits: Sequence[str] = ("test",),
              csv_path: Optional[PathLike] = None) -> List[Record]:
    """VisA from its split CSV (default ``<root>/split_csv/1cls.csv``), rows of ``splits``."""
    root = _existing_dir(root)
    table = Path(csv_path) if csv_path is not None else root / "split_csv" / "1cls.csv"
    if not table.is_file():
        raise DatasetError(f"VisA split file {table} not found; root must be the VisA folder "
                           "holding split_csv/1cls.csv (or pass csv_path=...)")
    if isinstance(splits, str):
        splits = (splits,)
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    needed = {"object", "split", "label", "image", "mask"}
    if not rows or not needed <= set(rows[0]):
        have = sorted(rows[0]) if rows else []
        raise DatasetError(f"{table} must have columns {sorted(needed)}, found {have}; is it "
                           "VisA's split_csv/1cls.csv?")
    present = sorted({r["split"] for r in rows})
    unknown = sorted(set(splits) - set(present))
    if unknown:
        raise DatasetError(f"VisA splits {unknown} not in {table}; it holds {present}")
    records, skipped, missing = [], [], []
    for row in rows:
        if row["split"] not in splits:
            continue
        image = root / row["image"]
        if not image.is_file():
            missing.append(image)
            continue
        dataset, label = f"visa/{row['object']}", row["label"].strip().lower()
        if label == "normal":
            records.append(Record(image, None, DEFECT_FREE, dataset, mask_nonzero=True))
        elif label == "anomaly":
            mask = root / row["mask"] if row["mask"].strip() else None
            if mask is None or not mask.is_file():
                skipped.append(image)
            else:
                records.append(Record(image, mask, "anomaly", dataset, mask_nonzero=True))
        else:
            raise DatasetError(f"{table}: label {row['label']!r} of {row['image']} is neither "
                               "'normal' nor 'anomaly'")
    if missing:
        raise DatasetError(f"{table} lists {len(missing)} image(s) not found under {root}, e.g. "
                           f"{missing[0]}; is root the VisA folder the CSV's paths start from?")
    _warn_skipped(skipped, "VisA mask column")
    return _sort(records)


def _mask_index(folder: Path) -> Dict[str, List[Path]]:
    index: Dict[str, List[Path]] = {}
    for mask in _images(folder):
        index.setdefault(mask.stem, []).append(mask)
    return index


def _mask_of(image: Path, index: Dict[str, List[Path]]) -> Optional[Path]:
    found = index.get(image.stem, []) + index.get(f"{image.stem}_mask", [])
    if len(found) > 1:
        raise DatasetError(f"image {image} has {len(found)} candidate masks "
                           f"({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _pairs(image_dir: Path, mask_dir: Path) -> Tuple[List[_Pair], List[Path]]:
    """(image, its mask or None) for the images of ``image_dir``, and the masks of ``mask_dir``
    that no image claims."""
    index = _mask_index(mask_dir)
    pairs = [(image, _mask_of(image, index)) for image in _images(image_dir)]
    used = {mask for _, mask in pairs if mask is not None}
    orphans = [m for masks in index.values() for m in masks if m not in used]
    return pairs, sorted(orphans)


def _refuse_orphans(orphans: List[Path], expected: str) -> None:
    if orphans:
        raise DatasetError(f"{len(orphans)} mask(s) have no image, e.g. {orphans[0]}; expected "
                           f"{expected}. Add or rename the images, or move the masks away")


def _unpaired_mask_dirs(mask_root: Path, image_root: Path) -> List[Path]:
    """Masks in subfolders of ``mask_root`` that have no image subfolder of the same name."""
    if not mask_root.is_dir():
        return []
    return [m for sub in _subdirs(mask_root) if not (image_root / sub.name).is_dir()
            for m in _images(sub)]


def _folder_groups(root: Path) -> List[Tuple[Path, Path, str]]:
    images_dir, masks_dir = root / "images", root / "masks"
    groups: List[Tuple[Path, Path, str]] = [(images_dir, masks_dir, FOLDER_DEFAULT_CLASS)]
    return groups + [(sub, masks_dir / sub.name, sub.name) for sub in _subdirs(images_dir)]


def read_folder(root: PathLike, allow_no_masks: bool = False) -> List[Record]:
    """Generic ``images/`` + ``masks/`` folder (see the module docstring for the rules).
    ``allow_no_masks``: read a folder without masks (no ``masks/``, or none in it) as all
    defect-free instead of refusing it."""
    root = _existing_dir(root)
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir():
        raise DatasetError(f"{root} has no images/ folder; the folder layout is "
                           f"{LAYOUTS['folder']}")
    records, orphans = [], _unpaired_mask_dirs(masks_dir, images_dir)
    for image_dir, mask_dir, defect_class in _folder_groups(root):
        pairs, unused = _pairs(image_dir, mask_dir)
        orphans += unused
        records += [Record(image, None, DEFECT_FREE, root.name) if mask is None else
                    Record(image, mask, defect_class, root.name) for image, mask in pairs]
    _refuse_orphans(orphans, "images/[<class>/]<stem>.* for masks/[<class>/]<stem>[_mask].*")
    if records and all(r.mask_path is None for r in records):
        if not allow_no_masks:
            raise DatasetError(
                f"{root} has images/ but no mask in {masks_dir} ("
                f"{'no such folder' if not masks_dir.is_dir() else 'none matches an image'}): "
                "every image would read as defect-free. Put each defective image's mask in "
                "masks/ (same stem), use the mmseg layout (annotations/) for label maps, or pass "
                "allow_no_masks=True if every image is defect-free indeed")
        log.info("%s has no masks: every image is read as defect-free (allow_no_masks)", root)
    return _sort(records)


def _mmseg_parts(root: Path) -> List[Tuple[Path, Path, str]]:
    images_dir, ann_dir = root / "images", root / "annotations"
    parts = [(images_dir, ann_dir, root.name)]
    return parts + [(sub, ann_dir / sub.name, f"{root.name}/{sub.name}")
                    for sub in _subdirs(images_dir)]


def read_mmseg(root: PathLike) -> List[Record]:
    """mmsegmentation / ADE20K layout (NEU-Seg): ``images/<split>/`` with label maps in
    ``annotations/<split>/``; every split folder present, and images directly in ``images/``."""
    root = _existing_dir(root)
    for folder in ("images", "annotations"):
        if not (root / folder).is_dir():
            raise DatasetError(f"{root} has no {folder}/ folder; the mmseg layout is "
                               f"{LAYOUTS['mmseg']}")
    records, unlabelled = [], []
    orphans = _unpaired_mask_dirs(root / "annotations", root / "images")
    for image_dir, ann_dir, dataset in _mmseg_parts(root):
        pairs, unused = _pairs(image_dir, ann_dir)
        orphans += unused
        unlabelled += [image for image, ann in pairs if ann is None]
        records += [Record(image, ann, FOLDER_DEFAULT_CLASS, dataset)
                    for image, ann in pairs if ann is not None]
    _refuse_orphans(orphans, "images/<split>/<stem>.* for annotations/<split>/<stem>.png")
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} image(s) of {root} have no label map, e.g. {unlabelled[0]} "
            f"(looked for {unlabelled[0].stem}.* in the matching annotations/ folder). In the "
            "mmseg layout every image needs one (all 0 for a defect-free image); add them, or "
            "move such images away")
    return _sort(records)


def _spt_datasets(root: Path) -> List[Path]:
    if (root / "test").is_dir():
        return [root]
    return [d for d in _subdirs(root) if (d / "test").is_dir()]


def read_spt(root: PathLike) -> List[Record]:
    """The SPT paper's evaluation data: ``<dataset>/test/<stem>.jpg`` + ``<stem>.png``."""
    root = _existing_dir(root)
    records, orphans = [], []
    non_png = tuple(e for e in IMAGE_EXTENSIONS if e != ".png")
    for dataset_dir in _spt_datasets(root):
        name = dataset_dir.name
        images = _images(dataset_dir / "test", non_png)
        for image in images:
            mask = image.with_suffix(".png")
            if mask.is_file():
                records.append(Record(image, mask, name, name))
            else:
                records.append(Record(image, None, DEFECT_FREE, name))
        stems = {image.stem for image in images}
        orphans += [m for m in _images(dataset_dir / "test", (".png",)) if m.stem not in stems]
    _refuse_orphans(orphans, "<dataset>/test/<stem>.jpg (any non-PNG image) beside each "
                    "<stem>.png")
    return _sort(records)


# ---------------------------------------------------------------------------- detection
def _looks_mtd(root: Path) -> bool:
    return any((d / "Imgs").is_dir() for d in root.glob("MT_*"))


def _looks_mvtec(root: Path) -> bool:
    return any((c / "ground_truth").is_dir() and _subdirs(c / "test")
               for c in _mvtec_categories(root))


def _looks_visa(root: Path) -> bool:
    return (root / "split_csv" / "1cls.csv").is_file()


def _looks_spt(root: Path) -> bool:
    non_png = tuple(e for e in IMAGE_EXTENSIONS if e != ".png")
    return any(_images(d / "test", non_png) for d in _spt_datasets(root))


def _looks_coco(root: Path) -> bool:
    return bool(coco_files(root))  # several: read_coco asks for the one to read


def _looks_mmseg(root: Path) -> bool:
    """images/ beside annotations/ holding label maps (directly or in split folders); a COCO
    JSON in annotations/ is the coco layout."""
    annotations = root / "annotations"
    if not (root / "images").is_dir() or not annotations.is_dir():
        return False
    return bool(_images(annotations)) or any(_images(sub) for sub in _subdirs(annotations))


def _looks_folder(root: Path) -> bool:
    return (root / "images").is_dir()


# In this order: an mmseg split named test/ would look like an spt dataset.
_DETECT: Dict[str, Callable[[Path], bool]] = {
    "visa": _looks_visa, "mtd": _looks_mtd, "mvtec": _looks_mvtec, "mmseg": _looks_mmseg,
    "spt": _looks_spt, "coco": _looks_coco, "folder": _looks_folder,
}
_READERS: Dict[str, Callable[..., List[Record]]] = {
    "mtd": read_mtd, "mvtec": read_mvtec, "visa": read_visa, "folder": read_folder,
    "mmseg": read_mmseg, "spt": read_spt, "coco": read_coco,
}


def _known_layouts() -> str:
    return "; ".join(f"{name}: {text}" for name, text in LAYOUTS.items())


def _existing_dir(root: PathLike) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist; check the path (data.root)")
    if not path.is_dir():
        raise DatasetError(f"dataset path {path} is a file, not a folder; give the folder that "
                           "holds the dataset")
    return path


def _existing_root(root: PathLike) -> Path:
    """A dataset folder, or a .json file (a COCO file)."""
    path = Path(root).expanduser().absolute()
    return path if path.is_file() and path.suffix.lower() == ".json" else _existing_dir(path)


def detect_layout(root: PathLike) -> str:
    """The layout name of ``root`` (a key of :data:`LAYOUTS`), or a DatasetError listing them."""
    path = _existing_root(root)
    if path.is_file():
        return "coco"
    for name, looks in _DETECT.items():
        if looks(path):
            log.debug("%s looks like the %s layout", path, name)
            return name
    raise DatasetError(f"cannot tell the layout of {path}. Known layouts: {_known_layouts()}. "
                       "Arrange the folder as one of them or pass the layout by name")


def _names_dirs(layout: str, root: Path) -> Callable[[Record], Sequence[Path]]:
    """Where a layout's class names file (classes.txt) may lie, for a record."""
    if layout == "spt":
        return lambda r: (r.image_path.parent.parent, root)
    return lambda r: (root,)


def _group_of(layout: str, root: Path) -> Callable[[Record], str]:
    """The dataset a record's masks are decided with (named by its folder)."""
    if layout == "spt":
        return lambda r: str(r.image_path.parent.parent)
    return lambda r: str(root)


def _apply_mask_options(records: List[Record], layout: str, root: Path, mask_values: str,
                        mask_records: str, min_component_area: int) -> List[Record]:
    if layout in VALUE_LAYOUTS:
        return resolve_records(records, mask_values, mask_records, _group_of(layout, root),
                               _names_dirs(layout, root), min_component_area)
    if mask_values != "auto":
        raise DatasetError(f"the {layout} layout reads its masks one way (its own convention); "
                           f"mask_values={mask_values!r} applies to the layouts "
                           f"{', '.join(VALUE_LAYOUTS)}: leave it 'auto'")
    if mask_records != "component":
        return records  # one record per image: the layout names one class per image
    if layout == "coco":
        raise DatasetError("mask_records 'component' is not available for COCO annotations (a "
                           "record's mask is the union of its image's annotations); use 'class' "
                           "or 'image'")
    return split_components(records, min_component_area)


def read_dataset(root: PathLike, layout: str = "auto", check_masks: bool = True,
                 mask_values: str = "auto", mask_records: str = "class",
                 min_component_area: int = MIN_COMPONENT_AREA, **options) -> List[Record]:
    """Read ``root`` in ``layout`` (``auto``: detected) -> records sorted by
    (dataset, class, path); ``root`` may be a COCO .json file. ``options`` go to the layout's
    reader (``include_train`` for mvtec, ``splits``/``csv_path`` for visa, ``images_dir`` for
    coco, ``allow_no_masks`` for folder). ``check_masks``: see :func:`check_records`.

    ``mask_values`` (``auto``, ``binary``, ``threshold``, ``class_ids``; layouts mmseg, folder
    and spt) says what mask values mean, ``mask_records`` (``class``, ``image``, ``component``)
    which records a mask becomes, ``min_component_area`` the smallest component (pixels) that is
    a record of its own: see :mod:`samspt.training.data.mask_values`. Masks are opened where
    their values decide (``auto``, ``class_ids``, ``component``), even without ``check_masks``.
    """
    path = _existing_root(root)
    name = detect_layout(path) if layout == "auto" else layout
    if name not in _READERS:
        raise DatasetError(f"unknown layout {layout!r}; choose auto or one of: "
                           f"{_known_layouts()}")
    if path.is_file() and name != "coco":
        raise DatasetError(f"dataset path {path} is a file; the {name} layout reads a folder: "
                           "give the folder that holds the dataset (or layout coco for a COCO "
                           "JSON file)")
    check_options(mask_values, mask_records, min_component_area)
    reader = _READERS[name]
    try:
        inspect.signature(reader).bind(path, **options)
    except TypeError:
        takes = [p for p in inspect.signature(reader).parameters if p != "root"]
        raise DatasetError(f"layout {name!r} does not take options {sorted(options)}; it takes "
                           f"{takes or 'none'}") from None
    records = reader(path, **options)
    if not records:
        raise DatasetError(f"{path} holds no images in the {name} layout ({LAYOUTS[name]}); "
                           "check the path and the layout")
    records = _sort(_apply_mask_options(records, name, path, mask_values, mask_records,
                                        min_component_area))
    if check_masks:
        records = check_records(records)
    names = Counter((r.dataset, r.name) for r in records)
    clashes = [f"{d}/{n}" for (d, n), count in names.items() if count > 1]
    if clashes:
        log.warning("%d record name(s) occur more than once (same class and file stem), e.g. "
                    "%s; rename the files if predictions are saved by name", len(clashes),
                    clashes[0])
    counts = Counter(r.defect_class for r in records)
    log.info("read %d records of %d images from %s (%s layout, %s records): %s", len(records),
             len({r.image_path for r in records}), path, name, mask_records,
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return records
