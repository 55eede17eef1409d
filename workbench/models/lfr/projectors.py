"""A pool of frozen random projectors: the targets of Learning From Randomness (LFR).

Each projector is a small randomly initialised network that maps the backbone's input to a
target representation; the backbone (through one trainable predictor per projector) learns to
reproduce those random views of the data. Projectors never train: their parameters have
``requires_grad=False`` (and :meth:`ProjectorPool.requires_grad_` cannot turn it back on), and
the pool stays in eval mode whatever ``.train()`` is called with.

Architectures (picked from the input shape, after the reference targets of layer6ai-labs/lfr)
----------------------------------------------------------------------------------------------
=========================  ==============================================  =================
input                      network                                          output
=========================  ==============================================  =================
window ``(B, T, F)``       ``Conv1d(F→c₁, k) · ReLU · MaxPool(2)``          ``(B, out_dim)``
                           ``Conv1d(c₁→c₂, k) · ReLU · MaxPool(2)``
                           ``flatten · Linear(→hidden) · Linear(→out_dim)``
flat vector ``(B, N)``     ``Linear(N→hidden) · ReLU · Linear(→out_dim)``   ``(B, out_dim)``
=========================  ==============================================  =================

The window network is the reference's time-series (HAR) target: convolutions over time with the
``F`` features (ROIs or voxels) as channels, bias-free, ``padding = k // 2``; the flat one its
tabular target (used when the family flattens its input).

Initialisations (``init``)
--------------------------
* ``"default"`` — PyTorch's default for ``Linear`` / ``Conv1d``: weights and biases
  ``U(−1/√fan_in, 1/√fan_in)`` (``kaiming_uniform_(a=√5)``), drawn from the pool's generator.
* ``"beta"`` — every weight ``2·Beta(½, ½) − 1``, i.e. the arcsine distribution on ``[−1, 1]``
  (mass piled near ±1), the reference's parameters (``utils/model_utils.py``); sampled exactly
  by inverse CDF, ``−cos(πU)``, ``U ~ U(0, 1)``. Biases keep the default init. The reference
  applies it to ``Conv2d`` only; here it covers every ``Linear`` and ``Conv1d`` weight.
* ``"dropout"`` — the default init, then a fixed random mask per projector zeroes exactly
  ``round(rate · n)`` of the ``n`` weights of each layer (``rate = 0.4``, the reference's), a
  dropout drawn once and kept for good.

Everything is drawn from one ``torch.Generator`` seeded with ``seed``, projector after
projector, so the same arguments build the same pool on any machine, and building a pool leaves
the global RNG untouched. The pool is built on the CPU; move it with ``.to(device)``.

Reference: Y. Sui et al., "Self-supervised Representation Learning From Random Data Projectors",
ICLR 2024 (arXiv 2310.07756); code: layer6ai-labs/lfr (``ssl_models/models/targets.py``,
``utils/model_utils.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from workbench.errors import ConfigError

ProjectorInit = Literal["default", "beta", "dropout"]
PROJECTOR_INITS: tuple[str, ...] = ("default", "beta", "dropout")


class WindowProjector(nn.Module):
    """Temporal-convolution projector ``(B, T, F) → (B, out_dim)`` (see the module table)."""

    def __init__(
        self,
        n_timepoints: int,
        n_features: int,
        out_dim: int,
        hidden_dim: int,
        channels: tuple[int, int],
        kernel_size: int,
    ) -> None:
        super().__init__()
        first, second = channels
        self.conv = nn.Sequential(
            nn.Conv1d(n_features, first, kernel_size, padding=kernel_size // 2, bias=False),
            nn.ReLU(),
            nn.MaxPool1d(2, ceil_mode=True),
            nn.Conv1d(first, second, kernel_size, padding=kernel_size // 2, bias=False),
            nn.ReLU(),
            nn.MaxPool1d(2, ceil_mode=True),
        )
        with torch.no_grad():  # frames left after the convolutions and poolings
            length = self.conv(torch.zeros(1, n_features, n_timepoints)).shape[-1]
        self.head = nn.Sequential(nn.Linear(second * length, hidden_dim), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` window → ``(B, out_dim)``."""
        return self.head(self.conv(x.transpose(1, 2)).flatten(1))


