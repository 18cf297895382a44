"""What a run is built from, without torch: its records and its model configuration."""

from __future__ import annotations

import dataclasses
import inspect

from samspt.training.modeling.config import ModelConfig, get_config
from samspt.training.train_config import DataSection, ModelSection, model_config_overrides

# ModelConfig fields that change no module: a model loaded from weights may take new values.
VIEW_FIELDS = ("view_context", "view_min_side", "scan_side", "scan_overlap", "view_max_side",
               "scan_min_score", "prompt_min_score", "view_flips")


def read_records(data: DataSection):
    """The dataset's records (``read_dataset``), with ``data.mask_records`` passed where
    ``read_dataset`` takes that option."""
    from samspt.training.data.readers import read_dataset

    options = {}
    if "mask_records" in inspect.signature(read_dataset).parameters:
        options["mask_records"] = data.mask_records
    return read_dataset(data.root, layout=data.layout, **options)


def model_config_for(section: ModelSection) -> ModelConfig:
    """The named configuration ``model.type`` with the ``model.config`` overrides applied."""
    overrides = model_config_overrides(section.config)
    base = get_config(section.type)
    return dataclasses.replace(base, **overrides) if overrides else base
