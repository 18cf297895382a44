"""The torch Dataset of training and validation: one image and K prompts per item.

Preprocessing is the runtime's contract (:mod:`samspt.runtime.preprocess`), so training sees
exactly what export and the Inspector see. An item (``S`` = the model's ``image_size``, ``K`` =
``prompts_per_image``, ``N`` = :attr:`PromptSettings.points_per_prompt_slots`) is a dict:

``image``         3xSxS float32, normalised, zero-padded (``preprocess_image``)
``point_coords``  KxNx2 float32, (x, y) in the input frame (``pack_prompts`` + ``scale_coords``)
``point_labels``  KxN float32: 2/3 box corners, 1 foreground, 0 background, -1 padding
``targets``       KxSxS float32 0/1: each prompt's mask in the input frame (resized like the
                  image, zero-padded); the whole mask for ``whole`` boxes, the region's mask for
                  ``region`` boxes, all zeros for negative prompts
``valid``         SxS bool: True on the resized image, False on the padding
``negative``      K bool: negative prompt (a box on a defect-free area, empty target)
``repeat``        K bool: the prompt repeats the target of an earlier one (to fill K)
``original_hw``   (2,) int64 size of the (augmented) image; ``resized_hw`` (2,) int64 (h', w')
``index``         int; ``name`` ``<dataset>/<class>/<stem>`` str; ``defect_class``, ``dataset`` str

Every tensor has a fixed shape, so ``torch.utils.data.default_collate`` stacks items into a
batch; ``collate_fn=list`` keeps them apart. Training items draw every random choice
(augmentation, jitter, prompt choice, negatives) from a generator seeded with
``(seed, epoch, index)``: the same item whatever the worker count; call :meth:`set_epoch` before
each epoch (DataLoader workers must be re-created to see it: ``persistent_workers=False``).
Validation items are deterministic: no augmentation, no jitter, tight boxes only; defect-free
images get K negative boxes seeded by ``(seed, index)``.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from samspt.runtime import tensors
from samspt.runtime.preprocess import crop_view_mask, preprocess_image, view_input
from samspt.runtime.prompts import mask_box, pack_prompts, scale_coords
from samspt.training.modeling.config import ModelConfig
from samspt.runtime.errors import ConfigError
from samspt.training.data.augment import augment
from samspt.training.data.copy_paste import paste_defect
from samspt.training.data.prompt_settings import PromptSettings
from samspt.training.data.prompts import (jitter_boxes, negative_boxes, region_boxes,
                                          sample_points)
from samspt.training.data.records import DatasetError, Record
from samspt.training.data.view_samples import ViewSampling, extra_prompts, view_sample
from samspt.runtime.views import whole_image_view

log = logging.getLogger(__name__)

_VALIDATION_STREAM = 0x76616C  # keeps validation generators apart from training epochs
# Decoded images a dataset keeps in memory (each DataLoader worker keeps its own).
DECODED_CACHE_MB = 2048


def _pad(coords: np.ndarray, labels: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    extra = n - coords.shape[1]
    coords = np.concatenate([coords, np.zeros((coords.shape[0], extra, 2), np.float32)], axis=1)
    labels = np.concatenate(
        [labels, np.full((labels.shape[0], extra), tensors.LABEL_PADDING, np.float32)], axis=1)
    return coords, labels


def target_in_input_frame(mask: np.ndarray, size: int) -> np.ndarray:
    """HxW bool -> SxS float32 0/1 in the whole-image input frame (resized like the image,
    thresholded at half, zero-padded; a non-empty mask never vanishes): the whole-image view's
    :func:`~samspt.runtime.preprocess.crop_view_mask`."""
    return crop_view_mask(whole_image_view(mask.shape, size), mask)


class DefectDataset(torch.utils.data.Dataset):
    """Items of ``records`` for ``config`` (its ``image_size`` and pixel statistics); see the
    module docstring for the item format. ``train``: randomised items, else deterministic."""

    def __init__(self, records: Sequence[Record], config: ModelConfig,
                 settings: PromptSettings = PromptSettings(), train: bool = True,
                 seed: int = 0, sampling: Optional[ViewSampling] = None,
                 cache_mb: float = DECODED_CACHE_MB, copy_paste: float = 0.0) -> None:
        if not records:
            raise DatasetError("no records for the dataset; read_dataset found none or the "
                               "split left this part empty")
        self.records: List[Record] = list(records)
        self.config = config
        self.settings = settings
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        # On views (the model's configuration has view settings): one view and one box prompt
        # per item, drawn by ``sampling`` in training (see view_samples.py).
        self.views = config.view_settings
        self.sampling = sampling if sampling is not None else ViewSampling()
        # Copy-paste (copy_paste.py): a drawn defect-free training image carries, with this
        # probability, a defect pasted from one of the defective training images.
        if not 0.0 <= copy_paste <= 1.0:
            raise ConfigError(f"copy_paste is a probability in [0, 1], got {copy_paste}")
        self.copy_paste = float(copy_paste) if train else 0.0
        self.donors = [i for i, r in enumerate(self.records) if not r.is_defect_free]
        # Decoded images and masks, kept up to ``cache_mb`` (decoding a large image each time it
        # is drawn took 40 % of a training step on 1.3k px grey tiles); augmentations copy.
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self._decoded: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._decoded_bytes = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Training items of epoch ``epoch`` (augmentations, jitter) differ from other epochs'."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> np.random.Generator:
        """The item's generator: from (seed, epoch, index) in training, (seed, index) else."""
        if self.train:
            return np.random.default_rng([self.seed, self.epoch, index])
        return np.random.default_rng([self.seed, _VALIDATION_STREAM, index])

    def __getitem__(self, index: int) -> Dict[str, object]:
        index = int(index)
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} records")
        record = self.records[index]
        rng = self.generator(index)
        image, mask = self._load(index, record)
        if self.copy_paste and self.donors and not mask.any() and rng.random() < self.copy_paste:
            donor = int(self.donors[rng.integers(len(self.donors))])
            image, mask = paste_defect(image, mask, *self._load(donor, self.records[donor]), rng)
        if self.train:
            image, mask = augment(image, mask, rng, self.settings.augment_settings)
        if self.views is not None:
            return self._view_item(index, record, image, mask, rng)
        coords, labels, keys, negative, region_labels = self._prompts(mask, rng)

        size = self.config.image_size
        pixels, resized = preprocess_image(image, size, self.config.pixel_mean,
                                           self.config.pixel_std)
        coords = scale_coords(coords, image.shape[:2], resized)
        cache: Dict[int, np.ndarray] = {}
        targets = np.zeros((len(keys), size, size), dtype=np.float32)
        for slot, key in enumerate(keys):
            if key >= 0:
                if key not in cache:
                    cache[key] = target_in_input_frame(region_labels == key + 1, size)
                targets[slot] = cache[key]
        repeat = np.array([k >= 0 and k in keys[:i] for i, k in enumerate(keys)], dtype=bool)
        valid = np.zeros((size, size), dtype=bool)
        valid[: resized[0], : resized[1]] = True
        return {
            "image": torch.from_numpy(pixels[0]),
            "point_coords": torch.from_numpy(coords),
            "point_labels": torch.from_numpy(labels),
            "targets": torch.from_numpy(targets),
            "valid": torch.from_numpy(valid),
            "negative": torch.from_numpy(negative),
            "repeat": torch.from_numpy(repeat),
            "original_hw": torch.tensor(image.shape[:2], dtype=torch.int64),
            "resized_hw": torch.tensor(resized, dtype=torch.int64),
            "index": index,
            "name": f"{record.dataset}/{record.name}",
            "defect_class": record.defect_class,
            "dataset": record.dataset,
        }

    def _load(self, index: int, record: Record) -> Tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8, HxW bool) of ``record``, decoded once while the cache has room."""
        hit = self._decoded.get(index)
        if hit is not None:
            return hit
        image = record.load_image()
        mask = record.load_mask(image.shape[:2])
        size = image.nbytes + mask.nbytes
        if self._decoded_bytes + size <= self.cache_bytes:
            self._decoded[index] = (image, mask)
            self._decoded_bytes += size
        return image, mask

    def _view_item(self, index: int, record: Record, image: np.ndarray, mask: np.ndarray,
                   rng: np.random.Generator) -> Dict[str, object]:
        """The item of one view: its box prompt, and in training ``prompts_per_view - 1`` more
        on the same view (:func:`extra_prompts`), in the view's input frame."""
        config = self.config
        view, box, target, kind = view_sample(
            image, mask, config.image_size, self.views, self.sampling if self.train else None,
            rng, box_jitter=self.settings.box_jitter)
        boxes, targets = box.reshape(1, 4), target[None]
        extra = self.sampling.prompts_per_view - 1 if self.train else 0
        if extra:
            more_boxes, more_targets = extra_prompts(view, mask, kind, box, target, extra,
                                                     self.sampling, rng,
                                                     box_jitter=self.settings.box_jitter)
            boxes = np.concatenate([boxes, more_boxes])
            targets = np.concatenate([targets, more_targets])
        n = self.settings.points_per_prompt_slots
        coords, labels = _pad(*pack_prompts(
            boxes=view.to_input(boxes.reshape(-1, 2, 2)).reshape(-1, 4)), n)
        ox, oy, rw, rh = view.placement
        valid = np.zeros((config.image_size,) * 2, dtype=bool)
        valid[oy:oy + rh, ox:ox + rw] = True
        extra_items = {}
        if config.scan_head:     # the scan head learns where the view's defects are
            extra_items["view_mask"] = torch.from_numpy(crop_view_mask(view, mask))
        if kind == "scan" and self.train and not self.sampling.scan_prompts:
            extra_items["prompt_weight"] = torch.zeros(len(targets))
        return {
            **extra_items,
            "image": torch.from_numpy(view_input(view, image, config.pixel_mean,
                                                 config.pixel_std)),
            "point_coords": torch.from_numpy(coords),
            "point_labels": torch.from_numpy(labels),
            "targets": torch.from_numpy(targets),
            "valid": torch.from_numpy(valid),
            "negative": torch.from_numpy(~targets.reshape(len(targets), -1).any(axis=1)),
            "repeat": torch.zeros(len(targets), dtype=torch.bool),
            "original_hw": torch.tensor(image.shape[:2], dtype=torch.int64),
            "resized_hw": torch.tensor((rh, rw), dtype=torch.int64),
            "index": index,
            "name": f"{record.dataset}/{record.name}",
            "defect_class": record.defect_class,
            "dataset": record.dataset,
            "kind": kind,
        }

    # ------------------------------------------------------------------------- prompts
    def _regions(self, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(boxes Rx4, labels HxW int32: region k is ``labels == k + 1``) of a non-empty mask."""
        if self.settings.box_mode == "region":
            boxes, labels = region_boxes(mask, self.settings.min_region_area)
            if len(boxes):
                return boxes, labels
            log.debug("no region of %d+ pixels: using the whole mask's box",
                      self.settings.min_region_area)
        return mask_box(mask)[None], mask.astype(np.int32)

    def _prompts(self, mask: np.ndarray, rng: np.random.Generator):
        """K prompts in image pixels: (coords KxNx2, labels KxN, target key per slot (-1:
        negative, k: region k), negative K bool, region labels HxW int32)."""
        s, k_slots = self.settings, self.settings.prompts_per_image
        defect = bool(mask.any())
        negative = np.full(k_slots, not defect)
        if self.train and defect:
            negative = rng.random(k_slots) < s.negative_prob
        neg_boxes = negative_boxes(mask, int(negative.sum()), rng, s.negative_size)
        negative[np.flatnonzero(negative)[len(neg_boxes):]] = False  # no room left: positive
        as_points = np.zeros(k_slots, dtype=bool)
        if self.train and s.point_prob > 0:
            as_points = (rng.random(k_slots) < s.point_prob) & ~negative

        keys = np.full(k_slots, -1, dtype=np.int64)
        boxes = np.zeros((k_slots, 4), dtype=np.float32)
        boxes[negative] = neg_boxes
        labels_map = np.zeros(mask.shape, dtype=np.int32)
        positive = np.flatnonzero(~negative)
        if len(positive):
            region_box, labels_map = self._regions(mask)
            order = rng.permutation(len(region_box)) if self.train else np.arange(len(region_box))
            keys[positive] = np.resize(order, len(positive))
            boxes[positive] = region_box[keys[positive]]
            jittered = positive[~as_points[positive]]
            if self.train and s.box_jitter > 0 and len(jittered):
                boxes[jittered] = jitter_boxes(boxes[jittered], s.box_jitter, mask.shape, rng)

        n = s.points_per_prompt_slots
        coords = np.zeros((k_slots, n, 2), dtype=np.float32)
        labels = np.full((k_slots, n), tensors.LABEL_PADDING, dtype=np.float32)
        box_slots = np.flatnonzero(~as_points)
        if len(box_slots):
            coords[box_slots], labels[box_slots] = _pad(*pack_prompts(boxes=boxes[box_slots]), n)
        point_slots = np.flatnonzero(as_points)
        if len(point_slots):
            pts, pt_labels = self._points(mask, labels_map, keys[point_slots], rng)
            coords[point_slots], labels[point_slots] = _pad(
                *pack_prompts(points=pts, point_labels=pt_labels), n)
        return coords, labels, keys.tolist(), negative, labels_map

    def _points(self, mask: np.ndarray, labels_map: np.ndarray, keys: np.ndarray,
                rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Point prompts of regions ``keys``: (BxPx2 coords, BxP labels), P = fg + bg points;
        background points go outside the mask (padding where the mask fills the image)."""
        s = self.settings
        fg_n, bg_n = s.fg_points, s.bg_points
        pts = np.zeros((len(keys), fg_n + bg_n, 2), dtype=np.float32)
        pt_labels = np.full((len(keys), fg_n + bg_n), tensors.LABEL_FOREGROUND, np.float32)
        pt_labels[:, fg_n:] = tensors.LABEL_BACKGROUND
        outside = ~mask
        for row, key in enumerate(keys):
            pts[row, :fg_n] = sample_points(labels_map == key + 1, fg_n, rng)
            if bg_n and outside.any():
                pts[row, fg_n:] = sample_points(outside, bg_n, rng)
            elif bg_n:
                pt_labels[row, fg_n:] = tensors.LABEL_PADDING
        return pts, pt_labels
