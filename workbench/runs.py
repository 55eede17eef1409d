"""Encoders on demand: train a family on a protocol's training windows, cache the run, embed.

The evaluation protocols take *encoder factories* (:data:`~workbench.evaluation.EncoderFactory`):
callables that receive the training windows of a protocol (all subjects' first halves for
closed-set, the training subjects of a split for open-set) and return an embedding function
over raw windows. :class:`TrainedFactory` trains a registered family on exactly those windows
and caches the run under ``run_root/<family>-<digest>``, where the digest covers the content of
the training windows, the resolved family config, the engine settings and the seed; so the
training, embedding and evaluation notebooks share checkpoints, a finished run is never
trained twice, and changed data never reuse a stale checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.cache import release_pages
from workbench.data.normalize import Standardizer
from workbench.data.recording import Recording
from workbench.data.volume_runs import prepare_volume_runs
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, WorkbenchError
from workbench.evaluation import EmbedFn, EncoderFactory, split_runs, support_stride
from workbench.evaluation.decoding import Finetuner, FoldTuner
from workbench.evaluation.finetune import FinetuneSettings, finetune_predictions
from workbench.methods import available, get_method
from workbench.models.base import Method
from workbench.train import (
    TrainResult,
    build_method,
    load_method,
    make_train_config,
    prepare_method,
    resolve_device,
    train,
)

PROTOCOLS = ("closed", "all", "first-run")
_DIGEST_CHUNK_FRAMES = 4096


def training_windows(
    recordings: Sequence[Recording], window: int, protocol: str = "closed", label_names: Sequence[str] | None = None
) -> WindowSet:
    """The windows an encoder trains on under a protocol.

    Parameters
    ----------
    recordings : sequence of Recording
        Runs of ``(T, F)`` frames.
    window : int
        Window length ``W`` in frames.
    protocol : {"closed", "all", "first-run"}
        ``"closed"``: the first half of every run with the support stride ``W // 4``, so no query
        window of the second half is ever seen (within-run identification). ``"all"``: every
        window of the runs with the same stride (open-set training subjects). ``"first-run"``:
        every window of the first run of each subject with two runs or more, the support runs of
        cross-run identification (:func:`workbench.evaluation.split_runs`), so no frame of a query
        run is ever seen.
    label_names : sequence of str, optional
        Frame labels the windows carry (default: every shared column).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol {protocol!r} is not one of {list(PROTOCOLS)}")
    if protocol == "first-run":
        recordings, _ = split_runs(recordings)
    part = "first" if protocol == "closed" else "all"
    return WindowSet(list(recordings), length=window, stride=support_stride(window), part=part, label_names=label_names)


def held_out_windows(windows: WindowSet) -> WindowSet | None:
    """Windows of the same runs that ``windows`` never covers, for the learning diagnostics.

    For first-half training windows (the closed-set protocol): the second halves, stride ``W``,
    with the same subjects and label columns. ``None`` when the training windows cover whole
    runs (nothing of those runs is held out) or the second halves hold no window.
    """
    if windows.part != "first":
        return None
    try:
        return WindowSet(
            windows.recordings,
            windows.length,
            windows.length,
            part="second",
            split=windows.split,
            subjects=list(windows.subjects),
            label_names=windows.label_columns,
        )
    except WorkbenchError:
        return None


def as_frames(recordings: Sequence[Recording]) -> list[Recording]:
    """Recordings as ``(T, F)`` frames, the input of every window and every family.

    ROI series pass through unchanged. 4-D volume runs ``(X, Y, Z, T)`` and volume frames that were
    not scaled yet (a ``grid`` in their metadata, no ``scaling``; e.g. ``haxby-slice``) go through
    :func:`~workbench.data.volume_runs.prepare_volume_runs` with its defaults — masked, scaled per
    run (each run alone) and flattened — so their frames carry the grid and mask a volume family
    (``recvae``) decodes back to.
    """
    if any(rec.data.ndim == 4 or ("grid" in rec.meta and "scaling" not in rec.meta) for rec in recordings):
        return prepare_volume_runs(recordings)
    return list(recordings)


