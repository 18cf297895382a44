"""samspt.runtime: what production-line software embeds. Imports numpy, never torch.

It also owns the contracts every stage shares: tensor names (:mod:`.tensors`), pre- and
post-processing (:mod:`.preprocess`), and the errors (:mod:`.errors`).
"""

from samspt.runtime import tensors
from samspt.runtime.inspector import Inspector
from samspt.runtime.result import InspectionResult
from samspt.runtime.errors import (
    BackendError,
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    InputError,
    ModelFolderError,
    ModelTypeMismatchError,
    SamsptError,
)

__all__ = [
    "BackendError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "InputError",
    "InspectionResult",
    "Inspector",
    "ModelFolderError",
    "ModelTypeMismatchError",
    "SamsptError",
    "tensors",
]
