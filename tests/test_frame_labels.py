"""Per-frame labels: events aligned to frames, FSL onsets, per-volume tables, runs split by a label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.data.frame_labels import (
    events_to_frames,
    read_condition_key,
    read_events,
    read_frame_table,
    read_fsl_onsets,
    split_by_label,
    unify_categories,
)
from workbench.data.label_sources import FslOnsetsLabels, build_frame_labels
from workbench.data.recording import Recording
from workbench.errors import DataError


def _events(rows: list[tuple], columns: tuple[str, ...] = ("onset", "duration", "kind")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def test_a_known_onset_lands_on_the_known_frames() -> None:
    # TR 2 s: frame k covers [2k, 2k + 2), centre 2k + 1. An event at 4 s lasting 4 s covers the
    # centres 5 and 7 -> frames 2 and 3; one at 13.2 s lasting 1 s covers no centre but 13 < 13.2.
    events = _events([(4.0, 4.0, "a"), (13.2, 1.0, "b"), (16.9, 2.0, "c")])
    labels = events_to_frames(events, n_frames=10, tr=2.0)["kind"]
    assert labels.isna().tolist() == [True, True, False, False, True, True, True, True, False, True]
    assert labels[2] == labels[3] == "a" and labels[8] == "c"  # centre 17 in [16.9, 18.9)


def test_hrf_shift_moves_the_labels_later() -> None:
    events = _events([(4.0, 4.0, "a")])
    shifted = events_to_frames(events, n_frames=10, tr=2.0, hrf_shift=3.0)["kind"]
    # [7, 11) holds the centres 7 and 9 -> frames 3 and 4
    assert np.flatnonzero(shifted.notna()).tolist() == [3, 4]


def test_zero_duration_event_labels_the_frame_it_falls_in() -> None:
    labels = events_to_frames(_events([(5.5, 0.0, "tap")]), n_frames=6, tr=2.0)["kind"]
    assert np.flatnonzero(labels.notna()).tolist() == [2]  # 5.5 s lies in [4, 6)


def test_events_on_a_visit_clock_are_rereferenced_to_the_run() -> None:
    # heatpain's run 03: the first event at 846.216 s of the visit, 10.216 s into the run
    events = _events([(846.216, 12.5, 43.3), (866.228, 11.0, np.nan)], ("onset", "duration", "temperature"))
    temperature = events_to_frames(events, 191, 2.0, first_onset_at=10.216)["temperature"]
    # [10.216, 22.716) holds the centres 11, 13, ..., 21 -> frames 5 to 10
    assert np.flatnonzero(temperature.notna()).tolist() == [5, 6, 7, 8, 9, 10]
    assert temperature.dtype == np.float64 and temperature[5] == pytest.approx(43.3)


def test_events_file_with_trial_types_per_run_state_and_na(tmp_path: Path) -> None:
    path = tmp_path / "sub-01_run-1_events.tsv"
    path.write_text(
        "onset\tduration\ttemperature\tratings\tregulate\n2.0\t4.0\t44.3\tn/a\tup\n8.0\t2.0\tn/a\t103\tup\n"
    )
    table = events_to_frames(
        read_events(path),
        8,
        2.0,
        columns={"temperature": "continuous", "ratings": "continuous", "regulate": "categorical"},
        trial_type_from={"heat": "temperature", "rating": "ratings"},
        per_run=["regulate"],
    )
    assert table["trial_type"].astype(object).where(table["trial_type"].notna(), None).tolist() == [
        None,
        "heat",
        "heat",
        None,
        "rating",
        None,
        None,
        None,
    ]
    assert table["ratings"][4] == 103 and np.isnan(table["ratings"][1])
    assert (table["regulate"] == "up").all() and isinstance(table["regulate"].dtype, pd.CategoricalDtype)
    path.write_text("onset\tduration\tregulate\n0\t1\tup\n3\t1\tdown\n")
    with pytest.raises(DataError, match="'regulate' is declared per run but takes values \\['down', 'up'\\]"):
        events_to_frames(read_events(path), 8, 2.0, per_run=["regulate"])


def test_events_file_needs_onset_and_duration(tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_text("onset\ttrial_type\n1\ta\n")
    with pytest.raises(DataError, match="needs an 'duration' column"):
        read_events(tmp_path / "bad.tsv")


def test_fsl_onsets_with_condition_key(tmp_path: Path) -> None:
    run = tmp_path / "run001"
    run.mkdir()
    (run / "cond001.txt").write_text("0.0\t5.0\t1\n20.0\t5.0\t1\n")
    (run / "cond002.txt").write_text("10.0\t2.5\t1\n")
    (tmp_path / "condition_key.txt").write_text("task001 cond001 house\ntask001 cond002 face\n")
    key = read_condition_key(tmp_path / "condition_key.txt")
    assert key == {"cond001": "house", "cond002": "face"}
    events = read_fsl_onsets(sorted(run.glob("cond*.txt")), key)
    table = events_to_frames(events, 12, 2.5, columns={"trial_type": "categorical"}, fill={"trial_type": "rest"})
    # TR 2.5 s, centres 1.25 + 2.5k: [0, 5) -> 0, 1; [10, 12.5) -> 4; [20, 25) -> 8, 9
    expected = ["house", "house", "rest", "rest", "face", "rest", "rest", "rest", "house", "house", "rest", "rest"]
    assert table["trial_type"].astype(str).tolist() == expected
    source = FslOnsetsLabels(
        kind="fsl_onsets", path="run001/cond*.txt", conditions="condition_key.txt", column="category", baseline="rest"
    )
    built = build_frame_labels([source], 12, 2.5, lambda t: sorted(tmp_path.glob(t)), "toy run")
    assert built["category"].astype(str).tolist() == expected
    (run / "cond003.txt").write_text("1 1 1\n")
    with pytest.raises(DataError, match="condition 'cond003' is not in the condition key"):
        read_fsl_onsets(sorted(run.glob("cond*.txt")), key)


def test_frame_table_rows_start_at_first_frame(tmp_path: Path) -> None:
    (tmp_path / "fd.txt").write_text("FramewiseDisplacement\n" + "\n".join(f"{0.1 * k:.1f}" for k in range(1, 10)))
    table = read_frame_table(tmp_path / "fd.txt", 10, first_frame=1)
    assert np.isnan(table["FramewiseDisplacement"][0])
    np.testing.assert_allclose(table["FramewiseDisplacement"][1:], 0.1 * np.arange(1, 10))
    with pytest.raises(DataError, match=r"9 rows, but the run has 11 frames .* so 10 rows are expected"):
        read_frame_table(tmp_path / "fd.txt", 11, first_frame=1)
    (tmp_path / "attributes.txt").write_text("rest 0\nface 0\nface 1\nrest 1\n")
    attributes = read_frame_table(
        tmp_path / "attributes.txt",
        4,
        header=False,
        names=["category", "run"],
        columns={"category": "categorical", "run": "categorical"},
    )
    assert attributes["run"].astype(str).tolist() == ["0", "0", "1", "1"]


def _labelled(runs: list[int]) -> Recording:
    data = np.arange(len(runs) * 2, dtype=np.float32).reshape(len(runs), 2)
    labels = pd.DataFrame({"run": pd.Categorical([str(r) for r in runs]), "y": np.arange(len(runs), dtype=float)})
    return Recording("s1", "1", data, 2.5, {"dataset": "toy"}, labels)


def test_split_by_label_cuts_contiguous_runs() -> None:
    parts = split_by_label(_labelled([0, 0, 0, 1, 1, 2]), "run")
    assert [(p.session, p.n_timepoints) for p in parts] == [("run-0", 3), ("run-1", 2), ("run-2", 1)]
    np.testing.assert_array_equal(parts[1].data, np.array([[6, 7], [8, 9]], dtype=np.float32))
    assert list(parts[1].frame_labels.columns) == ["y"] and parts[1].frame_labels["y"].tolist() == [3.0, 4.0]
    assert parts[2].meta["run"] == "2"
    with pytest.raises(DataError, match="not contiguous"):
        split_by_label(_labelled([0, 1, 0]), "run")


def test_categories_are_shared_by_all_runs() -> None:
    a, b = _labelled([0, 0]), _labelled([1, 1])
    unify_categories([a, b])
    assert list(a.frame_labels["run"].cat.categories) == list(b.frame_labels["run"].cat.categories) == ["0", "1"]
