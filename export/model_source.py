"""Which model an export starts from: SAM checkpoint (+ SPT weights, or the paper authors' SPT
checkpoint), full-mode weights, or the bundled example model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from samspt.runtime.errors import ConfigError
from samspt.runtime.files import sha256_file
from samspt.training.example import EXAMPLE_MODEL, EXAMPLE_MODEL_NAME
from samspt.training.modeling.model import SptSam



def _source(path: Path) -> Dict[str, str]:
    return {"name": path.name, "sha256": sha256_file(path)}


def load_export_model(checkpoint: Optional[Path] = None, spt: Optional[Path] = None,
                      authors_spt: Optional[Path] = None, weights: Optional[Path] = None,
                      model_type: Optional[str] = None) -> Tuple[SptSam, str, Dict[str, Any]]:
    """(model, default name, sources for the manifest) from the export command's arguments."""
    from samspt.training.checkpoints import build_model, load_spt_model, read_state_dict

    if sum(x is not None for x in (spt, authors_spt, weights)) > 1:
        raise ConfigError("give one of --spt, --authors-spt and --weights")
    if (spt or authors_spt) and checkpoint is None:
        raise ConfigError("SPT weights hold only the trained tensors: also give the SAM "
                          "checkpoint they were trained on (--checkpoint)")
    sources: Dict[str, Any] = {}
    if weights is not None or (checkpoint is None and spt is None and authors_spt is None):
        path = weights or EXAMPLE_MODEL
        if not path.is_file():
            raise ConfigError(f"{path} does not exist" + (
                "; the bundled example model is missing from this installation: pass "
                "--checkpoint or --weights" if weights is None else ""))
        model = load_spt_model(path)
        sources["weights"] = _source(path)
        name = EXAMPLE_MODEL_NAME if weights is None else path.stem
    elif authors_spt is not None:
        from samspt.training.checkpoints import load_sam_weights
        from samspt.training.modeling.config import get_config
        from samspt.training.spt_import import convert_authors_state_dict

        config = get_config(model_type) if model_type else None
        tensors, model = convert_authors_state_dict(read_state_dict(authors_spt), config)
        load_sam_weights(model, checkpoint)
        model.load_state_dict(tensors, strict=False)
        sources.update(checkpoint=_source(checkpoint), authors_spt=_source(authors_spt))
        name = authors_spt.stem
    elif spt is not None:
        model = load_spt_model(spt, checkpoint)
        if model_type and model.config.name != model_type:
            raise ConfigError(f"{spt} are weights for {model.config.name}, not {model_type}")
        sources.update(checkpoint=_source(checkpoint), spt=_source(spt))
        name = spt.stem
    else:
        model = build_model(model_type, checkpoint)   # no --model-type: the checkpoint's own
        sources["checkpoint"] = _source(checkpoint)
        name = f"sam_{model.config.name}"
    if model_type and model.config.name != model_type:
        raise ConfigError(f"the weights are for {model.config.name}, not --model-type "
                          f"{model_type}")
    return model.eval(), name, sources
