"""``workbench data check``: read every file of a dataset (or folder) fully and validate it as training would.

``workbench data info`` reads headers only and says so; :func:`check_data` reads each file
with the entry's ``read`` options through the same readers as training and collects, per file,
every problem (unreadable, corrupt or truncated file, wrong dimensionality, too few frames,
NaN/inf, constant regions under the ``error`` policy, a wrong sha256, a link out of the folder),
then the problems of the dataset as a whole (runs that would merge, ROI counts that differ, a
label numeric in some runs and text in others) and the notes (assumptions the readers made,
regions a ``drop`` policy removes). One problem does not stop the others from being found.

A run that reads but is shorter than :data:`MIN_USABLE_FRAMES` is reported as unusable: a window
holds at least 2 frames (a correlation needs two), and evaluation draws support and query
windows from the two halves of each run, so a run needs at least 4 frames.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.catalog import (
    Catalog,
    Entry,
    check_unique_runs,
    file_items,
    load_catalog,
    load_recordings,
    per_file_policy,
    read_entry_file,
)
from workbench.data.formats import NIFTI_SUFFIXES, check_inside, file_suffix
from workbench.data.labels import check_label_kinds
from workbench.data.readers import read_recording
from workbench.data.recording import Recording
from workbench.data.sources import member_status, parse_ids, registry_dir
from workbench.data.validate import apply_constant_policy, check_same_roi_count
from workbench.errors import CatalogError, WorkbenchError

MIN_USABLE_FRAMES = 4  # a window of 2 frames in each half of the run
_OUTSIDE_FIX = "Check the file itself (data check FILE), or copy it into the folder"


@dataclass
class CheckReport:
    """What :func:`check_data` found."""

    target: str
    files: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file or dataset, message)
    notes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_collecting(report: CheckReport, where: str, read) -> list[Any]:
    """Run ``read()``; a DataError becomes a problem of ``where``, warnings become notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = read()
        except WorkbenchError as exc:
            report.problems.append((where, str(exc)))
            out = []
    report.notes.extend((where, str(w.message)) for w in caught)
    return out


def _report_short_runs(report: CheckReport, where: str, recordings: list[Recording]) -> None:
    for rec in recordings:
        if rec.n_timepoints < MIN_USABLE_FRAMES:
            run = "" if rec.session == "1" else f" (run {rec.session})"
            report.problems.append(
                (
                    where,
                    f"{rec.n_timepoints} frame(s){run}: too short to use; a run needs at least {MIN_USABLE_FRAMES}, "
                    "since a window holds at least 2 frames (a correlation needs two) and evaluation takes support "
                    "and query windows from the two halves of each run; drop the run or record a longer one",
                )
            )


def _dataset_checks(report: CheckReport, name: str, entry: Entry | None, recordings: list[Any]) -> None:
    checks = [lambda: check_same_roi_count(recordings), lambda: check_label_kinds(recordings)]
    if entry is not None:
        checks += [
            lambda: check_unique_runs(entry, recordings),
            lambda: apply_constant_policy(recordings, entry.read.constant),
        ]
    for check in checks:
        _read_collecting(report, name, check)


def _check_entry(report: CheckReport, catalog: Catalog, entry: Entry) -> list[Any]:
    source = entry.source
    if source.kind == "union":
        recordings = [r for member in source.entries for r in _check_entry(report, catalog, catalog.entry(member))]
        _read_collecting(report, entry.name, lambda: check_same_roi_count(recordings))
        return recordings
    if source.kind == "synthetic":
        return _read_collecting(report, entry.name, lambda: load_recordings(entry.name, catalog, progress=False))
    if source.kind == "registry":
        root = registry_dir(source.package, source.version)
        for member, digest in source.sha256.items():
            status = member_status(root / member, digest)
            if status == "mismatch":
                report.problems.append((str(root / member), f"sha256 differs from the catalog's {digest}"))
    items = _read_collecting(report, entry.name, lambda: file_items(catalog, entry, progress=False))
    recordings = []
    for item, ids in items:
        report.files += 1
        where = str(item) if isinstance(item, (str, Path)) else f"{entry.name}[{ids['subject']}]"
        runs = _read_collecting(
            report, where, lambda item=item, ids=ids: read_entry_file(catalog, entry, item, ids, per_file_policy(entry))
        )
        _report_short_runs(report, where, runs)
        recordings += runs
    _dataset_checks(report, entry.name, entry, recordings)
    return recordings


def _check_path(report: CheckReport, path: Path) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and file_suffix(p))
    if not files:
        report.problems.append((str(path), "no .nii/.nii.gz/.npy/.csv/.tsv/.mat file found"))
        return
    tables = []
    for file in files:
        report.files += 1
        ids = parse_ids(file.relative_to(path) if path.is_dir() else file)
        modality = "nifti_4d" if file_suffix(file) in NIFTI_SUFFIXES else "roi_timeseries"

        def read(file=file, ids=ids, modality=modality) -> list[Any]:
            if path.is_dir():
                check_inside(file, path, _OUTSIDE_FIX)
            return [read_recording(file, subject=ids["subject"], modality=modality)]

        runs = _read_collecting(report, str(file), read)
        _report_short_runs(report, str(file), runs)
        tables += runs
    series = [r for r in tables if r.data.ndim == 2]
    _read_collecting(report, str(path), lambda: check_same_roi_count(series))


def check_data(name_or_path: str | Path, catalog: Catalog | None = None) -> CheckReport:
    """Read and validate every file of a catalog entry, or of a file or folder of the user's data.

    Returns
    -------
    CheckReport
        ``problems`` (file or dataset, message naming the fix), ``notes`` and the number of files
        read; ``ok`` when there is no problem.
    """
    target = str(name_or_path)
    report = CheckReport(target)
    path = Path(target).expanduser()
    if catalog is None:
        try:
            catalog = load_catalog()
        except CatalogError:
            if not path.exists():
                raise
    if catalog is not None and target in catalog.entries:
        _check_entry(report, catalog, catalog.entries[target])
    elif path.exists():
        _check_path(report, path)
    else:
        raise CatalogError(f"{target!r} is neither a dataset of the catalog nor an existing file or folder")
    return report


__all__ = ["MIN_USABLE_FRAMES", "CheckReport", "check_data"]