class FlatProjector(nn.Module):
    """Two-layer perceptron projector ``(B, N) → (B, out_dim)``."""

    def __init__(self, n_inputs: int, out_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_inputs, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` → ``(B, out_dim)``."""
        return self.net(x)


def _weighted_layers(module: nn.Module) -> list[nn.Linear | nn.Conv1d]:
    return [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv1d)]


def _fan_in(weight: torch.Tensor) -> int:
    return weight[0].numel()  # in_features, or in_channels × kernel_size


@torch.no_grad()
def _default_init(layer: nn.Linear | nn.Conv1d, generator: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(_fan_in(layer.weight))
    layer.weight.uniform_(-bound, bound, generator=generator)
    if layer.bias is not None:
        layer.bias.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def _beta_init(layer: nn.Linear | nn.Conv1d, generator: torch.Generator) -> None:
    # 2·Beta(1/2, 1/2) − 1 has CDF 1 − arccos(w)/π on [−1, 1]; inverting it gives −cos(πU).
    uniform = torch.rand(layer.weight.shape, generator=generator, dtype=torch.float64)
    layer.weight.copy_(-torch.cos(math.pi * uniform))


@torch.no_grad()
def _drop_weights(layer: nn.Linear | nn.Conv1d, rate: float, generator: torch.Generator) -> None:
    n = layer.weight.numel()
    dropped = torch.randperm(n, generator=generator)[: round(rate * n)]
    layer.weight.view(-1)[dropped] = 0.0


class ProjectorPool(nn.Module):
    """``size`` frozen random projectors of one architecture and initialisation.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one input without the batch: ``(T, F)`` for windows, ``(N,)`` for flat vectors.
    out_dim : int
        Dimension ``D`` of each projector's target representation.
    size : int
        Number of projectors ``M`` in the pool (LFR draws e.g. 60 and selects 6 by DPP).
    init : {"default", "beta", "dropout"}
        Initialisation (module docstring).
    seed : int
        Seed of the generator every random number of the pool comes from.
    hidden_dim : int
        Width of the hidden linear layer (256 in the reference targets).
    channels : tuple of int
        ``(c₁, c₂)`` convolution channels of the window projector ((16, 32) in the reference).
    kernel_size : int
        Temporal kernel of the window projector (8 in the reference).
    dropout_rate : float
        Fraction of weights zeroed per layer with ``init="dropout"`` (0.4 in the reference).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_dim: int,
        size: int,
        init: ProjectorInit = "default",
        seed: int = 0,
        hidden_dim: int = 256,
        channels: tuple[int, int] = (16, 32),
        kernel_size: int = 8,
        dropout_rate: float = 0.4,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (1, 2) or min(shape, default=0) < 1:
            raise ConfigError(f"projector input_shape must be (T, F) or (N,) with positive sizes, got {shape}")
        for name, value in (
            ("out_dim", out_dim),
            ("size", size),
            ("hidden_dim", hidden_dim),
            ("kernel_size", kernel_size),
        ):
            if value < 1:
                raise ConfigError(f"projector {name} must be >= 1, got {name}={value}")
        if len(channels) != 2 or min(channels) < 1:
            raise ConfigError(f"projector channels must be two positive counts, got channels={channels}")
        if init not in PROJECTOR_INITS:
            raise ConfigError(f"projector init must be one of {PROJECTOR_INITS}, got init={init!r}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ConfigError(f"projector dropout_rate must be in [0, 1), got dropout_rate={dropout_rate}")
        self.input_shape = shape
        self.out_dim = out_dim
        self.init = init
        generator = torch.Generator().manual_seed(seed)
        projectors = []
        for _ in range(size):
            # Built on the meta device, so PyTorch's own init never draws from the global RNG; every
            # parameter is then filled from the pool's generator.
            with torch.device("meta"):
                if len(shape) == 2:
                    projector: nn.Module = WindowProjector(*shape, out_dim, hidden_dim, channels, kernel_size)
                else:
                    projector = FlatProjector(shape[0], out_dim, hidden_dim)
            projector.to_empty(device="cpu")
            for layer in _weighted_layers(projector):
                _default_init(layer, generator)
                if init == "beta":
                    _beta_init(layer, generator)
                elif init == "dropout":
                    _drop_weights(layer, dropout_rate, generator)
            projectors.append(projector)
        self.projectors = nn.ModuleList(projectors)
        for parameter in self.projectors.parameters():
            parameter.requires_grad_(False)
        self.train(False)

    def __len__(self) -> int:
        return len(self.projectors)

    def train(self, mode: bool = True) -> ProjectorPool:
        """Stay in eval mode whatever ``mode`` is: the projectors are fixed functions."""
        return super().train(False)

    def requires_grad_(self, requires_grad: bool = True) -> ProjectorPool:
        """Keep every parameter frozen, whatever ``requires_grad`` is, when called on the pool itself.

        A parent's ``requires_grad_()`` iterates the parameters directly and would unfreeze them;
        the LFR family therefore never hands the pool's parameters to the optimiser
        (:meth:`workbench.models.lfr.family.LFR.param_groups`), so they cannot move either way.
        """
        return super().requires_grad_(False)

    def forward(self, x: torch.Tensor, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Targets of a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, *input_shape)`` inputs.
        indices : sequence of int, optional
            Projectors to run, in this order (e.g. the DPP selection); all by default.

        Returns
        -------
        torch.Tensor
            ``(B, len(indices), out_dim)`` targets, detached from any graph.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(
                f"projector input must be (B, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        chosen = range(len(self.projectors)) if indices is None else indices
        with torch.no_grad():
            return torch.stack([self.projectors[i](x) for i in chosen], dim=1)
