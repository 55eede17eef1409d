"""The recvae learns the dynamics of synthetic volumes: eigenvalues of F against the generator's (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.synthetic import volumes
from workbench.data.volume_runs import prepare_volume_runs
from workbench.data.windows import WindowSet
from workbench.train import build_method, make_train_config, train

TOLERANCE = 0.1  # on every sorted eigenvalue modulus; measured 0.06 (PCA + ridge on the same frames: 0.06)


@pytest.mark.slow
def test_sorted_eigenvalue_moduli_of_the_learned_F_approach_the_generators(tmp_path):
    """4 runs of 200 frames at 8×10×8 from ``h_t = F h_{t-1} + 0.5 ε_t`` (moduli 0.33, 0.33, 0.84, 0.90).

    Voxel-wise z-scoring removes the subjects' static offset maps, which would otherwise occupy
    latent directions that never change; the ``small`` preset has the generator's latent size 4.
    100 epochs of 9 steps take about 60 s on 2 CPU cores.
    """
    runs = volumes(n_subjects=4, n_timepoints=200, grid=(8, 10, 8), latent_dim=4, seed=0)
    true = np.sort(np.abs(np.linalg.eigvals(np.array(runs[0].meta["F"]))))
    windows = WindowSet(prepare_volume_runs(runs, scaling="voxel-zscore"), length=20, stride=10)
    torch.manual_seed(0)
    model = build_method("recvae", windows.spec(), "small")
    train(model, windows, make_train_config(model, epochs=100, device="cpu"), tmp_path, progress=False)
    learned = np.sort(np.abs(np.linalg.eigvals(model.transition.F.numpy())))
    np.testing.assert_allclose(learned, true, atol=TOLERANCE)
