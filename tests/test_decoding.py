"""The decoding protocol: group-wise folds, probes, baselines, the attentive probe, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.recording import Recording
from workbench.errors import ConfigError, DataError, WorkbenchError
from workbench.evaluation.attentive import AttentivePooler, attentive_probe
from workbench.evaluation.decoding import (
    decode,
    decoding_scores,
    decoding_table,
    group_folds,
    linear_predictions,
    mean_activation,
)

BLOCK = 10


pytestmark = pytest.mark.usefixtures("one_thread")


def _recordings(n_subjects=6, n_runs=2, frames=120, rois=8, seed=0, shift=1.0):
    """Runs of alternating 10-frame blocks 'a' / 'b'; ROI 0 is +shift in 'a', -shift in 'b'.

    A continuous label ``level`` (one random value per block) is added to ROI 1; every run has
    its own offset and gain, which per-run standardisation removes.
    """
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_subjects):
        for r in range(n_runs):
            block = np.arange(frames) // BLOCK
            condition = np.where(block % 2 == 0, "a", "b")
            level = rng.normal(size=block.max() + 1)[block]
            data = rng.normal(size=(frames, rois))
            data[:, 0] += np.where(condition == "a", shift, -shift)
            data[:, 1] += 1.5 * level
            data = 50.0 + rng.uniform(0.5, 2.0) * data
            labels = pd.DataFrame({"condition": pd.Categorical(condition), "level": level})
            out.append(Recording(f"s{s}", f"run{r}", data.astype(np.float32), 2.0, {}, labels))
    return out


def test_folds_never_share_a_group():
    groups = np.repeat(np.arange(7), 5)
    for grouping, n_folds in (("subject", 3), ("run", None), ("subject", None)):
        folds = group_folds(groups, grouping, n_folds)
        assert len(folds) == (n_folds or (5 if grouping == "subject" else 7))
        tested = np.concatenate([test for _, test in folds])
        assert np.array_equal(np.sort(tested), np.arange(groups.size))  # every row tested once
        for train, test in folds:
            assert not set(groups[train]) & set(groups[test])


def test_decode_reads_mean_activation_and_permutation_is_chance():
    results = decode(_recordings(), "condition", window=5, stride=5, grouping="subject", n_folds=3)
    methods = results["methods"]
    assert methods["mean-activation"]["balanced_accuracy"]["mean"] > 0.9
    assert results["meta"]["chance"] == 0.5
    # a probe fitted on permuted labels points in a random direction, which a strong signal turns into a
    # fold accuracy far from 0.5 either way: chance holds on average over seeds (measured 0.555 over 4)
    permuted = [
        decode(_recordings(), "condition", window=5, stride=5, n_folds=3, seed=s, baselines=["permuted-labels"])
        for s in range(4)
    ]
    assert abs(np.mean([r["methods"]["permuted-labels"]["balanced_accuracy"]["mean"] for r in permuted]) - 0.5) < 0.1
    assert results["meta"]["n_windows"] == 6 * 2 * 120 // 5  # every 5-frame window lies in one block
    for fold in results["meta"]["folds"]:  # each test fold holds 2 of the 6 subjects
        assert len(fold["test"]) == 2
    assert "mean-activation" in decoding_table(results)


def test_a_shuffled_label_is_not_decoded():
    recordings = _recordings()
    rng = np.random.default_rng(1)
    for rec in recordings:  # blocks relabelled at random: the signal no longer follows the label
        blocks = rng.permutation(np.array(["a", "b"] * (rec.n_timepoints // BLOCK // 2)))
        rec.frame_labels["condition"] = pd.Categorical(np.repeat(blocks, BLOCK))
    results = decode(recordings, "condition", window=5, grouping="run", n_folds=4)
    assert abs(results["methods"]["mean-activation"]["balanced_accuracy"]["mean"] - 0.5) < 0.15


def test_continuous_label_and_leave_one_run_out():
    predictions = {}
    results = decode(_recordings(n_subjects=2), "level", window=5, grouping="run", predictions_out=predictions)
    assert results["meta"]["n_folds"] == 4 and results["meta"]["kind"] == "continuous"
    assert results["methods"]["mean-activation"]["r2"]["mean"] > 0.5
    assert results["methods"]["mean-activation"]["spearman"]["mean"] > 0.7
    assert predictions["methods"]["mean-activation"].shape == predictions["true"].shape


def test_scores_on_a_hand_case():
    true, predicted = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0])
    scores = decoding_scores(true, predicted, "continuous")
    # R² = 1 - SS_res / SS_tot = 1 - (0 + 1 + 1 + 1) / 5; ranks (1, 3, 2, 4): rho = 1 - 6·2 / (4·15)
    assert scores["r2"] == pytest.approx(0.4)
    assert scores["spearman"] == pytest.approx(0.8)
    # classes 0: 2 of 2 right, 1: 1 of 2 right -> balanced 0.75; F1 (0.8 + 2/3) / 2
    scores = decoding_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), "categorical")
    assert scores["balanced_accuracy"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_factories_see_training_fold_windows_only():
    recordings = _recordings()
    seen = []

    def factory(train_windows):
        seen.append({r.subject for r in train_windows.recordings})
        assert train_windows.y is None  # the encoder gets no label
        return mean_activation

    results = decode(recordings, "condition", window=5, factories={"probe": factory}, n_folds=3)
    assert len(seen) == 3
    for subjects, fold in zip(seen, results["meta"]["folds"], strict=True):
        assert subjects and not subjects & set(fold["test"])
        assert len(subjects) == 4
    assert results["methods"]["probe"]["balanced_accuracy"]["mean"] > 0.9


def test_bad_requests_are_workbench_errors():
    recordings = _recordings(n_subjects=2)
    with pytest.raises(DataError, match="available: \\['condition', 'level'\\]"):
        decode(recordings, "colour", window=5)
    with pytest.raises(ConfigError, match="grouping"):
        decode(recordings, "condition", window=5, grouping="site")
    with pytest.raises(ConfigError, match="folds"):
        decode(recordings, "condition", window=5, n_folds=3)  # only 2 subjects
    with pytest.raises(ConfigError, match="not categories"):
        decode(recordings, "condition", window=5, exclude=["rest"])
    with pytest.raises(DataError, match="two classes"):
        decode(recordings, "condition", window=5, exclude=["a"])
    with pytest.raises(ConfigError, match="reserved"):
        decode(recordings, "condition", window=5, factories={"mean-activation": lambda w: mean_activation})
    no_labels = [Recording(r.subject, r.session, r.data, r.tr, {}) for r in recordings]
    with pytest.raises(WorkbenchError, match="no frame labels"):
        decode(no_labels, "condition", window=5)


def _token_task(n=400, tokens=8, dim=4, seed=0):
    """Token 3 carries +s and token 5 carries -s in feature 0, so the mean over tokens is blind to s;
    feature 1 marks token 3 (a positional code) so that a query can find it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.where(y == 1, 1.0, -1.0)
    x = rng.normal(scale=0.3, size=(n, tokens, dim))
    x[:, :, 0] -= x[:, :, 0].mean(axis=1, keepdims=True)  # feature 0 averages to 0 over tokens
    x[:, 3, 0] += s
    x[:, 5, 0] -= s
    x[:, 3, 1] += 3.0
    return x.astype(np.float32), y


