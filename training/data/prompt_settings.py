"""How a training item's prompts are made (torch-free: the run configuration's ``data`` section
takes its defaults from here; :mod:`samspt.training.data.dataset` makes the prompts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

from samspt.runtime.errors import ConfigError
from samspt.training.data.augment import NO_AUGMENT, AugmentSettings

BOX_MODES = ("whole", "region")


@dataclass(frozen=True)
class PromptSettings:
    """How an item's K prompts are made.

    ``prompts_per_image`` K; ``box_mode`` ``whole`` (one box around all of the mask) or
    ``region`` (a box per connected region of at least ``min_region_area`` pixels, falling back
    to ``whole`` when none is that big); ``box_jitter``: each box side moves by up to this
    fraction of the box size (training); ``point_prob``: share of positive prompts given as
    points instead of a box (training), each with ``fg_points`` points inside the region and
    ``bg_points`` outside the mask; ``negative_prob``: share of prompts of a defective image
    that are negative boxes (training; defect-free images get only negatives), sized
    ``negative_size`` (min, max fraction of the image side); ``augment``: True (default
    :class:`AugmentSettings`), False, or an :class:`AugmentSettings` (training).
    """

    prompts_per_image: int = 4
    box_mode: str = "whole"
    box_jitter: float = 0.1
    min_region_area: int = 4
    point_prob: float = 0.0
    fg_points: int = 1
    bg_points: int = 0
    negative_prob: float = 0.2
    negative_size: Tuple[float, float] = (0.05, 0.5)
    augment: Union[bool, AugmentSettings] = True

    def __post_init__(self) -> None:
        checks = [
            (self.prompts_per_image >= 1, "prompts_per_image must be >= 1"),
            (self.box_mode in BOX_MODES, f"box_mode must be one of {BOX_MODES}"),
            (0.0 <= self.box_jitter < 0.5, "box_jitter must be in [0, 0.5)"),
            (self.min_region_area >= 1, "min_region_area must be >= 1"),
            (0.0 <= self.point_prob <= 1.0, "point_prob must be in [0, 1]"),
            (self.fg_points >= 0 and self.bg_points >= 0, "point counts must be >= 0"),
            (self.point_prob == 0 or self.fg_points >= 1,
             "point prompts (point_prob > 0) need fg_points >= 1"),
            (0.0 <= self.negative_prob <= 1.0, "negative_prob must be in [0, 1]"),
            (0 < self.negative_size[0] <= self.negative_size[1] <= 1,
             "negative_size must be (min, max) with 0 < min <= max <= 1"),
        ]
        failed = [text for ok, text in checks if not ok]
        if failed:
            raise ConfigError(f"invalid prompt settings: {'; '.join(failed)} (got {self})")

    @property
    def points_per_prompt_slots(self) -> int:
        """N: a box takes 2 entries, a point prompt its points plus SAM's one padding entry."""
        return 2 if self.point_prob == 0 else max(2, self.fg_points + self.bg_points + 1)

    @property
    def augment_settings(self) -> AugmentSettings:
        if isinstance(self.augment, AugmentSettings):
            return self.augment
        return AugmentSettings() if self.augment else NO_AUGMENT
