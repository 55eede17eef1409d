"""The fewshot family: encoder shapes and norms, gradient flow, batches, errors, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.spec import DataSpec
from workbench.errors import ConfigError, DataError
from workbench.methods import get_method
from workbench.models.blocks import SinusoidalPositionalEncoding, sincos_1d
from workbench.models.fewshot import FewShot, FewShotEncoder

N_ROIS, N_FRAMES = 6, 12
SPEC = DataSpec(N_ROIS, N_FRAMES)


def _tiny(**overrides) -> FewShot:
    torch.manual_seed(0)
    return FewShot(FewShot.make_config("tiny", **overrides), SPEC)


def _batch(n_subjects: int = 4, per_subject: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        "x": torch.randn(n_subjects * per_subject, N_FRAMES, N_ROIS, generator=gen),
        "subject": torch.arange(n_subjects).repeat_interleave(per_subject),
    }


def test_registry_and_presets() -> None:
    assert get_method("fewshot") is FewShot
    seed = FewShot.make_config("neural-vault")
    assert (seed.d_model, seed.nhead, seed.n_layers, seed.latent_dim) == (128, 8, 2, 128)
    assert (seed.dropout, seed.margin, seed.negatives) == (0.1, 0.3, "label")
    defaults = FewShot.train_defaults
    assert (defaults["lr"], defaults["weight_decay"], defaults["clip_grad"]) == (1e-4, 1e-4, 1.0)
    with pytest.raises(ConfigError, match="negatives"):
        FewShot.make_config(negatives="impostor")
    with pytest.raises(ConfigError, match="nhead"):
        FewShot.make_config(d_model=10, nhead=4)


@pytest.mark.parametrize("shape", [(5, N_FRAMES, N_ROIS), (5, 1, N_ROIS), (5, N_ROIS)])
def test_embedding_shape_and_unit_norm(shape) -> None:
    method = _tiny().eval()
    z = method.embed(torch.randn(shape))
    assert z.shape == (5, method.config.latent_dim)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))


def test_frame_input_equals_single_frame_window() -> None:
    method = _tiny().eval()
    frames = torch.randn(3, N_ROIS)
    torch.testing.assert_close(method.embed(frames), method.embed(frames[:, None, :]))


def test_positional_code_is_vaswani() -> None:
    code = sincos_1d(torch.tensor([0, 3]), 4)
    # dims (sin f0, cos f0, sin f1, cos f1) with f0 = 1, f1 = 10000^(-2/4) = 0.01
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0], [np.sin(3.0), np.cos(3.0), np.sin(0.03), np.cos(0.03)]])
    torch.testing.assert_close(code, expected.float())
    pe = SinusoidalPositionalEncoding(4, max_len=8)
    assert "table" not in pe.state_dict() and not list(pe.parameters())


def test_too_long_sequence_raises_clear_error() -> None:
    encoder = FewShotEncoder(N_ROIS, FewShot.make_config("tiny", max_len=10))
    with pytest.raises(ConfigError, match=r"max_len=10.*raise `max_len`"):
        encoder(torch.randn(2, 11, N_ROIS))
    with pytest.raises(ConfigError, match="raise `max_len`"):
        FewShot(FewShot.make_config("tiny", max_len=10), DataSpec(N_ROIS, 11))


def test_wrong_roi_count_raises() -> None:
    with pytest.raises(DataError, match=f"built for {N_ROIS} ROIs"):
        _tiny().embed(torch.randn(2, N_FRAMES, N_ROIS + 1))


def test_gradient_reaches_every_parameter() -> None:
    method = _tiny().train()
    out = method.training_loss(_batch())
    assert out["loss"].item() > 0
    out["loss"].backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_loss_logs() -> None:
    torch.manual_seed(3)
    out = _tiny().training_loss(_batch())
    assert set(out) == {"loss", "pos_dist", "neg_dist", "frac_active"}
    assert 0.0 <= out["frac_active"].item() <= 1.0
    # unit-norm embeddings: squared distances lie in [0, 4]
    assert 0.0 <= out["pos_dist"].item() <= 4.0 and 0.0 <= out["neg_dist"].item() <= 4.0


def test_training_loss_is_seeded_by_the_global_rng() -> None:
    method = _tiny().eval()  # no dropout: the triplet draw is the only randomness
    torch.manual_seed(7)
    first = method.training_loss(_batch())["loss"]
    torch.manual_seed(7)
    torch.testing.assert_close(method.training_loss(_batch())["loss"], first)


def test_batch_sampler_gives_every_subject_positives() -> None:
    labels = np.repeat(np.arange(12), 40)
    sampler = _tiny().batch_sampler(labels, batch_size=128, seed=0)
    for batch in sampler.batches(0):
        counts = np.bincount(labels[batch], minlength=12)
        assert len(batch) == 120 and np.all(counts == 10)  # P = 12 subjects × K = 10
    many = np.repeat(np.arange(40), 10)
    for batch in _tiny().batch_sampler(many, batch_size=32, seed=0).batches(0):
        _, counts = np.unique(many[batch], return_counts=True)
        assert counts.size == 8 and np.all(counts == 4)  # P = 32 // 4 subjects × K = 4
    assert _tiny(negatives="noise").batch_sampler(labels, 128, 0) is None
    with pytest.raises(ConfigError, match="batch_size"):
        _tiny().batch_sampler(labels, batch_size=6, seed=0)


def test_noise_negative_variant_learns_on_toy_enrollment() -> None:
    # one identity: a fixed spatial pattern plus mild noise; impostors are N(0, 1.5²)
    gen = torch.Generator().manual_seed(0)
    pattern = torch.randn(1, 1, N_ROIS, generator=gen)
    windows = pattern + 0.3 * torch.randn(64, N_FRAMES, N_ROIS, generator=gen)
    method = _tiny(negatives="noise", margin=0.5).train()
    optimiser = torch.optim.AdamW(method.parameters(), lr=3e-3, weight_decay=1e-4)
    torch.manual_seed(0)
    losses = []
    for _ in range(30):
        batch = {"x": windows[torch.randperm(64)[:32]], "subject": torch.zeros(32, dtype=torch.long)}
        out = method.training_loss(batch)
        optimiser.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 1.0)
        optimiser.step()
        losses.append(out["loss"].item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def _connectome(**overrides) -> FewShot:
    torch.manual_seed(0)
    return FewShot(FewShot.make_config(**overrides), SPEC)


def test_untrained_connectome_is_the_fc_fingerprint() -> None:
    from workbench.connectivity import fc_profiles

    windows = torch.randn(5, N_FRAMES, N_ROIS, generator=torch.Generator().manual_seed(2))
    z = _connectome().eval().embed(windows)
    n_edges = N_ROIS * (N_ROIS - 1) // 2
    assert z.shape == (5, n_edges)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    expected = torch.from_numpy(fc_profiles(windows.numpy())) / np.sqrt(n_edges)
    torch.testing.assert_close(z, expected, atol=2e-3, rtol=1e-3)


def test_connectome_and_hybrid_gradients_reach_every_parameter() -> None:
    for encoder in ("connectome", "hybrid"):
        method = _connectome(encoder=encoder, d_model=16, nhead=2, n_layers=1, latent_dim=8).train()
        method.training_loss(_batch())["loss"].backward()
        for name, p in method.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (encoder, name)
    fixed = _connectome(learn_mix=False)
    assert not fixed.encoder.connectome.mix.weight.requires_grad


def test_connectome_needs_two_frames_and_sets_its_learning_rate() -> None:
    with pytest.raises(DataError, match="at least 2 frames"):
        _connectome().embed(torch.randn(3, N_ROIS))
    from workbench.train import make_train_config

    assert make_train_config(_connectome()).lr == FewShot.CONNECTOME_LR
    assert make_train_config(_tiny()).lr == 1e-4  # the Transformer keeps Neural Vault's rate
    with pytest.raises(ConfigError, match="encoder"):
        FewShot.make_config(encoder="cnn")
    with pytest.raises(ConfigError, match="connectivity_dim"):
        FewShot.make_config(connectivity_dim=1)


@pytest.mark.parametrize("mining", ["batch_hard", "random"])
def test_diagnostics_give_the_triplet_loss_beside_the_margin_on_the_subjects_with_positives(mining: str) -> None:
    method = _tiny(mining=mining).eval()
    batch = _batch()  # 4 subjects × 4 windows
    # two more windows of two new subjects, one each: no positive, so the monitor leaves them out
    extra = {"x": torch.randn(2, N_FRAMES, N_ROIS), "subject": torch.tensor([7, 8])}
    mixed = {key: torch.cat([batch[key], extra[key]]) for key in batch}
    torch.manual_seed(2)
    record = method.diagnostics(mixed)
    assert record["floor"] == pytest.approx(0.3) and record["triplets"] == 16
    # the monitor mines at random whatever the training mines (a hard-mined loss stays near the margin)
    random_mining = _tiny(mining="random").eval()
    random_mining.load_state_dict(method.state_dict())
    torch.manual_seed(2)
    assert record["loss"] == pytest.approx(random_mining.training_loss(batch)["loss"].item())
    assert method.learning_verdict({**record, "loss": 0.31}) is not None
    assert method.learning_verdict({**record, "loss": 0.1}) is None


def test_a_monitor_batch_without_triplets_is_reported_not_scored() -> None:
    method = _tiny().eval()
    one_each = {"x": torch.randn(5, N_FRAMES, N_ROIS), "subject": torch.arange(5)}
    one_subject = {"x": torch.randn(5, N_FRAMES, N_ROIS), "subject": torch.zeros(5, dtype=torch.long)}
    for batch in (one_each, one_subject):
        record = method.diagnostics(batch)
        assert np.isnan(record["loss"]) and record["triplets"] == 0 and record["floor"] == pytest.approx(0.3)
        assert "no triplet" in method.learning_verdict(record)
    noise = _tiny(negatives="noise").eval()
    assert noise.diagnostics(one_each)["triplets"] == 2
    assert np.isnan(noise.diagnostics({"x": torch.randn(1, N_FRAMES, N_ROIS), "subject": torch.zeros(1)})["loss"])
