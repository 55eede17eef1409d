"""The yaware family: shapes, gradients, label columns and bandwidths, bad input, engine runs, resume."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.recording import Recording
from workbench.data.spec import DataSpec, LabelColumn
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError
from workbench.methods import get_method
from workbench.models.yaware import YAware
from workbench.train import load_method, make_train_config, read_checkpoint, train

N_ROIS, N_FRAMES = 6, 12
LABELS = (
    LabelColumn("task", "categorical", ("heat", "rest")),
    LabelColumn("rating", "continuous"),
    LabelColumn("age", "continuous"),
)
SPEC = DataSpec(N_ROIS, N_FRAMES, n_subjects=3, labels=LABELS)


def _tiny(spec: DataSpec = SPEC, **overrides) -> YAware:
    torch.manual_seed(0)
    return YAware(YAware.make_config("tiny", **overrides), spec)


def _batch(n: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.stack(
        [
            torch.randint(0, 2, (n,), generator=gen).float(),
            10 * torch.rand(n, generator=gen),
            torch.full((n,), float("nan")),  # an undefined column the family may not use
        ],
        dim=1,
    )
    y[1, 1] = float("nan")
    return {"x": torch.randn(n, N_FRAMES, N_ROIS, generator=gen), "y": y}


def _labelled_recordings(n_subjects: int = 3, frames: int = 60) -> list[Recording]:
    rng = np.random.default_rng(0)
    out = []
    for s in range(n_subjects):
        labels = pd.DataFrame(
            {
                "task": pd.Categorical(np.where(np.arange(frames) % 20 < 10, "rest", "heat"), ["heat", "rest"]),
                "rating": np.where(np.arange(frames) % 20 < 10, np.nan, 2.0 * s + np.arange(frames) % 7),
                "age": np.full(frames, 20.0 + 10 * s),
            }
        )
        data = rng.standard_normal((frames, N_ROIS)).astype(np.float32)
        out.append(Recording(f"s{s}", "1", data, 1.0, {}, labels))
    return out


@pytest.fixture
def windows() -> WindowSet:
    """27 labelled windows (3 subjects × 9): 3 optimiser steps per epoch at batch 8."""
    return WindowSet(_labelled_recordings(), length=N_FRAMES, stride=6)


def test_registry_presets_and_config_errors() -> None:
    assert get_method("yaware") is YAware
    default = YAware.make_config()
    assert (default.kernel, default.bandwidth, default.temperature) == ("gaussian", "scott", 0.1)
    assert default.normalize == "row" and default.labels is None
    assert YAware.train_defaults["lr"] == 1e-4 and YAware.train_defaults["batch_size"] == 64
    for preset in (None, *YAware.presets):
        YAware(YAware.make_config(preset), DataSpec(94, 40))
    with pytest.raises(ConfigError, match="kernel"):
        YAware.make_config(kernel="triangle")
    with pytest.raises(ConfigError, match="bandwidth"):
        YAware.make_config(bandwidth="wide")
    with pytest.raises(ConfigError, match="normalize"):
        YAware.make_config(normalize="both")
    with pytest.raises(ConfigError, match="crop"):
        YAware.make_config(crop=0.0)


@pytest.mark.parametrize("backbone", ["transformer", "connectome"])
def test_embed_is_the_backbone_representation(backbone: str) -> None:
    method = _tiny(backbone=backbone).eval()
    x = torch.randn(5, N_FRAMES, N_ROIS)
    z = method.embed(x)
    assert z.shape == (5, method.backbone.out_dim)
    torch.testing.assert_close(z, method.backbone(x))
    h, projections = method.project(x)
    assert h.shape == (10, method.backbone.out_dim) and projections.shape == (10, method.config.projection_dim)


@pytest.mark.parametrize("backbone", ["transformer", "connectome"])
def test_gradient_reaches_every_parameter(backbone: str) -> None:
    method = _tiny(backbone=backbone, bandwidth=[4.0, 100.0]).train()
    out = method.training_loss(_batch())
    assert torch.isfinite(out["loss"]) and -1 <= out["view_cosine"].item() <= 1
    out["loss"].backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bf16_autocast_gives_a_finite_float32_loss() -> None:
    method = _tiny(bandwidth=[4.0, 100.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the engine's CUDA autocast, on the CPU
        loss = method.training_loss(_batch())["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


def test_label_columns_are_chosen_by_name_and_weighted_by_the_documented_kernels() -> None:
    """labels ["rating", "task"], H = 4 on rating, cross-category weight 0.25, gaussian kernel."""
    method = _tiny(labels=["rating", "task"], bandwidth=4.0, categorical_weight=0.25)
    y = torch.tensor([[0.0, 1.0, 50.0], [0.0, 3.0, 60.0], [1.0, 1.0, 70.0], [1.0, float("nan"), 80.0]])
    features = method.label_features(y)
    expected = [[1.0, 1, 0], [3.0, 1, 0], [1.0, 0, 1], [float("nan"), 0, 1]]  # rating, heat, rest
    torch.testing.assert_close(features, torch.tensor(expected), equal_nan=True)
    # independent weights: exp(-Δrating² / (2·4)) × (1 same task | 0.25 otherwise); NaN rating → 0
    rating, task = [1.0, 3.0, 1.0, math.nan], [0, 0, 1, 1]
    n = len(rating)
    w = np.zeros((2 * n, 2 * n))
    for a in range(2 * n):
        for b in range(2 * n):
            i, j = a % n, b % n
            if a == b:
                continue
            if i == j:
                w[a, b] = 1.0
            elif not (math.isnan(rating[i]) or math.isnan(rating[j])):
                w[a, b] = math.exp(-((rating[i] - rating[j]) ** 2) / 8.0) * (1.0 if task[i] == task[j] else 0.25)
    w /= w.sum(axis=1, keepdims=True)
    weights = method.loss_fn.pair_weights(features, dtype=torch.float64)
    np.testing.assert_allclose(weights.numpy(), w, rtol=1e-6, atol=1e-12)


def test_a_rule_bandwidth_is_fitted_in_prepare_and_survives_the_checkpoint() -> None:
    method = _tiny(labels=["task", "rating"], bandwidth="scott", categorical_weight=0.25)
    rng = np.random.default_rng(2)
    labels = np.stack([rng.integers(0, 2, 50), rng.normal(5.0, 2.0, 50), np.full(50, np.nan)], axis=1)
    labels[:7, 1] = np.nan
    with pytest.raises(ConfigError, match="prepare"):
        method.training_loss(_batch())
    method.prepare(rng.standard_normal((50, N_FRAMES, N_ROIS)).astype(np.float32), labels.astype(np.float32))
    finite = labels[7:, 1].astype(np.float32).astype(np.float64)
    h_rating = len(finite) ** (-1 / 5) * finite.std(ddof=1)  # Scott, d = 1 continuous column
    h_task = -1.0 / math.log(0.25)  # gaussian: exp(-(2/h)/2) = 0.25
    expected = [1 / math.sqrt(h_task)] * 2 + [1 / h_rating]
    torch.testing.assert_close(method.loss_fn.inv_sqrt_bandwidth, torch.tensor(expected, dtype=torch.float32))

    rebuilt = YAware(YAware.make_config("tiny", labels=["task", "rating"], bandwidth="scott"), SPEC)
    rebuilt.load_state_dict(method.state_dict())
    torch.testing.assert_close(rebuilt.loss_fn.inv_sqrt_bandwidth, method.loss_fn.inv_sqrt_bandwidth)


def test_without_labels_the_loss_is_plain_infonce_computed_by_hand() -> None:
    method = _tiny(labels=[])
    batch = _batch()
    torch.manual_seed(5)
    loss = method.training_loss(batch)["loss"]
    torch.manual_seed(5)  # the same two views
    _, z = method.project(batch["x"])
    e = z.detach().double().numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = e @ e.T / 0.1
    n = len(e) // 2
    terms = []
    for a in range(2 * n):
        others = [c for c in range(2 * n) if c != a]
        terms.append(-s[a, (a + n) % (2 * n)] + np.log(np.exp(s[a, others]).sum()))
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-5)
    assert _tiny(spec=DataSpec(N_ROIS, N_FRAMES)).columns == ()  # data without labels: plain InfoNCE too


def test_undefined_labels_fall_back_to_plain_infonce_and_labels_change_the_loss() -> None:
    method = _tiny(labels=["rating"], bandwidth=4.0)
    batch = _batch()
    undefined = {**batch, "y": torch.full_like(batch["y"], float("nan"))}
    torch.manual_seed(5)
    loss = method.training_loss(undefined)["loss"]
    torch.manual_seed(5)
    _, z = method.project(batch["x"])
    z1, z2 = z.chunk(2)
    torch.testing.assert_close(loss, method.loss_fn(z1, z2, None))
    torch.manual_seed(5)
    assert not torch.isclose(method.training_loss(batch)["loss"], loss)


def test_bad_input_raises_errors_that_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="available labels"):
        _tiny(labels=["pain"])
    with pytest.raises(ConfigError, match="one value per column"):
        _tiny(labels=["rating", "age"], bandwidth=[1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="matrix bandwidth covers continuous columns only"):
        _tiny(labels=["rating", "task"], bandwidth=[[1.0]])
    with pytest.raises(ConfigError, match="compact kernel"):
        _tiny(labels=["task"], categorical_weight=0.0)
    _tiny(labels=["task"], categorical_weight=0.0, kernel="epanechnikov")
    with pytest.raises(ConfigError, match="positive definite"):
        _tiny(labels=["rating", "age"], bandwidth=[[1.0, 2.0], [2.0, 1.0]])
    method = _tiny(labels=["rating"], bandwidth=4.0)
    with pytest.raises(DataError, match=f"built for {N_ROIS} ROIs"):
        method.training_loss({**_batch(), "x": torch.randn(8, N_FRAMES, N_ROIS + 1)})
    with pytest.raises(DataError, match=r"labels: \[\]"):
        method.training_loss({"x": torch.randn(8, N_FRAMES, N_ROIS)})
    with pytest.raises(DataError, match=r"labels: \[\]"):
        method.prepare(np.zeros((4, N_FRAMES, N_ROIS), np.float32), None)
    with pytest.raises(DataError, match=r"\(B, 3\) labels"):
        method.training_loss({**_batch(), "y": torch.zeros(8, 2)})
    with pytest.raises(DataError, match=r"\(N, 3\) labels"):
        method.prepare(np.zeros((4, N_FRAMES, N_ROIS), np.float32), np.zeros((4, 2), np.float32))


def test_engine_run_reduces_the_loss_and_the_checkpoint_rebuilds_the_fitted_family(tmp_path, windows) -> None:
    method = _tiny(spec=windows.spec(), labels=["rating", "age"])
    config = make_train_config(method, epochs=8, batch_size=8, lr=3e-3, device="cpu")
    result = train(method, windows, config, tmp_path, progress=False)
    losses = [h["loss"] for h in result.history["epoch"]]
    assert losses[-1] < losses[0]
    assert method.loss_fn.inv_sqrt_bandwidth.shape == (2,) and torch.isfinite(method.loss_fn.inv_sqrt_bandwidth).all()
    loaded, _, _ = load_method(tmp_path)
    assert torch.equal(loaded.loss_fn.inv_sqrt_bandwidth, method.loss_fn.inv_sqrt_bandwidth)
    x = torch.randn(3, N_FRAMES, N_ROIS)
    torch.testing.assert_close(loaded.embed(x), method.eval().embed(x), rtol=0, atol=0)


def test_resume_equals_the_uninterrupted_run(tmp_path, windows) -> None:
    def build() -> YAware:
        return _tiny(spec=windows.spec(), dropout=0.2)  # every label column, dropout: all randomness in play

    straight = build()
    config = make_train_config(straight, epochs=3, batch_size=8, lr=3e-3, checkpoint_every=2, device="cpu")
    train(straight, windows, config, tmp_path / "straight", progress=False)

    class Crash(RuntimeError):
        pass

    def crash(step: int, total: int) -> None:
        if step == 5:
            raise Crash

    interrupted = build()
    interrupted.after_step = crash
    with pytest.raises(Crash):
        train(interrupted, windows, config, tmp_path / "resumed", progress=False)
    assert read_checkpoint(tmp_path / "resumed")["step"] == 4

    resumed = build()
    train(resumed, windows, config, tmp_path / "resumed", progress=False)
    final = resumed.state_dict()
    for key, value in straight.state_dict().items():
        assert torch.equal(final[key], value), key


@pytest.mark.slow
def test_labels_make_embeddings_that_predict_y_on_held_out_subjects_at_least_as_well_as_plain_infonce(
    tmp_path,
) -> None:
    """synthetic-continuous-y: connectivity varies with a per-subject y (20-80).

    Encoders train for 60 steps on 28 subjects (y-aware on y, plain InfoNCE without); a ridge
    on the embeddings of the 12 other subjects, cross-validated by subject, predicts y. Measured
    (tiny preset, W = 24, seeds 0 / 1 / 2): R² 0.74 / 0.68 / 0.41 y-aware against 0.50 / 0.55 /
    0.20 plain InfoNCE and 0.40 / 0.38 / 0.12 untrained.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from workbench.data.catalog import load_recordings

    recordings = load_recordings("synthetic-continuous-y", progress=False)
    order = np.random.default_rng(0).permutation(len(recordings))
    encoder_windows = WindowSet([recordings[i] for i in order[:28]], length=24, stride=12)
    probe_windows = WindowSet([recordings[i] for i in order[28:]], length=24, stride=12)
    scores = {}
    for name, labels in (("yaware", ["y"]), ("infonce", [])):
        torch.manual_seed(0)
        method = YAware(YAware.make_config("tiny", labels=labels), encoder_windows.spec())
        config = make_train_config(method, max_steps=60, lr=1e-3, device="cpu")
        result = train(method, encoder_windows, config, tmp_path / name, progress=False)
        with torch.no_grad():
            x = result.standardizer.transform(probe_windows.get(np.arange(len(probe_windows))))
            z = method.embed(torch.from_numpy(x)).numpy()
        y = probe_windows.y[:, 0]
        ridge = RidgeCV(alphas=np.logspace(-3, 4, 15))
        predicted = cross_val_predict(ridge, z, y, groups=probe_windows.labels, cv=GroupKFold(4))
        scores[name] = r2_score(y, predicted)
    assert scores["yaware"] >= scores["infonce"], scores


@pytest.mark.parametrize("labels", [None, []])
def test_diagnostics_give_the_loss_of_seeded_views_beside_the_collapsed_loss(labels: list[str] | None) -> None:
    method = _tiny(labels=labels, bandwidth=4.0).eval()
    batch = _batch(n=8)
    torch.manual_seed(11)
    record = method.diagnostics(batch)
    assert set(record) == {"loss", "floor", "view_cosine"}
    assert record["floor"] == pytest.approx(math.log(2 * 8 - 1), rel=1e-6)  # every projection one vector
    torch.manual_seed(11)  # the same views: the loss and cosine training_loss gives
    out = method.training_loss(batch)
    assert record["loss"] == pytest.approx(out["loss"].item()) and record["view_cosine"] == pytest.approx(
        out["view_cosine"].item()
    )
    torch.manual_seed(11)
    assert method.diagnostics(batch) == record
    assert method.learning_verdict({**record, "loss": record["floor"] + 0.1}) is not None
