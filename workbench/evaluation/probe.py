"""Linear probe on frozen embeddings (scikit-learn).

The probe reads how linearly a label is encoded in an embedding: a
``StandardScaler`` and a ``LogisticRegression`` (classification) or ``Ridge``
(regression) in one ``Pipeline``, fitted on the training rows only, so no
statistic of the test rows leaks into the model. Brain-JEPA (Dong et al. 2024)
reports accuracy and F1 for classification, MSE and Pearson r for regression;
R² is added.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workbench.errors import ConfigError, DataError

TASKS = ("classification", "regression")


def linear_probe(
    train_emb: np.ndarray,
    train_y: np.ndarray,
    test_emb: np.ndarray,
    test_y: np.ndarray,
    task: str = "classification",
    seed: int = 0,
) -> dict[str, float]:
    """Fit a linear model on frozen training embeddings and score it on test embeddings.

    Parameters
    ----------
    train_emb, test_emb : numpy.ndarray
        ``(n_train, D)`` and ``(n_test, D)`` embeddings.
    train_y, test_y : numpy.ndarray
        ``(n_train,)`` and ``(n_test,)`` labels: classes or real values.
    task : {"classification", "regression"}
        ``LogisticRegression(max_iter=2000)`` or ``Ridge(alpha=1)`` after
        standardisation fitted on the training rows.
    seed : int
        ``random_state`` of the logistic regression solver.

    Returns
    -------
    dict
        Classification: ``accuracy``, ``macro_f1``. Regression: ``r2``, ``pearson_r``
        (NaN when the predictions or the targets are constant: r is undefined),
        ``mse``. Both add ``n_train`` and ``n_test``.
    """
    if task not in TASKS:
        raise ConfigError(f"task={task!r} is unknown; use one of {', '.join(TASKS)}")
    train_emb, test_emb = np.asarray(train_emb), np.asarray(test_emb)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    for name, emb, y in (("train", train_emb, train_y), ("test", test_emb, test_y)):
        if emb.ndim != 2 or y.shape != (emb.shape[0],):
            raise DataError(f"{name}_emb must be (n, D) and {name}_y (n,); got {emb.shape}, {y.shape}")
    if train_emb.shape[1] != test_emb.shape[1]:
        raise DataError(f"train_emb has D={train_emb.shape[1]}, test_emb D={test_emb.shape[1]}")
    sizes = {"n_train": float(train_y.size), "n_test": float(test_y.size)}
    if task == "classification":
        if np.unique(train_y).size < 2:
            raise DataError("train_y has a single class; a classification probe needs two or more")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        predicted = model.fit(train_emb, train_y).predict(test_emb)
        return {
            "accuracy": float(accuracy_score(test_y, predicted)),
            "macro_f1": float(f1_score(test_y, predicted, average="macro")),
            **sizes,
        }
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    predicted = model.fit(train_emb, train_y.astype(np.float64)).predict(test_emb)
    constant = np.ptp(predicted) == 0 or np.ptp(test_y) == 0
    return {
        "r2": float(r2_score(test_y, predicted)),
        "pearson_r": float("nan") if constant else float(pearsonr(test_y, predicted)[0]),
        "mse": float(mean_squared_error(test_y, predicted)),
        **sizes,
    }
