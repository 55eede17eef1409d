"""Learning From Randomness (Sui et al., ICLR 2024): the family, frozen random projectors, DPP target selection.

==================  ==============================================================
``family``          the ``lfr`` family (:class:`LFR`), its config and predictors
``projectors``      the pool of frozen random projectors (default, Beta, dropout inits)
``dpp``             fast greedy DPP selection of diverse targets, as a mask over the pool
==================  ==============================================================
"""

from workbench.models.lfr.dpp import (
    DPP_EPSILON,
    dpp_selection_mask,
    greedy_dpp_map,
    projector_similarity_kernel,
)
from workbench.models.lfr.family import LFR, LFRConfig, predictor
from workbench.models.lfr.projectors import (
    PROJECTOR_INITS,
    FlatProjector,
    ProjectorInit,
    ProjectorPool,
    WindowProjector,
)

__all__ = [
    "DPP_EPSILON",
    "PROJECTOR_INITS",
    "LFR",
    "FlatProjector",
    "LFRConfig",
    "ProjectorInit",
    "ProjectorPool",
    "WindowProjector",
    "dpp_selection_mask",
    "greedy_dpp_map",
    "predictor",
    "projector_similarity_kernel",
]