def content_digest(recording: Recording) -> str:
    """blake2b of a run's dtype, shape and values (kept in ``meta`` so it is computed once).

    A memory-mapped run is read in chunks whose pages are released after each, so hashing a
    streamed cohort never makes it resident.
    """
    if "content_digest" not in recording.meta:
        data = recording.data
        digest = hashlib.blake2b(f"{data.dtype.str}{data.shape}".encode(), digest_size=16)
        for lo in range(0, max(data.shape[0], 1), _DIGEST_CHUNK_FRAMES):
            digest.update(np.ascontiguousarray(data[lo : lo + _DIGEST_CHUNK_FRAMES]).tobytes())
            release_pages(data)
        recording.meta["content_digest"] = digest.hexdigest()
    return recording.meta["content_digest"]


def windows_digest(windows: WindowSet) -> str:
    """A digest of what a WindowSet holds: the runs' contents, the windows' spans, subjects and labels."""
    h = hashlib.sha256()
    for rec in windows.recordings:
        h.update(f"{rec.subject}/{rec.session}/{content_digest(rec)}".encode())
    h.update(np.ascontiguousarray(windows.spans()).tobytes())
    h.update(json.dumps(list(windows.subjects)).encode())
    if windows.y is not None:
        h.update(json.dumps([dataclasses.asdict(c) for c in windows.label_columns]).encode())
        h.update(np.ascontiguousarray(windows.y).tobytes())
    return h.hexdigest()[:16]


def check_readout(method: str, readout: str) -> str:
    """``readout`` if family ``method`` offers it (``Method.readouts``), else a ConfigError listing them."""
    offered = get_method(method).readouts
    if readout not in offered:
        raise ConfigError(f"{method!r} has no readout {readout!r}; it offers {list(offered)}")
    return readout


