"""Greedy DPP selection for LFR: brute-force agreement, duplicates, early stop, mask, kernel."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError
from workbench.models.lfr import ProjectorPool, dpp_selection_mask, greedy_dpp_map, projector_similarity_kernel


def brute_force_greedy(kernel: np.ndarray, k: int) -> list[int]:
    """Add, one at a time, the item that maximises log det of the selected submatrix."""
    selected: list[int] = []
    for _ in range(k):
        candidates = [i for i in range(len(kernel)) if i not in selected]
        log_dets = [np.linalg.slogdet(kernel[np.ix_(selected + [i], selected + [i])])[1] for i in candidates]
        selected.append(candidates[int(np.argmax(log_dets))])
    return selected


def cosine_kernel(vectors: np.ndarray) -> torch.Tensor:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return torch.from_numpy(unit @ unit.T)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(8, 8))
    kernel = a @ a.T + 0.1 * np.eye(8)  # full-rank PSD: no early stop
    assert greedy_dpp_map(torch.from_numpy(kernel), 6) == brute_force_greedy(kernel, 6)
    assert greedy_dpp_map(torch.from_numpy(kernel).float(), 6) == brute_force_greedy(kernel, 6)


def test_never_picks_two_identical_items() -> None:
    rng = np.random.default_rng(3)
    distinct = rng.normal(size=(4, 10))
    vectors = np.concatenate([distinct, distinct[[0, 0, 2, 3]]])  # rows 4-7 duplicate rows 0, 0, 2, 3
    kernel = cosine_kernel(vectors)
    groups = [0, 1, 2, 3, 0, 0, 2, 3]
    selected = greedy_dpp_map(kernel, 4)
    assert len(selected) == 4
    assert len({groups[i] for i in selected}) == 4


def test_stops_early_and_warns_with_the_returned_set() -> None:
    rng = np.random.default_rng(4)
    kernel = cosine_kernel(rng.normal(size=(6, 2)))  # rank 2: a third item adds ~0 to the determinant
    assert len(greedy_dpp_map(kernel, 4)) == 2
    with pytest.warns(UserWarning, match="asked for 4 targets but returned 2"):
        mask = dpp_selection_mask(kernel, 4)
    assert mask.shape == (6,) and mask.dtype == torch.bool
    assert mask.sum().item() == 2
    assert sorted(torch.nonzero(mask).flatten().tolist()) == sorted(greedy_dpp_map(kernel, 4))


def test_identical_items_give_one() -> None:
    kernel = torch.ones(5, 5)
    assert greedy_dpp_map(kernel, 3) == [0]


def test_mask_without_shortfall_does_not_warn() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(7, 7))
    kernel = torch.from_numpy(a @ a.T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = dpp_selection_mask(kernel, 3)
    assert sorted(torch.nonzero(mask).flatten().tolist()) == sorted(greedy_dpp_map(kernel, 3))
    assert dpp_selection_mask(kernel, 7).all()  # the whole pool: no selection needed


def test_bad_requests_are_rejected() -> None:
    kernel = torch.eye(4)
    for k in (0, 5):
        with pytest.raises(ConfigError, match="num_targets"):
            dpp_selection_mask(kernel, k)
        with pytest.raises(ConfigError, match="max_length"):
            greedy_dpp_map(kernel, k)
    with pytest.raises(ConfigError, match="square"):
        greedy_dpp_map(torch.ones(3, 4), 2)
    with pytest.raises(ConfigError, match="selected nothing"):
        dpp_selection_mask(torch.zeros(3, 3), 2)


def test_projector_similarity_kernel_matches_its_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 5, 4, generator=gen)
    kernel = projector_similarity_kernel(outputs)
    flats = []
    for out in outputs.double().numpy():
        unit = out / np.linalg.norm(out, axis=1, keepdims=True)
        flats.append((unit @ unit.T).ravel())
    flats = np.array(flats) / np.linalg.norm(flats, axis=1, keepdims=True)
    np.testing.assert_allclose(kernel.numpy(), flats @ flats.T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.diagonal(kernel), torch.ones(3))


def test_selection_skips_a_duplicated_projector() -> None:
    pool = ProjectorPool((6, 3), out_dim=4, size=5, seed=0, hidden_dim=8, channels=(4, 4), kernel_size=3)
    pool.projectors[3].load_state_dict(pool.projectors[1].state_dict())  # projector 3 is a copy of 1
    x = torch.randn(16, 6, 3, generator=torch.Generator().manual_seed(1))
    kernel = projector_similarity_kernel(pool(x).transpose(0, 1))
    assert kernel[1, 3].item() == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = dpp_selection_mask(kernel, 4)
    assert mask.sum().item() == 4
    assert not (mask[1] and mask[3])
