"""The reproducible report: the notebooks executed headlessly with papermill.

``run_report("quick")`` runs ``notebooks/01_data_inspection`` … ``05_fewshot`` in order and
writes ``reports/<run-id>/``::

    index.html            headline tables, key figures, links to everything below
    manifest.json         git commit, package versions, parameters, dataset sha256s, device,
                          wall time and status of every notebook
    metrics.json          every protocol and window of the few-shot evaluation (no timestamps)
    training_plan.json    the encoders' settings, written by 03 and read by the later notebooks
    notebooks/NN_*.ipynb  the executed notebooks (the record) and their offline HTML
    figures/              the key figures (PNG) shown on the index, captions in captions.json
    umap_<family>.html    interactive UMAP plots (one shared plotly.min.js beside them, no CDN)
    runs/<family>-<hash>/ checkpoints and history.json, shared by 03, 04 and 05

A run reads top to bottom (:func:`run_report`): **plan** the parameters of every notebook
(profile < explicit arguments < ``params``; a name no notebook declares, a value of the wrong
type or an unknown family is refused before anything runs), **record** the provenance in the
manifest, **execute** the notebooks in order until one fails, **finish** the manifest and the
index (which names a failing notebook and cell).
"""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, WorkbenchError
from workbench.files import check_output_folder, run_folder_lock, sweep_temporaries, write_json
from workbench.report.params import NOTEBOOK_DIR, NOTEBOOKS, PROJECT_ROOT, declared_parameters, plan_parameters
from workbench.report.profiles import PROFILES, Profile
from workbench.viz.outputs import FIGURES

MANIFEST = "manifest.json"
PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "nilearn",
    "nibabel",
    "matplotlib",
    "plotly",
    "umap-learn",
    "papermill",
    "nbconvert",
    "ipykernel",
    "pydantic",
)


class ReportError(WorkbenchError):
    """A notebook of the report failed; the message names the notebook, the cell and the error."""


# --------------------------------------------------------------------------- provenance


def _git_commit() -> tuple[str, bool | None]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=20)
        return done.stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
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


def _dataset_names(plan: dict[str, dict[str, Any]]) -> list[str]:
    names = set()
    for params in plan.values():
        names.update(params[k] for k in ("dataset", "nifti_dataset") if params.get(k))
        names.update([params["training"]["dataset"]] if params.get("training", {}).get("dataset") else [])
    return sorted(names)


def _checksums(plan: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    from workbench.data.catalog import dataset_checksums

    out = {}
    for name in _dataset_names(plan):
        try:
            out[name] = dataset_checksums(name)
        except WorkbenchError as exc:  # reported in the manifest; the notebook fails on it with context
            out[name] = {"error": str(exc)}
    return out


# --------------------------------------------------------------------------- the steps


def _plan(
    profile: str, dataset: str | None, methods: list[str] | None, device: str, params: dict[str, Any] | None
) -> tuple[Profile, dict[str, dict[str, Any]]]:
    """Each notebook's parameters: profile < ``dataset`` / ``methods`` / ``device`` < ``params``."""
    from workbench.notebook import training_plan

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if "out_dir" in (params or {}):
        raise ConfigError(
            "parameter out_dir is the report folder itself; choose it with out= (--out) and run_id= (--run-id)"
        )
    chosen = PROFILES[profile]
    values = dict(chosen.params)
    training = {**values.get("training", {}), "device": device}
    if dataset is not None:
        values["dataset"] = training["dataset"] = dataset
    if methods is not None:
        training["methods"] = list(methods)
    values["training"] = training
    values.update(params or {})
    plan = plan_parameters(values, declared_parameters())
    for notebook in plan.values():
        if "training" in notebook:
            training_plan(notebook["training"])  # unknown families, presets or fields fail before anything runs
    return chosen, plan


def _new_run_dir(out: Path, profile: str, run_id: str | None) -> Path:
    """The report folder: ``run_id`` (reused when it exists), or a new ``<time stamp>-<profile>[-N]``.

    A new folder is claimed with ``mkdir(exist_ok=False)``, so two reports started in the same
    second get folders of their own.
    """
    check_output_folder(out, "report folder (--out)")
    if run_id is None:
        out.mkdir(parents=True, exist_ok=True)
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{profile}"
        for n in itertools.count(1):
            run_dir = out / (base if n == 1 else f"{base}-{n}")
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
    elif not run_id or Path(run_id).name != run_id or run_id in {".", ".."}:
        raise ConfigError(f"run_id={run_id!r} must be a plain folder name (no '/')")
    else:
        run_dir = check_output_folder(out / run_id, "report folder (--run-id)")
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    return run_dir


def _manifest(run_dir: Path, profile: str, chosen: Profile, plan: dict[str, dict[str, Any]], device: str) -> dict:
    commit, dirty = _git_commit()
    return {
        "run_id": run_dir.name,
        "profile": profile,
        "profile_description": chosen.description,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": " ".join(sys.argv),
        "versions": _versions(),
        "platform": platform.platform(),
        "device": _device_text(device),
        "datasets": _checksums(plan),
        "parameters": plan,
        "cell_timeout_s": chosen.cell_timeout,
        "notebooks": {nb: {"status": "pending", "wall_time_s": None} for nb in NOTEBOOKS},
        "status": "running",
        "error": None,
    }


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
        return {
            **where,
            "execution_count": exc.exec_count,
            "ename": exc.ename,
            "evalue": exc.evalue,
            "source": exc.source,
        }
    # timeouts and dead kernels: papermill marks the cell it was running
    return {**where, "execution_count": None, "ename": type(exc).__name__, "evalue": str(exc), "source": None}


def _execute(nb: str, params: dict[str, Any], run_dir: Path, timeout: int | None, progress: bool) -> dict | None:
    """Run one notebook into ``run_dir/notebooks``; return its failure or ``None``."""
    import papermill

    executed = run_dir / "notebooks" / f"{nb}.ipynb"
    try:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / f"{nb}.ipynb"),
            str(executed),
            parameters=params,
            kernel_name="python3",
            cwd=str(NOTEBOOK_DIR),
            execution_timeout=timeout,
            progress_bar=progress,
            log_output=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no kernel start-up chatter on the console
        )
    except Exception as exc:  # papermill, nbclient timeouts, dead kernels: all end the run here
        return _failure(nb, exc, executed)
    return None


