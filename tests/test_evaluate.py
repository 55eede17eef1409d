"""Few-shot episodes and their metrics: known answers and agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

from workbench.errors import ConfigError, DataError
from workbench.evaluation import EpisodeResult, equal_error_rate, ovr_roc_auc, run_episodes


def _cohort(n_classes=6, n_support=30, n_query=8, dim=16, spread=0.3, seed=0):
    """Gaussian clusters: ``spread`` is the centre scale relative to unit noise."""
    rng = np.random.default_rng(seed)
    centres = spread * rng.normal(size=(n_classes, dim))
    support_labels = np.repeat(np.arange(n_classes), n_support)
    query_labels = np.repeat(np.arange(n_classes), n_query)
    support = centres[support_labels] + rng.normal(size=(support_labels.size, dim))
    query = centres[query_labels] + rng.normal(size=(query_labels.size, dim))
    return support, support_labels, query, query_labels


def _sklearn_eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """EER from sklearn's ROC points: the crossing of FPR and FNR on the straight segments."""
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[genuine, impostor])
    fnr = 1.0 - tpr
    for i in range(1, fpr.size):
        if fpr[i] >= fnr[i]:
            d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
            t = -d0 / (d1 - d0)
            return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    raise AssertionError("ROC curve never crossed FPR = FNR")


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "pearson"])
def test_episode_scores_and_metrics_match_independent_computation(metric):
    support, s_labels, query, q_labels = _cohort()
    result = run_episodes(support, s_labels, query, q_labels, 4, 3, n_query=5, n_episodes=6, seed=1, metric=metric)
    for e in range(result.n_episodes):
        prototypes = support[result.support_index[e]].mean(axis=1)  # (N, D)
        queries = query[result.query_index[e].reshape(-1)]
        if metric == "euclidean":
            expected = -((queries[:, None, :] - prototypes[None]) ** 2).sum(-1)
        elif metric == "cosine":
            expected = (queries @ prototypes.T) / np.outer(
                np.linalg.norm(queries, axis=1), np.linalg.norm(prototypes, axis=1)
            )
        else:
            expected = np.array([[np.corrcoef(q, p)[0, 1] for p in prototypes] for q in queries])
        np.testing.assert_allclose(result.scores[e], expected, rtol=1e-9, atol=1e-9)
        true = result.query_slot[e]
        predicted = expected.argmax(axis=1)
        assert result.accuracy[e] == pytest.approx(accuracy_score(true, predicted))
        assert result.macro_f1[e] == pytest.approx(f1_score(true, predicted, average="macro"))
        assert result.roc_auc[e] == pytest.approx(roc_auc_score(true, softmax(expected, axis=1), multi_class="ovr"))
        genuine = expected[np.arange(true.size), true]
        impostor = expected[np.eye(4, dtype=bool)[true] == 0]
        assert result.eer[e] == pytest.approx(_sklearn_eer(genuine, impostor))


def test_auc_and_eer_handle_ties_like_sklearn():
    rng = np.random.default_rng(3)
    templates = rng.normal(size=(3, 3))
    scores = templates[rng.integers(0, 3, size=(5, 12))]  # repeated rows: tied probabilities
    true = np.tile(np.repeat(np.arange(3), 4), (5, 1))
    auc = ovr_roc_auc(scores, true)
    genuine = rng.integers(0, 5, size=(5, 20)).astype(float)
    impostor = rng.integers(0, 4, size=(5, 40)).astype(float)
    eer = equal_error_rate(genuine, impostor)
    for e in range(5):
        assert auc[e] == pytest.approx(roc_auc_score(true[e], softmax(scores[e], axis=1), multi_class="ovr"))
        assert eer[e] == pytest.approx(_sklearn_eer(genuine[e], impostor[e]))


