"""Errors a user can cause.

Every message names the file or field at fault and says how to fix it, so that a
researcher never has to read a traceback to learn what went wrong.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of every error caused by input: data, catalog, configuration, checkpoint."""


class CatalogError(WorkbenchError):
    """A catalog entry is malformed, unknown or cannot be resolved."""


class DataError(WorkbenchError):
    """A data file is unreadable, corrupt, truncated or fails validation."""


class ConfigError(WorkbenchError):
    """A configuration value, preset or method name is invalid."""


class CheckpointError(WorkbenchError):
    """A checkpoint is missing, corrupt or does not match the model."""


class DataWarning(UserWarning):
    """Data read on an assumption the reader had to make; the message names the setting that states it."""


class LearningWarning(UserWarning):
    """A training run ended without leaving its trivial floor; the message says which and by how much."""


class LeakError(ConfigError):
    """An evaluation would let a model see test data (a test subject's labels, or its windows unasked)."""
