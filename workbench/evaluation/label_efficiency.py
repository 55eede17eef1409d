"""What pre-training buys: few labelled subjects, the pre-training pool, and the leak guard.

Self-supervised pre-training is judged by what it saves in labels (Brain-JEPA, Dong et al.,
NeurIPS 2024, reports few-label probes; the y-Aware paper, Dufumier et al., MICCAI 2021, accuracy
as the labelled set shrinks). The decoding protocol (:func:`workbench.evaluation.decoding.decode`)
therefore fits every probe on ``n`` labelled training groups — subjects, or runs when a fold
holds out runs — drawn at random from the fold's training groups, ``n`` in :data:`SIZES`, over
several draws, beside the same probe on every labelled training window (``"all"``).

Three pools per fold, checked by :func:`check_no_leak`:

* **test**: the held-out groups; their windows are scored, never fitted.
* **probe**: the ``n`` drawn groups whose labelled windows fit the probe (or fine-tune).
* **pre-training**: the runs an encoder is fitted on, without labels. ``"inductive"`` (the
  default): the fold's training groups — every one of them, labelled or not, which is what
  pre-training on far more unlabelled than labelled data means here; with a transfer source
  (another dataset of the same atlas), that source's runs, less any run of a test subject.
  ``"transductive"``: the test groups' unlabelled windows too (never their labels), a mode a
  caller asks for by name and every table states.

Draws are a pure function of ``(seed, fold, n, draw)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from workbench.errors import ConfigError, DataError, LeakError

SIZES = {"subject": (1, 2, 4, 8, 16, "all"), "run": (1, 2, 4, 8, "all")}
"""Default labelled-set sizes of the curves, by what a fold holds out."""
PRETRAINING = ("inductive", "transductive")
_ATTEMPTS = 50


def check_sizes(sizes: Iterable[int | str]) -> tuple[int | str, ...]:
    """Validate labelled-set sizes: positive whole numbers and ``"all"``, which is always added last."""
    out: list[int | str] = []
    for n in sizes:
        if n == "all":
            continue
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"sizes: {n!r} is not a number of labelled groups; give whole numbers >= 1 and 'all'")
        if int(n) not in out:
            out.append(int(n))
    return (*sorted(out), "all")


def check_pretraining(mode: str) -> str:
    """``mode`` if it is one of :data:`PRETRAINING`, else a ConfigError."""
    if mode not in PRETRAINING:
        raise ConfigError(
            f"pretraining={mode!r}: choose 'inductive' (pre-training on the training groups only) or "
            "'transductive' (it may also see the test groups' unlabelled windows, and the tables say so)"
        )
    return mode


def check_no_leak(
    pretraining_keys: Iterable[str], probe_keys: Iterable[str], test_keys: Iterable[str], pretraining: str
) -> None:
    """Refuse pools that let a model see test data.

    Parameters
    ----------
    pretraining_keys, probe_keys, test_keys : iterable of str
        The groups (subjects, or ``subject/run``) of each pool of one fold.
    pretraining : {"inductive", "transductive"}
        ``"transductive"`` allows pre-training on test groups (their windows carry no label
        there); nothing allows a test group in the probe's pool.

    Raises
    ------
    LeakError
        A test group in the probe's pool, or in the pre-training pool without ``"transductive"``.
    """
    test = set(test_keys)
    probed = sorted(test & set(probe_keys))
    if probed:
        raise LeakError(f"the probe would be fitted on labelled windows of the test groups {probed[:5]}")
    seen = sorted(test & set(pretraining_keys))
    if seen and check_pretraining(pretraining) != "transductive":
        raise LeakError(
            f"pre-training would see the test groups {seen[:5]}; pass pretraining='transductive' to allow their "
            "unlabelled windows (the tables then say so), or pre-train on other groups"
        )


def draw_groups(
    candidates: Sequence[str],
    n: int,
    n_draws: int,
    seed: int,
    fold: int,
    has_classes: Callable[[list[str]], bool] | None = None,
) -> list[list[str]]:
    """``n_draws`` random sets of ``n`` groups out of a fold's training groups.

    Parameters
    ----------
    candidates : sequence of str
        The fold's labelled training groups.
    n : int
        Groups per draw (smaller than ``len(candidates)``; ``"all"`` is not drawn).
    n_draws : int
        Draws; each uses ``numpy.random.default_rng([seed, fold, n, draw, attempt])``.
    has_classes : callable, optional
        ``has_classes(groups) -> bool``: a draw whose labelled windows hold fewer than two classes
        is drawn again (up to 50 attempts, then a DataError naming the fold and ``n``).

    Returns
    -------
    list of list of str
        Sorted group names of every draw.
    """
    if not 1 <= n < len(candidates):
        raise ConfigError(f"n={n} labelled groups: a fold has {len(candidates)} training groups; draw fewer")
    pool = sorted(candidates)
    draws = []
    for d in range(n_draws):
        for attempt in range(_ATTEMPTS):
            rng = np.random.default_rng([seed, fold, n, d, attempt])
            chosen = sorted(rng.choice(pool, size=n, replace=False).tolist())
            if has_classes is None or has_classes(chosen):
                draws.append(chosen)
                break
        else:
            raise DataError(f"fold {fold}: no draw of {n} groups out of {len(pool)} holds two classes; use a larger n")
    return draws


def usable_sizes(sizes: Sequence[int | str], n_train_groups: Sequence[int]) -> tuple[list[int | str], list[str]]:
    """The sizes smaller than every fold's number of training groups, and a note for each one dropped."""
    smallest = min(n_train_groups)
    kept = [n for n in sizes if n == "all" or n < smallest]
    notes = [
        f"n = {n} left out of the curves: a fold has only {smallest} training groups" for n in sizes if n not in kept
    ]
    return kept, notes