def test_attentive_probe_finds_a_token_the_mean_pool_cannot():
    x, y = _token_task()
    train, test = slice(0, 300), slice(300, None)
    attentive = attentive_probe(x[train], y[train], x[test], "categorical", seed=0)
    pooled = linear_predictions(x[train].mean(axis=1), y[train], x[test].mean(axis=1), "categorical")
    assert decoding_scores(y[test], attentive, "categorical")["balanced_accuracy"] > 0.9
    assert decoding_scores(y[test], pooled, "categorical")["balanced_accuracy"] < 0.65
    again = attentive_probe(x[train], y[train], x[test], "categorical", seed=0)
    assert np.array_equal(attentive, again)  # seeded


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_factorised_single_query_attention_equals_multihead_attention(heads):
    """The probe's O(N·D·H) attention gives what nn.MultiheadAttention gives, gradients included."""
    torch.manual_seed(heads)
    pooler = AttentivePooler(8, 3, num_heads=heads)
    with torch.no_grad():  # non-zero biases, so the cancelled key bias and the value bias are exercised
        pooler.attention.in_proj_bias.normal_()
        pooler.attention.out_proj.bias.normal_()
    tokens = torch.randn(5, 11, 8, requires_grad=True)
    query = pooler.query.expand(5, -1, -1)
    expected = pooler.attention(query, tokens, tokens, need_weights=False)[0][:, 0]
    got = pooler.attend(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), tokens)
    (grad_got,) = torch.autograd.grad(got.square().sum(), tokens)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-4, atol=1e-6)


