"""Learning From Randomness (Sui et al., ICLR 2024): frozen random projectors and DPP target selection."""

from workbench.models.lfr.dpp import (
    DPP_EPSILON,
    dpp_selection_mask,
    greedy_dpp_map,
    projector_similarity_kernel,
)
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
    "FlatProjector",
    "ProjectorInit",
    "ProjectorPool",
    "WindowProjector",
    "dpp_selection_mask",
    "greedy_dpp_map",
    "projector_similarity_kernel",
]
