"""Glue between the engine and the evaluation: train-on-demand encoders with cached runs.

The evaluation protocols take *encoder factories*: callables that receive the training
windows of a protocol (all subjects' first halves for closed-set, the training subjects
of a split for open-set) and return an embedding function over raw windows. The
factories here train a registered family on exactly those windows and cache the run
under ``run_root/<method>-<digest>``, where the digest covers the training windows, the
method settings and the seed, so the training notebook and the few-shot notebook share
checkpoints and a finished run is never trained twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from workbench.data.recording import Recording
from workbench.data.windows import Standardizer, WindowSet
from workbench.errors import ConfigError
from workbench.methods import get_method
from workbench.models.base import Method
from workbench.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainResult,
    build_method,
    load_method,
    make_train_config,
    prepare_method,
    resolve_device,
    train,
)

EmbedFn = Callable[[np.ndarray], np.ndarray]
EncoderFactory = Callable[[WindowSet], EmbedFn]


def training_windows(recordings: list[Recording], window: int, protocol: str = "closed") -> WindowSet:
    """The windows an encoder trains on under a protocol (DESIGN.md, "Evaluation").

    Parameters
    ----------
    recordings : list of Recording
        ROI series ``(T, R)``.
    window : int
        Window length ``W`` in TRs.
    protocol : {"closed", "all"}
        ``"closed"``: the first half of every run with stride ``W // 4`` (the support
        pool), so no query window of the second half is ever seen. ``"all"``: every
        window of the runs with stride ``W // 4`` (open-set training subjects).
    """
    if protocol not in {"closed", "all"}:
        raise ConfigError(f"protocol {protocol!r} is not 'closed' or 'all'")
    part = "first" if protocol == "closed" else "all"
    return WindowSet(recordings, length=window, stride=max(1, window // 4), part=part)


def windows_digest(windows: WindowSet) -> str:
    """A short digest of which frames of which runs a WindowSet covers."""
    h = hashlib.sha256()
    for rec in windows.recordings:
        h.update(f"{rec.subject}/{rec.session}/{rec.data.shape}".encode())
    h.update(np.ascontiguousarray(windows.spans()).tobytes())
    h.update(json.dumps(list(windows.subjects)).encode())
    return h.hexdigest()[:12]


def embed_function(method: Method, standardizer: Standardizer, batch_size: int = 256) -> EmbedFn:
    """Wrap a trained method as ``(n, W, R) float32 -> (n, D) float32`` (eval mode, no grad)."""
    device = next(method.parameters()).device

    def embed(windows: np.ndarray) -> np.ndarray:
        method.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(windows), batch_size):
                x = torch.from_numpy(standardizer.transform(windows[i : i + batch_size])).to(device)
                out.append(method.embed(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return embed


class TrainedFactory:
    """An encoder factory that trains ``method`` on the protocol's training windows.

    Parameters
    ----------
    method : str
        A registered family (see :func:`workbench.methods.available`).
    preset : str, optional
        A preset of that family.
    overrides, train_overrides : dict, optional
        Config and engine overrides (``key: value``).
    run_root : path
        Folder under which each training gets its own cached run folder.
    device, seed, progress
        Passed to the engine.

    Attributes
    ----------
    results : list of TrainResult
        One per training this factory ran or reused, in call order.
    """

    def __init__(self, method: str, preset: str | None = None, overrides: dict[str, Any] | None = None,
                 train_overrides: dict[str, Any] | None = None, run_root: str | Path = "runs",
                 device: str = "auto", seed: int = 0, progress: bool = True) -> None:
        self.method, self.preset = method, preset
        self.overrides = dict(overrides or {})
        self.train_overrides = {"device": device, "seed": seed, **(train_overrides or {})}
        self.run_root, self.seed, self.progress = Path(run_root), seed, progress
        self.results: list[TrainResult] = []
        # fail early on a typo, before any training starts
        cls = get_method(method)
        cls.make_config(preset, **self.overrides)
        make_train_config(cls, **self.train_overrides)

    def run_dir(self, windows: WindowSet) -> Path:
        """The cache folder of a training on ``windows`` with these settings.

        The digest covers the windows, the *resolved* family config (so a changed default or
        preset never reuses a stale run), the family's engine defaults and the overrides.
        """
        cls = get_method(self.method)
        resolved = dataclasses.asdict(cls.make_config(self.preset, **self.overrides))
        engine = {k: v for k, v in self.train_overrides.items() if k != "device"}
        settings = json.dumps([resolved, cls.train_defaults, engine], sort_keys=True, default=str)
        digest = hashlib.sha256((windows_digest(windows) + settings).encode()).hexdigest()[:10]
        return self.run_root / f"{self.method}-{digest}"

    def fit(self, windows: WindowSet) -> TrainResult:
        """Train (or reuse a finished run) on ``windows``."""
        torch.manual_seed(self.seed)
        method = build_method(self.method, windows.recordings[0].n_rois, windows.length, self.preset, self.overrides)
        config = make_train_config(method, **self.train_overrides)
        result = train(method, windows, config, self.run_dir(windows), progress=self.progress)
        self.results.append(result)
        return result

    def __call__(self, windows: WindowSet) -> EmbedFn:
        result = self.fit(windows)
        return embed_function(result.method, result.standardizer)


def encoder_factory(method: str, **kwargs: Any) -> TrainedFactory:
    """Shorthand for :class:`TrainedFactory` (same arguments)."""
    return TrainedFactory(method, **kwargs)


def untrained_factory(method: str, preset: str | None = None, overrides: dict[str, Any] | None = None,
                      seed: int = 0, device: str = "auto") -> EncoderFactory:
    """The same encoder, randomly initialised from ``seed`` and never trained.

    Data-dependent buffers (``Method.prepare``) and the standardizer are still fitted
    on the training windows, so the only difference from a trained encoder is training.
    """

    def factory(windows: WindowSet) -> EmbedFn:
        torch.manual_seed(seed)
        m = build_method(method, windows.recordings[0].n_rois, windows.length, preset, overrides)
        standardizer = Standardizer(make_train_config(m).window_norm).fit(windows)
        prepare_method(m, windows, standardizer)
        m.to(resolve_device(device)).eval()
        return embed_function(m, standardizer)

    return factory


def load_trained(run_dir: str | Path, device: str = "auto") -> tuple[Method, Standardizer, dict[str, Any]]:
    """Load a finished run folder (checkpoint + standardizer)."""
    return load_method(Path(run_dir) / CHECKPOINT_NAME, device=device)


RUN_INFO = "run.json"


def split_settings(method: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route flat ``key: value`` settings to the family's config or the engine's.

    A key of the family's config dataclass goes to the family, a key of
    :class:`~workbench.train.TrainConfig` to the engine; any other key is a ConfigError
    that lists both sets of valid keys.
    """
    family = {f.name for f in dataclasses.fields(get_method(method).Config)}
    engine = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - family - engine)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown} for {method!r}; {method} keys: {sorted(family)}; "
            f"training keys: {sorted(engine)}"
        )
    return ({k: v for k, v in values.items() if k in family},
            {k: v for k, v in values.items() if k not in family})


