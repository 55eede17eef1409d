"""Label-efficiency curves: draws, pre-training pools, the leak guard, the inner-CV probe, label delay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.data.recording import Recording
from workbench.errors import ConfigError, DataError, LeakError
from workbench.evaluation.decoding import decode, delay_labels, mean_activation
from workbench.evaluation.label_efficiency import check_no_leak, check_sizes, draw_groups, usable_sizes
from workbench.evaluation.linear import inner_splits, linear_predictions

BLOCK = 10


pytestmark = pytest.mark.usefixtures("one_thread")


def _recordings(n_subjects=8, n_runs=2, frames=60, rois=6, seed=0, shift=1.0, prefix="s"):
    """Alternating 10-frame blocks 'a' / 'b'; ROI 0 is +shift in 'a', -shift in 'b'."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_subjects):
        for r in range(n_runs):
            condition = np.where((np.arange(frames) // BLOCK) % 2 == 0, "a", "b")
            data = rng.normal(size=(frames, rois))
            data[:, 0] += np.where(condition == "a", shift, -shift)
            labels = pd.DataFrame({"condition": pd.Categorical(condition), "value": data[:, 0].copy()})
            out.append(Recording(f"{prefix}{s}", f"run{r}", data.astype(np.float32), 2.0, {}, labels))
    return out


def test_draws_never_hold_a_test_subject_and_pools_never_hold_another_folds_test_windows():
    recordings = _recordings()
    pools = []

    def factory(pool):
        assert pool.y is None  # pre-training sees no label
        pools.append({r.subject for r in pool.recordings})
        return mean_activation

    results = decode(
        recordings,
        "condition",
        5,
        {"enc": factory},
        stride=5,
        n_folds=4,
        sizes=(1, 2, 4),
        n_draws=2,
        seed=7,
        baselines=(),
    )
    meta = results["meta"]
    assert meta["sizes"] == ["1", "2", "4", "all"] and meta["pretraining"] == "inductive"
    everyone = {r.subject for r in recordings}
    for pool, fold in zip(pools, meta["folds"], strict=True):
        test = set(fold["test"])
        assert pool == everyone - test  # every training subject pre-trains, no test subject does
        for n, draws in fold["draws"].items():
            assert len(draws) == 2
            for drawn in draws:
                assert len(drawn) == int(n) and not set(drawn) & test and set(drawn) <= pool
    curve = results["curves"]["enc"]
    assert set(curve) == {"1", "2", "4", "all"} and curve["1"]["draws"] == 2 and curve["all"]["draws"] == 1
    assert results["methods"]["enc"]["balanced_accuracy"] == curve["all"]["balanced_accuracy"]
    # ROI 0 separates the classes: one labelled subject already reads it
    assert curve["1"]["balanced_accuracy"]["mean"] > 0.85
    # the same seed draws the same subjects; another seed other ones
    again = decode(
        recordings, "condition", 5, stride=5, n_folds=4, sizes=(1,), n_draws=2, seed=7, baselines=["mean-activation"]
    )
    other = decode(
        recordings, "condition", 5, stride=5, n_folds=4, sizes=(1,), n_draws=2, seed=8, baselines=["mean-activation"]
    )
    assert [f["draws"]["1"] for f in again["meta"]["folds"]] == [f["draws"]["1"] for f in meta["folds"]]
    assert [f["draws"]["1"] for f in other["meta"]["folds"]] != [f["draws"]["1"] for f in meta["folds"]]


def test_fewer_labels_read_less_of_a_weak_signal():
    """On a weak signal the probe improves with labelled subjects: the curve rises."""
    results = decode(
        _recordings(n_subjects=10, shift=0.25),
        "condition",
        5,
        stride=5,
        n_folds=5,
        sizes=(1,),
        n_draws=4,
        baselines=["mean-activation"],
    )
    curve = results["curves"]["mean-activation"]
    assert curve["all"]["balanced_accuracy"]["mean"] > curve["1"]["balanced_accuracy"]["mean"]


def test_transductive_pre_training_is_refused_unless_asked_and_the_tables_say_so():
    recordings = _recordings(n_subjects=4)
    with pytest.raises(LeakError, match="pretraining='transductive'"):
        check_no_leak(["s0", "s1", "s2"], ["s0", "s1"], ["s2"], "inductive")
    with pytest.raises(LeakError, match="probe would be fitted"):
        check_no_leak(["s0"], ["s0", "s2"], ["s2"], "transductive")  # labels of a test subject: never
    check_no_leak(["s0", "s1", "s2"], ["s0", "s1"], ["s2"], "transductive")
    with pytest.raises(ConfigError, match="pretraining="):
        decode(recordings, "condition", 5, n_folds=2, pretraining="semi")
    pools = []

    def factory(pool):
        pools.append({r.subject for r in pool.recordings})
        assert pool.y is None
        return mean_activation

    results = decode(recordings, "condition", 5, {"enc": factory}, n_folds=2, pretraining="transductive")
    assert all(pool == {"s0", "s1", "s2", "s3"} for pool in pools)  # the test subjects' windows, unlabelled
    assert results["meta"]["pretraining"] == "transductive"
    from workbench.evaluation.decoding import decoding_table

    assert "transductive" in decoding_table(results).lower()


def test_transfer_pre_trains_on_another_dataset_without_its_test_subjects():
    target = _recordings(n_subjects=4)
    other = _recordings(n_subjects=3, seed=1, prefix="t")
    same_people = _recordings(n_subjects=4, seed=2)  # the decoded subjects, another session
    seen = []

    def factory(pool):
        seen.append(sorted({f"{r.subject}" for r in pool.recordings}))
        return mean_activation

    results = decode(target, "condition", 5, {"enc": factory}, n_folds=2, pretrain_recordings=other)
    assert seen == [["t0", "t1", "t2"]] * 2 and results["meta"]["transfer"]
    seen.clear()
    results = decode(target, "condition", 5, {"enc": factory}, n_folds=2, pretrain_recordings=same_people)
    for pool, fold in zip(seen, results["meta"]["folds"], strict=True):
        assert not set(pool) & set(fold["test"])  # a test subject's other session is left out
    with pytest.raises(ConfigError, match="same atlas"):
        decode(target, "condition", 5, {"enc": factory}, n_folds=2, pretrain_recordings=_recordings(2, rois=5))


def test_finetuners_run_per_fold_and_draw_and_fill_the_curves():
    calls = []

    def finetuner(pool):
        def tune(train_x, train_y, train_groups, test_x, kind, seed):
            calls.append((len(np.unique(train_groups)), train_x.shape[1:], kind))
            return np.where(test_x[:, :, 0].mean(axis=1) > 0, 0, 1)  # class 'a' (code 0) when ROI 0 is high

        return tune

    results = decode(
        _recordings(),
        "condition",
        5,
        stride=5,
        n_folds=2,
        sizes=(1, 2),
        n_draws=3,
        finetune_draws=1,
        baselines=["mean-activation"],
        finetuners={"enc · finetune": finetuner},
    )
    # one draw per size and fold; early stopping's groups: n = 1 -> the subject's 2 runs, n = 2 -> 2 subjects, all -> 4
    assert sorted(c[0] for c in calls) == [2, 2, 2, 2, 4, 4]
    assert all(c[1] == (5, 6) and c[2] == "categorical" for c in calls)
    assert results["curves"]["enc · finetune"]["1"]["draws"] == 1
    assert results["methods"]["enc · finetune"]["balanced_accuracy"]["mean"] > 0.9
    assert results["meta"]["finetuned"] == ["enc · finetune"]


def test_sizes_and_draw_errors():
    assert check_sizes([4, 1, "all", 1]) == (1, 4, "all")
    assert check_sizes([]) == ("all",)
    for bad in ([0], [1.5], [True], ["few"]):
        with pytest.raises(ConfigError, match="sizes"):
            check_sizes(bad)
    kept, notes = usable_sizes((1, 4, 8, "all"), [6, 7])
    assert kept == [1, 4, "all"] and "n = 8" in notes[0]
    with pytest.raises(ConfigError, match="training groups"):
        draw_groups(["a", "b"], 2, 1, 0, 0)
    with pytest.raises(DataError, match="two classes"):
        draw_groups(["a", "b", "c"], 1, 1, 0, 0, has_classes=lambda groups: False)


@settings(max_examples=40, deadline=None)
@given(
    n_groups=st.integers(3, 12),
    n=st.integers(1, 11),
    n_draws=st.integers(1, 4),
    seed=st.integers(0, 99),
    fold=st.integers(0, 5),
)
def test_draws_are_distinct_subsets_of_the_candidates(n_groups, n, n_draws, seed, fold):
    candidates = [f"g{i}" for i in range(n_groups)]
    if n >= n_groups:
        with pytest.raises(ConfigError):
            draw_groups(candidates, n, n_draws, seed, fold)
        return
    draws = draw_groups(candidates, n, n_draws, seed, fold)
    assert len(draws) == n_draws
    for drawn in draws:
        assert len(set(drawn)) == n and set(drawn) <= set(candidates)
    assert draws == draw_groups(candidates, n, n_draws, seed, fold)


def test_inner_splits_keep_groups_apart_and_fall_back_to_time_blocks():
    subjects = np.repeat(["a", "b", "c", "d"], 6)
    runs = np.repeat(np.arange(8), 3)
    for fit, val in inner_splits(24, subjects, runs):
        assert not set(subjects[fit]) & set(subjects[val])
    one_subject = np.repeat(["a"], 6)
    two_runs = np.repeat([0, 1], 3)
    for fit, val in inner_splits(6, one_subject, two_runs):
        assert not set(two_runs[fit]) & set(two_runs[val])  # the subject's runs
    blocks = inner_splits(9, one_subject[:1].repeat(9), None)
    assert [list(val) for _, val in blocks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # contiguous in time
    with pytest.raises(DataError, match="at least 3"):
        inner_splits(2, None, None)


def test_the_inner_cv_penalty_shrinks_noise_features_to_the_mean():
    """100 noise features and 60 rows: a fixed Ridge(alpha=1) fits the noise (R² far below 0); the penalty the
    inner cross-validation picks shrinks the prediction towards the training mean (R² near 0)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    x, values = rng.normal(size=(240, 100)), rng.normal(size=240)
    groups = np.repeat(np.arange(12), 20)
    train, test = groups < 3, groups >= 3
    fixed = r2_score(values[test], Ridge(alpha=1.0).fit(x[train], values[train]).predict(x[test]))
    tuned = r2_score(
        values[test], linear_predictions(x[train], values[train], x[test], "continuous", groups=groups[train])
    )
    assert fixed < -0.5 and tuned > -0.05  # measured: -1.94 and -0.006
    labels = np.tile([3, 7], 120)
    x[:, 0] += 3.0 * (labels == 7)  # one informative feature among 100: Bayes accuracy 0.93
    predicted = linear_predictions(x[train], labels[train], x[test], "categorical", groups=groups[train])
    assert set(np.unique(predicted)) <= {3, 7} and (predicted == labels[test]).mean() > 0.65  # measured 0.73


def test_delay_labels_moves_each_label_later():
    recording = _recordings(n_subjects=1, n_runs=1)[0]
    (moved,) = delay_labels([recording], 3)
    assert moved.frame_labels["condition"].isna().sum() == 3
    assert list(moved.frame_labels["condition"][3:]) == list(recording.frame_labels["condition"][:-3])
    assert np.array_equal(moved.data, recording.data)
    assert delay_labels([recording], 0)[0] is recording
    with pytest.raises(ConfigError, match="label_shift"):
        delay_labels([recording], -1)
    # a delayed label is read where the signal is delayed
    late = []
    for r in _recordings(n_subjects=4):
        late.append(Recording(r.subject, r.session, np.roll(r.data, 3, axis=0), r.tr, {}, r.frame_labels))
    on_time = decode(late, "condition", 4, stride=2, n_folds=2)["methods"]["mean-activation"]
    delayed = decode(late, "condition", 4, stride=2, n_folds=2, label_shift=3)["methods"]["mean-activation"]
    assert delayed["balanced_accuracy"]["mean"] > on_time["balanced_accuracy"]["mean"] + 0.05


def _curve(values: dict[str, float], ci: float = 0.02) -> dict:
    return {n: {"balanced_accuracy": {"mean": v, "ci": ci}, "draws": 1} for n, v in values.items()}


def test_the_headline_is_the_smallest_n_whose_best_readout_matches_the_best_baseline():
    from workbench.evaluation.label_efficiency import matching_sizes

    results = {
        "meta": {"kind": "categorical", "sizes": ["1", "4", "all"]},
        "curves": {
            "mean-activation": _curve({"1": 0.6, "4": 0.7, "all": 0.80}, ci=0.03),
            "fc-edges": _curve({"1": 0.5, "4": 0.5, "all": 0.60}),
            "permuted-labels": _curve({"1": 0.9, "4": 0.9, "all": 0.9}),  # never a reference
            "jepa": _curve({"1": 0.60, "4": 0.70, "all": 0.76}),
            "jepa · finetune": _curve({"1": 0.65, "4": 0.78, "all": 0.85}),  # 0.78 >= 0.80 - 0.03
            "lfr": _curve({"1": 0.5, "4": 0.6, "all": 0.7}),
            "lfr-untrained": _curve({"1": 0.77, "4": 0.7, "all": 0.7}),
        },
    }
    headline = matching_sizes(results)
    assert headline["baseline"] == "mean-activation" and headline["target"] == pytest.approx(0.77)
    assert headline["encoders"]["jepa"]["n"] == "4" and headline["encoders"]["jepa"]["best"]["all"] == 0.85
    assert headline["encoders"]["lfr"]["n"] is None  # never
    assert headline["encoders"]["lfr-untrained"]["n"] == "1"
    assert set(headline["encoders"]) == {"jepa", "lfr", "lfr-untrained"}
    with pytest.raises(DataError, match="no feature baseline"):
        matching_sizes({"meta": {"kind": "categorical"}, "curves": {"jepa": _curve({"all": 0.5})}})
