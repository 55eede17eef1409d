"""scikit-learn estimators over windows: Encoder, Pretrainer, their checks, pipelines and the doc page."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GroupKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator
from test_decoding import _recordings

from workbench.data.normalize import standardize_runs
from workbench.data.windows import WindowSet
from workbench.errors import DataError
from workbench.evaluation.decoding import decode, group_folds
from workbench.evaluation.linear import C_GRID, MAX_ITER
from workbench.runs import TrainedFactory, embed_function, load_trained, training_windows
from workbench.sklearn import WINDOW_INPUT_CHECKS, Encoder, Pretrainer, WindowShapeError, window_set

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore")]

WINDOW, ROIS = 5, 8
DOC = Path(__file__).resolve().parents[1] / "docs" / "sklearn.md"


def _windows(n=48, seed=0):
    return np.random.default_rng(seed).normal(size=(n, WINDOW, ROIS)).astype(np.float32)


def _pretrainer(**kwargs):
    return Pretrainer("fewshot", preset="tiny", steps=3, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished fewshot run on the windows of the labelled recordings (3 steps).

    Scaled with the dataset's statistics, not per window: the condition is ROI 0's mean over the window.
    """
    root = tmp_path_factory.mktemp("runs")
    factory = TrainedFactory(
        "fewshot",
        preset="tiny",
        run_root=root,
        device="cpu",
        progress=False,
        train_overrides={"max_steps": 3, "normalization": "dataset"},
    )
    return factory.fit(training_windows(_recordings(), WINDOW, "all")).checkpoint.parent


@pytest.mark.parametrize("which", ["encoder", "pretrainer"])
def test_sklearn_checks_pass_except_those_that_feed_two_dimensional_input(which, run_dir):
    estimator = Encoder(run_dir, device="cpu") if which == "encoder" else _pretrainer()
    results = check_estimator(estimator, expected_failed_checks=WINDOW_INPUT_CHECKS, on_fail=None)
    statuses = {r["check_name"]: r["status"] for r in results}
    assert {name for name, status in statuses.items() if status == "failed"} == set()
    for name in ("check_estimator_cloneable", "check_get_params_invariance", "check_set_params"):
        assert statuses[name] == "passed"
    assert {name for name, status in statuses.items() if status == "xfail"} == set(WINDOW_INPUT_CHECKS)


def test_encoder_embeds_as_the_run_embeds(run_dir):
    x = _windows()
    encoder = Encoder(run_dir, device="cpu", batch_size=7)
    assert encoder.fit(x) is encoder
    method, standardizer, _ = load_trained(run_dir, device="cpu")
    expected = embed_function(method, standardizer)(x)
    np.testing.assert_array_equal(encoder.transform(x), expected)
    assert (encoder.n_features_in_, encoder.n_frames_in_) == (ROIS, WINDOW)
    order = np.random.default_rng(1).permutation(len(x))
    np.testing.assert_array_equal(encoder.transform(x[order]), expected[order])


def test_window_shape_errors_are_data_and_value_errors(run_dir):
    encoder = Encoder(run_dir, device="cpu").fit(_windows())
    for bad, words in (
        (np.zeros((4, ROIS)), "give windows (n, W, F)"),
        (np.zeros((4, WINDOW, ROIS + 1)), f"built for {WINDOW} x {ROIS}"),
        (np.full((2, WINDOW, ROIS), np.nan), "NaN"),
        (np.zeros((0, WINDOW, ROIS)), "no window"),
    ):
        with pytest.raises(WindowShapeError, match=re.escape(words)) as caught:
            encoder.transform(bad)
        assert isinstance(caught.value, DataError) and isinstance(caught.value, ValueError)
    with pytest.raises(WindowShapeError, match="one subject per window"):
        window_set(_windows(4), groups=[0, 1])