HEADLINE_METRIC = {"categorical": "balanced_accuracy", "continuous": "r2"}
FEATURE_BASELINES = ("mean-activation", "fc-edges", "raw-window")


def matching_sizes(results: dict[str, Any]) -> dict[str, Any]:
    """For each encoder, the smallest ``n`` at which its best readout matches the best baseline on all labels.

    "Best readout" is the highest mean over an encoder's rows (``name``, ``name · attentive``,
    ``name · finetune``, ...) at each ``n``; "matches" means a mean at least the best feature
    baseline's mean on every labelled training window less that baseline's 95 % CI half-width
    (the encoder is not measurably worse than it).

    Parameters
    ----------
    results : dict
        :func:`workbench.evaluation.decoding.decode` output with ``curves``.

    Returns
    -------
    dict
        ``{"metric", "baseline", "target", "encoders": {name: {"n": int | "all" | None, "best": {n: mean}}}}``;
        ``n`` is ``None`` ("never") when no size reaches the target.
    """
    kind = results["meta"]["kind"]
    metric = HEADLINE_METRIC[kind]
    curves = results.get("curves", {})
    sizes = results["meta"].get("sizes", ["all"])
    baselines = {name: curves[name]["all"][metric] for name in FEATURE_BASELINES if name in curves}
    if not baselines:
        raise DataError("the results hold no feature baseline to compare the encoders with")
    best = max(baselines, key=lambda name: baselines[name]["mean"])
    target = baselines[best]["mean"] - baselines[best]["ci"]
    groups: dict[str, list[str]] = {}
    for name in curves:
        base = name.split(" · ")[0]
        if base not in FEATURE_BASELINES and base != "permuted-labels":
            groups.setdefault(base, []).append(name)
    encoders = {}
    for base, rows in groups.items():
        by_size = {n: max(curves[r][n][metric]["mean"] for r in rows if n in curves[r]) for n in sizes}
        reached = [n for n in sizes if by_size[n] >= target]
        encoders[base] = {"n": reached[0] if reached else None, "best": by_size}
    return {"metric": metric, "baseline": best, "target": target, "encoders": encoders}


__all__ = [
    "FEATURE_BASELINES",
    "HEADLINE_METRIC",
    "PRETRAINING",
    "SIZES",
    "check_no_leak",
    "check_pretraining",
    "check_sizes",
    "draw_groups",
    "matching_sizes",
    "usable_sizes",
]
