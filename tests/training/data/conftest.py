"""Small generated datasets in each layout the readers know, written as real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, hw=(24, 32), rgb: bool = False, seed: int = 0) -> Path:
    """A noise image (grey or RGB) at ``path``; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (*hw, 3) if rgb else hw
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)
    return path


def box_mask(hw=(24, 32), box=(4, 5, 10, 12)) -> np.ndarray:
    """HxW bool, True on the inclusive box (x0, y0, x1, y1)."""
    mask = np.zeros(hw, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def write_mask(path: Path, mask: np.ndarray, kind: str = "L") -> Path:
    """Save a bool mask as 8-bit grey (255/0, with a 127 fringe that must not count), 16-bit
    grey (65535; 30000 on the fringe, below half), RGB (red only) or a label map (values 1, 2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fringe = np.zeros_like(mask)
    fringe[:, 0] = ~mask[:, 0]  # a column of sub-threshold values that is not defect
    if kind == "L":
        arr = np.where(mask, 255, np.where(fringe, 127, 0)).astype(np.uint8)
    elif kind == "I;16":
        arr = np.where(mask, 65535, np.where(fringe, 30000, 0)).astype(np.uint16)
    elif kind == "RGB":
        arr = np.zeros((*mask.shape, 3), dtype=np.uint8)
        arr[..., 0] = np.where(mask, 255, 0)
        arr[..., 2] = np.where(fringe, 100, 0)
    elif kind == "labels":
        ids = np.where(np.arange(mask.shape[1]) % 2, 1, 2)  # VisA-like class ids per column
        arr = (mask * ids).astype(np.uint8)
    else:
        raise ValueError(kind)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def mtd_root(tmp_path: Path) -> Path:
    root = tmp_path / "mtd"
    imgs = root / "MT_Blowhole" / "Imgs"
    write_image(imgs / "b1.jpg")
    write_mask(imgs / "b1.png", box_mask())
    write_image(imgs / "b2.jpg", seed=1)
    write_mask(imgs / "b2.png", box_mask(box=(20, 2, 25, 6)), kind="I;16")
    write_image(imgs / "b3_unlabelled.jpg", seed=2)  # no mask: skipped
    imgs = root / "MT_Crack" / "Imgs"
    write_image(imgs / "c1.jpg", seed=3)
    write_mask(imgs / "c1.png", box_mask(box=(0, 0, 3, 3)), kind="RGB")
    imgs = root / "MT_Free" / "Imgs"
    for i in range(2):
        write_image(imgs / f"f{i}.jpg", seed=10 + i)
        write_mask(imgs / f"f{i}.png", np.zeros((24, 32), bool))
    (root / "README.md").write_text("not an image")
    return root


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    root = tmp_path / "mvtec"
    for category, defect in (("bottle", "broken_large"), ("screw", "scratch")):
        cat = root / category
        write_image(cat / "test" / "good" / "000.png", rgb=True)
        for i in range(2):
            write_image(cat / "test" / defect / f"00{i}.png", rgb=True, seed=i)
            write_mask(cat / "ground_truth" / defect / f"00{i}_mask.png",
                       box_mask(box=(2 + i, 3, 9, 9)))
        write_image(cat / "train" / "good" / "000.png", rgb=True)
        write_image(cat / "train" / "good" / "001.png", rgb=True)
    (root / "license.txt").write_text("CC BY-NC-SA")
    return root


@pytest.fixture
def visa_root(tmp_path: Path) -> Path:
    root = tmp_path / "visa"
    rows = ["object,split,label,image,mask"]
    base = root / "candle" / "Data"
    for split, stems in (("train", ["0000", "0001"]), ("test", ["0002"])):
        for stem in stems:
            write_image(base / "Images" / "Normal" / f"{stem}.JPG", rgb=True)
            rows.append(f"candle,{split},normal,candle/Data/Images/Normal/{stem}.JPG,")
    for stem in ("000", "001"):
        write_image(base / "Images" / "Anomaly" / f"{stem}.JPG", rgb=True)
        write_mask(base / "Masks" / "Anomaly" / f"{stem}.png", box_mask(), kind="labels")
        rows.append(f"candle,test,anomaly,candle/Data/Images/Anomaly/{stem}.JPG,"
                    f"candle/Data/Masks/Anomaly/{stem}.png")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "parts"
    write_image(root / "images" / "top.png")
    write_mask(root / "masks" / "top_mask.png", box_mask(), kind="RGB")
    write_image(root / "images" / "plain.jpg", seed=1)  # no mask: defect-free
    write_image(root / "images" / "scratch" / "s1.bmp", rgb=True, seed=2)
    write_mask(root / "masks" / "scratch" / "s1.png", box_mask(box=(1, 1, 2, 2)))
    write_image(root / "images" / "scratch" / "s2.png", seed=3)  # no mask: defect-free
    return root


@pytest.fixture
def spt_root(tmp_path: Path) -> Path:
    root = tmp_path / "ad"
    write_image(root / "tiles" / "test" / "a.jpg")
    write_mask(root / "tiles" / "test" / "a.png", box_mask())
    write_image(root / "tiles" / "test" / "b.jpg", seed=1)  # no mask: defect-free
    write_image(root / "rails" / "test" / "c.jpg", seed=2)
    write_mask(root / "rails" / "test" / "c.png", box_mask(box=(5, 5, 5, 5)))
    return root


# ----------------------------------------------------------------------------- NEU-Seg-like
NEU_HW = (40, 48)


def label_map(blobs) -> np.ndarray:
    """HxW uint8 class ids: {id: [inclusive boxes]}."""
    arr = np.zeros(NEU_HW, np.uint8)
    for class_id, boxes in blobs.items():
        for box in boxes:
            arr[box_mask(NEU_HW, box)] = class_id
    return arr


# A "U" of class 1 whose bounding box holds a separate blob of class 1 (not background).
U_SHAPE = [(2, 2, 3, 20), (2, 19, 20, 20), (19, 2, 20, 20)]
INSIDE_U = (10, 6, 12, 8)
NEU_LIKE = {
    "training": {
        "000001": {1: U_SHAPE + [INSIDE_U], 3: [(30, 30, 40, 33)]},
        "000002": {2: [(5, 5, 30, 30)]},
        "000003": {1: [(25, 2, 30, 5), (45, 38, 45, 38)]},   # a one-pixel speck too
        "000004": {3: [(40, 0, 40, 0)]},                     # a class of one speck only
    },
    "validation": {"000001": {2: [(0, 0, 9, 9)], 3: [(20, 20, 22, 39)]}},
}


def write_neu(root: Path, layout=NEU_LIKE, splits: bool = True) -> Path:
    """NEU-Seg's layout: images/<split>/<stem>.jpg + annotations/<split>/<stem>.png class ids
    ({split: {stem: blobs}}; ``splits=False``: straight in images/ and annotations/)."""
    for split, images in layout.items():
        sub = Path(split) if splits else Path()
        for i, (stem, blobs) in enumerate(images.items()):
            write_image(root / "images" / sub / f"{stem}.jpg", hw=NEU_HW, rgb=True, seed=i)
            (root / "annotations" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(label_map(blobs)).save(root / "annotations" / sub / f"{stem}.png")
    return root


@pytest.fixture
def neu_root(tmp_path: Path) -> Path:
    return write_neu(tmp_path / "neu")