def test_attentive_probe_regression_and_bad_shapes():
    x, y = _token_task(n=300)
    value = x[:, 3, 0] * 10.0 + 100.0  # a continuous target in its own units
    predicted = attentive_probe(x[:200], value[:200], x[200:], "continuous", seed=0)
    assert decoding_scores(value[200:], predicted, "continuous")["r2"] > 0.8
    with pytest.raises(DataError, match="token features"):
        attentive_probe(x[:, :, 0], y, x[:, :, 0])
    with pytest.raises(ConfigError, match="kind"):
        attentive_probe(x, y, x, kind="ordinal")


def test_token_features_go_to_the_attentive_probe():
    calls = []

    def tokens(train_windows):
        def fn(windows):
            calls.append(windows.shape)
            return np.asarray(windows)  # (n, W, R): frames as tokens

        return fn

    results = decode(_recordings(n_subjects=3), "condition", window=5, factories={"frames · attentive": tokens})
    assert results["methods"]["frames · attentive"]["balanced_accuracy"]["mean"] > 0.8
    assert calls and all(len(shape) == 3 for shape in calls)


def _labelled_catalog(tmp_path, monkeypatch):
    """A local catalog entry: the runs of :func:`_recordings` as .npy files with per-frame label tables."""
    import yaml

    folder = tmp_path / "data"
    folder.mkdir()
    for rec in _recordings(n_subjects=3, frames=60):
        stem = f"sub-{rec.subject}_run-{rec.session[-1]}"
        np.save(folder / f"{stem}_timeseries.npy", rec.data)
        rec.frame_labels[["condition"]].to_csv(folder / f"{stem}_labels.tsv", sep="\t", index=False)
    entry = {
        "description": "labelled toy",
        "modality": "roi_timeseries",
        "tr": 2.0,
        "atlas": "none",
        "citation": "generated",
        "licence": "MIT",
        "read": {"orientation": "time_roi"},
        "labels": [
            {
                "kind": "frames",
                "path": "data/sub-{subject}_run-{run}_labels.tsv",
                "columns": {"condition": "categorical"},
            }
        ],
        "source": {"kind": "local", "glob": "data/*_timeseries.npy"},
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"toy": entry}}))
    monkeypatch.setenv("WORKBENCH_CATALOG", str(path))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


