"""COCO instance-segmentation JSON (as CVAT, Label Studio and Roboflow export it) -> Records.

One :class:`CocoRecord` per annotated image: its mask is the union of the image's annotations'
``segmentation`` (polygons, uncompressed RLE with ``counts`` a list, or compressed RLE with
``counts`` a string; ``iscrowd`` ones are decoded the same way), rasterised by
``pycocotools.mask`` only when :meth:`CocoRecord.load_mask` is called. Its class is the category
name of its annotations (of the largest one by ``area``, else bbox area, when they differ). An
image without annotations is a defect-free :class:`Record`; one whose annotations have no usable
segmentation (boxes only) is skipped with a warning. Dataset = the name of the folder holding the
JSON (of the folder above, when the JSON lies in ``annotations/``).

Images: ``file_name`` relative to ``images_dir`` if given, else the first of the JSON's folder,
its ``images/``, and (JSON in ``annotations/``) the folder above and its ``images/``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from samspt.training.data.records import DEFECT_FREE, DatasetError, Record

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
# A top-level COCO key opening a list, looked for in the first bytes of a .json file.
_COCO_KEY = re.compile(rb'"(images|annotations|categories)"\s*:\s*\[')
_SNIFF_BYTES = 1 << 18


@dataclass(frozen=True)
class CocoRecord(Record):
    """A :class:`Record` whose mask comes from COCO segmentations. ``mask_path`` is the JSON
    file, ``image_hw`` the (height, width) the JSON gives the image, ``segmentations`` its
    annotations' checked ``segmentation`` objects (not part of equality or hashing)."""

    image_hw: Tuple[int, int] = (0, 0)
    segmentations: Tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def load_mask(self, shape: Optional[tuple] = None) -> np.ndarray:
        """HxW bool: the union of the segmentations, rasterised now. A DatasetError when
        ``shape`` (the image's HxW) differs from the JSON's height and width."""
        if shape is not None and tuple(shape[:2]) != tuple(self.image_hw):
            h, w = self.image_hw
            raise DatasetError(
                f"{self.mask_path} gives image {self.image_path} size {w}x{h} (WxH) but the file "
                f"is {shape[1]}x{shape[0]}; fix its width/height or re-export the annotations")
        try:
            return rasterise(self.segmentations, self.image_hw)
        except (ValueError, TypeError, KeyError) as exc:
            raise DatasetError(f"cannot decode the segmentations of {self.image_path} in "
                               f"{self.mask_path}: {exc}") from None


def _mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise DatasetError("pycocotools is needed to read COCO segmentations: "
                           "pip install 'samspt[train]' (or pip install pycocotools)") from None
    return mask_utils


def rasterise(segmentations, hw: Tuple[int, int]) -> np.ndarray:
    """HxW bool union of COCO segmentations (polygon lists or RLE dicts) of an HxW image."""
    mask_utils = _mask_utils()
    h, w = int(hw[0]), int(hw[1])
    rles = []
    for seg in segmentations:
        if isinstance(seg, list):
            rles += mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg["counts"], list):
            rles.append(mask_utils.frPyObjects(seg, h, w))
        else:
            rles.append(seg)
    if not rles:
        return np.zeros((h, w), dtype=bool)
    return mask_utils.decode(mask_utils.merge(rles, intersect=False)).astype(bool)


def _segmentation(seg: Any, hw: Tuple[int, int], where: str) -> Any:
    """The segmentation checked (a flat polygon wrapped in a list, polygons of under three
    points dropped), or None when nothing is left."""
    if isinstance(seg, list):
        if seg and isinstance(seg[0], (int, float)):
            seg = [seg]
        if any(not isinstance(p, list) or len(p) % 2 for p in seg):
            raise DatasetError(f"{where}: a polygon segmentation must be a list of "
                               "[x0, y0, x1, y1, ...] lists with an even count of numbers")
        seg = [p for p in seg if len(p) >= 6]
        return seg or None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != list(hw):
            raise DatasetError(f"{where}: RLE size {seg['size']} differs from the image's "
                               f"[height, width] {list(hw)}")
        if not isinstance(seg["counts"], (list, str)):
            raise DatasetError(f"{where}: RLE counts must be a list or a string")
        return seg
    if seg is None:
        return None
    raise DatasetError(f"{where}: segmentation must be polygons (list of lists) or RLE "
                       f"({{counts, size}}), got {type(seg).__name__}")


def looks_like_coco(path: Path) -> bool:
    """A .json file whose first bytes hold a top-level COCO list (images, annotations,
    categories); cheap, for layout detection."""
    if not (path.is_file() and path.suffix.lower() == ".json" and not path.name.startswith(".")):
        return False
    try:
        with open(path, "rb") as handle:
            return _COCO_KEY.search(handle.read(_SNIFF_BYTES)) is not None
    except OSError:
        return False


def coco_files(folder: Path) -> List[Path]:
    """COCO-looking JSON files in ``folder`` and ``folder/annotations``."""
    found = sorted(folder.glob("*.json")) + sorted((folder / "annotations").glob("*.json"))
    return [p for p in found if looks_like_coco(p)]


