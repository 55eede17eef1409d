"""scikit-learn estimators over windows: a trained run as a transformer, and pre-training as ``fit``.

:class:`Encoder` wraps a finished run folder (``workbench train`` or
:class:`~workbench.runs.TrainedFactory`) as a ``TransformerMixin``: windows ``(n, W, F)`` in,
embeddings ``(n, D)`` out, scaled by the run's own standardizer, exactly as
:func:`workbench.runs.embed_function` embeds them for the evaluation protocols. :class:`Pretrainer`
trains a family through the engine on the windows given to ``fit`` and then embeds like an
:class:`Encoder`. Both compose with scikit-learn's pipelines, cross-validation and ``clone``::

    make_pipeline(Encoder("runs/fewshot-abc"), StandardScaler(), LogisticRegression())

Conventions. ``X`` is always a 3-D float array of windows ``(n, W, F)``: ``W`` frames of ``F``
features (ROIs or voxels). ``n_features_in_`` is ``F``, the features per frame the run was
built for, and ``n_frames_in_`` is ``W``; another ``F`` or ``W`` in ``transform`` is a
:class:`WindowShapeError` (a ``DataError`` and a ``ValueError``, as scikit-learn expects). The
fitted state is the trained family (``method_``, a torch module) and its standardizer
(``standardizer_``, per-feature statistics at most): a pickle holds weights and summaries of the
training windows (the standardizer's statistics, a family's prepared buffers such as Brain-JEPA's
gradients), never the windows themselves. The weights stay on the device they were loaded to.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import DataError
from workbench.runs import embed_function, load_trained
from workbench.train import build_method, make_train_config, train

DEFAULT_BATCH = 256

WINDOW_INPUT_CHECKS: dict[str, str] = dict.fromkeys(
    (
        "check_complex_data",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimator_sparse_array",
        "check_estimator_sparse_matrix",
        "check_estimator_sparse_tag",
        "check_estimators_dtypes",
        "check_estimators_empty_data_messages",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
    ),
    "the check feeds 2-D (n_samples, n_features) data; window estimators take 3-D windows (n, W, F) "
    "and refuse anything else with a WindowShapeError",
)
"""scikit-learn checks that do not apply to window estimators (``check_estimator(expected_failed_checks=...)``).

