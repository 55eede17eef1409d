"""``python -m bench``: a failing benchmark is recorded and the suite goes on; --only keeps the rest."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def suite(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT))
    main = importlib.import_module("bench.__main__")

    def fake(name: str, run) -> None:
        module = types.ModuleType(f"bench.{name}")
        module.__spec__ = importlib.machinery.ModuleSpec(f"bench.{name}", None)
        module.run = run
        monkeypatch.setitem(sys.modules, f"bench.{name}", module)

    def broken(quick: bool) -> dict:
        raise RuntimeError("disk full")

    fake("fake_ok", lambda quick: {"rows": [{"size": 1, "quick": quick, "speed": 2.5}]})
    fake("fake_broken", broken)
    monkeypatch.setattr(main, "BENCHMARKS", ("fake_ok", "fake_broken", "fake_absent"))
    monkeypatch.setattr(main, "machine", lambda: {"cpu": "test", "cores": 2, "gpus": []})
    return main


def test_a_failing_benchmark_is_recorded_and_the_suite_goes_on(suite, tmp_path: Path) -> None:
    results, docs = tmp_path / "results.json", tmp_path / "docs" / "benchmarks.md"
    assert suite.main(["--quick", "--results", str(results), "--docs", str(docs)]) == 0
    written = json.loads(results.read_text())
    entries = written["benchmarks"]
    assert list(entries) == ["fake_ok", "fake_broken", "fake_absent"]
    assert entries["fake_ok"]["ok"] and entries["fake_ok"]["result"]["rows"][0] == {
        "size": 1,
        "quick": True,
        "speed": 2.5,
    }
    assert not entries["fake_broken"]["ok"] and entries["fake_broken"]["error"] == "RuntimeError: disk full"
    assert (
        entries["fake_absent"]["skipped"]
        and "bench/fake_absent.py is not in this tree" in entries["fake_absent"]["error"]
    )
    assert written["quick"] is True and written["machine"]["cpu"] == "test"
    page = docs.read_text()
    assert "| `fake_broken` | failed |" in page and "| `fake_absent` | skipped |" in page


def test_only_reruns_a_subset_and_keeps_the_other_entries(suite, tmp_path: Path) -> None:
    results, docs = tmp_path / "results.json", tmp_path / "benchmarks.md"
    suite.main(["--results", str(results), "--docs", str(docs)])
    before = json.loads(results.read_text())["benchmarks"]
    suite.main(["--quick", "--only", "fake_ok", "--results", str(results), "--docs", str(docs)])
    after = json.loads(results.read_text())["benchmarks"]
    assert after["fake_broken"] == before["fake_broken"]
    assert after["fake_ok"]["quick"] is True and before["fake_ok"]["quick"] is False
    with pytest.raises(SystemExit):
        suite.main(["--only", "nonsense", "--results", str(results)])