def test_pretrainer_fit_is_idempotent_clones_and_pickles_without_its_windows():
    x, groups = _windows(), np.repeat(np.arange(6), 8)
    model = _pretrainer(settings={"latent_dim": 4}, train_settings={"batch_size": 16})
    first = model.fit(x, groups=groups).transform(x)
    assert first.shape == (len(x), 4) and model.result_["steps"] == 3
    assert model.method_.spec.n_subjects == 6
    np.testing.assert_array_equal(model.fit(x, groups=groups).transform(x), first)

    twin = clone(model)
    assert twin.get_params()["settings"] == {"latent_dim": 4} and not hasattr(twin, "method_")
    np.testing.assert_array_equal(twin.fit(x, groups=groups).transform(x), first)

    blob = pickle.dumps(model)
    assert x[:2].tobytes() not in blob and x[-1, 0].tobytes() not in blob
    np.testing.assert_array_equal(pickle.loads(blob).transform(x), first)


def test_pretrainer_writes_its_run_where_asked_and_an_encoder_reads_it(tmp_path):
    x = _windows()
    model = _pretrainer(run_dir=tmp_path / "run").fit(x)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert model.method_.spec.n_subjects == len(x)  # no groups: every window a subject of its own
    np.testing.assert_array_equal(Encoder(tmp_path / "run", device="cpu").fit(x).transform(x), model.transform(x))


def test_window_set_gives_back_the_windows_in_order():
    x = _windows(6)
    windows = window_set(x, groups=["a", "a", "b", "b", "c", "c"])
    np.testing.assert_array_equal(windows.get(np.arange(6)), x)
    assert list(windows.subjects) == ["a", "b", "c"] and windows.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_pipeline_cross_validation_equals_the_decoding_protocol(run_dir):
    recordings = _recordings()
    results = decode(
        recordings,
        "condition",
        window=WINDOW,
        stride=WINDOW,
        n_folds=3,
        baselines=[],
        factories={"fewshot": lambda pool: Encoder(run_dir, device="cpu").fit(pool.get([0])).transform},
    )
    windows = WindowSet(standardize_runs(recordings), WINDOW, WINDOW, label_names=["condition"], label_rule="pure")
    x, y, subjects = windows.get(np.arange(len(windows))), windows.y[:, 0].astype(np.int64), windows.labels
    assert len(x) == results["meta"]["n_windows"]  # every window of the protocol is labelled here

    probe = LogisticRegressionCV(
        Cs=list(C_GRID), cv=GroupKFold(3), scoring="neg_log_loss", max_iter=MAX_ITER, random_state=0
    )
    pipeline = make_pipeline(Encoder(run_dir, device="cpu"), StandardScaler(), probe)
    folds = group_folds(subjects, "subject", 3)
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_validate(pipeline, x, y, cv=folds, scoring="balanced_accuracy", params={"groups": subjects})[
            "test_score"
        ]
    assert 0.6 < scores.mean() < 1.0  # read, not perfectly: another penalty grid scores 0.76 on these folds
    assert [list(test) for _, test in GroupKFold(3).split(x, y, subjects)] == [list(test) for _, test in folds]
    np.testing.assert_allclose(scores, results["methods"]["fewshot"]["balanced_accuracy"]["folds"], rtol=0, atol=1e-9)


def test_groups_reach_the_pretrainer_inside_a_pipeline():
    x, groups = _windows(), np.repeat(np.arange(4), 12)
    with sklearn.config_context(enable_metadata_routing=True):
        pipeline = make_pipeline(_pretrainer().set_fit_request(groups=True), StandardScaler())
        out = pipeline.fit(x, groups=groups).transform(x)
    assert pipeline[0].method_.spec.n_subjects == 4 and out.shape == (len(x), 8)


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_page_runs(tmp_path, monkeypatch):
    blocks = _doc_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with sklearn.config_context():  # the page switches metadata routing on
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["scores"].shape == (5,) and np.isfinite(namespace["scores"]).all()
    assert namespace["held_out"].shape == (5,) and not sklearn.get_config()["enable_metadata_routing"]
    assert (tmp_path / "runs" / "fewshot-demo" / "checkpoint.pt").is_file()