def _load(path: Path) -> Dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"COCO file {path} is not readable JSON ({exc}); re-export it") \
            from None
    bad = [k for k in ("images", "annotations", "categories")
           if not isinstance(doc, dict) or not isinstance(doc.get(k), list)]
    if bad:
        raise DatasetError(f"{path} is not a COCO instance-segmentation file: it needs the "
                           f"lists images, annotations and categories (missing or not a list: "
                           f"{', '.join(bad)})")
    return doc


def _image_bases(json_path: Path, images_dir: Optional[PathLike]) -> List[Path]:
    if images_dir is not None:
        return [Path(images_dir).expanduser().absolute()]
    bases = [json_path.parent, json_path.parent / "images"]
    if json_path.parent.name == "annotations":
        bases += [json_path.parent.parent, json_path.parent.parent / "images"]
    return bases


def _json_of(root: Path) -> Path:
    if root.is_file():
        return root
    found = coco_files(root)
    if not found:
        raise DatasetError(f"{root} holds no COCO JSON file (a *.json with images, annotations "
                           "and categories lists, in the folder or its annotations/); pass the "
                           "COCO JSON file itself as the dataset root")
    if len(found) > 1:
        raise DatasetError(f"{root} holds {len(found)} COCO JSON files "
                           f"({', '.join(str(p) for p in found)}); pass the one JSON file to "
                           "read as the dataset root")
    return found[0]


def read_coco(root: PathLike, images_dir: Optional[PathLike] = None) -> List[Record]:
    """Records of a COCO JSON file, or of the one COCO JSON in the folder ``root`` (or its
    ``annotations/``); ``images_dir``: where ``file_name`` paths start (see the module)."""
    path = _json_of(Path(root).expanduser().absolute())
    doc = _load(path)
    dataset_dir = path.parent.parent if path.parent.name == "annotations" else path.parent
    bases = _image_bases(path, images_dir)
    try:
        names = {c["id"]: str(c["name"]) for c in doc["categories"]}
        images = {im["id"]: im for im in doc["images"]}
        files = {i: str(im["file_name"]).replace("\\", "/") for i, im in images.items()}
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: every category needs id and name, every image id and "
                           f"file_name (missing {exc})") from None
    by_image: Dict[Any, List[dict]] = {}
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            raise DatasetError(f"{path}: annotation #{i} refers to an image_id not in images")
        if ann.get("category_id") not in names:
            raise DatasetError(f"{path}: annotation #{i} has category_id "
                               f"{ann.get('category_id')!r}, not in categories")
        by_image.setdefault(ann["image_id"], []).append(ann)

    records: List[Record] = []
    missing, skipped, segmented = [], [], 0
    for image_id, im in images.items():
        name = files[image_id]
        image = next((b / name for b in bases if (b / name).is_file()), None)
        if image is None:
            missing.append(name)
            continue
        anns = by_image.get(image_id, [])
        if not anns:
            records.append(Record(image, None, DEFECT_FREE, dataset_dir.name))
            continue
        hw = _image_hw(im, image, path)
        segs = [_segmentation(a.get("segmentation"), hw, f"{path} annotation id {a.get('id')}")
                for a in anns]
        kept = [(a, s) for a, s in zip(anns, segs) if s is not None]
        segmented += len(kept)
        if not kept:
            skipped.append(image)
            continue
        largest = max((a for a, _ in kept), key=_area)
        records.append(CocoRecord(image, path, names[largest["category_id"]], dataset_dir.name,
                                  image_hw=hw, segmentations=tuple(s for _, s in kept)))
    if missing:
        raise DatasetError(f"{len(missing)} image(s) of {path} not found, e.g. {missing[0]!r} "
                           f"(looked in {', '.join(str(b) for b in bases)}); put the images "
                           "there or pass images_dir=<the folder file_name starts from>")
    if doc["annotations"] and not segmented:
        raise DatasetError(f"{path} has {len(doc['annotations'])} annotations but none with a "
                           "segmentation (polygons or RLE): boxes only? Export instance "
                           "segmentation (COCO with masks/polygons)")
    if skipped:
        log.warning("skipped %d annotated image(s) without a segmentation (COCO %s), e.g. %s",
                    len(skipped), path, ", ".join(str(p) for p in skipped[:3]))
    return sorted(records, key=lambda r: (r.dataset, r.defect_class, r.image_path.as_posix()))


def _image_hw(im: dict, image: Path, path: Path) -> Tuple[int, int]:
    if im.get("height") and im.get("width"):
        return int(im["height"]), int(im["width"])
    try:
        with Image.open(image) as img:  # header only
            return img.size[1], img.size[0]
    except OSError as exc:
        raise DatasetError(f"cannot read image {image} (listed in {path}): {exc}") from None


def _area(ann: dict) -> float:
    if ann.get("area"):
        return float(ann["area"])
    bbox = ann.get("bbox") or [0, 0, 0, 0]
    return float(bbox[2]) * float(bbox[3])
