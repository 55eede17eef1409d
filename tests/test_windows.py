"""Windows: temporal splits never overlap, train-only statistics, datasets and the memmap cache."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data import normalize
from workbench.data.cache import memmap_recordings
from workbench.data.dataset import WindowDataset
from workbench.data.normalize import Standardizer
from workbench.data.recording import Recording
from workbench.data.windows import (
    WindowSet,
    assert_disjoint,
    window_starts,
)
from workbench.errors import CheckpointError, ConfigError, DataError


def _recordings(lengths=(100, 100), n_rois=4, seed=0, subjects=None) -> list[Recording]:
    rng = np.random.default_rng(seed)
    subjects = subjects or [f"s{i}" for i in range(len(lengths))]
    return [
        Recording(subject, "1", rng.standard_normal((t, n_rois)).astype(np.float32) * 3 + 1, 1.0)
        for subject, t in zip(subjects, lengths)
    ]


def _brute_force_overlap(a: WindowSet, b: WindowSet) -> bool:
    frames_a = {(a.recordings[r].subject, a.recordings[r].session, f) for r, s, e in a.spans() for f in range(s, e)}
    return any(
        (b.recordings[r].subject, b.recordings[r].session, f) in frames_a for r, s, e in b.spans() for f in range(s, e)
    )


def test_window_starts_hand_cases():
    np.testing.assert_array_equal(window_starts(10, 4, 3), [0, 3, 6])
    np.testing.assert_array_equal(window_starts(10, 3, 2, "first"), [0, 2])  # cut 5: [0,3),[2,5)
    np.testing.assert_array_equal(window_starts(10, 3, 2, "second"), [5, 7])
    np.testing.assert_array_equal(window_starts(11, 2, 1, "first", split=0.3), [0, 1])  # cut round(3.3)=3
    assert window_starts(5, 6, 1).size == 0 and window_starts(5, 6, 1).dtype == np.int64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(length=0, stride=1), "length"),
        (dict(length=2, stride=0), "stride"),
        (dict(length=2, stride=1, part="middle"), "middle"),
        (dict(length=2, stride=1, split=1.0), "split"),
        (dict(length=2.5, stride=1), "integer"),
    ],
)
def test_window_starts_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        window_starts(20, **kwargs)


def test_first_and_second_parts_never_overlap_or_cross_the_cut():
    combos = itertools.product((7, 13, 50, 101), (1, 2, 5, 9), (1, 2, 3, 7), (0.1, 0.37, 0.5, 0.73, 0.9))
    checked = 0
    for t, w, stride, split in combos:
        recs = _recordings(lengths=(t, t + 3), n_rois=2)
        try:
            first = WindowSet(recs, w, stride, "first", split)
            second = WindowSet(recs, w, stride, "second", split)
        except DataError:
            continue  # no window fits in one of the parts
        assert_disjoint(first, second)
        assert not _brute_force_overlap(first, second)
        cuts = np.array([int(round(r.n_timepoints * split)) for r in recs])
        assert (first.starts + w <= cuts[first.rec_index]).all()
        assert (second.starts >= cuts[second.rec_index]).all()
        lengths = np.array([r.n_timepoints for r in recs])
        assert (second.starts + w <= lengths[second.rec_index]).all()
        checked += 1
    assert checked > 200


def test_assert_disjoint_raises_on_overlap_and_agrees_with_brute_force():
    recs = _recordings(lengths=(60, 45), n_rois=2)
    rng = np.random.default_rng(0)
    for _ in range(40):
        w_a, w_b = rng.integers(1, 12, size=2)
        a = WindowSet(recs, int(w_a), int(rng.integers(1, 15)), "all")
        b = WindowSet(recs[int(rng.integers(0, 2)) :], int(w_b), int(rng.integers(1, 15)), "all")
        if _brute_force_overlap(a, b):
            with pytest.raises(DataError, match="overlap"):
                assert_disjoint(a, b)
        else:
            assert_disjoint(a, b)
    with pytest.raises(DataError, match=r"s0/1 frames \[0, 10\)"):
        assert_disjoint(WindowSet(recs, 10, 10, "first"), WindowSet(recs, 10, 10, "all"))


def test_assert_disjoint_only_compares_the_same_run():
    recs = _recordings(lengths=(30, 30))
    assert_disjoint(WindowSet(recs[:1], 10, 1), WindowSet(recs[1:], 10, 1))


def test_window_set_indexing_and_get():
    recs = _recordings(lengths=(20, 9, 14), n_rois=3, subjects=["b", "a", "b2"])
    ws = WindowSet(recs, length=5, stride=4)
    assert ws.subjects == ["a", "b", "b2"]
    np.testing.assert_array_equal(ws.rec_index, [0, 0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(ws.starts, [0, 4, 8, 12, 0, 4, 0, 4, 8])
    np.testing.assert_array_equal(ws.labels, [1, 1, 1, 1, 0, 0, 2, 2, 2])
    idx = np.array([6, 0, 5])
    x = ws.get(idx)
    assert x.shape == (3, 5, 3) and x.dtype == np.float32
    for out, i in zip(x, idx):
        rec = recs[ws.rec_index[i]]
        np.testing.assert_array_equal(out, rec.data[ws.starts[i] : ws.starts[i] + 5])
    np.testing.assert_array_equal(ws.get(slice(0, 2)), ws.get(np.array([0, 1])))
    assert ws.get(3).shape == (5, 3)
    np.testing.assert_array_equal(ws.spans()[4], [1, 0, 5])
    np.testing.assert_allclose(ws.time_in_run()[:2], [2.5 / 20, 6.5 / 20])


def test_given_subjects_fix_the_label_space():
    recs = _recordings(lengths=(20, 20, 20), subjects=["x", "y", "z"])
    shared = WindowSet(recs[1:], 10, 10, subjects=["x", "y", "z"])
    np.testing.assert_array_equal(shared.labels, [1, 1, 2, 2])
    with pytest.raises(DataError, match="'x'"):
        WindowSet(recs, 10, 10, subjects=["y", "z"])


def test_window_set_validation_messages():
    recs = _recordings(lengths=(30, 30), n_rois=4)
    recs[1] = Recording("s1", "1", np.zeros((30, 5), np.float32), 1.0)
    with pytest.raises(DataError, match="s0/1 has 4, s1/1 has 5"):
        WindowSet(recs, 5, 5)
    with pytest.raises(DataError, match=r"length 20 fits in part 'first'.*lower the window length"):
        WindowSet(_recordings(lengths=(30,)), 20, 1, "first")
    short_and_long = WindowSet(_recordings(lengths=(3, 30)), 10, 10)
    assert set(short_and_long.rec_index) == {1}  # the short run just contributes nothing
    volume = Recording("v", "1", np.zeros((3, 3, 3, 10), np.float32), 2.0)
    with pytest.raises(DataError, match="volume_frames"):
        WindowSet([volume], 5, 5)


def test_standardizer_matches_numpy_over_exactly_the_covered_frames():
    recs = _recordings(lengths=(41, 30), n_rois=3, seed=1)
    train = WindowSet(recs, length=6, stride=8, part="first")  # gaps between windows
    covered = np.concatenate(
        [
            recs[0].data[[0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]],  # cut 20: starts 0, 8
            recs[1].data[[0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]],  # cut 15: starts 0, 8
        ]
    ).astype(np.float64)
    stats = Standardizer("dataset").fit(train)
    np.testing.assert_allclose(stats.mean_, covered.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std_, covered.std(axis=0), rtol=1e-12)
    overlapping = Standardizer("dataset").fit(WindowSet(recs[:1], length=6, stride=2, part="first"))
    np.testing.assert_allclose(overlapping.mean_, recs[0].data[:20].astype(np.float64).mean(axis=0), rtol=1e-12)
    z = stats.transform(recs[0].data)
    np.testing.assert_allclose(z, (recs[0].data - covered.mean(axis=0)) / covered.std(axis=0), rtol=1e-5, atol=1e-5)
    assert z.dtype == np.float32
    data = recs[0].data.copy()
    assert stats.transform(data, copy=False) is data  # in place on a float32 array
    np.testing.assert_array_equal(data, z)
    assert stats.transform(recs[0].data.astype(np.float64), copy=False).dtype == np.float32


def test_standardizer_ignores_the_second_part_and_streams_in_chunks(monkeypatch):
    recs = _recordings(lengths=(50, 50), seed=2)
    before = Standardizer("dataset").fit(WindowSet(recs, 5, 5, "first"))
    for rec in recs:
        rec.data[25:] = 1e6
    chunked = Standardizer("dataset")
    monkeypatch.setattr(normalize, "_CHUNK_FRAMES", 7)
    after = chunked.fit(WindowSet(recs, 5, 5, "first"))
    np.testing.assert_allclose(after.mean_, before.mean_, rtol=1e-12)
    np.testing.assert_allclose(after.std_, before.std_, rtol=1e-12)


def test_standardizer_errors_and_round_trip():
    recs = _recordings(lengths=(30,), n_rois=4)
    recs[0].data[:, 2] = 7.0
    with pytest.raises(DataError, match="ROI 2 is constant"):
        Standardizer("dataset").fit(WindowSet(recs, 5, 5))
    with pytest.raises(ConfigError, match="not fitted"):
        Standardizer("dataset").transform(np.zeros((2, 4)))
    fitted = Standardizer("dataset").fit(WindowSet(_recordings(lengths=(30,)), 5, 5))
    restored = Standardizer.from_dict(fitted.to_dict())
    np.testing.assert_array_equal(restored.mean_, fitted.mean_)
    np.testing.assert_array_equal(restored.std_, fitted.std_)
    with pytest.raises(DataError, match="4"):
        fitted.transform(np.zeros((2, 5)))
    with pytest.raises(CheckpointError, match="mean"):
        Standardizer.from_dict({"mode": "dataset", "std": [1.0]})


def test_window_dataset_items_and_batches():
    recs = _recordings(lengths=(20, 20), n_rois=3)
    ws = WindowSet(recs, 5, 5)
    stats = Standardizer("dataset").fit(WindowSet(recs, 5, 5, "first"))
    dataset = WindowDataset(ws, stats)
    assert len(dataset) == 8
    item = dataset[5]
    assert item["x"].shape == (5, 3) and item["x"].dtype == torch.float32
    assert item["subject"].dtype == torch.int64 and item["subject"].ndim == 0 and int(item["subject"]) == 1
    assert int(item["index"]) == 5
    np.testing.assert_allclose(item["x"].numpy(), stats.transform(ws.get(5)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False)
    batches = list(loader)
    assert batches[0]["x"].shape == (3, 5, 3) and batches[-1]["x"].shape == (2, 5, 3)
    np.testing.assert_array_equal(torch.cat([b["subject"] for b in batches]).numpy(), ws.labels)
    np.testing.assert_allclose(batches[1]["x"][2].numpy(), item["x"].numpy())
    batch = dataset[[5, 0, 7]]  # a sequence of indices gives the batch itself
    assert batch["x"].shape == (3, 5, 3) and batch["subject"].tolist() == [1, 0, 1]
    np.testing.assert_allclose(batch["x"][0].numpy(), item["x"].numpy())
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(dataset), 3, drop_last=False)
    direct = list(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None))
    for a, b in zip(direct, batches):
        for name in ("x", "subject", "index"):
            torch.testing.assert_close(a[name], b[name])
    raw = WindowDataset(ws)[0]["x"].numpy()
    np.testing.assert_array_equal(raw, recs[0].data[:5])
    with pytest.raises(IndexError):
        dataset[8]
    with pytest.raises(DataError, match="3"):
        WindowDataset(WindowSet(_recordings(n_rois=5), 5, 5), stats)


def test_memmap_round_trip_and_windows_from_maps(tmp_path):
    recs = _recordings(lengths=(40, 25), n_rois=3)
    recs[0].meta["age"] = 30
    recs[1].frame_labels = pd.DataFrame({"task": pd.Categorical(["a", "b"] * 12 + ["a"])})
    mapped = memmap_recordings(recs, tmp_path)
    for src, out in zip(recs, mapped):
        assert isinstance(out.data, np.memmap) and not out.data.flags.writeable
        np.testing.assert_array_equal(out.data, src.data)
        assert (out.subject, out.session, out.tr) == (src.subject, src.session, src.tr)
    assert mapped[0].meta["age"] == 30 and mapped[0].meta["cache_file"].endswith(".npy")
    assert mapped[1].frame_labels is recs[1].frame_labels  # labels travel with the cached run
    ws_src, ws_map = WindowSet(recs, 8, 3), WindowSet(mapped, 8, 3)
    np.testing.assert_array_equal(ws_map.get(np.arange(len(ws_map))), ws_src.get(np.arange(len(ws_src))))
    np.testing.assert_allclose(Standardizer("dataset").fit(ws_map).mean_, Standardizer("dataset").fit(ws_src).mean_)
    assert ws_map.get(0).shape == (8, 3)  # pages released after the read, the map still works
    with pytest.raises(DataError, match="overlap"):
        assert_disjoint(ws_src, WindowSet(mapped, 8, 8, "second"))  # same runs, matched by name


def test_memmap_rerun_does_not_rewrite_and_key_names_files(tmp_path, monkeypatch):
    recs = _recordings(lengths=(20, 20))
    first = memmap_recordings(recs, tmp_path)
    files = sorted(tmp_path.iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]
    monkeypatch.setattr(np, "save", lambda *a, **k: pytest.fail("np.save called on a cached run"))
    again = memmap_recordings(recs, tmp_path)
    assert sorted(tmp_path.iterdir()) == files and [f.stat().st_mtime_ns for f in files] == stamps
    assert [r.meta["cache_file"] for r in again] == [r.meta["cache_file"] for r in first]
    monkeypatch.undo()
    changed = _recordings(lengths=(20, 20), seed=9)
    memmap_recordings(changed, tmp_path)  # new content -> new files beside the old ones
    assert len(list(tmp_path.iterdir())) == 4
    keyed = memmap_recordings(iter(recs), tmp_path / "keyed", key=lambda r: f"run {r.subject}")
    assert os.path.basename(keyed[0].meta["cache_file"]) == "s0_1_20x4_f4_run_s0.npy"


def test_memmap_crash_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def save_then_crash(fh, array, *args, **kwargs):
        fh.write(b"\x93NUMPY partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        memmap_recordings(_recordings(lengths=(20,)), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_memmap_reports_a_corrupt_cached_file(tmp_path):
    recs = _recordings(lengths=(20,))
    path = memmap_recordings(recs, tmp_path)[0].meta["cache_file"]
    with open(path, "r+b") as fh:
        fh.truncate(60)
    with pytest.raises(DataError, match="delete it to rebuild"):
        memmap_recordings(recs, tmp_path)


@pytest.mark.parametrize("mode", ["window-demean", "window"])
def test_window_norm_removes_run_offsets_without_looking_at_other_windows(mode):
    recs = _recordings(lengths=(40, 40), n_rois=3, seed=3)
    recs[1].data += np.float32(1e4)  # a per-run baseline, as in unprocessed BOLD
    stats = Standardizer(mode).fit(WindowSet(recs, 8, 8, "first"))
    ws = WindowSet(recs, 8, 8)
    windows = ws.get(np.arange(len(ws)))
    z = stats.transform(windows)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-5)
    if mode == "window":
        np.testing.assert_allclose(z.std(axis=1), 1.0, atol=1e-4)
    # each window alone: transforming one window gives the same as transforming the batch
    np.testing.assert_allclose(stats.transform(windows[3:4]), z[3:4], atol=1e-6)
    # offsets are gone: the same series shifted by a constant gives the same windows
    shifted = stats.transform(windows + np.float32(5.0))
    np.testing.assert_allclose(shifted, z, atol=1e-3)


def test_window_norm_constant_roi_in_a_window_is_zero_and_state_round_trips():
    recs = _recordings(lengths=(40,), n_rois=3, seed=4)
    stats = Standardizer("window").fit(WindowSet(recs, 8, 8))
    window = recs[0].data[:8].copy()[None]
    window[0, :, 1] = window[0, 0, 1]
    z = stats.transform(window)
    assert np.isfinite(z).all() and np.all(z[0, :, 1] == 0.0)
    restored = Standardizer.from_dict(stats.to_dict())
    assert restored.mode == "window"
    np.testing.assert_array_equal(restored.transform(window), z)
    with pytest.raises(ConfigError, match="normalization"):
        Standardizer("median")
    with pytest.raises(CheckpointError, match="mode"):
        Standardizer.from_dict({**stats.to_dict(), "mode": "median"})
    with pytest.raises(DataError, match="W >= 2"):
        stats.transform(recs[0].data[:1])