def test_auc_is_exact_when_softmax_would_underflow():
    # Distances of thousands saturate softmax(-d) to 0/1 in float64; ranks on the
    # log-softmax still order the queries: a perfect ranking gives AUC 1.
    scores = -np.array([[[0.0, 5000.0], [10.0, 4000.0], [4000.0, 10.0], [5000.0, 0.0]]])
    true = np.array([[0, 0, 1, 1]])
    assert ovr_roc_auc(scores, true)[0] == 1.0


def test_separable_subjects_are_identified_perfectly():
    support, s_labels, query, q_labels = _cohort(n_classes=12, spread=100.0)
    result = run_episodes(support, s_labels, query, q_labels, None, 1, n_episodes=200)
    summary = result.summary()
    assert summary["accuracy"] == {"mean": 1.0, "ci": 0.0}
    assert summary["macro_f1"]["mean"] == 1.0
    assert summary["roc_auc"]["mean"] == 1.0
    assert summary["eer"]["mean"] == 0.0


def test_identical_subjects_score_chance_within_ci():
    # Large pools: the CI covers episode sampling, not the accidents of a small pool.
    support, s_labels, query, q_labels = _cohort(12, n_support=1000, n_query=100, spread=0.0)
    summary = run_episodes(support, s_labels, query, q_labels, None, 4, n_episodes=600, seed=0).summary()
    assert abs(summary["accuracy"]["mean"] - 1 / 12) <= summary["accuracy"]["ci"]
    assert abs(summary["roc_auc"]["mean"] - 0.5) <= summary["roc_auc"]["ci"]
    assert abs(summary["eer"]["mean"] - 0.5) <= 2 * summary["eer"]["ci"] + 0.02


def test_sampling_respects_pools_classes_and_seed():
    support, s_labels, query, q_labels = _cohort(n_classes=8, n_support=10)
    result = run_episodes(support, s_labels, query, q_labels, 5, 6, n_query=4, n_episodes=50, seed=7)
    assert result.support_index.shape == (50, 5, 6) and result.query_index.shape == (50, 5, 4)
    # Each slot's windows belong to the slot's class and are drawn without replacement.
    assert (s_labels[result.support_index] == result.classes[..., None]).all()
    assert (q_labels[result.query_index] == result.classes[..., None]).all()
    assert (np.diff(np.sort(result.support_index, axis=2), axis=2) > 0).all()
    assert (np.diff(np.sort(result.query_index, axis=2), axis=2) > 0).all()
    assert np.unique(result.support_index).size == s_labels.size  # every window gets drawn
    assert all(np.unique(row).size == 5 for row in result.classes)
    assert len({tuple(sorted(row)) for row in result.classes}) > 10  # classes vary
    again = run_episodes(support, s_labels, query, q_labels, 5, 6, n_query=4, n_episodes=50, seed=7)
    other = run_episodes(support, s_labels, query, q_labels, 5, 6, n_query=4, n_episodes=50, seed=8)
    np.testing.assert_array_equal(result.query_index, again.query_index)
    np.testing.assert_array_equal(result.scores, again.scores)
    assert not np.array_equal(result.query_index, other.query_index)


def test_short_query_pool_uses_equal_smaller_count_with_warning():
    support, s_labels, query, q_labels = _cohort(n_classes=4, n_query=8)
    keep = ~((q_labels == 2) & (np.arange(q_labels.size) % 8 >= 2))  # class 2: 2 queries
    with pytest.warns(UserWarning, match="only 2 query windows"):
        result = run_episodes(support, s_labels, query[keep], q_labels[keep], None, 2, n_query=5, n_episodes=10)
    assert result.n_query == 2 and result.scores.shape == (10, 8, 4)


