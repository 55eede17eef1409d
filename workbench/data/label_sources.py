"""The ``labels`` of a catalog entry: which files give each run its per-frame labels.

Every label source names its file(s) with a **path template**: ``{subject}``, ``{session}``,
``{run}`` and ``{task}`` (``bids`` sources) are replaced by the ids parsed from the run's data file,
and shell wildcards (``*``, ``?``) are allowed. For ``registry`` entries the template is a member
path of the package (listed under ``sha256``, hence verified); for ``local`` and ``bids`` entries it
is relative to the catalog file.

``events``      a BIDS ``events.tsv`` per run (onset, duration, label columns);
``frames``      a table with one row per frame (framewise displacement, PyMVPA attributes);
``fsl_onsets``  FSL three-column onset files of one run, one per condition (``cond*.txt``),
                with an optional OpenfMRI condition key.

How events become frames is documented in :mod:`workbench.data.frame_labels`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.data.frame_labels import (
    LabelKind,
    events_to_frames,
    read_condition_key,
    read_events,
    read_frame_table,
    read_fsl_onsets,
)
from workbench.errors import DataError

PLACEHOLDERS = ("subject", "session", "run", "task")


def _check_template(template: str) -> str:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = sorted(fields - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(
            f"path template {template!r} uses {unknown}; placeholders are {{subject}}, {{session}}, {{run}}, {{task}}"
        )
    return template


def template_glob(template: str) -> str:
    """The template with every placeholder replaced by ``*`` (to check it against member globs)."""
    return template.format(**dict.fromkeys(PLACEHOLDERS, "*"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EventsLabels(_Strict):
    """Labels from a BIDS ``events.tsv`` of each run."""

    kind: Literal["events"]
    path: str
    hrf_shift: float = 0.0  # seconds added to every onset
    first_onset_at: float | None = Field(None, ge=0)  # onsets on a visit clock: first event's time in the run
    columns: dict[str, LabelKind] | None = None  # label columns (default: all but onset, duration)
    trial_type_from: dict[str, str] = Field(default_factory=dict)  # trial type -> column defined on its events
    per_run: list[str] = Field(default_factory=list)  # columns holding one value per run
    rename: dict[str, str] = Field(default_factory=dict)

    _path = field_validator("path")(_check_template)


class FramesLabels(_Strict):
    """Labels from a table with one row per frame."""

    kind: Literal["frames"]
    path: str
    header: bool = True
    names: list[str] | None = None  # column names (replace the header, or name a file without one)
    first_frame: int = Field(0, ge=0)  # the frame the first row describes
    columns: dict[str, LabelKind] | None = None
    rename: dict[str, str] = Field(default_factory=dict)

    _path = field_validator("path")(_check_template)


class FslOnsetsLabels(_Strict):
    """One categorical label from FSL three-column onset files (one file per condition)."""

    kind: Literal["fsl_onsets"]
    path: str  # template matching the condition files of one run
    conditions: str | None = None  # OpenfMRI condition_key.txt: condNNN -> name
    column: str = "condition"
    baseline: str | None = None  # label of frames no condition covers (default NaN)
    hrf_shift: float = 0.0

    _path = field_validator("path")(_check_template)
    _conditions = field_validator("conditions")(lambda value: value and _check_template(value))


LabelSource = Annotated[EventsLabels | FramesLabels | FslOnsetsLabels, Field(discriminator="kind")]
LABEL_MODELS: dict[str, type[BaseModel]] = {
    "events": EventsLabels,
    "frames": FramesLabels,
    "fsl_onsets": FslOnsetsLabels,
}

FileFinder = Callable[[str], list[Path]]  # template filled with ids -> matching files


def _one(finder: FileFinder, template: str, where: str) -> Path:
    found = finder(template)
    if len(found) != 1:
        raise DataError(f"{where}: label file template {template!r} matches {len(found)} files, expected one")
    return found[0]


def build_frame_labels(
    sources: Sequence[LabelSource], n_frames: int, tr: float, finder: FileFinder, where: str
) -> pd.DataFrame:
    """The ``(T rows)`` frame labels of one run from its label sources, columns side by side.

    ``finder`` resolves a template (placeholders already filled) to files; ``where`` names the
    run in messages. Two sources giving one column name is an error (use ``rename``).
    """
    parts = []
    for source in sources:
        if isinstance(source, EventsLabels):
            path = _one(finder, source.path, where)
            table = events_to_frames(
                read_events(path),
                n_frames,
                tr,
                hrf_shift=source.hrf_shift,
                first_onset_at=source.first_onset_at,
                columns=source.columns,
                trial_type_from=source.trial_type_from,
                per_run=source.per_run,
                where=str(path),
            )
            table = table.rename(columns=source.rename)
        elif isinstance(source, FramesLabels):
            path = _one(finder, source.path, where)
            table = read_frame_table(
                path,
                n_frames,
                header=source.header,
                names=source.names,
                first_frame=source.first_frame,
                columns=source.columns,
            ).rename(columns=source.rename)
        else:
            files = finder(source.path)
            if not files:
                raise DataError(f"{where}: FSL onset template {source.path!r} matches no file")
            key = read_condition_key(_one(finder, source.conditions, where)) if source.conditions else None
            events = read_fsl_onsets(files, key)
            fill = {"trial_type": source.baseline} if source.baseline is not None else None
            table = events_to_frames(
                events,
                n_frames,
                tr,
                hrf_shift=source.hrf_shift,
                columns={"trial_type": "categorical"},
                fill=fill,
                where=str(files[0].parent),
            ).rename(columns={"trial_type": source.column})
        clash = sorted(set(table.columns) & {c for p in parts for c in p.columns})
        if clash:
            raise DataError(f"{where}: label column(s) {clash} come from two label sources; rename one")
        parts.append(table)
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=range(n_frames))


__all__ = [
    "EventsLabels",
    "FramesLabels",
    "FslOnsetsLabels",
    "LABEL_MODELS",
    "LabelSource",
    "PLACEHOLDERS",
    "build_frame_labels",
    "template_glob",
]