@pytest.mark.slow
def test_cli_decodes_with_a_run_refitted_per_fold(tmp_path, monkeypatch, capsys):
    import json

    from workbench.cli import main

    _labelled_catalog(tmp_path, monkeypatch)
    run, out = tmp_path / "run", tmp_path / "out"
    train = ["train", "jepa", "--dataset", "toy", "--window", "6", "--preset", "tiny", "--out", str(run)]
    assert main([*train, "--set", "patch_size=3", "--set", "max_steps=2", "--no-progress"]) == 0
    decode_args = ["evaluate", str(run), "--dataset", "toy", "--out", str(out), "--no-progress", "--task", "decoding"]
    capsys.readouterr()
    assert main(decode_args) == 2
    assert "--label" in capsys.readouterr().err
    assert main([*decode_args, "--label", "condition"]) == 2  # the run trained on the tested subjects
    assert "--refit" in capsys.readouterr().err
    assert main([*decode_args, "--label", "condition", "--folds", "3", "--stride", "5", "--refit"]) == 0
    printed = capsys.readouterr().out
    for row in ("jepa", "jepa · attentive", "jepa-untrained", "jepa-untrained · attentive", "mean-activation"):
        assert f"| {row} |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["refit"] and metrics["meta"]["n_folds"] == 3
    assert len(list((out / "runs").iterdir())) == 3  # one training per fold
    # the run itself, accepted as transductive: it saw every subject's unlabelled windows
    curves = [*decode_args, "--label", "condition", "--folds", "3", "--stride", "5", "--sizes", "1", "--draws", "2"]
    assert main([*curves, "--transductive", "--finetune"]) == 0
    printed = capsys.readouterr().out
    assert "TRANSDUCTIVE" in printed and "n = 1" in printed and "| jepa · finetune |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["pretraining"] == "transductive" and not metrics["meta"]["refit"]
    assert set(metrics["curves"]["jepa-untrained · finetune"]) == {"1", "all"}
    assert metrics["curves"]["jepa"]["1"]["draws"] == 2


def test_figures_and_table_of_decoding_results():
    from matplotlib.figure import Figure

    from workbench.viz.decoding import decoding_markdown, headline_table, plot_confusion, plot_predicted_vs_true

    recordings = _recordings(n_subjects=3)
    tasks, predictions = {}, {}
    for label in ("condition", "level"):
        predictions[label] = {}
        tasks[label] = decode(recordings, label, 5, stride=5, n_folds=3, predictions_out=predictions[label])
    table = decoding_markdown(tasks)
    assert "condition (bal. acc.)" in table and "level (R²)" in table
    assert "| permuted-labels |" in table
    cell = headline_table(tasks).loc["mean-activation", "level (R²)"]
    r2 = tasks["level"]["methods"]["mean-activation"]["r2"]
    assert cell == f"{r2['mean']:.2f} ± {r2['ci']:.2f}"
    fig = plot_confusion(tasks["condition"], predictions["condition"], ["mean-activation", "permuted-labels"])
    matrix = fig.axes[0].images[0].get_array()
    assert np.allclose(np.asarray(matrix).sum(axis=1), 1.0)  # rows normalised: recall per category
    assert np.mean(np.diag(matrix)) == pytest.approx(
        np.mean(tasks["condition"]["methods"]["mean-activation"]["balanced_accuracy"]["folds"]), abs=0.05
    )
    assert isinstance(plot_predicted_vs_true(tasks["level"], predictions["level"], ["mean-activation"]), Figure)
    with pytest.raises(ConfigError, match="continuous"):
        plot_confusion(tasks["level"], predictions["level"], ["mean-activation"])
    with pytest.raises(ConfigError, match="available"):
        plot_confusion(tasks["condition"], predictions["condition"], ["nope"])


