"""4-D runs made ready for a volume family: one length, one grid, per-run scaling, one brain mask.

:func:`prepare_volume_runs` turns ``nifti_4d`` recordings (``synthetic-volumes``, ``nitime-fmri``,
``haxby-25mm``, users' NIfTI) and masked frame recordings (``haxby-slice``) into ``(T, V)`` frame
recordings (:func:`workbench.data.volumes.volume_frames`).
Each run goes through, in this order:

1. **cut** — the first ``tol_time`` frames (the seed's ``tol_time``); a shorter run is a
   DataError naming it;
2. **resample** (optional) — to ``grid`` over the same field of view, or onto a ``reference``
   image, with nilearn's ``resample_img`` / ``resample_to_img`` (continuous interpolation);
3. **mask** — one boolean mask for all runs, by the first rule that applies (``mask="auto"``):

   * the dataset's mask: the image in ``meta["mask_img"]`` (a path or an image, the same for
     every run), resampled onto the grid — frame recordings (``haxby-slice``: ``(T, V)`` with
     ``meta["grid"]`` and ``meta["mask"]``) are put back on their grid first and bring their mask;
   * nilearn's MNI152 brain mask (``load_mni152_brain_mask``) resampled onto the grid, when the
     runs are in MNI space (``meta["space"]`` names MNI);
   * the voxels that vary over time in at least one run (exactly constant background — zeros
     outside a skull-stripped brain — is left out);

   ``mask`` may also name a rule (``"dataset"``, ``"mni"``, ``"variance"``, ``"all"``) or be an
   array on the grid, a NIfTI path or a nibabel image;
4. **scale** each run on its own, over its in-mask voxels and frames:

   * ``"zscore"`` (default) — one mean and one standard deviation per run;
   * ``"minmax"`` — the seed's per-subject min-max to ``[-1, 1]`` (pair with a Tanh decoder);
   * ``"voxel-zscore"`` — every voxel over its run's frames (the static image is removed, a
     voxel constant over the run becomes 0);
   * ``"none"`` — unchanged;

   a run in which no in-mask voxel changes over time is a DataError (it holds no signal, and a
   constant volume would divide by zero);
5. **frames** — ``(T, V)`` float32 of the in-mask voxels, ``meta["grid"]`` and ``meta["mask"]``.

``meta`` also gains ``affine`` (4×4 list, voxel → world mm), ``mask_rule`` and ``scaling``
(``{"kind", "center", "scale"}`` with ``frames = (raw − center) / scale`` for the scalar kinds), so
errors measured on frames convert back to the units of the files (multiply an MSE by
``scale²``). A run's affine comes from ``meta["affine"]``, else the header of
``meta["source_file"]``, else the identity (1 mm voxels, e.g. synthetic data).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workbench.data.nifti import load_checked
from workbench.data.recording import Recording
from workbench.data.volumes import volume_frames
from workbench.errors import ConfigError, DataError

Scaling = Literal["zscore", "minmax", "voxel-zscore", "none"]
SCALINGS = ("zscore", "minmax", "voxel-zscore", "none")
MASK_RULES = ("auto", "dataset", "mni", "variance", "all")
_MNI = re.compile("mni", re.IGNORECASE)


def _name(rec: Recording) -> str:
    source = rec.meta.get("source_file")
    return f"run {rec.subject}/{rec.session}" + (f" ({source})" if source else "")


def run_affine(rec: Recording) -> np.ndarray:
    """``(4, 4)`` voxel → world affine of a 4-D run (``meta["affine"]``, the source file's header, or identity)."""
    if "affine" in rec.meta:
        return np.asarray(rec.meta["affine"], dtype=np.float64)
    source = rec.meta.get("source_file")
    if source and Path(source).is_file() and str(source).endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(source).affine, dtype=np.float64)
    return np.eye(4)


def cut_run(rec: Recording, tol_time: int) -> Recording:
    """The first ``tol_time`` frames of a 4-D run; DataError naming the run when it is shorter."""
    if isinstance(tol_time, bool) or not isinstance(tol_time, (int, np.integer)) or tol_time < 1:
        raise ConfigError(f"tol_time must be a whole number of frames >= 1, got {tol_time!r}")
    if rec.n_timepoints < tol_time:
        raise DataError(
            f"{_name(rec)} has {rec.n_timepoints} frames, fewer than tol_time={tol_time}; lower tol_time to at "
            f"most {rec.n_timepoints} or leave this run out"
        )
    labels = None if rec.frame_labels is None else rec.frame_labels.iloc[:tol_time].reset_index(drop=True)
    return Recording(rec.subject, rec.session, rec.data[..., :tol_time], rec.tr, dict(rec.meta), labels)


