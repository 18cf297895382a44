"""Reading and writing model weights.

* Official SAM checkpoints (``sam_vit_b_01ec64.pth``, ...): loaded with ``weights_only=True`` and a
  strict key check; SAM's ``mask_decoder.*`` initialises both SPT decoders.
* SPT weights: ``.safetensors`` with only the trained tensors (``spt`` mode) or the whole model
  (``full`` mode), and their configuration as metadata.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

import samspt
from samspt.runtime.errors import CheckpointError, CheckpointNotFoundError, ModelTypeMismatchError
from samspt.runtime.files import atomic_path
from samspt.training.modeling.config import MODEL_CONFIGS, LoraConfig, ModelConfig, get_config
from samspt.training.modeling.model import TRAIN_MODES, SptSam, is_spt_parameter
from samspt.training.sam2_checkpoint import hiera_shape, is_sam2_layout, sam2_to_sam_keys

log = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, Path]

SPT_FORMAT = "samspt-weights"
SPT_FORMAT_VERSION = "1"
SAM_DECODER_PREFIX = "mask_decoder."
SPT_DECODER_PREFIXES = ("draft_decoder.", "refine_decoder.")
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")


# --------------------------------------------------------------------------------- reading
def read_state_dict(path: PathLike) -> StateDict:
    """Tensors of a ``.pth``/``.pt`` (``weights_only``) or ``.safetensors`` file, on the CPU.

    Raises :class:`CheckpointError` for a missing, empty, truncated or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist; check the path "
                                      "(SAM checkpoints are e.g. sam_vit_b_01ec64.pth)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); download it again")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it may be "
                                  "truncated: download or export it again") from None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"{path} holds Python objects besides tensors; samspt refuses to unpickle them "
                "(that could run arbitrary code). Re-save it as a plain state dict: "
                "torch.save(model.state_dict(), path)") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a foreign file can make the unpickler raise anything
        raise CheckpointError(f"{path} cannot be read as a PyTorch checkpoint: it is truncated or "
                              f"not a checkpoint ({_first_line(exc)}); download it again") from None
    return _as_state_dict(data, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _as_state_dict(data: object, path: Path) -> StateDict:
    if isinstance(data, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(data.get(key), Mapping) and len(data) <= 4:
                log.info("%s: using the state dict under %r", path, key)
                data = data[key]
                break
    if not isinstance(data, Mapping) or not data:
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path} holds non-tensor entries {bad[:5]}; expected a state dict")
    return dict(data)


# ---------------------------------------------------------------------------- SAM weights
def infer_model_type(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The named configuration whose encoder matches a SAM-family state dict (SAM's ViT: width,
    depth and patch; MobileSAM's TinyViT: stage widths and depths; SAM 2.1's Hiera: first
    width and stage depths), if any."""
    hiera = hiera_shape(state_dict)
    if hiera is not None:
        return next((name for name, config in MODEL_CONFIGS.items() if config.encoder == "hiera"
                     and (config.encoder_embed_dim, config.encoder_stage_depths) == hiera), None)
    proj = state_dict.get("image_encoder.patch_embed.proj.weight")
    if proj is not None:
        blocks = {int(k.split(".")[2]) for k in state_dict
                  if k.startswith("image_encoder.blocks.")}
        depth = max(blocks) + 1 if blocks else 0
        for name, config in MODEL_CONFIGS.items():
            if config.encoder == "vit" and proj.shape[-1] == config.patch_size and \
                    (config.encoder_embed_dim, config.encoder_depth) == (proj.shape[0], depth):
                return name
        return None
    stages = _tinyvit_stages(state_dict)
    if stages is None:
        return None
    return next((name for name, config in MODEL_CONFIGS.items() if config.encoder == "tinyvit"
                 and (config.encoder_stage_dims, config.encoder_stage_depths) == stages), None)


def _tinyvit_stages(state: Mapping[str, torch.Tensor]
                    ) -> Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """(stage widths, stage depths) of a TinyViT image encoder's tensors, or None."""
    stem = state.get("image_encoder.patch_embed.seq.2.c.weight")
    if stem is None:
        return None
    blocks: Dict[int, set] = {}
    for key in state:
        parts = key.split(".")
        if key.startswith("image_encoder.layers.") and len(parts) > 4 and parts[3] == "blocks":
            blocks.setdefault(int(parts[2]), set()).add(int(parts[4]))
    dims = [int(stem.shape[0])]
    for stage in sorted(blocks)[1:]:
        norm = state.get(f"image_encoder.layers.{stage}.blocks.0.attn.norm.weight")
        if norm is None:
            return None
        dims.append(int(norm.shape[0]))
    return tuple(dims), tuple(len(blocks[i]) for i in sorted(blocks))


def in_sam_layout(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A SAM-family state dict under SAM's names: SAM 2's (``sam_mask_decoder.*``, ...) mapped
    (:mod:`samspt.training.sam2_checkpoint`), the others as they are."""
    return sam2_to_sam_keys(state) if is_sam2_layout(state) else dict(state)


def _is_sam_family(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("image_encoder.") for k in state) and \
        any(k.startswith(SAM_DECODER_PREFIX) for k in state)


def sam_to_spt_keys(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """SAM's ``mask_decoder.*`` copied to ``draft_decoder.*`` and ``refine_decoder.*``."""
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith(SAM_DECODER_PREFIX):
            rest = key[len(SAM_DECODER_PREFIX):]
            for prefix in SPT_DECODER_PREFIXES:
                out[prefix + rest] = value
        else:
            out[key] = value
    return out


def _describe(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}{f' and {len(keys) - limit} more' if len(keys) > limit else ''}"


def load_sam_weights(model: SptSam, checkpoint: Union[PathLike, Mapping[str, torch.Tensor]],
                     source: Optional[object] = None) -> None:
    """Load an official SAM-family checkpoint (SAM, MobileSAM, SAM 2.1's image path) into
    ``model``'s base weights, with a strict key check. ``source``: the name errors give a state
    dict passed in.

    LoRA tensors and relation scales keep their initial values (untrained SPT = SAM).
    """
    source = checkpoint if isinstance(checkpoint, (str, Path)) else (source or "state dict")
    state = read_state_dict(checkpoint) if isinstance(checkpoint, (str, Path)) else dict(checkpoint)
    state = in_sam_layout(state)
    found = infer_model_type(state)
    if found is not None and found != model.config.name:
        raise ModelTypeMismatchError(
            f"{source} is a {found} checkpoint, but the model is {model.config.name}; pass "
            f"--model-type {found} or the {model.config.name} checkpoint")
    if not _is_sam_family(state):
        raise CheckpointError(f"{source} is not a SAM checkpoint (no image_encoder.* and "
                              "mask_decoder.* weights); for SPT weights use --spt")
    mapped = sam_to_spt_keys(state)
    expected = {k: v for k, v in model.state_dict().items() if not is_spt_parameter(k)}
    missing = set(expected) - set(mapped)
    unexpected = set(mapped) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_describe(unexpected)}")
        raise CheckpointError(f"{source} does not match SAM {model.config.name}: "
                              + "; ".join(parts))
    _check_shapes(expected, mapped, source)
    model.load_state_dict(mapped, strict=False)


def _check_shapes(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                  source: object) -> None:
    wrong = [f"{k} {tuple(given[k].shape)} (model wants {tuple(v.shape)})"
             for k, v in expected.items() if k in given and given[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{source}: {len(wrong)} tensors have the wrong shape: "
                              f"{'; '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''}")


def build_model(model_type: Union[str, ModelConfig, None],
                sam_checkpoint: Optional[PathLike] = None,
                lora: Optional[LoraConfig] = LoraConfig()) -> SptSam:
    """An SPT model of ``model_type``, with SAM's weights if a checkpoint is given. ``model_type``
    None: the checkpoint's own (inferred from its tensors; vit_b if it matches none)."""
    state = read_state_dict(sam_checkpoint) if sam_checkpoint is not None else None
    if model_type is None:
        model_type = (state is not None and infer_model_type(state)) or "vit_b"
    config = get_config(model_type) if isinstance(model_type, str) else model_type
    model = SptSam(config, lora)
    if state is not None:
        load_sam_weights(model, state, source=sam_checkpoint)
    return model.eval()


# ---------------------------------------------------------------------------- SPT weights
@dataclass(frozen=True)
class SptWeightsInfo:
    """The metadata stored with SPT weights."""

    mode: str
    config: ModelConfig
    lora: LoraConfig
    samspt_version: str
    extra: Dict[str, str]

    def to_metadata(self) -> Dict[str, str]:
        meta = {"format": SPT_FORMAT, "format_version": SPT_FORMAT_VERSION, "mode": self.mode,
                "model_type": self.config.name, "model_config": self.config.to_json(),
                "lora_rank": str(self.lora.rank), "lora_alpha": repr(self.lora.alpha),
                "samspt_version": self.samspt_version}
        meta.update(self.extra)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: object) -> "SptWeightsInfo":
        if meta.get("format") != SPT_FORMAT:
            raise CheckpointError(f"{source} is not samspt weights (metadata format "
                                  f"{meta.get('format')!r}); a SAM checkpoint goes to --checkpoint, "
                                  "the paper authors' spt_vit_*.pth to samspt-convert-spt")
        if meta.get("format_version") != SPT_FORMAT_VERSION:
            raise CheckpointError(f"{source} has format version {meta.get('format_version')}; "
                                  f"this samspt reads version {SPT_FORMAT_VERSION}: upgrade samspt")
        try:
            config = ModelConfig.from_dict(json.loads(meta["model_config"]))
            lora = LoraConfig(int(meta["lora_rank"]), float(meta["lora_alpha"]))
            mode = meta["mode"]
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{source} has broken metadata ({exc})") from None
        if mode not in TRAIN_MODES:
            raise CheckpointError(f"{source}: unknown mode {mode!r} in metadata")
        known = set(cls("spt", config, lora, "", {}).to_metadata())
        extra = {k: v for k, v in meta.items() if k not in known}
        return cls(mode, config, lora, meta.get("samspt_version", "?"), extra)


def save_spt_weights(model: SptSam, path: PathLike, mode: str = "spt",
                     dtype: Optional[torch.dtype] = None,
                     extra: Optional[Dict[str, str]] = None) -> Path:
    """Write ``model``'s trained tensors (``spt``) or all of it (``full``) atomically."""
    if model.lora is None:
        raise CheckpointError("cannot save SPT weights of a merged model; save before merging")
    if mode not in TRAIN_MODES:
        raise CheckpointError(f"unknown mode {mode!r}; choose one of {TRAIN_MODES}")
    state = model.spt_state_dict() if mode == "spt" else model.state_dict()
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
               .detach().cpu().contiguous() for k, v in state.items()}
    info = SptWeightsInfo(mode, model.config, model.lora, samspt.__version__, dict(extra or {}))
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=info.to_metadata())
    return path


