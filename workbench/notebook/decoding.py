"""What ``06_decoding`` calls: its tasks, the families per fold, the label-efficiency curves.

Every task reads one label of one dataset from windows chosen for that label
(:data:`DECODING_TASKS`): event labels from short windows inside the event with the labels moved
later for the haemodynamic delay, run-level states from long windows. The plan's families are
pre-trained per fold on the training subjects' windows without labels (:class:`TrainedFactory`,
cached), read by the inductive linear probe (and the attentive one for token families), and
fine-tuned end to end (:mod:`workbench.evaluation.finetune`), all over the labelled-set sizes of
:mod:`workbench.evaluation.label_efficiency`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError
from workbench.evaluation.finetune import FinetuneSettings
from workbench.notebook import BUDGET_EPOCHS, TrainingPlan
from workbench.runs import (
    TrainedFactory,
    encoder_factory,
    token_family,
    untrained_factory,
    untrained_finetuner,
    window_overrides,
)

EVENT_BASELINES = ["mean-activation", "raw-window", "permuted-labels"]
DECODING_TASKS: dict[str, dict[str, Any]] = {
    "heatpain/period": {"window": 6, "stride": 1, "label_shift": 2, "baselines": EVENT_BASELINES},
    "heatpain/temperature": {"window": 4, "stride": 1, "label_shift": 3, "baselines": EVENT_BASELINES},
    "heatpain/rating": {"window": 4, "stride": 1, "label_shift": 3, "baselines": EVENT_BASELINES},
    "heatpain/regulation": {"window": 40, "stride": 20},
    "haxby-slice/category": {
        "window": 6,
        "stride": 1,
        "grouping": "run",
        "exclude": ["rest"],
        "baselines": EVENT_BASELINES,
    },
}
"""Each task's windows, chosen per label by a grid search of a strong standard pipeline (``docs/evaluation.md``).

