"""fMRIPrep derivatives: preprocessed BOLD runs found by their BIDS names, denoised with nilearn's strategies.

A ``kind: bids`` catalog source names a derivatives folder (``root``), a ``task`` and a ``space``;
the runs are the files

``sub-<subject>/[ses-<session>/]func/sub-<subject>_[ses-<session>_]task-<task>_[run-<run>_]...
space-<space>_[res-<res>_]desc-<desc>_bold.nii.gz``

(other entities such as ``acq-`` may stand between them). Subject, session, task and run come
from the file name. The TR is the ``RepetitionTime`` of the BOLD file's JSON sidecar (a catalog
``tr`` takes precedence, as it does over NIfTI headers).

Confounds are chosen by :func:`nilearn.interfaces.fmriprep.load_confounds_strategy` from the run's
``desc-confounds_timeseries.tsv`` (and its ``.json`` for CompCor) and regressed out while the
masker reduces the run to ROI series (``transform(confounds=..., sample_mask=...)``); the
regressors used are kept in ``meta["confounds"]``. Strategies that drop frames (``scrubbing``, and
any run with non-steady-state volumes) return only the kept frames: ``meta["kept_frames"]`` lists
their indices in the file and frame labels are built on the file's frames then cut to the kept
ones, so labels stay aligned with the series (a window may then span a dropped gap).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workbench.data.formats import check_inside
from workbench.data.nifti import load_checked, mask_grid, read_run
from workbench.data.readers import read_recording
from workbench.data.recording import Recording
from workbench.data.sources import session_label
from workbench.data.validate import ConstantPolicy, check_roi_series
from workbench.errors import DataError

ConfoundStrategy = Literal["none", "simple", "scrubbing", "compcor"]
CONFOUND_STRATEGIES: tuple[str, ...] = ("none", "simple", "scrubbing", "compcor")
BOLD_SUFFIX = "_bold.nii.gz"
_ENTITY = re.compile(r"^([a-z]+)-([A-Za-z0-9]+)$")
_IDS = {"sub": "subject", "ses": "session", "task": "task", "run": "run"}
_NOT_IN_CONFOUNDS = ("space", "res", "den", "desc")  # entities of the BOLD name that the confounds file lacks


def bids_entities(path: str | Path) -> dict[str, str]:
    """The ``key-value`` entities of a BIDS file name, in order (``{"sub": "01", "task": "rest", ...}``).

    Raises
    ------
    DataError
        A part of the name before the suffix is not ``key-value``.
    """
    name = Path(path).name
    parts = name.split("_")[:-1]  # the last part is the suffix (bold.nii.gz)
    entities = {}
    for part in parts:
        match = _ENTITY.match(part)
        if match is None:
            raise DataError(f"{path}: {part!r} is not a BIDS entity (key-value); rename the file as BIDS names it")
        entities[match.group(1)] = match.group(2)
    return entities


def find_bold_runs(
    root: Path,
    *,
    task: str,
    space: str,
    desc: str = "preproc",
    res: str | None = None,
    subjects: list[str] | None = None,
    follow_links: bool = False,
) -> list[tuple[Path, dict[str, str]]]:
    """(BOLD file, ids) of every preprocessed run below ``root`` matching the entities asked for.

    ``ids`` holds ``subject`` and ``task``, and ``session`` / ``run`` when the name has them.
    Sorted by path. Unless ``follow_links``, a file reached through a link leading outside
    ``root`` is a DataError naming it.

    Raises
    ------
    DataError
        ``root`` is not a folder, or no file matches (the message says what was searched).
    """
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; source.root names the fMRIPrep derivatives folder")
    wanted = {"task": task, "space": space, "desc": desc} | ({"res": res} if res is not None else {})
    found = []
    for path in sorted([*root.glob(f"sub-*/func/*{BOLD_SUFFIX}"), *root.glob(f"sub-*/ses-*/func/*{BOLD_SUFFIX}")]):
        entities = bids_entities(path)
        if any(entities.get(key) != value for key, value in wanted.items()) or "sub" not in entities:
            continue
        if subjects is not None and entities["sub"] not in subjects:
            continue
        if not follow_links:
            check_inside(path, root, "To read files linked from elsewhere, set follow_links: true in the source")
        found.append((path, {_IDS[key]: value for key, value in entities.items() if key in _IDS}))
    if not found:
        who = f" of subjects {subjects}" if subjects is not None else ""
        raise DataError(
            f"{root}: no preprocessed BOLD run{who} matches sub-*/[ses-*/]func/sub-*_task-{task}_*space-{space}_*"
            f"desc-{desc}{BOLD_SUFFIX}; check source.root, task, space and desc against the file names"
        )
    return found


def sidecar_tr(path: Path) -> float:
    """``RepetitionTime`` (seconds) of the JSON sidecar of a BOLD file; a DataError naming the sidecar otherwise."""
    sidecar = path.with_name(path.name.removesuffix(".nii.gz") + ".json")
    fix = "give the entry a `tr` (seconds), or restore the sidecar fMRIPrep wrote"
    try:
        value = json.loads(sidecar.read_text(encoding="utf-8")).get("RepetitionTime")
    except FileNotFoundError:
        raise DataError(f"{sidecar}: no such sidecar of {path.name}; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{sidecar}: unreadable JSON sidecar ({exc}); {fix}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not np.isfinite(value):
        raise DataError(f"{sidecar}: RepetitionTime is {value!r}, not a positive number of seconds; {fix}")
    return float(value)


def confounds_file(path: Path) -> Path:
    """Where fMRIPrep writes the confounds of a BOLD run: its entities without space/res/desc, ``desc-confounds``."""
    kept = [f"{key}-{value}" for key, value in bids_entities(path).items() if key not in _NOT_IN_CONFOUNDS]
    return path.with_name("_".join([*kept, "desc-confounds_timeseries.tsv"]))


def load_strategy_confounds(path: Path, strategy: ConfoundStrategy) -> tuple[Any, np.ndarray | None]:
    """(confounds DataFrame or None, kept frame indices or None) of a BOLD run under ``strategy``.

    Raises
    ------
    DataError
        The confounds file (or, for CompCor, its JSON) is missing, or lacks columns the strategy needs.
    """
    if strategy == "none":
        return None, None
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    table = confounds_file(path)
    if not table.is_file() and not table.with_name(table.name.replace("_timeseries", "_regressors")).is_file():
        raise DataError(
            f"{table}: no confounds file for {path.name}; fMRIPrep writes it beside the BOLD run. Copy it "
            "there, or set source.confounds: none"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn warns about its own defaults (fd/dvars thresholds)
            confounds, sample_mask = load_confounds_strategy(str(path), denoise_strategy=strategy)
    except (ValueError, KeyError, OSError) as exc:  # a missing column, sidecar or second confounds file
        raise DataError(
            f"{table}: the {strategy!r} confound strategy cannot be applied ({type(exc).__name__}: {exc}); the "
            "file (and its .json for compcor) must hold the columns fMRIPrep writes, or choose another "
            "source.confounds"
        ) from None
    return confounds, None if sample_mask is None else np.asarray(sample_mask, dtype=int)


def _denoised_series(
    path: Path,
    strategy: ConfoundStrategy,
    labels_img: Path | None,
    mask_img: Path | None,
    min_timepoints: int,
) -> tuple[np.ndarray, Any, np.ndarray | None, int]:
    """(T', R) series of a run, its confounds, kept frames and the file's frame count."""
    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker, NiftiMasker

    if (labels_img is None) == (mask_img is None):
        raise DataError(
            f"{path}: a BOLD run becomes ROI series through exactly one of read.labels_img (an atlas image) or "
            "read.mask_img (a mask image)"
        )
    img, volumes = read_run(path, min_timepoints)
    confounds, kept = load_strategy_confounds(path, strategy)
    if confounds is not None and len(confounds) != volumes.shape[3]:
        raise DataError(
            f"{confounds_file(path)}: {len(confounds)} rows but {path.name} has {volumes.shape[3]} frames; the "
            "confounds must belong to this run"
        )
    if labels_img is not None:
        masker = NiftiLabelsMasker(labels_img=load_checked(labels_img))
    else:
        masker = NiftiMasker(mask_img=load_checked(mask_img))
    try:
        with warnings.catch_warnings():  # nilearn 0.14 warns on its own default standardize=False
            warnings.filterwarnings("ignore", "boolean values for 'standardize'", FutureWarning)
            series = masker.fit_transform(
                nib.Nifti1Image(volumes, img.affine, img.header), confounds=confounds, sample_mask=kept
            )
    except ValueError as exc:
        raise DataError(f"{path}: ROI extraction failed ({exc})") from None
    if confounds is not None and kept is not None:
        confounds = confounds.iloc[kept].reset_index(drop=True)
    return series, confounds, kept, int(volumes.shape[3])


def read_bold_run(
    path: Path,
    ids: dict[str, str],
    *,
    modality: Literal["roi_timeseries", "nifti_4d"],
    strategy: ConfoundStrategy,
    tr: float | None,
    labels_img: Path | None = None,
    mask_img: Path | None = None,
    min_timepoints: int = 2,
    constant: ConstantPolicy = "error",
    roi_names: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Recording:
    """One fMRIPrep BOLD run as a :class:`Recording`, denoised by ``strategy``.

    ``tr`` (the catalog's) takes precedence over the sidecar's ``RepetitionTime``. ``nifti_4d``
    keeps the volumes (``strategy`` must be ``"none"``); ``roi_timeseries`` reduces them with
    ``labels_img`` / ``mask_img`` and regresses the strategy's confounds out. ``meta`` gains
    ``source_file``, ``tr_source`` (catalog / sidecar), ``confound_strategy`` and, when confounds
    were used, ``confounds`` (the regressors of the kept frames); when frames were dropped,
    ``kept_frames`` (indices into the file) and ``frames_in_file``.
    """
    resolved_tr = tr if tr is not None else sidecar_tr(path)
    meta = dict(meta or {}, confound_strategy=strategy)
    tr_source = "catalog" if tr is not None else "sidecar"
    common = {"subject": ids["subject"], "session": session_label(ids), "min_timepoints": min_timepoints}
    if modality == "nifti_4d":
        recording = read_recording(path, modality=modality, tr=resolved_tr, meta=meta, **common)
        recording.meta["tr_source"] = tr_source
        return recording
    series, confounds, kept, n_frames = _denoised_series(path, strategy, labels_img, mask_img, min_timepoints)
    series, roi_names, dropped = check_roi_series(
        series, path, min_timepoints=min_timepoints, constant=constant, roi_names=roi_names
    )
    meta.update(source_file=str(path), tr_source=tr_source)
    if confounds is not None:
        meta["confounds"] = confounds
    if kept is not None:
        meta.update(kept_frames=kept.tolist(), frames_in_file=n_frames)
    if mask_img is not None:
        meta.update(mask_grid(mask_img, path, series.shape[1]))
    if roi_names is not None:
        meta["roi_names"] = list(roi_names)
    if dropped:
        meta["dropped_rois"] = dropped
    return Recording(common["subject"], common["session"], series, resolved_tr, meta)


__all__ = [
    "BOLD_SUFFIX",
    "CONFOUND_STRATEGIES",
    "ConfoundStrategy",
    "bids_entities",
    "confounds_file",
    "find_bold_runs",
    "load_strategy_confounds",
    "read_bold_run",
    "sidecar_tr",
]
