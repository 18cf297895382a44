"""The one error hierarchy of samspt.

Every error a user can provoke is a :class:`SamsptError`. Messages say what was wrong, why it
matters and how to fix it. Subclasses also derive from the matching built-in exception
(``ValueError``, ``FileNotFoundError``, ...) so generic handlers keep working.
"""

from __future__ import annotations


class SamsptError(Exception):
    """Base class of every error samspt raises on purpose."""


class ConfigError(SamsptError, ValueError):
    """A configuration value (model configuration, LoRA settings, CLI flag) is invalid."""


class CheckpointError(SamsptError, ValueError):
    """A checkpoint file cannot be read, is not what it claims to be, or does not fit the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path does not exist."""


class ModelTypeMismatchError(CheckpointError):
    """A checkpoint belongs to another model type than the one asked for (e.g. vit_l for vit_b)."""


class InputError(SamsptError, ValueError):
    """An image or prompt handed to the model is malformed (wrong dtype, shape, NaN, ...)."""


class ModelFolderError(SamsptError):
    """An exported model folder is missing, incomplete, tampered with, or from another version."""


class BackendError(SamsptError, RuntimeError):
    """An inference backend (ONNX Runtime, TensorRT) is unavailable or failed."""