Event labels are read from short windows inside the event. ``heatpain``'s labels are moved
``label_shift`` frames later for the haemodynamic delay: heat against rating from 6-frame windows
2 frames (4 s) later (mean activation 0.90 balanced accuracy, 0.83 without the delay; stride 1, as
a stride of 2 keeps only the events of one onset parity and swings between 0.83 and 0.89), temperature
and rating from 4-frame windows 3 frames (6 s) later. ``haxby-slice``'s per-volume categories read
best as they are (6-volume windows: 0.75 leave-one-run-out; moving them 1 or 2 volumes later lowers
it). The regulation instruction holds for a whole run, so it is read from 40-frame windows, where
correlations are estimable. The event tasks leave out the ``fc-edges`` baseline: correlations over
a few frames read heat against rating at 0.61 where mean activation reads 0.89, at the cost of
7,021 features. A task's settings are keywords of :func:`workbench.evaluation.decoding.decode`.
"""

TRANSFER_TASKS: dict[str, dict[str, Any]] = {
    "heatpain/period, run 07 (pre-trained on run 03)": {
        "dataset": "heatpain",
        "label": "period",
        "sessions": ["run-07"],
        "pretrain_on": {"dataset": "heatpain", "sessions": ["run-03"]},
        **DECODING_TASKS["heatpain/period"],
    },
}
"""Transfer: pre-training on one dataset (or run) of an atlas, probes and fine-tuning on another."""


def decoding_factories(
    plan: TrainingPlan,
    window: int,
    run_root: str | Path | None = None,
    attentive: bool = True,
    progress: bool = True,
    steps: int | None = None,
) -> dict[str, Any]:
    """The plan's families for decoding windows of ``window`` frames, each fitted per fold.

    Untrained twins always; trained families when ``run_root`` is given (one training per fold,
    cached there, exactly ``steps`` optimiser steps when given instead of the plan's budgets).
    The windows are standardised per run by the protocol, so the families read them as they are
    (``normalization="none"``); a token family adds ``<name> · attentive`` rows that share its
    trainings (:func:`workbench.runs.window_overrides` shrinks a patch that leaves fewer than
    three time patches).
    """
    out: dict[str, Any] = {}
    for name in plan.methods:
        preset = plan.presets.get(name)
        overrides = window_overrides(name, preset, window)
        readouts = [("", False)] + ([(" · attentive", True)] if attentive and token_family(name) else [])
        for suffix, tokens in readouts:
            if run_root is not None:
                out[name + suffix] = _trained(plan, name, window, run_root, progress, steps, tokens)
            out[f"{name}-untrained{suffix}"] = untrained_factory(
                name, preset, overrides, seed=plan.seed, device=plan.device, normalization="none", tokens=tokens
            )
    return out


def _trained(
    plan: TrainingPlan,
    name: str,
    window: int,
    run_root: str | Path,
    progress: bool,
    steps: int | None,
    tokens: bool = False,
) -> TrainedFactory:
    """A family pre-trained per fold; with a step budget its diagnostics are recorded before and after only."""
    cap = {} if steps is None else {"max_steps": steps, "epochs": BUDGET_EPOCHS, "monitor_every": steps}
    preset = plan.presets.get(name)
    return encoder_factory(
        name,
        preset=preset,
        overrides=window_overrides(name, preset, window),
        train_overrides={**plan.engine(name), **cap, "normalization": "none"},
        run_root=Path(run_root),
        device=plan.device,
        seed=plan.seed,
        progress=progress,
        tokens=tokens,
    )


def decoding_finetuners(
    plan: TrainingPlan,
    window: int,
    run_root: str | Path | None = None,
    progress: bool = True,
    steps: int | None = None,
    settings: FinetuneSettings | None = None,
    untrained: bool = True,
) -> dict[str, Any]:
    """The plan's families fine-tuned end to end per fold and draw (``<name> · finetune`` rows).

    A pre-trained family (``run_root`` given) fine-tunes the very run its frozen readouts use; with
    ``untrained`` its twin is trained from random weights on the same labelled windows
    (``<name>-untrained · finetune``): the same network, supervised only, which is what
    pre-training must beat.
    """
    out: dict[str, Any] = {}
    for name in plan.methods:
        preset = plan.presets.get(name)
        if run_root is not None:
            out[f"{name} · finetune"] = _trained(plan, name, window, run_root, progress, steps).finetuner(settings)
        if untrained:
            out[f"{name}-untrained · finetune"] = untrained_finetuner(
                name,
                preset,
                window_overrides(name, preset, window),
                seed=plan.seed,
                device=plan.device,
                normalization="none",
                settings=settings,
            )
    return out


def decoding_tasks(
    heatpain_labels: list[str],
    haxby_labels: list[str],
    trained: Sequence[str] = ("heatpain", "haxby-slice"),
    haxby_folds: int | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    transfer: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The tasks of ``06_decoding``: ``heatpain`` labels by subject, ``haxby-slice`` labels by run.

    Each task takes its windows from :data:`DECODING_TASKS` (a label without an entry: windows of
    6 frames, stride 2), updated by ``settings[key]``; ``haxby-slice`` holds out
    ``haxby_folds`` folds of whole runs (default: one per run). A task is ``"trained"`` when its
    dataset is in ``trained`` (the plan's families are then also pre-trained on each training
    fold). ``transfer`` adds tasks of :data:`TRANSFER_TASKS` by name.
    """
    unknown = sorted(set(trained) - {"heatpain", "haxby-slice"})
    if unknown:
        raise ConfigError(f"trained={list(trained)}: unknown dataset(s) {unknown}; choose from heatpain, haxby-slice")
    settings = dict(settings or {})
    known = {f"heatpain/{x}" for x in heatpain_labels} | {f"haxby-slice/{x}" for x in haxby_labels}
    stray = sorted(set(settings) - known - set(transfer))
    if stray:
        raise ConfigError(
            f"decoding_settings names tasks {stray} that this report does not run; it runs {sorted(known)}"
        )
    missing = sorted(set(transfer) - set(TRANSFER_TASKS))
    if missing:
        raise ConfigError(f"transfer: unknown task(s) {missing}; choose from {sorted(TRANSFER_TASKS)}")
    tasks = []
    for dataset, labels in (("heatpain", heatpain_labels), ("haxby-slice", haxby_labels)):
        for label in labels:
            key = f"{dataset}/{label}"
            task = {"window": 6, "stride": 2} | DECODING_TASKS.get(key, {}) | settings.get(key, {})
            if dataset == "haxby-slice":
                task |= {"grouping": "run"} | ({"n_folds": haxby_folds} if haxby_folds else {})
            tasks.append({"key": key, "dataset": dataset, "label": label, "trained": dataset in trained, **task})
    for key in transfer:
        tasks.append({"key": key, "trained": True, **TRANSFER_TASKS[key], **settings.get(key, {})})
    return tasks


def decoding_plan(plan: TrainingPlan, methods: Sequence[str] = ()) -> TrainingPlan:
    """The training plan restricted to the families ``methods`` decodes (empty: every family of the plan)."""
    unknown = sorted(set(methods) - set(plan.methods))
    if unknown:
        raise ConfigError(f"decoding_methods: {unknown} are not in the training plan's methods {plan.methods}")
    return plan.model_copy(update={"methods": [m for m in plan.methods if m in methods]}) if methods else plan


def _runs(recordings: list, sessions: Sequence[str] | None, what: str) -> list:
    if sessions is None:
        return recordings
    kept = [r for r in recordings if r.session in set(sessions)]
    if not kept:
        have = sorted({r.session for r in recordings})
        raise ConfigError(f"{what}: no run of sessions {list(sessions)}; the dataset has {have}")
    return kept


def decoding_metrics(
    tasks: list[dict[str, Any]],
    plan: TrainingPlan,
    run_root: str | Path | None = None,
    attentive: bool = True,
    folds: int | None = None,
    progress: bool = True,
    steps: int | None = None,
    sizes: dict[str, Sequence[int]] | None = None,
    n_draws: int = 5,
    finetune: bool = False,
    finetune_draws: int = 1,
    finetune_settings: FinetuneSettings | None = None,
    finetune_untrained: bool = True,
    pretraining: str = "inductive",
) -> tuple[dict[str, Any], dict[str, dict]]:
    """Every decoding task of ``06_decoding``: baselines, untrained and (with ``run_root``) pre-trained families.

    Parameters
    ----------
    tasks : list of dict
        :func:`decoding_tasks`: each ``{"key", "dataset", "label", "window"}`` plus keywords of
        :func:`workbench.evaluation.decoding.decode`, ``"trained"`` (default True: ``False``
        keeps the task to the untrained twins even with a ``run_root``), ``"sessions"`` (decode
        only these runs) and ``"pretrain_on"`` (``{"dataset", "sessions"}``: transfer).
    folds : int, optional
        Folds of the tasks grouped by subject (by run: one per run).
    steps : int, optional
        Exact optimiser steps of every per-fold pre-training (default: the plan's budgets).
    sizes : dict, optional
        Labelled-set sizes by grouping (``{"subject": [1, 4], "run": [1, 4]}``; default: only
        all labels); ``"all"`` is always added.
    n_draws, finetune_draws : int
        Random draws per size for the probes and for fine-tuning.
    finetune : bool
        Add the ``· finetune`` rows (:func:`decoding_finetuners`).
    finetune_untrained : bool
        With ``finetune``, also train each untrained twin from scratch on the labels.
    pretraining : {"inductive", "transductive"}
        See :mod:`workbench.evaluation.label_efficiency`.

    Returns
    -------
    metrics, predictions
        ``{"seed", "training", "tasks": {key: results}}`` and the out-of-fold predictions per task.
        A family that cannot be fitted on a task (e.g. ``fewshot`` needs several subjects;
        ``haxby-slice`` has one) is left out of that task with a note in its ``meta["notes"]``.
    """
    from workbench.data.catalog import load_recordings
    from workbench.evaluation.decoding import decode

    metrics: dict[str, Any] = {
        "seed": plan.seed,
        "training": plan.model_dump(),
        "steps": steps,
        "pretraining": pretraining,
        "tasks": {},
    }
    predictions: dict[str, dict] = {}
    loaded: dict[str, list] = {}

    def recordings_of(dataset: str) -> list:
        if dataset not in loaded:
            loaded[dataset] = load_recordings(dataset, progress=progress)
        return loaded[dataset]

    for task in tasks:
        task = dict(task)
        dataset, label, window = task.pop("dataset"), task.pop("label"), task.pop("window")
        key = task.pop("key", f"{dataset}/{label}")
        runs = run_root if task.pop("trained", True) else None
        recordings = _runs(recordings_of(dataset), task.pop("sessions", None), key)
        source = task.pop("pretrain_on", None)
        if source is not None:
            task["pretrain_recordings"] = _runs(recordings_of(source["dataset"]), source.get("sessions"), key)
        grouping = task.setdefault("grouping", "subject")
        task.setdefault("n_folds", folds if grouping == "subject" else None)
        factories = decoding_factories(plan, window, runs, attentive, progress, steps)
        tuners = (
            decoding_finetuners(plan, window, runs, progress, steps, finetune_settings, finetune_untrained)
            if finetune
            else {}
        )
        predictions[key] = {}
        result = decode(
            recordings,
            label,
            window,
            factories,
            seed=plan.seed,
            predictions_out=predictions[key],
            on_error="note",
            sizes=(sizes or {}).get(grouping, ()),
            n_draws=n_draws,
            finetuners=tuners,
            finetune_draws=finetune_draws,
            pretraining=pretraining,
            progress=progress,
            **task,
        )
        result["meta"]["dataset"] = dataset
        if source is not None:
            result["meta"]["pretrained_on"] = source["dataset"] + (
                f" sessions {', '.join(source['sessions'])}" if source.get("sessions") else ""
            )
        # the optimiser steps each per-fold training actually took (a readout sharing a run counts once)
        result["meta"]["training_steps"] = {
            name: [r.steps for r in factory.results]
            for name, factory in factories.items()
            if isinstance(factory, TrainedFactory) and factory.results and " · " not in name
        }
        metrics["tasks"][key] = result
    return metrics, predictions


__all__ = [
    "DECODING_TASKS",
    "TRANSFER_TASKS",
    "decoding_factories",
    "decoding_finetuners",
    "decoding_metrics",
    "decoding_plan",
    "decoding_tasks",
]
