"""The one training engine, for any family.

==================  ==============================================================
``engine``          :func:`train`: one run, top to bottom, with the families' hooks
``settings``        :class:`TrainConfig`, device, optimiser, schedules, determinism
``checkpoint``      read, rebuild (:func:`load_method`) and refuse foreign checkpoints
``monitor``         the learning diagnostics on a fixed held-out batch, against each floor
``tensorboard``     optional TensorBoard scalars, projector and hyper-parameters (``log``)
==================  ==============================================================
"""

from workbench.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    build_method,
    load_method,
    read_checkpoint,
)
from workbench.train.engine import HISTORY_NAME, PREPARE_WINDOWS, TrainResult, prepare_method, train
from workbench.train.settings import (
    OPTIMIZERS,
    TrainConfig,
    cosine_schedule,
    deterministic_algorithms,
    make_optimizer,
    make_train_config,
    resolve_device,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "HISTORY_NAME",
    "OPTIMIZERS",
    "PREPARE_WINDOWS",
    "TrainConfig",
    "TrainResult",
    "build_method",
    "cosine_schedule",
    "deterministic_algorithms",
    "load_method",
    "make_optimizer",
    "make_train_config",
    "prepare_method",
    "read_checkpoint",
    "resolve_device",
    "train",
]
