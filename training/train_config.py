"""The training configuration: a YAML file, strictly checked, with ``--set key=value`` overrides.

Unknown keys are errors (a typo must not silently train with a default). The resolved
configuration is saved in the run folder, so every run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union, get_args, \
    get_origin, get_type_hints

import yaml

from samspt.runtime.errors import ConfigError
from samspt.training.data.augment import AugmentSettings
from samspt.training.data.prompt_settings import PromptSettings
from samspt.training.data.view_samples import ViewSampling
from samspt.training.loss_weights import LossWeights

T = TypeVar("T")


@dataclass
class ModelSection:
    type: str = "small"  # a named configuration: vit_b, vit_l, vit_h, small, tiny
    mode: str = "spt"  # spt: LoRA + relation scales only; full: everything (from scratch)
    sam_checkpoint: Optional[str] = None  # SAM weights the model starts from
    init_weights: Optional[str] = None  # SPT/full weights (.safetensors) to start from
    lora_rank: int = 8
    lora_alpha: float = 1.0
    # Overrides of the named configuration's fields (ModelConfig, training/modeling/config.py), e.g.
    # {image_size: 256, view_min_side: 128}: how `samspt-train --data` applies the view settings
    # it derives from the training masks. Unknown field names are errors.
    config: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    root: str = "../shared/datasets/mtd"
    layout: str = "auto"
    # How mask files become records where the reader offers a choice (read_dataset's
    # mask_records: "class", one record per class id of a class-id mask); passed only to
    # readers that take it.
    mask_records: str = "class"
    val_fraction: float = 0.2
    # Images held out of training, validation and every choice made on validation (kept
    # weights, gates): the finish stage measures the exported folder on them, figures of
    # images it never saw (0: none; the split's module doc says how they are drawn).
    test_fraction: float = 0.0
    split_seed: int = 0
    prompts_per_image: int = PromptSettings.prompts_per_image
    box_mode: str = PromptSettings.box_mode  # whole: one box around the mask; region: per part
    box_jitter: float = PromptSettings.box_jitter  # box sides move by up to this share of its size
    point_prob: float = PromptSettings.point_prob  # share of prompts given as points, not boxes
    negative_prob: float = PromptSettings.negative_prob  # prompts on clean areas (empty target)
    defect_free_fraction: float = 0.3  # defect-free images per defective image in an epoch
    augment: bool = True
    # Photometric augmentation strengths (training/data/augment.py; flips and quarter turns
    # come with augment true): the image's brightness shift and contrast factor (fractions),
    # a gamma in exp(+-gamma), Gaussian noise of up to this fraction of 255.
    brightness: float = AugmentSettings.brightness
    contrast: float = AugmentSettings.contrast
    gamma: float = AugmentSettings.gamma
    noise: float = AugmentSettings.noise
    # Copy-paste (training/data/copy_paste.py): the probability that a defect-free training
    # image drawn carries a defect pasted from a defective training image (0: off).
    copy_paste: float = 0.0
    workers: int = 0
    val_limit: int = 0  # validate on at most this many images per class (0: all)
    # Models on views (view_samples.py): shares of tight / loose / scan-window samples of
    # defective images (the rest: clean areas), and of scan windows on defect-free images;
    # defaults from the dataclass they feed (one home: ViewSampling).
    view_tight: float = ViewSampling.tight
    view_loose: float = ViewSampling.loose
    view_scan: float = ViewSampling.scan
    view_free_scan: float = ViewSampling.free_scan
    # Prompts per training view: the view's own, and K - 1 more boxes on the same view (its
    # other defects, jittered or loose boxes, clean areas) answered from the one encoder run.
    prompts_per_view: int = ViewSampling.prompts_per_view
    # Whether scan windows' box prompts (their own extent) train the masks; false: scan windows
    # train the scan head only (model.config.scan_head), and the masks learn boxes.
    scan_prompts: bool = ViewSampling.scan_prompts


@dataclass
class OptimSection:
    epochs: int = 10
    max_steps: int = 0  # optimizer steps; 0: epochs decide
    batch_size: int = 2  # images per step and process
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | step | constant
    milestones: List[int] = field(default_factory=list)  # step schedule
    gamma: float = 0.1
    grad_clip: float = 1.0  # max gradient norm; 0: off
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16
    seed: int = 0
    deterministic: bool = True
    channels_last: bool = False  # conv trunks in channels-last memory format (faster on CPUs)
    threads: int = 0  # torch's CPU threads for this process (0: torch's default, one per core)
    # > 0: validate, keep and export an exponential moving average of the weights (timm's
    # ModelEmaV3 with its warm-up: the decay grows with the step, 1 - (1 + step)^-2/3, up to
    # this value); 0: the weights as trained.
    ema: float = 0.0


@dataclass
class LogSection:
    log_every: int = 10  # steps between metric lines
    val_every: int = 0  # steps between validations; 0: once per epoch
    checkpoint_every: int = 200  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2
    overlay_images: int = 8  # validation images in the overlay grid
    # best.safetensors keeps the latest validated weights whose final mIoU is within this of
    # the best validation so far (0: the best validation's weights themselves)
    keep_margin: float = 0.0


@dataclass
class BudgetSection:
    """A wall-clock budget instead of a step count (training/schedule.py, TimeBudget)."""

    minutes: float = 0.0  # the whole run, the finish stage included; 0: steps decide
    finish_share: float = 0.12  # least share kept for the finish stage (export, evaluation)
    warmup_share: float = 0.03  # share of the training time the learning rate warms up
    evaluations: int = 8  # validations spread over the training time, the last at its end


@dataclass
class TrainConfig:
    name: str = "spt"
    out_dir: str = "runs"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossWeights = field(default_factory=LossWeights)
    log: LogSection = field(default_factory=LogSection)
    budget: BudgetSection = field(default_factory=BudgetSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _build(cls: Type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(f'{where}{k}' for k in unknown)}; known keys here: "
                          f"{', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{where}{name}.")
        else:
            values[name] = _coerce(value, hint, f"{where}{name}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value]
    if origin is tuple:  # kept as a list, which YAML writes and reads back alike
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return [_coerce(v, args[0], where) for v in value]
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return [_coerce(v, a, where) for v, a in zip(value, args)]
    if origin in (dict, Dict):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, str):
        try:  # PyYAML reads 3e-4 (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float:
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is str and isinstance(value, bool):
        raise ConfigError(f"{where} must be a string, got {value!r}: YAML reads off/on/yes/no as "
                          f"booleans, so quote the value (e.g. '{'on' if value else 'off'}')")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def parse_overrides(pairs: Sequence[str]) -> Dict[str, Any]:
    """``["optim.lr=3e-4", "model.type=vit_b"]`` -> nested dict; values parsed as YAML."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value (e.g. optim.lr=3e-4), got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: cannot parse the value ({exc})") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def merge_mappings(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key; ``base`` is left unchanged."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_dict(data: Dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """A configuration from a mapping (e.g. a recipe's :meth:`TrainConfig.to_dict`) updated by
    ``overrides``, checked as a YAML file is."""
    config = _build(TrainConfig, merge_mappings(data, parse_overrides(overrides)), "")
    _validate(config)
    return config


def load_train_config(path: Optional[Union[str, Path]] = None,
                      overrides: Sequence[str] = ()) -> TrainConfig:
    """The defaults, updated by the YAML file at ``path``, updated by ``overrides``."""
    data: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    data = merge_mappings(data, parse_overrides(overrides))
    config = _build(TrainConfig, data, "")
    _validate(config)
    return config


def model_config_overrides(overrides: Dict[str, Any],
                           where: str = "model.config") -> Dict[str, Any]:
    """``model.config`` checked against ModelConfig's fields (training/modeling/config.py) and
    typed: a ConfigError names an unknown field and the known ones. Tuples come back as tuples."""
    from samspt.training.modeling.config import ModelConfig

    hints = get_type_hints(ModelConfig)
    known = sorted(f.name for f in dataclasses.fields(ModelConfig) if f.name != "name")
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"unknown model configuration field{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(f'{where}.{k}' for k in unknown)}; known fields: "
                          f"{', '.join(known)}")
    out = {}
    for name, value in overrides.items():
        coerced = _coerce(value, hints[name], f"{where}.{name}")
        out[name] = tuple(coerced) if isinstance(coerced, list) else coerced
    return out


def _validate(config: TrainConfig) -> None:
    typed = model_config_overrides(config.model.config)
    config.model.config = {k: list(v) if isinstance(v, tuple) else v for k, v in typed.items()}
    checks: List[Tuple[bool, str]] = [
        (config.model.mode in ("spt", "full"), f"model.mode must be spt or full, "
                                               f"got {config.model.mode!r}"),
        (0 < config.data.val_fraction < 1, "data.val_fraction must be between 0 and 1"),
        (0 <= config.data.test_fraction < 1
         and config.data.val_fraction + config.data.test_fraction < 1,
         "data.test_fraction must be in [0, 1) and leave images to train (data.val_fraction + "
         "data.test_fraction < 1)"),
        (config.data.prompts_per_image >= 1, "data.prompts_per_image must be >= 1"),
        (config.data.box_mode in ("whole", "region"), "data.box_mode must be whole or region"),
        (config.optim.batch_size >= 1, "optim.batch_size must be >= 1"),
        (config.optim.grad_accum >= 1, "optim.grad_accum must be >= 1"),
        (config.optim.lr > 0, "optim.lr must be > 0"),
        (config.optim.epochs >= 1 or config.optim.max_steps >= 1,
         "give optim.epochs or optim.max_steps"),
        (config.optim.amp in ("auto", "off", "bf16", "fp16"),
         "optim.amp must be auto, off, bf16 or fp16"),
        (config.log.checkpoint_every >= 1, "log.checkpoint_every must be >= 1"),
        (0 <= config.log.keep_margin < 1, "log.keep_margin must be in [0, 1): the final mIoU "
                                          "below the best validation at which later weights "
                                          "are still kept"),
        (config.optim.threads >= 0, "optim.threads must be >= 0 (0: torch's default)"),
        (0 <= config.optim.ema < 1, "optim.ema must be in [0, 1) (0: off; e.g. 0.999)"),
        (config.budget.minutes >= 0, "budget.minutes must be >= 0 (0: steps decide)"),
        (0 <= config.budget.finish_share < 1, "budget.finish_share must be in [0, 1)"),
        (0 <= config.budget.warmup_share < 1, "budget.warmup_share must be in [0, 1)"),
        (config.budget.evaluations >= 1, "budget.evaluations must be >= 1"),
        (0 <= config.loss.defect_share < 1, "loss.defect_share must be in [0, 1): 0 turns "
                                            "class balancing off, 0.5 balances"),
        (0 <= config.loss.empty_mask <= 1, "loss.empty_mask must be in [0, 1]: the weight of "
                                           "the mask loss of boxes on clean areas (1: full)"),
        (config.loss.focus_margin >= 0 and config.loss.outside >= 0,
         "loss.focus_margin and loss.outside must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