def field_of_view_affine(affine: np.ndarray, shape: Sequence[int], grid: Sequence[int]) -> np.ndarray:
    """Affine of ``grid`` voxels covering the field of view of ``shape`` voxels under ``affine``.

    New voxel ``i`` sits at old voxel coordinate ``i · s + (s − 1) / 2`` with ``s = shape / grid`` per
    axis, so the two grids share their outer edges.
    """
    scale = np.asarray(shape, dtype=np.float64) / np.asarray(grid, dtype=np.float64)
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = (scale - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64) @ step


def resample_run(rec: Recording, grid: Sequence[int] | None = None, reference: Any = None) -> Recording:
    """A 4-D run resampled to ``grid`` (same field of view) or onto ``reference`` (an image or a path).

    Continuous (spline) interpolation by nilearn; ``meta["affine"]`` becomes the new affine.
    """
    import nibabel as nib
    from nilearn.image import resample_img, resample_to_img

    if (grid is None) == (reference is None):
        raise ConfigError("resample_run needs exactly one of grid=(X, Y, Z) or reference=<image>")
    affine = run_affine(rec)
    img = nib.Nifti1Image(np.asarray(rec.data, dtype=np.float32), affine)
    if reference is not None:
        out = resample_to_img(img, _image(reference, "reference"), interpolation="continuous")
    else:
        grid = tuple(int(n) for n in grid)
        if len(grid) != 3 or min(grid) < 1:
            raise ConfigError(f"resampling grid must be three positive voxel counts (X, Y, Z), got {grid}")
        target = field_of_view_affine(affine, rec.data.shape[:3], grid)
        out = resample_img(img, target_affine=target, target_shape=grid, interpolation="continuous")
    data = np.asarray(out.get_fdata(dtype=np.float32))
    meta = {**rec.meta, "affine": np.asarray(out.affine).tolist()}
    return Recording(rec.subject, rec.session, data, rec.tr, meta, rec.frame_labels)


def _image(value: Any, what: str) -> Any:
    if isinstance(value, (str, Path)):
        if not Path(value).is_file():
            raise DataError(f"{what} image {value} does not exist")
        return load_checked(Path(value))
    return value


def _onto_grid(image: Any, grid: tuple[int, int, int], affine: np.ndarray, what: str) -> np.ndarray:
    """A mask image resampled onto the runs' grid (linear interpolation, kept where >= 0.5)."""
    import nibabel as nib
    from nilearn.image import resample_to_img
    from nilearn.image.resampling import BoundingBoxError

    image = _image(image, what)
    if len(image.shape) != 3:
        raise DataError(f"{what} must be a 3-D image, got shape {image.shape}")
    target = nib.Nifti1Image(np.zeros(grid, dtype=np.float32), affine)
    with warnings.catch_warnings():  # nilearn warns on any binary image resampled linearly: intended here
        warnings.filterwarnings("ignore", message="Resampling binary images", category=UserWarning)
        try:
            values = resample_to_img(image, target, interpolation="linear").get_fdata()
        except BoundingBoxError:
            values = np.zeros(grid)  # no overlap: reported below as a mask that selects nothing
    return np.asarray(values >= 0.5)