Every one builds 2-D arrays (the sparse, complex, object, NaN and empty ones too). What they check
(pickling, idempotent fits, ``fit`` returning ``self``, ``n_features_in_``, order invariance,
unchanged parameters) is checked on windows in ``tests/test_sklearn_estimators.py``; cloning,
``get_params`` / ``set_params``, the unfitted error, ``repr`` and the tags pass the checks themselves.
"""


class WindowShapeError(DataError, ValueError):
    """Windows that are not ``(n, W, F)`` floats of the shape the encoder was built for."""


def as_windows(X: Any, n_frames: int | None = None, n_features: int | None = None) -> np.ndarray:
    """``X`` as float32 windows ``(n, W, F)``, checked against the encoder's ``W`` and ``F`` when given.

    Raises
    ------
    WindowShapeError
        ``X`` is not 3-D, holds no window, is not finite, or has another window length or feature count.
    """
    try:
        windows = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise WindowShapeError(f"X must be windows (n, W, F) of numbers: {exc}") from None
    if windows.ndim != 3:
        raise WindowShapeError(
            f"X has shape {windows.shape}; give windows (n, W, F): n windows of W frames of F features "
            "(e.g. WindowSet.get(indices))"
        )
    if windows.shape[0] == 0:
        raise WindowShapeError(f"X has shape {windows.shape}: no window; give at least one")
    if not np.isfinite(windows).all():
        raise WindowShapeError("X holds NaN or infinite values; clean or drop those windows first")
    expected = (n_frames, n_features)
    if n_frames is not None and windows.shape[1:] != expected:
        raise WindowShapeError(
            f"X has windows of {windows.shape[1]} frames x {windows.shape[2]} features, the encoder was built "
            f"for {n_frames} x {n_features}; cut windows of that shape"
        )
    return windows


class _Embedder(TransformerMixin, BaseEstimator):
    """``transform`` and the fitted state shared by :class:`Encoder` and :class:`Pretrainer`."""

    def _adopt(self, method: Any, standardizer: Any) -> None:
        self.method_, self.standardizer_ = method, standardizer
        self.n_frames_in_ = int(method.spec.n_timepoints)
        self.n_features_in_ = int(method.spec.n_features)

    def transform(self, X: Any) -> np.ndarray:
        """Embed windows ``(n, W, F)`` -> ``(n, D)`` float32 (eval mode, no gradient)."""
        check_is_fitted(self, "method_")
        windows = as_windows(X, self.n_frames_in_, self.n_features_in_)
        embed = embed_function(self.method_, self.standardizer_, batch_size=self.batch_size)
        return embed(windows)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


class Encoder(_Embedder):
    """A finished run folder as a scikit-learn transformer: windows in, embeddings out.

    Parameters
    ----------
    run_dir : str or Path
        A run folder holding ``checkpoint.pt`` (:func:`workbench.train.load_method`).
    device : str
        Where the family runs (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
    batch_size : int
        Windows embedded at once.

    Attributes
    ----------
    method_ : Method
        The trained family, loaded by ``fit`` (in eval mode); pickled with the estimator.
    standardizer_ : Standardizer
        The run's scaling of windows (fitted on its training windows).
    n_frames_in_, n_features_in_ : int
        Window length ``W`` and features per frame ``F`` of the run.

    Notes
    -----
    ``fit`` reads the checkpoint only; ``X`` and ``y`` are checked for shape and otherwise ignored
    (the run is already trained), so the encoder fits inside a pipeline or cross-validation
    without ever seeing test windows.
    """

    def __init__(self, run_dir: str | Path, device: str = "auto", batch_size: int = DEFAULT_BATCH):
        self.run_dir = run_dir
        self.device = device
        self.batch_size = batch_size

    def fit(self, X: Any, y: Any = None) -> Encoder:
        """Load the run from ``run_dir``; check that ``X`` holds windows of its shape."""
        method, standardizer, _ = load_trained(self.run_dir, device=self.device)
        self._adopt(method, standardizer)
        as_windows(X, self.n_frames_in_, self.n_features_in_)
        return self


class Pretrainer(_Embedder):
    """Pre-train a registered family on the windows given to ``fit``; then embed like :class:`Encoder`.

    Parameters
    ----------
    family : str
        A registered family (:func:`workbench.methods.available`), e.g. ``"fewshot"``.
    preset : str, optional
        One of the family's presets (e.g. ``"tiny"``).
    steps : int, optional
        Optimiser steps (the engine's ``max_steps``); ``None`` trains the family's epochs.
    seed : int
        Seeds the initialisation and the engine.
    device : str
        Where the family trains and embeds.
    settings : dict, optional
        Family config overrides (``key: value``), as ``TrainedFactory(overrides=...)``. A dict
        rather than ``**settings`` so that ``get_params`` / ``clone`` see them.
    train_settings : dict, optional
        Engine overrides (``batch_size``, ``lr``, ...; :class:`workbench.train.TrainConfig`).
    run_dir : str or Path, optional
        Where the run is written (checkpoint and history, started again by every ``fit``); by
        default a temporary folder removed after training, the weights kept in memory.
    batch_size : int
        Windows embedded at once by ``transform``.
    progress : bool
        The engine's progress bar.

    Attributes
    ----------
    method_, standardizer_, n_frames_in_, n_features_in_
        As :class:`Encoder`.
    result_ : dict
        ``{"steps": optimiser steps, "seconds": training time}``.

    Notes
    -----
    ``fit(X, y=None, groups=None)``: ``X`` windows ``(n, W, F)``; ``groups`` the subject of each
    window (each window becomes a run of its own of that subject, so subject-aware families such
    as ``fewshot`` see who is who); without ``groups`` every window is a subject of its own.
    ``y`` is ignored: pre-training reads windows only. Inside a pipeline, route subjects with
    ``sklearn.set_config(enable_metadata_routing=True)`` and ``Pretrainer(...).set_fit_request(groups=True)``.
    """

    def __init__(
        self,
        family: str,
        preset: str | None = None,
        steps: int | None = None,
        seed: int = 0,
        device: str = "auto",
        settings: dict[str, Any] | None = None,
        train_settings: dict[str, Any] | None = None,
        run_dir: str | Path | None = None,
        batch_size: int = DEFAULT_BATCH,
        progress: bool = False,
    ):
        self.family = family
        self.preset = preset
        self.steps = steps
        self.seed = seed
        self.device = device
        self.settings = settings
        self.train_settings = train_settings
        self.run_dir = run_dir
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X: Any, y: Any = None, groups: Any = None) -> Pretrainer:
        """Train the family on the windows ``X`` (subjects ``groups``) through the engine."""
        windows = window_set(as_windows(X), groups)
        method = _seeded_build(self.family, windows, self.preset, self.settings, self.seed)
        engine = {**(self.train_settings or {}), "max_steps": self.steps, "seed": self.seed, "device": self.device}
        config = make_train_config(method, **engine)
        if self.run_dir is None:
            with tempfile.TemporaryDirectory(prefix=f"{self.family}-") as folder:
                result = train(method, windows, config, folder, progress=self.progress, resume=False)
        else:
            result = train(method, windows, config, self.run_dir, progress=self.progress, resume=False)
        self._adopt(result.method, result.standardizer)
        self.result_ = {"steps": int(result.steps), "seconds": float(result.seconds)}
        return self


def _seeded_build(family: str, windows: WindowSet, preset: str | None, settings: dict | None, seed: int) -> Any:
    torch.manual_seed(seed)
    return build_method(family, windows.spec(), preset, settings)


def window_set(windows: np.ndarray, groups: Any = None) -> WindowSet:
    """Windows ``(n, W, F)`` as a :class:`WindowSet` the engine trains on, one run per window.

    Window ``i`` becomes the run ``(subject=groups[i], session=str(i))`` holding exactly its
    frames, so ``WindowSet`` cuts it back whole and in order; without ``groups`` each window is
    a subject of its own.

    Raises
    ------
    WindowShapeError
        ``groups`` does not give one subject per window.
    """
    n, length, _ = windows.shape
    subjects = np.arange(n) if groups is None else np.asarray(groups)
    if subjects.shape != (n,):
        raise WindowShapeError(f"groups has shape {subjects.shape}; give one subject per window, shape ({n},)")
    recordings = [Recording(str(s), str(i), windows[i], 1.0) for i, s in enumerate(subjects)]
    return WindowSet(recordings, length=length, stride=length, label_names=())


__all__ = [
    "DEFAULT_BATCH",
    "WINDOW_INPUT_CHECKS",
    "Encoder",
    "Pretrainer",
    "WindowShapeError",
    "as_windows",
    "window_set",
]