def test_jepa_tokens_are_the_grid_its_embedding_pools():
    from workbench.data.windows import WindowSet
    from workbench.models.jepa.model import pool_tokens
    from workbench.runs import token_family, untrained_factory, window_overrides

    assert token_family("jepa") and not token_family("fewshot")
    assert window_overrides("jepa", "tiny", 6) == {"patch_size": 2}  # tiny's patch of 8 would give 0 patches
    assert window_overrides("jepa", "tiny", 40) == {} and window_overrides("fewshot", "tiny", 6) == {}
    with pytest.raises(ConfigError, match="cannot hold three time patches; use W >= 3"):
        window_overrides("jepa", "tiny", 2)
    windows = WindowSet(_recordings(n_subjects=2, frames=40), 6, 6, label_names=())
    kwargs = dict(preset="tiny", overrides={"patch_size": 3}, seed=0, device="cpu", normalization="none")
    tokens = untrained_factory("jepa", tokens=True, **kwargs)(windows)(windows.get(np.arange(4)))
    pooled = untrained_factory("jepa", **kwargs)(windows)(windows.get(np.arange(4)))
    assert tokens.shape == (4, 8 * 2, 32)  # R x P tokens of width D
    assert np.allclose(pool_tokens(torch.from_numpy(tokens)).numpy(), pooled, atol=1e-5)
    with pytest.raises(ConfigError, match="no token grid"):
        untrained_factory("fewshot", "tiny", tokens=True, device="cpu")(windows)(windows.get(np.arange(2)))


def test_an_encoder_that_cannot_fit_is_left_out_with_a_note_or_raises():
    def needs_more(train_windows):
        raise DataError("needs at least 2 subjects")

    recordings = _recordings(n_subjects=2)
    with pytest.raises(DataError, match="2 subjects"):
        decode(recordings, "condition", 5, factories={"x": needs_more})
    results = decode(recordings, "condition", 5, factories={"x": needs_more}, on_error="note")
    assert "x" not in results["methods"] and "mean-activation" in results["methods"]
    assert any(note.startswith("x left out") for note in results["meta"]["notes"])


def test_notebook_tasks_and_factories(tmp_path):
    from workbench.notebook import decoding_factories, decoding_tasks, training_plan

    tasks = decoding_tasks(["period", "rating"], ["category"], settings={"heatpain/rating": {"window": 5}})
    assert [t["label"] for t in tasks] == ["period", "rating", "category"]
    assert tasks[2] == {
        "key": "haxby-slice/category",
        "dataset": "haxby-slice",
        "label": "category",
        "window": 6,
        "stride": 1,
        "grouping": "run",
        "exclude": ["rest"],
        "baselines": ["mean-activation", "raw-window", "permuted-labels"],
        "trained": True,
    }
    assert tasks[1]["window"] == 5 and tasks[1]["label_shift"] == 3  # an override keeps the task's other settings
    with pytest.raises(ConfigError, match="does not run"):
        decoding_tasks(["period"], [], settings={"heatpain/ratng": {"window": 5}})
    with pytest.raises(ConfigError, match="unknown task"):
        decoding_tasks(["period"], [], transfer=["heatpain/period run 7"])
    assert [t["trained"] for t in decoding_tasks(["period"], ["category"], trained=["haxby-slice"])] == [False, True]
    assert decoding_tasks([], ["category"], haxby_folds=4)[0]["n_folds"] == 4
    with pytest.raises(ConfigError, match="heatpian"):
        decoding_tasks(["period"], [], trained=["heatpian"])
    plan = training_plan({"methods": ["fewshot", "jepa"], "presets": {"jepa": "tiny"}})
    names = set(decoding_factories(plan, 6, run_root=tmp_path))
    assert names == {
        "fewshot",
        "fewshot-untrained",
        "jepa",
        "jepa-untrained",
        "jepa · attentive",
        "jepa-untrained · attentive",
    }
    assert set(decoding_factories(plan, 6, attentive=False)) == {"fewshot-untrained", "jepa-untrained"}
    capped = decoding_factories(plan, 6, run_root=tmp_path, steps=7)
    uncapped = decoding_factories(plan, 6, run_root=tmp_path)
    assert capped["jepa"].train_overrides["max_steps"] == 7
    assert capped["jepa"].train_overrides["normalization"] == "none"
    assert uncapped["jepa"].train_overrides.get("max_steps") == plan.engine("jepa").get("max_steps")
