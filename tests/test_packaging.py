"""The project's own hygiene: dependency lists in step, notebooks committed without outputs."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI names
CONDA_NAMES = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert pip_section[-1] == "-e ."
    have = {}
    for dep in conda:
        name = _name(dep)
        if name in {"python", "pip"}:
            continue
        have[CONDA_NAMES.get(name, name)] = dep
    assert set(have) == set(wanted), (
        f"environment.yml and pyproject.toml drifted: only in pyproject {sorted(set(wanted) - set(have))}, "
        f"only in environment.yml {sorted(set(have) - set(wanted))}"
    )
    for name, req in wanted.items():
        spec = req[len(name) :].strip()
        assert have[name].endswith(spec), f"{name}: pyproject says {req!r}, environment.yml {have[name]!r}"


def _committed_notebooks() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (subprocess.CalledProcessError, FileNotFoundError):
        out = [str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb")]
    return [ROOT / p for p in out]


def notebook_has_outputs(path: Path) -> bool:
    """True when any code cell carries outputs or an execution count."""
    nb = json.loads(path.read_text())
    return any(
        c.get("outputs") or c.get("execution_count") for c in nb.get("cells", []) if c.get("cell_type") == "code"
    )


def test_committed_notebooks_carry_no_outputs():
    dirty = [p.name for p in _committed_notebooks() if notebook_has_outputs(p)]
    assert not dirty, f"notebooks committed with outputs: {dirty}; run nbstripout on them"


def test_output_detector_flags_a_notebook_with_outputs(tmp_path):
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": "1",
                "outputs": [{"output_type": "stream"}],
                "execution_count": 1,
                "metadata": {},
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert notebook_has_outputs(path)
    nb["cells"][0]["outputs"], nb["cells"][0]["execution_count"] = [], None
    path.write_text(json.dumps(nb))
    assert not notebook_has_outputs(path)


def test_gitattributes_installs_the_nbstripout_filter():
    assert "*.ipynb filter=nbstripout" in (ROOT / ".gitattributes").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ")[0], "the README must open with the test command"
    assert "make test" in ci
    assert "torch==2.13.0" in ci.split("make test")[0], "CI must install the CPU torch before the project"
