"""Synthetic cohorts with known ground truth, for tests, demonstrations and scale runs.

Four generators, each a pure function of its parameters and an explicit ``seed``:

``fingerprints``
    ROI series ``(T, R)`` whose covariance is a shared group covariance plus a
    subject-specific low-rank part, so that functional connectivity (FC) identifies
    the subject (Finn et al., 2015, Nat. Neurosci. 18:1664) to a degree set by
    ``difficulty``.
``continuous_y``
    ROI series whose covariance moves smoothly between two patterns as a function of
    a continuous, age-like label ``y`` — the setting of y-Aware contrastive learning
    (Dufumier et al., MICCAI 2021).
``volumes``
    4D volumes ``(X, Y, Z, T)`` driven by a linear latent dynamic
    ``h_t = F h_{t-1} + noise`` seen through fixed smooth spatial maps, plus a
    per-subject offset map — the generative model of the recurrent fMRI VAE.
``planted``
    ROI series ``x_t[r] = a_r s_t + noise`` with one AR(1) source ``s`` per run seen
    through fixed loadings ``a``: every window's content is known, so a self-supervised
    model can be asked whether its predictions carry it (Brain-JEPA's window-specific
    content, Dong et al., NeurIPS 2024).

Each subject draws from its own child of ``numpy.random.SeedSequence(seed)``, so a
subject's data do not depend on how many subjects are generated and only one
subject's arrays are in memory while it is being built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from workbench.data.recording import Recording
from workbench.errors import ConfigError

# Rank of the group covariance factor and of each subject's perturbation (ROI series).
_GROUP_RANK = 5
_SUBJECT_RANK = 3
# Lag-1 autocorrelation of the latent ROI signal; resting-state BOLD sampled at
# TR ~0.7-2 s has lag-1 autocorrelations of roughly 0.5-0.9.
_AR_COEF = 0.6
# Standard deviation of white measurement noise added to each ROI (signal variance ~2).
_ROI_NOISE_STD = 0.5
# Range of the age-like label of ``continuous_y`` (years).
_Y_RANGE = (20.0, 80.0)
# Rank and loading scale of the two covariance patterns of ``continuous_y``.
_PATTERN_RANK = 4
_PATTERN_SCALE = 1.5
# Spectral radius of the latent transition matrix F of ``volumes`` (< 1: stable).
_SPECTRAL_RADIUS = 0.9
# Latent innovation std, spatial smoothing (voxels), offset-map scale and voxel noise std.
_LATENT_NOISE_STD = 0.5
_MAP_SMOOTHING = 2.0
_OFFSET_SCALE = 1.0
_VOXEL_NOISE_STD = 0.1
# Loadings a_r of ``planted`` are uniform in this range: positive, so that every ROI pair is
# positively coupled and the FC affinity graph of Brain-JEPA's gradients stays connected.
_LOADING_RANGE = (0.5, 1.5)


def _check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ConfigError for a value no generator can use, naming the parameter."""
    where = f"synthetic generator {name!r}"
    for key, value in params.items():
        if key == "seed" or key.startswith("n_") or key == "latent_dim":
            minimum = 0 if key == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ConfigError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
        elif key in ("tr", "difficulty"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
            if key == "tr" and not value > 0:
                raise ConfigError(f"{where}: tr must be > 0 seconds, got {value!r}")
            if key == "difficulty" and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{where}: difficulty must lie in [0, 1], got {value!r}")
        elif key in ("ar_coef", "noise_std"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
            if key == "ar_coef" and not -1.0 < value < 1.0:
                raise ConfigError(f"{where}: ar_coef must lie in (-1, 1) for a stationary source, got {value!r}")
            if key == "noise_std" and not value >= 0.0:
                raise ConfigError(f"{where}: noise_std must be >= 0, got {value!r}")
        elif key == "grid":
            ok = isinstance(value, (list, tuple)) and len(value) == 3
            if not ok or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1 for g in value):
                raise ConfigError(f"{where}: grid must be three positive integers (X, Y, Z), got {value!r}")


def _subject_id(index: int) -> str:
    return f"synth-{index + 1:03d}"


def _ar1(innovations: np.ndarray, coef: float) -> np.ndarray:
    """Stationary AR(1) filter along time (axis 0) with unchanged marginal covariance.

    ``x_0 = e_0`` and ``x_t = coef * x_{t-1} + sqrt(1 - coef**2) * e_t``: if the
    innovations ``e`` have covariance ``S`` then so does every ``x_t``.
    """
    gain = np.sqrt(1.0 - coef**2)
    initial = (1.0 - gain) * innovations[:1]  # makes x_0 = e_0 (direct form II state)
    from scipy.signal import lfilter  # imported here: scipy.signal costs a second at start-up

    filtered, _ = lfilter([gain], [1.0, -coef], innovations, axis=0, zi=initial)
    return filtered


def _roi_series(rng: np.random.Generator, factors: list[np.ndarray], n_timepoints: int) -> np.ndarray:
    """AR(1) series ``(T, R)`` with covariance ``sum(F F^T) + I`` plus white noise, float32."""
    n_rois = factors[0].shape[0]
    innovations = rng.standard_normal((n_timepoints, n_rois))
    for factor in factors:
        innovations += rng.standard_normal((n_timepoints, factor.shape[1])) @ factor.T
    series = _ar1(innovations, _AR_COEF)
    series += _ROI_NOISE_STD * rng.standard_normal(series.shape)
    return series.astype(np.float32)


def fingerprints(
    n_subjects: int = 12,
    n_rois: int = 94,
    n_timepoints: int = 600,
    tr: float = 0.72,
    difficulty: float = 0.5,
    n_sessions: int = 1,
    seed: int = 0,
) -> list[Recording]:
    """Subjects with individual connectivity fingerprints.

    Subject ``s`` has innovation covariance ``G G^T + (1 - difficulty) B_s B_s^T + I``
    with a group factor ``G`` (R x 5) and a subject factor ``B_s`` (R x 3), both with
    entries of variance ``1/rank``; the ROI series is a stationary AR(1) process
    (lag-1 coefficient 0.6) of these innovations plus white noise (std 0.5).

    Parameters
    ----------
    n_subjects, n_rois, n_timepoints : int
        Cohort size, ROIs ``R`` and frames ``T`` per run.
    tr : float
        Repetition time in seconds (stored on each Recording).
    difficulty : float
        In ``[0, 1]``: 0 gives strongly individual FC, 1 gives identically
        distributed subjects (no subject structure at all).
    n_sessions : int
        Runs per subject; they share the subject's covariance, not its noise.
    seed : int
        Seed of all randomness.

    Returns
    -------
    list of Recording
        ``n_subjects * n_sessions`` runs, data ``(T, R)`` float32; ``meta`` holds
        ``subject_index``, ``session_index``, ``difficulty`` and ``generator``.
    """
    _check_params("fingerprints", locals())
    children = np.random.SeedSequence(seed).spawn(n_subjects + 1)
    group_rng = np.random.default_rng(children[0])
    group = group_rng.standard_normal((n_rois, _GROUP_RANK)) / np.sqrt(_GROUP_RANK)
    recordings = []
    for s in range(n_subjects):
        rng = np.random.default_rng(children[s + 1])
        own = rng.standard_normal((n_rois, _SUBJECT_RANK)) / np.sqrt(_SUBJECT_RANK)
        factors = [group, np.sqrt(1.0 - difficulty) * own]
        for k in range(n_sessions):
            meta = {
                "generator": "fingerprints",
                "subject_index": s,
                "session_index": k,
                "difficulty": float(difficulty),
            }
            data = _roi_series(rng, factors, n_timepoints)
            recordings.append(Recording(_subject_id(s), str(k + 1), data, float(tr), meta))
    return recordings


def continuous_y(
    n_subjects: int = 40,
    n_rois: int = 32,
    n_timepoints: int = 300,
    tr: float = 1.0,
    seed: int = 0,
) -> list[Recording]:
    """Subjects whose connectivity varies smoothly with a continuous label ``y``.

    ``y`` is drawn uniformly in [20, 80] (an age in years); with
    ``a = (y - 20) / 60`` the innovation covariance is
    ``(1 - a) Sigma_A + a Sigma_B`` where ``Sigma_A = A A^T + I`` and
    ``Sigma_B = B B^T + I`` are two fixed random patterns (rank-4 factors). The
    series is AR(1) plus white noise as in :func:`fingerprints`.

    Parameters
    ----------
    n_subjects, n_rois, n_timepoints : int
        Cohort size, ROIs ``R`` and frames ``T``.
    tr : float
        Repetition time in seconds.
    seed : int
        Seed of all randomness.

    Returns
    -------
    list of Recording
        One run per subject, data ``(T, R)`` float32; the label ``y`` is in ``meta["y"]`` and, for
        windows and batches, in ``frame_labels["y"]`` (the same value on every frame);
        ``meta["mix"]`` is the interpolation weight ``a``, plus ``subject_index``.
    """
    import pandas as pd

    _check_params("continuous_y", locals())
    children = np.random.SeedSequence(seed).spawn(n_subjects + 1)
    pattern_rng = np.random.default_rng(children[0])
    pattern_a, pattern_b = (
        _PATTERN_SCALE * pattern_rng.standard_normal((n_rois, _PATTERN_RANK)) / np.sqrt(_PATTERN_RANK) for _ in range(2)
    )
    low, high = _Y_RANGE
    recordings = []
    for s in range(n_subjects):
        rng = np.random.default_rng(children[s + 1])
        y = rng.uniform(low, high)
        mix = (y - low) / (high - low)
        factors = [np.sqrt(1.0 - mix) * pattern_a, np.sqrt(mix) * pattern_b]
        meta = {"generator": "continuous_y", "subject_index": s, "y": float(y), "mix": float(mix)}
        data = _roi_series(rng, factors, n_timepoints)
        labels = pd.DataFrame({"y": np.full(n_timepoints, float(y))})
        recordings.append(Recording(_subject_id(s), "1", data, float(tr), meta, labels))
    return recordings


def _smooth_maps(rng: np.random.Generator, count: int, grid: tuple[int, int, int]) -> np.ndarray:
    """``count`` smoothed Gaussian random fields ``(count, X, Y, Z)`` scaled to max |value| 1."""
    noise = rng.standard_normal((count, *grid))
    from scipy.ndimage import gaussian_filter

    maps = gaussian_filter(noise, sigma=(0, *(3 * [_MAP_SMOOTHING])), mode="nearest")
    return maps / np.abs(maps).max(axis=(1, 2, 3), keepdims=True)


def volumes(
    n_subjects: int = 4,
    n_timepoints: int = 60,
    grid: tuple[int, int, int] = (16, 20, 16),
    latent_dim: int = 4,
    tr: float = 2.0,
    seed: int = 0,
) -> list[Recording]:
    """4D volumes generated by a linear latent dynamic.

    ``h_0 ~ N(0, I)``, ``h_t = F h_{t-1} + 0.5 * eps_t`` with a random ``F`` scaled
    to spectral radius 0.9 and shared by all subjects; voxel values are
    ``sum_k h_t[k] * M_k + O_s + 0.1 * noise`` with fixed smooth spatial maps
    ``M_k`` and a smooth per-subject offset map ``O_s``.

    Parameters
    ----------
    n_subjects, n_timepoints : int
        Cohort size and frames ``T``.
    grid : tuple of int
        Volume shape ``(X, Y, Z)`` in voxels.
    latent_dim : int
        Dimension ``k`` of the latent state.
    tr : float
        Repetition time in seconds.
    seed : int
        Seed of all randomness.

    Returns
    -------
    list of Recording
        One run per subject, data ``(X, Y, Z, T)`` float32; ``meta["F"]`` is the
        ``(k, k)`` transition and ``meta["latent"]`` the ``(T, k)`` path, both as
        nested lists, plus ``subject_index``.
    """
    _check_params("volumes", locals())
    grid = tuple(int(g) for g in grid)
    children = np.random.SeedSequence(seed).spawn(n_subjects + 1)
    shared_rng = np.random.default_rng(children[0])
    raw = shared_rng.standard_normal((latent_dim, latent_dim))
    transition = _SPECTRAL_RADIUS * raw / np.abs(np.linalg.eigvals(raw)).max()
    maps = _smooth_maps(shared_rng, latent_dim, grid)
    recordings = []
    for s in range(n_subjects):
        rng = np.random.default_rng(children[s + 1])
        latent = np.empty((n_timepoints, latent_dim))
        latent[0] = rng.standard_normal(latent_dim)
        innovations = _LATENT_NOISE_STD * rng.standard_normal((n_timepoints, latent_dim))
        for t in range(1, n_timepoints):  # a recurrence: each state needs the previous one
            latent[t] = transition @ latent[t - 1] + innovations[t]
        offset = _OFFSET_SCALE * _smooth_maps(rng, 1, grid)[0]
        data = np.einsum("tk,kxyz->xyzt", latent, maps) + offset[..., None]
        data += _VOXEL_NOISE_STD * rng.standard_normal(data.shape)
        meta = {
            "generator": "volumes",
            "subject_index": s,
            "F": transition.tolist(),
            "latent": latent.tolist(),
        }
        recordings.append(Recording(_subject_id(s), "1", data.astype(np.float32), float(tr), meta))
    return recordings


def planted(
    n_subjects: int = 8,
    n_rois: int = 32,
    n_timepoints: int = 600,
    tr: float = 1.0,
    ar_coef: float = 0.9,
    noise_std: float = 0.5,
    seed: int = 0,
) -> list[Recording]:
    """One planted source per run: every ROI is ``x_t[r] = a_r s_t + noise``.

    ``s`` is a stationary AR(1) process of unit variance (``s_t = c s_{t-1} + sqrt(1 - c²) e_t``,
    its own draw for every run), the loadings ``a_r`` are shared by all subjects and uniform in
    [0.5, 1.5] (positive: one coupled network), and the noise is white with std ``noise_std``.
    Whatever a window holds beyond the position of a token is the path of ``s`` in that window,
    the same in every ROI up to gain: the ground truth against which
    Brain-JEPA's window-specific predictions are checked (Dong et al., "Brain-JEPA", NeurIPS
    2024, arXiv:2409.19407).

    Parameters
    ----------
    n_subjects, n_rois, n_timepoints : int
        Cohort size (one run each), ROIs ``R`` and frames ``T``.
    tr : float
        Repetition time in seconds.
    ar_coef : float
        Lag-1 autocorrelation ``c`` of the source, in (-1, 1).
    noise_std : float
        Standard deviation of the white noise on every ROI (>= 0).
    seed : int
        Seed of all randomness.

    Returns
    -------
    list of Recording
        One run per subject, data ``(T, R)`` float32; ``meta["loadings"]`` holds ``a`` (R
        numbers) and ``meta["source"]`` the run's path of ``s`` (T numbers), plus
        ``subject_index``.
    """
    _check_params("planted", locals())
    children = np.random.SeedSequence(seed).spawn(n_subjects + 1)
    loading_rng = np.random.default_rng(children[0])
    loadings = loading_rng.uniform(*_LOADING_RANGE, n_rois)
    recordings = []
    for s in range(n_subjects):
        rng = np.random.default_rng(children[s + 1])
        source = _ar1(rng.standard_normal((n_timepoints, 1)), ar_coef)[:, 0]
        data = source[:, None] * loadings[None, :] + noise_std * rng.standard_normal((n_timepoints, n_rois))
        meta = {
            "generator": "planted",
            "subject_index": s,
            "loadings": loadings.tolist(),
            "source": source.tolist(),
        }
        recordings.append(Recording(_subject_id(s), "1", data.astype(np.float32), float(tr), meta))
    return recordings


GENERATORS: dict[str, Callable[..., list[Recording]]] = {
    "fingerprints": fingerprints,
    "continuous_y": continuous_y,
    "volumes": volumes,
    "planted": planted,
}


def generate(name: str, **params: Any) -> list[Recording]:
    """Run the generator ``name`` with checked keyword parameters.

    Parameters
    ----------
    name : str
        One of :data:`GENERATORS`.
    **params
        Keyword arguments of that generator (see its docstring); every generator
        checks its values and raises ConfigError naming a bad one.

    Returns
    -------
    list of Recording

    Raises
    ------
    ConfigError
        Unknown generator (the choices are listed), unknown parameter (named, with
        the accepted ones) or an invalid value.
    """
    if name not in GENERATORS:
        raise ConfigError(f"unknown synthetic generator {name!r}; choose one of {sorted(GENERATORS)}")
    function = GENERATORS[name]
    accepted = list(inspect.signature(function).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"synthetic generator {name!r} has no parameter(s) {unknown}; accepted: {accepted}")
    return function(**params)