def _run_notebooks(
    run_dir: Path, profile: str, chosen: Profile, plan: dict[str, dict[str, Any]], device: str, progress: bool
) -> tuple[dict[str, Any] | None, Path]:
    """Record the provenance, execute the notebooks until one fails, write the manifest and index.

    Returns
    -------
    failure, index
        The failing notebook's :func:`_failure` record (``None`` when all ran) and ``index.html``.
    """
    from tqdm.auto import tqdm

    from workbench.report.html import write_index, write_notebook_html

    # record the provenance
    manifest = _manifest(run_dir, profile, chosen, plan, device)
    write_json(run_dir / MANIFEST, manifest, default=str)
    # execute the notebooks in order until one fails
    failure = None
    bar = tqdm(NOTEBOOKS, desc="report", unit="notebook", disable=not progress)
    for nb in bar:
        bar.set_postfix_str(nb)
        start = time.perf_counter()
        failure = _execute(nb, plan[nb], run_dir, chosen.cell_timeout, progress)
        record = manifest["notebooks"][nb]
        record["status"] = "failed" if failure else "ok"
        record["wall_time_s"] = round(time.perf_counter() - start, 2)
        executed = run_dir / "notebooks" / f"{nb}.ipynb"
        if executed.exists():
            write_notebook_html(executed, executed.with_suffix(".html"))
            record["html"] = f"notebooks/{nb}.html"
        if failure:
            break
    bar.close()
    # finish the manifest and the index
    for record in manifest["notebooks"].values():
        if record["status"] == "pending":
            record["status"] = "skipped"
    manifest["status"] = "failed" if failure else "ok"
    manifest["error"] = failure
    manifest["wall_time_s"] = round(sum(r["wall_time_s"] or 0 for r in manifest["notebooks"].values()), 2)
    write_json(run_dir / MANIFEST, manifest, default=str)
    return failure, write_index(run_dir, manifest)


def run_report(
    profile: str = "quick",
    dataset: str | None = None,
    methods: list[str] | None = None,
    device: str = "auto",
    out: str | Path = "reports",
    params: dict[str, Any] | None = None,
    run_id: str | None = None,
    progress: bool = True,
) -> Path:
    """Execute the notebooks and write the report folder.

    Parameters
    ----------
    profile : {"quick", "full", "tiny"}
        Parameter values of :data:`~workbench.report.profiles.PROFILES`.
    dataset : str, optional
        Catalog entry of ROI time series (overrides the profile's, for inspection and training).
    methods : list of str, optional
        Families to train and compare, e.g. ``["fewshot", "jepa"]``.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    out : path
        Folder holding the report folders.
    params : dict, optional
        Any notebook parameter; values typed on the command line are read as YAML
        (:mod:`workbench.report.params`). Precedence: profile < ``dataset``/``methods``/``device``
        < ``params``.
    run_id : str, optional
        Name of the report folder; default ``<YYYYmmdd-HHMMSS>-<profile>``. An existing folder is
        reused, so finished trainings under its ``runs/`` are not repeated.
    progress : bool
        Progress bars over notebooks and cells.

    Returns
    -------
    pathlib.Path
        The report folder (``index.html`` inside).

    Raises
    ------
    ConfigError
        Unknown profile, parameter, family or preset, or a value of the wrong type; ``out`` or
        the report folder is a file; another report is writing in the folder. Nothing runs.
    ReportError
        A notebook failed; ``index.html`` and ``manifest.json`` still name the notebook, the cell
        and the error, and the executed notebook is kept.
    """
    # 1. plan every notebook's parameters (fails before anything runs)
    chosen, plan = _plan(profile, dataset, methods, device, params)
    run_dir = _new_run_dir(Path(out).expanduser().resolve(), profile, run_id)
    for nb in NOTEBOOKS:
        plan[nb]["out_dir"] = str(run_dir)
    # 2.-4. record, execute, finish, with the folder locked against a second report writing there
    with run_folder_lock(run_dir, "report"):
        for folder in (run_dir, run_dir / "notebooks", run_dir / FIGURES):
            sweep_temporaries(folder)
        failure, index = _run_notebooks(run_dir, profile, chosen, plan, device, progress)
    if failure:
        where = f"cell {failure['cell_index']}" if failure["cell_index"] is not None else "an unknown cell"
        raise ReportError(
            f"notebook {failure['notebook']} failed at {where}: {failure['ename']}: {failure['evalue']}; "
            f"see {index} and {run_dir / 'notebooks' / (failure['notebook'] + '.ipynb')}"
        )
    return run_dir


__all__ = ["MANIFEST", "PROFILES", "Profile", "ReportError", "run_report"]