def _mask_from_array(mask: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != grid:
        raise DataError(f"the mask has shape {mask.shape} but the runs lie on {grid}; give it on the runs' grid")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise DataError("the mask must hold only 0/1 or booleans; threshold it first (e.g. mask > 0.5)")
    return mask.astype(bool)


def _dataset_mask(runs: Sequence[Recording], grid: tuple[int, int, int]) -> np.ndarray:
    """The runs' own mask (``meta["mask_img"]``: a path or an image) on their grid; one for all runs."""
    masks: dict[Any, np.ndarray] = {}
    for run in runs:
        source = run.meta.get("mask_img")
        if source is None:
            raise DataError(f"mask='dataset': {_name(run)} has no meta['mask_img']; give the mask or another rule")
        key = str(source) if isinstance(source, (str, Path)) else id(source)
        if key not in masks:
            masks[key] = _onto_grid(source, grid, run_affine(run), "the dataset's mask")
    first, *others = masks.values()
    if any(not np.array_equal(first, other) for other in others):
        raise DataError("the runs' own masks differ; give one mask for all runs (mask=<array or image>)")
    return first


def _frames_as_volumes(rec: Recording) -> Recording:
    """Frames ``(T, V)`` with ``meta["grid"]`` and ``meta["mask"]`` back as a 4-D run, zeros outside the mask.

    The mask becomes ``meta["mask_img"]`` (an image with the run's affine), the dataset's mask.
    """
    import nibabel as nib

    mask = np.asarray(rec.meta["mask"], dtype=bool)
    data = np.zeros((*mask.shape, rec.n_timepoints), dtype=np.float32)
    data[mask] = np.asarray(rec.data, dtype=np.float32).T
    meta = {k: v for k, v in rec.meta.items() if k not in ("grid", "mask")}
    meta["mask_img"] = nib.Nifti1Image(mask.astype(np.uint8), run_affine(rec))
    return Recording(rec.subject, rec.session, data, rec.tr, meta, rec.frame_labels)


def brain_mask(runs: Sequence[Recording], mask: Any = "auto") -> tuple[np.ndarray, str]:
    """The common brain mask of runs on one grid, and the rule that made it (module docstring, step 3).

    Returns
    -------
    mask : numpy.ndarray
        ``(X, Y, Z)`` boolean, at least one voxel.
    rule : str
        ``"given"``, ``"dataset"``, ``"mni"``, ``"variance"`` or ``"all"``.
    """
    grid = tuple(int(n) for n in runs[0].data.shape[:3])
    affine = run_affine(runs[0])
    rule = "given"
    if isinstance(mask, str) and mask in MASK_RULES:
        rule = mask
        if rule == "auto":
            rule = (
                "dataset"
                if any(r.meta.get("mask_img") is not None for r in runs)
                else "mni"
                if all(_MNI.search(str(r.meta.get("space", ""))) for r in runs)
                else "variance"
            )
        if rule == "dataset":
            selected = _dataset_mask(runs, grid)
        elif rule == "mni":
            from nilearn.datasets import load_mni152_brain_mask

            selected = _onto_grid(load_mni152_brain_mask(resolution=2), grid, affine, "the MNI152 brain mask")
        elif rule == "variance":
            selected = np.zeros(grid, dtype=bool)
            for run in runs:
                data = np.asarray(run.data)
                selected |= data.max(axis=3) > data.min(axis=3)
        else:
            selected = np.ones(grid, dtype=bool)
    elif isinstance(mask, np.ndarray):
        selected = _mask_from_array(mask, grid)
    else:
        selected = _onto_grid(mask, grid, affine, "the mask")
    if not selected.any():
        raise DataError(
            f"the {rule} brain mask selects no voxel of the {grid} grid; check the runs' affine and space, or "
            "give mask='variance' or an explicit mask"
        )
    return selected, rule


def scale_run(rec: Recording, mask: np.ndarray, scaling: Scaling = "zscore") -> Recording:
    """Scale one 4-D run over its in-mask voxels and frames (module docstring, step 4).

    Raises
    ------
    DataError
        When no in-mask voxel of the run changes over time (a constant volume among them), or
        a value is not finite.
    """
    if scaling not in SCALINGS:
        raise ConfigError(f"scaling={scaling!r}: choose one of {list(SCALINGS)}")
    data = np.asarray(rec.data, dtype=np.float32)
    inside = data[mask].astype(np.float64)  # (V, T): statistics in float64, the run itself stays float32
    if not np.isfinite(inside).all():
        raise DataError(f"{_name(rec)} holds NaN or inf inside the brain mask; fix or drop the run")
    if not (inside.max(axis=1) > inside.min(axis=1)).any():
        raise DataError(
            f"{_name(rec)} is constant over time inside the brain mask (no voxel changes); it holds no signal "
            f"and cannot be scaled ({scaling}) — drop the run"
        )
    low, high = float(inside.min()), float(inside.max())
    if scaling == "zscore":
        center, scale = float(inside.mean()), float(inside.std())
    elif scaling == "minmax":
        center, scale = (high + low) / 2.0, (high - low) / 2.0  # [low, high] -> [-1, 1]
    elif scaling == "voxel-zscore":
        mean = inside.mean(axis=1, keepdims=True)
        std = inside.std(axis=1, keepdims=True)
        scaled = np.zeros_like(data)
        scaled[mask] = (inside - mean) / np.where(std > 0, std, np.inf)
        meta = {**rec.meta, "scaling": {"kind": scaling}}
        return Recording(rec.subject, rec.session, scaled, rec.tr, meta, rec.frame_labels)
    else:
        center, scale = 0.0, 1.0
    scaled = np.empty_like(data)
    for t in range(data.shape[3]):  # frame by frame in float64: min-max ends exactly at ±1, little memory
        scaled[..., t] = (data[..., t].astype(np.float64) - center) / scale
    meta = {**rec.meta, "scaling": {"kind": scaling, "center": center, "scale": scale}}
    return Recording(rec.subject, rec.session, scaled, rec.tr, meta, rec.frame_labels)


def prepare_volume_runs(
    recordings: Sequence[Recording],
    *,
    tol_time: int | None = None,
    grid: Sequence[int] | None = None,
    reference: Any = None,
    scaling: Scaling = "zscore",
    mask: Any = "auto",
) -> list[Recording]:
    """``nifti_4d`` runs as ``(T, V)`` frame recordings ready for a volume family (see the module docstring).

    Parameters
    ----------
    recordings : sequence of Recording
        4-D runs ``(X, Y, Z, T)``, or ``(T, V)`` frames with ``meta["grid"]`` and ``meta["mask"]``.
    tol_time : int, optional
        Keep the first ``tol_time`` frames of every run (the seed: 120); default all.
    grid : tuple of 3 int, optional
        Resample every run to this grid over its own field of view.
    reference : image or path, optional
        Resample every run onto this image's grid instead.
    scaling : {"zscore", "minmax", "voxel-zscore", "none"}
        Per-run scaling over the in-mask voxels.
    mask : {"auto", "dataset", "mni", "variance", "all"}, array, path or image
        The brain mask rule, or the mask itself.

    Returns
    -------
    list of Recording
        ``(T, V)`` float32 frames; ``meta`` gains ``grid``, ``mask``, ``affine``, ``mask_rule`` and
        ``scaling``.

    Raises
    ------
    DataError
        A run that is not 4-D, shorter than ``tol_time``, constant over time inside the mask, or on another
        grid than the others (without ``grid``/``reference``); a mask that selects nothing.
    """
    if not recordings:
        raise DataError("no recordings were given; check the catalog entry or subject filter")
    if scaling not in SCALINGS:
        raise ConfigError(f"scaling={scaling!r}: choose one of {list(SCALINGS)}")
    runs = []
    for rec in recordings:
        if rec.data.ndim == 2 and "grid" in rec.meta and "mask" in rec.meta:
            rec = _frames_as_volumes(rec)
        if rec.data.ndim != 4:
            raise DataError(
                f"{_name(rec)} has data of shape {rec.data.shape}; volume runs are (X, Y, Z, T), or (T, V) frames "
                "with meta['grid'] and meta['mask']"
            )
        if tol_time is not None:
            rec = cut_run(rec, tol_time)
        if grid is not None or reference is not None:
            rec = resample_run(rec, grid, reference)
        runs.append(rec)
    grids = {tuple(r.data.shape[:3]) for r in runs}
    if len(grids) > 1:
        raise DataError(f"the runs lie on different grids {sorted(grids)}; give grid=(X, Y, Z) to resample them")
    selected, rule = brain_mask(runs, mask)
    out = []
    for rec in runs:
        scaled = scale_run(rec, selected, scaling)
        scaled.meta.update(affine=run_affine(rec).tolist(), mask_rule=rule)
        if not isinstance(scaled.meta.get("mask_img", ""), (str, Path)):
            del scaled.meta["mask_img"]  # an image made from frames: the mask itself stays in meta["mask"]
        out.append(volume_frames(scaled, selected))
    return out


__all__ = [
    "MASK_RULES",
    "SCALINGS",
    "brain_mask",
    "cut_run",
    "field_of_view_affine",
    "prepare_volume_runs",
    "resample_run",
    "run_affine",
    "scale_run",
]
