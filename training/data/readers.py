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
``folder``  Generic: ``images/`` and ``masks/`` with matching stems (``<stem>.*`` or
            ``<stem>_mask.*``, any image extension). Images directly in ``images/`` get class
            ``defect``; images in ``images/<sub>/`` (one level) get class ``<sub>`` and their masks
            are looked up in ``masks/<sub>/``. An image without a mask is defect-free. Dataset =
            the root folder's name.
``spt``     The SPT paper's evaluation data: ``<dataset>/test/<stem>.jpg`` + ``<stem>.png`` beside
            it; root is the folder of datasets or one dataset. Class = dataset = ``<dataset>``;
            an image without a mask is defect-free.
``coco``    COCO instance-segmentation JSON (CVAT, Label Studio exports): root is the JSON file
            or a folder holding one (directly or in ``annotations/``); see
            :mod:`samspt.training.data.coco`. Class = category name, unannotated images are
            defect-free, dataset = the JSON's folder name.

Where the layout itself says an image is defective (MTD, MVTec, VisA) but its mask file is
missing, the image is skipped with a warning (it would otherwise teach "no defect here").
"""

from __future__ import annotations

import csv
import inspect
import logging
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from PIL import Image

from samspt.training.data.coco import coco_files, read_coco
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FOLDER_DEFAULT_CLASS = "defect"

LAYOUTS: Dict[str, str] = {
    "mtd": "MT_<Class>/Imgs/<stem>.jpg with mask <stem>.png (Magnetic Tile Defect)",
    "mvtec": "<category>/test/<defect>/*.png with <category>/ground_truth/<defect>/*_mask.png "
             "(MVTec AD; root = the MVTec folder or one category)",
    "visa": "split_csv/1cls.csv listing object,split,label,image,mask (VisA)",
    "spt": "<dataset>/test/<stem>.jpg with mask <stem>.png beside it (SPT paper's evaluation data)",
    "folder": "images/<stem>.* with masks/<stem>.* (optionally one level of class subfolders)",
    "coco": "a COCO instance-segmentation .json (images, annotations, categories; polygons or "
            "RLE), given as root or alone in the folder or its annotations/",
}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and \
        not path.name.startswith(".")


def _images(folder: Path, suffixes: Sequence[str] = IMAGE_EXTENSIONS) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_image(p) and p.suffix.lower() in suffixes)


def _subdirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _sort(records: Iterable[Record]) -> List[Record]:
    return sorted(records, key=lambda r: (r.dataset, r.defect_class, r.image_path.as_posix()))


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


def read_folder(root: PathLike) -> List[Record]:
    """Generic ``images/`` + ``masks/`` folder (see the module docstring for the rules)."""
    root = _existing_dir(root)
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir():
        raise DatasetError(f"{root} has no images/ folder; the folder layout is "
                           f"{LAYOUTS['folder']}")
    if not masks_dir.is_dir():
        log.warning("%s has no masks/ folder: every image is read as defect-free", root)
    groups: List[Tuple[Path, Path, str]] = [(images_dir, masks_dir, FOLDER_DEFAULT_CLASS)]
    groups += [(sub, masks_dir / sub.name, sub.name) for sub in _subdirs(images_dir)]
    records = []
    for image_dir, mask_dir, defect_class in groups:
        index = _mask_index(mask_dir)
        for image in _images(image_dir):
            found = index.get(image.stem, []) + index.get(f"{image.stem}_mask", [])
            if len(found) > 1:
                raise DatasetError(f"image {image} has {len(found)} candidate masks "
                                   f"({', '.join(p.name for p in found)}); keep one")
            if found:
                records.append(Record(image, found[0], defect_class, root.name))
            else:
                records.append(Record(image, None, DEFECT_FREE, root.name))
    return _sort(records)


def _spt_datasets(root: Path) -> List[Path]:
    if (root / "test").is_dir():
        return [root]
    return [d for d in _subdirs(root) if (d / "test").is_dir()]


def read_spt(root: PathLike) -> List[Record]:
    """The SPT paper's evaluation data: ``<dataset>/test/<stem>.jpg`` + ``<stem>.png``."""
    root = _existing_dir(root)
    records = []
    non_png = tuple(e for e in IMAGE_EXTENSIONS if e != ".png")
    for dataset_dir in _spt_datasets(root):
        name = dataset_dir.name
        for image in _images(dataset_dir / "test", non_png):
            mask = image.with_suffix(".png")
            if mask.is_file():
                records.append(Record(image, mask, name, name))
            else:
                records.append(Record(image, None, DEFECT_FREE, name))
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


def _looks_folder(root: Path) -> bool:
    return (root / "images").is_dir()


_DETECT: Dict[str, Callable[[Path], bool]] = {
    "visa": _looks_visa, "mtd": _looks_mtd, "mvtec": _looks_mvtec, "spt": _looks_spt,
    "coco": _looks_coco, "folder": _looks_folder,
}
_READERS: Dict[str, Callable[..., List[Record]]] = {
    "mtd": read_mtd, "mvtec": read_mvtec, "visa": read_visa, "folder": read_folder,
    "spt": read_spt, "coco": read_coco,
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


def check_records(records: Sequence[Record]) -> List[Record]:
    """Open every mask: a DatasetError if its size differs from its image's; a record whose
    mask is empty becomes defect-free (class :data:`DEFECT_FREE`, no mask), with a warning."""
    out, emptied = [], []
    for record in records:
        if record.mask_path is None:
            out.append(record)
            continue
        try:
            with Image.open(record.image_path) as img:
                width, height = img.size
        except OSError as exc:
            raise DatasetError(f"cannot read image {record.image_path}: {exc}") from None
        if record.load_mask((height, width)).any():
            out.append(record)
        else:
            emptied.append(record.image_path)
            out.append(Record(record.image_path, None, DEFECT_FREE, record.dataset,
                              record.mask_nonzero))
    if emptied:
        log.warning("%d image(s) of defect classes have an empty mask and are read as "
                    "defect-free: %s", len(emptied), ", ".join(str(p) for p in emptied[:5]))
    return _sort(out)


def read_dataset(root: PathLike, layout: str = "auto", check_masks: bool = True,
                 **options) -> List[Record]:
    """Read ``root`` in ``layout`` (``auto``: detected) -> records sorted by
    (dataset, class, path); ``root`` may be a COCO .json file. ``options`` go to the layout's
    reader (``include_train`` for mvtec, ``splits``/``csv_path`` for visa, ``images_dir`` for
    coco). ``check_masks``: see :func:`check_records`."""
    path = _existing_root(root)
    name = detect_layout(path) if layout == "auto" else layout
    if name not in _READERS:
        raise DatasetError(f"unknown layout {layout!r}; choose auto or one of: "
                           f"{_known_layouts()}")
    if path.is_file() and name != "coco":
        raise DatasetError(f"dataset path {path} is a file; the {name} layout reads a folder: "
                           "give the folder that holds the dataset (or layout coco for a COCO "
                           "JSON file)")
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
    if check_masks:
        records = check_records(records)
    names = Counter((r.dataset, r.name) for r in records)
    clashes = [f"{d}/{n}" for (d, n), count in names.items() if count > 1]
    if clashes:
        log.warning("%d record name(s) occur more than once (same class and file stem), e.g. "
                    "%s; rename the files if predictions are saved by name", len(clashes),
                    clashes[0])
    counts = Counter(r.defect_class for r in records)
    log.info("read %d images from %s (%s layout): %s", len(records), path, name,
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return records