def _spt_weights_path(path: PathLike) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: SPT weights are .safetensors files; for the paper "
                              "authors' .pth releases run samspt-convert-spt first")
    return path


def read_spt_info(path: PathLike) -> SptWeightsInfo:
    """The metadata of a samspt ``.safetensors`` weights file (its header only)."""
    path = _spt_weights_path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it may be "
                              "truncated: write or download it again") from None
    return SptWeightsInfo.from_metadata(meta, path)


def read_spt_weights(path: PathLike) -> Tuple[StateDict, SptWeightsInfo]:
    """Tensors and metadata of a samspt ``.safetensors`` weights file."""
    path = _spt_weights_path(path)
    tensors = read_state_dict(path)     # a missing, empty or damaged file is named here first
    return tensors, read_spt_info(path)


def apply_spt_weights(model: SptSam, tensors: Mapping[str, torch.Tensor],
                      info: SptWeightsInfo, source: object = "SPT weights") -> None:
    """Load SPT tensors into ``model`` after checking they fit it; say what does not."""
    if info.config != model.config:
        diff = [k for k, v in info.config.to_dict().items() if model.config.to_dict()[k] != v]
        raise ModelTypeMismatchError(
            f"{source} were trained for {info.config.name}, the model is {model.config.name} "
            f"(differs in {', '.join(diff)}); build the model with --model-type {info.config.name}")
    if info.lora != model.lora:
        raise CheckpointError(f"{source} use LoRA rank {info.lora.rank}, alpha {info.lora.alpha}; "
                              f"the model has {model.lora}")
    state = model.state_dict()
    expected = model.spt_state_dict() if info.mode == "spt" else state
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or unexpected:
        parts = [f"missing {_describe(missing)}"] if missing else []
        parts += [f"unexpected {_describe(unexpected)}"] if unexpected else []
        raise CheckpointError(f"{source} do not fit the model: {'; '.join(parts)}")
    _check_shapes(expected, tensors, source)
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in tensors.items()}, strict=False)


def load_spt_model(spt_weights: PathLike, sam_checkpoint: Optional[PathLike] = None) -> SptSam:
    """The model SPT weights describe: ``full`` weights stand alone; ``spt`` weights need the
    SAM checkpoint they were trained from."""
    tensors, info = read_spt_weights(spt_weights)
    model = SptSam(info.config, info.lora)
    if sam_checkpoint is not None:
        load_sam_weights(model, sam_checkpoint)
    elif info.mode == "spt":
        raise CheckpointError(f"{spt_weights} hold only SPT's trained tensors; also give the SAM "
                              f"checkpoint they were trained on (--checkpoint sam_{info.config.name}"
                              "_*.pth)")
    apply_spt_weights(model, tensors, info, source=spt_weights)
    return model.eval()