def test_concatenation_pools_episodes_of_one_setting():
    support, s_labels, query, q_labels = _cohort()
    a = run_episodes(support, s_labels, query, q_labels, 3, 2, n_episodes=20, seed=0)
    b = run_episodes(support, s_labels, query, q_labels, 3, 2, n_episodes=30, seed=1)
    both = EpisodeResult.concatenate([a, b])
    assert both.n_episodes == 50
    np.testing.assert_array_equal(both.accuracy, np.r_[a.accuracy, b.accuracy])
    assert both.genuine.shape == (50, 15) and both.impostor.shape == (50, 30)
    with pytest.raises(ConfigError, match="differ"):
        EpisodeResult.concatenate([a, run_episodes(support, s_labels, query, q_labels, 3, 1, n_episodes=5)])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"metric": "manhattan"}, ConfigError, "metric='manhattan' is unknown"),
        ({"k_shot": 31}, ConfigError, "k_shot=31 must be between 1 and the smallest support pool"),
        ({"n_way": 7}, ConfigError, "n_way=7 must be between 2 and the 6 classes"),
        ({"classes": [0, 9]}, DataError, r"classes \[9\] have no support or no query"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, error, message):
    support, s_labels, query, q_labels = _cohort()
    arguments = {"n_way": None, "k_shot": 1, "n_episodes": 5} | kwargs
    with pytest.raises(error, match=message):
        run_episodes(support, s_labels, query, q_labels, **arguments)


def test_nan_embeddings_are_rejected():
    support, s_labels, query, q_labels = _cohort()
    query[3, 0] = np.nan
    with pytest.raises(DataError, match="query_emb contains NaN"):
        run_episodes(support, s_labels, query, q_labels, None, 1)


def test_a_short_prototype_attracts_euclidean_queries_but_not_cosine_ones():
    # Query e1. Class 0: two identical supports at cosine 0.6 (prototype of length 1,
    # squared distance 2 - 2·0.6 = 0.8). Class 1: two supports that disagree along z; their
    # mean (0.25, -0.433, 0) has length 0.5 and cosine 0.5 with the query, squared distance
    # 1 - 2·0.25 + 0.25 = 0.75. The plain Euclidean rule picks class 1; the cosine with the
    # re-normalised mean (the default) picks class 0.
    a = [0.6, 0.8, 0.0]
    b_plane = [0.25, -np.sqrt(3) / 4]
    h = np.sqrt(0.75)
    support = np.array([a, a, [*b_plane, h], [*b_plane, -h]])
    support_labels = np.array([0, 0, 1, 1])
    query = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # the second, of class 1, is easy for both
    query_labels = np.array([0, 1])
    np.testing.assert_allclose(np.linalg.norm(support, axis=1), 1.0)
    kwargs = dict(n_way=None, k_shot=2, n_query=1, n_episodes=1)
    old = run_episodes(support, support_labels, query, query_labels, metric="euclidean", **kwargs)
    new = run_episodes(support, support_labels, query, query_labels, **kwargs)
    np.testing.assert_allclose(-old.scores[0, 0], [0.8, 0.75])
    np.testing.assert_allclose(new.scores[0, 0], [0.6, 0.5])
    assert new.metric == "cosine"
    assert old.accuracy[0] == 0.5 and new.accuracy[0] == 1.0


def test_accuracy_does_not_fall_as_k_grows_on_synthetic_fingerprints():
    # Unit-length FC profiles (what the untrained `fewshot` encoder gives): with the default
    # similarity more support windows never make a worse prototype. Paired episodes (one seed),
    # so a drop larger than a point would be a real one.
    from workbench.connectivity import fc_profiles
    from workbench.data.synthetic import fingerprints
    from workbench.evaluation import embed_windows, identification_pools

    for difficulty in (0.6, 0.8):
        runs = fingerprints(n_subjects=10, n_rois=20, n_timepoints=400, difficulty=difficulty, seed=0)
        support, query = identification_pools(runs, 20)

        def unit(windows):
            x = embed_windows(fc_profiles, windows)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        s, q = unit(support), unit(query)
        accuracy = [
            run_episodes(s, support.labels, q, query.labels, None, k, n_episodes=600).summary()["accuracy"]["mean"]
            for k in (1, 2, 4, 8)
        ]
        assert np.all(np.diff(accuracy) >= -0.01), (difficulty, accuracy)
        assert accuracy[-1] > accuracy[0] + 0.02, (difficulty, accuracy)