def embed_function(
    method: Method, standardizer: Standardizer, batch_size: int = 256, tokens: bool = False, readout: str = "mean"
) -> EmbedFn:
    """Wrap a trained family as ``(n, W, F) float32 -> (n, D) float32`` (eval mode, no grad).

    ``readout`` picks how a family with a token grid pools it (``Method.readouts``; e.g. jepa's
    ``"roi"``); ``"mean"`` is every family's ``embed(x)``. With ``tokens=True`` the function
    returns the family's token grid ``(n, N, D)`` (:meth:`~workbench.models.base.Method.tokens`)
    instead, for the attentive probe.
    """
    device = next(method.parameters()).device
    check_readout(method.name, readout)

    def pooled(x: torch.Tensor) -> torch.Tensor:
        if tokens:
            return method.tokens(x)
        return method.embed(x) if readout == "mean" else method.embed(x, readout=readout)

    def embed(windows: np.ndarray) -> np.ndarray:
        method.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(windows), batch_size):
                x = torch.from_numpy(standardizer.transform(windows[i : i + batch_size])).to(device)
                out.append(pooled(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return embed


def check_methods(
    methods: Sequence[str], presets: dict[str, str] | None = None, steps: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Check families, presets and step caps against the registry.

    Returns
    -------
    dict
        ``{family: {"preset": str | None, "max_steps": int | None}}`` in the given order.

    Raises
    ------
    ConfigError
        No family, an unknown family or preset (with the valid names), a cap below 1.
    """
    presets, steps = dict(presets or {}), dict(steps or {})
    if not methods:
        raise ConfigError(f"no family named; choose among {available()}")
    for name in [*methods, *presets, *steps]:
        get_method(name)  # ConfigError listing the registered families
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(methods):
        preset = presets.get(name)
        if preset is not None and preset not in get_method(name).presets:
            raise ConfigError(f"{name!r} has no preset {preset!r}; choose one of {sorted(get_method(name).presets)}")
        cap = steps.get(name)
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(f"steps of {name!r} must be a whole number >= 1, got {cap!r}")
        out[name] = {"preset": preset, "max_steps": cap}
    return out


def token_family(method: str) -> bool:
    """Whether a registered family gives a token grid (:meth:`~workbench.models.base.Method.tokens`)."""
    return get_method(method).tokens is not Method.tokens


def window_overrides(method: str, preset: str | None, window: int) -> dict[str, Any]:
    """Config overrides that let a family read windows of ``window`` frames.

    A patch-based family (a ``patch_size`` setting) gets at least three time patches: its patch
    shrinks to ``window // 3`` frames when its preset's patch is too long. With two patches the
    Brain-JEPA masks have no time edge and a Cross-ROI block of width 0 in three size draws
    out of four, so a run of a few hundred steps meets a batch with no valid mask; with three,
    a valid mask is found in the first draws. Other families need nothing.
    """
    config = get_method(method).make_config(preset)
    patch = getattr(config, "patch_size", None)
    if patch is None or window // patch >= 3:
        return {}
    if window < 3:
        raise ConfigError(f"{method}: a window of {window} frame(s) cannot hold three time patches; use W >= 3")
    return {"patch_size": window // 3}


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
    tokens : bool
        The embedding function returns the token grid ``(n, N, D)`` (token families only); the
        run folder is the same as without, so one training serves both readouts.
    readout : str
        How the embedding pools (``Method.readouts``, e.g. jepa's ``"roi"``). It is not part of the
        run's cache key either, so factories that differ only in readout share one trained run.

    Attributes
    ----------
    results : list of TrainResult
        One per training this factory ran or reused, in call order.
    """

    def __init__(
        self,
        method: str,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        train_overrides: dict[str, Any] | None = None,
        run_root: str | Path = "runs",
        device: str = "auto",
        seed: int = 0,
        progress: bool = True,
        tokens: bool = False,
        readout: str = "mean",
    ) -> None:
        self.method, self.preset, self.tokens = method, preset, tokens
        self.readout = check_readout(method, readout)
        self.overrides = dict(overrides or {})
        self.train_overrides = {"device": device, "seed": seed, **(train_overrides or {})}
        self.run_root, self.seed, self.progress = Path(run_root), seed, progress
        self.results: list[TrainResult] = []
        # fail early on a typo, before any training starts
        cls = get_method(method)
        cls.make_config(preset, **self.overrides)
        make_train_config(cls, **self.train_overrides)

    def _settings(self) -> str:
        cls = get_method(self.method)
        resolved = dataclasses.asdict(cls.make_config(self.preset, **self.overrides))
        engine = {k: v for k, v in self.train_overrides.items() if k not in ("device", "log")}  # not the result
        return json.dumps([resolved, cls.train_defaults, engine], sort_keys=True, default=str)

    def run_dir(self, windows: WindowSet) -> Path:
        """The cache folder of a training on ``windows`` with these settings.

        The digest covers the windows' content (:func:`windows_digest`), the *resolved* family
        config (so a changed default or preset never reuses a stale run), the family's engine
        defaults and the overrides.
        """
        digest = hashlib.sha256((windows_digest(windows) + self._settings()).encode()).hexdigest()[:10]
        return self.run_root / f"{self.method}-{digest}"

    def fit(self, windows: WindowSet, monitor: WindowSet | None = None) -> TrainResult:
        """Train (or reuse a finished run) on ``windows``.

        ``monitor``: held-out windows for the learning diagnostics (:func:`workbench.train.train`;
        default: :func:`held_out_windows` of ``windows``); they change no weight, so they are not
        part of the run's cache key.
        """
        monitor = monitor if monitor is not None else held_out_windows(windows)
        torch.manual_seed(self.seed)
        method = build_method(self.method, windows.spec(), self.preset, self.overrides)
        config = make_train_config(method, **self.train_overrides)
        provenance = {
            "protocol": {"first": "closed", "all": "all"}.get(windows.part, windows.part),
            "windows": windows_digest(windows),
            "subjects": list(windows.subjects),
        }
        result = train(
            method,
            windows,
            config,
            self.run_dir(windows),
            progress=self.progress,
            provenance=provenance,
            monitor=monitor,
        )
        self.results.append(result)
        return result

    def __call__(self, windows: WindowSet) -> EmbedFn:
        result = self.fit(windows)
        return embed_function(result.method, result.standardizer, tokens=self.tokens, readout=self.readout)

    def finetuner(self, settings: FinetuneSettings | None = None) -> Finetuner:
        """A :data:`~workbench.evaluation.decoding.Finetuner` of the run this factory trains per fold.

        The pre-training is the same cached run the frozen readouts use; each call of the returned
        tuner fine-tunes a copy of it on one draw of labelled windows.
        """
        return _finetuner(lambda windows: _pair(self.fit(windows)), settings, self.train_overrides["device"])


def encoder_factory(method: str, **kwargs: Any) -> TrainedFactory:
    """Shorthand for :class:`TrainedFactory` (same arguments)."""
    return TrainedFactory(method, **kwargs)


def _pair(result: TrainResult) -> tuple[Method, Standardizer]:
    return result.method, result.standardizer


def _finetuner(build: Any, settings: FinetuneSettings | None, device: str) -> Finetuner:
    """Per fold: ``build(windows) -> (method, standardizer)``, then a tuner that fine-tunes copies of it."""
    settings = settings or FinetuneSettings()

    def per_fold(windows: WindowSet) -> FoldTuner:
        method, standardizer = build(windows)

        def tune(train_x, train_y, train_groups, test_x, kind, seed):
            return finetune_predictions(
                method,
                standardizer,
                train_x,
                train_y,
                train_groups,
                test_x,
                kind,
                settings=settings,
                seed=seed,
                device=resolve_device(device),
            )

        return tune

    return per_fold


def fixed_finetuner(
    method: Method, standardizer: Standardizer, settings: FinetuneSettings | None = None, device: str = "auto"
) -> Finetuner:
    """Fine-tune one given (already trained) encoder in every fold: a run that is not refitted per fold."""
    return _finetuner(lambda windows: (method, standardizer), settings, device)


def untrained_method(
    method: str,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    normalization: str | None = None,
) -> Any:
    """A builder ``windows -> (method, standardizer)``: the family randomly initialised from ``seed``.

    Data-dependent buffers (``Method.prepare``) and the standardizer are fitted on ``windows``;
    ``normalization`` replaces the family's scaling of windows (default: its engine default).
    """

    def build(windows: WindowSet) -> tuple[Method, Standardizer]:
        torch.manual_seed(seed)
        m = build_method(method, windows.spec(), preset, overrides)
        engine = {} if normalization is None else {"normalization": normalization}
        standardizer = Standardizer(make_train_config(m, **engine).normalization).fit(windows)
        prepare_method(m, windows, standardizer)
        return m.to(resolve_device(device)).eval(), standardizer

    return build


def untrained_finetuner(
    method: str,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    normalization: str | None = None,
    settings: FinetuneSettings | None = None,
) -> Finetuner:
    """The family trained from random weights on the labelled windows alone: supervised, no pre-training."""
    build = untrained_method(method, preset, overrides, seed, device, normalization)
    return _finetuner(build, settings, device)


def untrained_factory(
    method: str,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    normalization: str | None = None,
    tokens: bool = False,
    readout: str = "mean",
) -> EncoderFactory:
    """The same encoder, randomly initialised from ``seed`` and never trained.

    Data-dependent buffers (``Method.prepare``) and the standardizer are still fitted on the
    training windows, so the only difference from a trained encoder is training.
    ``normalization`` replaces the family's scaling of windows (default: its engine default);
    ``tokens=True`` returns the token grid ``(n, N, D)`` instead of the embedding; ``readout`` as
    :class:`TrainedFactory`.
    """
    check_readout(method, readout)
    build = untrained_method(method, preset, overrides, seed, device, normalization)

    def factory(windows: WindowSet) -> EmbedFn:
        return embed_function(*build(windows), tokens=tokens, readout=readout)

    return factory


def load_trained(run_dir: str | Path, device: str = "auto") -> tuple[Method, Standardizer, dict[str, Any]]:
    """Load a finished run folder (checkpoint + standardizer)."""
    return load_method(run_dir, device=device)


__all__ = [
    "PROTOCOLS",
    "held_out_windows",
    "TrainedFactory",
    "check_methods",
    "check_readout",
    "content_digest",
    "embed_function",
    "encoder_factory",
    "fixed_finetuner",
    "load_trained",
    "token_family",
    "training_windows",
    "untrained_factory",
    "untrained_finetuner",
    "untrained_method",
    "window_overrides",
    "windows_digest",
]