def train_on_dataset(method: str, dataset: str, out: str | Path, window: int = 40,
                     preset: str | None = None, settings: dict[str, Any] | None = None,
                     protocol: str = "closed", progress: bool = True) -> TrainResult:
    """Train a family on a catalog dataset (``workbench train``); resumes a run in ``out``.

    Parameters
    ----------
    method : str
        A registered family.
    dataset : str
        A catalog entry of ROI time series.
    out : path
        Run folder: ``checkpoint.pt``, ``history.json`` and ``run.json`` (dataset, window,
        protocol, preset, settings), which :func:`evaluate_run` reads.
    window : int
        Window length in TRs.
    preset : str, optional
        A preset of the family.
    settings : dict, optional
        Flat overrides of the family's config and the engine's (see :func:`split_settings`).
    protocol : {"closed", "all"}
        Which windows train (see :func:`training_windows`): ``"closed"`` keeps every second
        half unseen, so the same dataset can be evaluated closed-set afterwards.
    """
    from workbench.data.catalog import load_recordings

    overrides, train_overrides = split_settings(method, dict(settings or {}))
    cls = get_method(method)
    cls.make_config(preset, **overrides)  # a typo fails before data are read
    recordings = load_recordings(dataset, progress=progress)
    windows = training_windows(recordings, window, protocol)
    torch.manual_seed(int(train_overrides.get("seed", 0)))
    model = build_method(method, windows.n_rois, window, preset, overrides)
    config = make_train_config(model, **train_overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"method": method, "dataset": dataset, "window": window, "protocol": protocol,
            "preset": preset, "settings": dict(settings or {}), "subjects": list(windows.subjects)}
    (out / RUN_INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return train(model, windows, config, out, progress=progress)


def evaluate_run(run: str | Path, dataset: str, out: str | Path, k_shots: tuple[int, ...] = (1, 2, 4, 8, 16),
                 n_episodes: int = 600, seed: int = 0, device: str = "auto",
                 progress: bool = True) -> tuple[dict[str, Any], Path, Path]:
    """Closed-set identification of a trained run beside the baselines (``workbench evaluate``).

    The window length is the one the run was trained on. The same encoder untrained is
    evaluated too. A run trained with ``protocol="all"`` has seen the query halves of its
    own subjects, so evaluating it on a dataset sharing those subjects is refused.

    Returns
    -------
    results, metrics_path, figure_path
        The closed-set results and the written ``metrics.json`` and ``accuracy_vs_k.png``.
    """
    import matplotlib.pyplot  # no backend is forced: a headless machine falls back to Agg itself

    from workbench.data.catalog import load_recordings
    from workbench.evaluation import closed_set, save_metrics
    from workbench.viz.fewshot import plot_k_curves, results_frame

    run = Path(run)
    run_dir = run if run.is_dir() else run.parent
    model, standardizer, state = load_method(run, device=device)
    info_path = run_dir / RUN_INFO
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    recordings = load_recordings(dataset, progress=progress)
    subjects = {r.subject for r in recordings}
    seen = subjects & set(state["subjects"])
    if info.get("protocol") == "all" and seen:
        raise ConfigError(
            f"{run_dir} was trained on every window of subjects {sorted(seen)[:5]}..., including the "
            f"query halves of {dataset!r}; retrain with protocol 'closed' or evaluate on other subjects"
        )
    if recordings[0].n_rois != model.n_rois:
        raise ConfigError(f"{run_dir} was trained on {model.n_rois} ROIs but {dataset!r} has {recordings[0].n_rois}")
    factories = {
        model.name: lambda train_windows: embed_function(model, standardizer),
        f"{model.name}-untrained": untrained_factory(model.name, overrides=state["method_config"],
                                                      seed=state["train_config"]["seed"], device=device),
    }
    results = closed_set(recordings, model.n_timepoints, factories, k_shots=k_shots,
                         n_episodes=n_episodes, seed=seed, progress=progress)
    results["meta"]["run"] = str(run_dir)
    results["meta"]["dataset"] = dataset
    out = Path(out)
    metrics_path = save_metrics(results, out / "metrics.json")
    figure = plot_k_curves(results_frame([results]))
    figure_path = out / "accuracy_vs_k.png"
    figure.savefig(figure_path, dpi=120, bbox_inches="tight")
    matplotlib.pyplot.close(figure)
    return results, metrics_path, figure_path


__all__ = [
    "EmbedFn",
    "EncoderFactory",
    "TrainedFactory",
    "embed_function",
    "encoder_factory",
    "evaluate_run",
    "load_trained",
    "split_settings",
    "train_on_dataset",
    "training_windows",
    "untrained_factory",
    "windows_digest",
]
