"""y-Aware InfoNCE: contrastive learning whose positives are weighted by label proximity.

Two views ``z1``, ``z2`` of ``n`` samples form ``2n`` embeddings ``e_a``; the similarity of
two of them is their cosine over a temperature ``τ``, and each row ``a`` is a softmax over
the other ``2n − 1`` embeddings (self-similarity excluded, as in NT-Xent / SimCLR)::

    log p_ab = s_ab − log Σ_{c≠a} exp(s_ac)          s_ab = cos(e_a, e_b) / τ

The auxiliary labels ``y`` (repeated for the two views) weight every pair through a kernel
``K`` on the bandwidth-scaled label distance::

    x_ab = ‖H^{-1/2} (y_a − y_b)‖          w_ab = K(x_ab)  (a ≠ b),   w_aa = 0
    ŵ_ab = w_ab / Σ_c w_ac                                   (normalize="row", default)
    L    = −(1 / 2n) Σ_{a,b} ŵ_ab log p_ab

with ``K`` one of gaussian, epanechnikov, exponential, linear, cosine (``K(0) = 1``; formulas in
:mod:`workbench.losses.label_kernels`). ``H`` plays the role of ``σ²``: a scalar ``h`` means
``H = h·I``, a 1-D array a diagonal ``H``, a 2-D array a full symmetric positive-definite ``H``;
``"scott"`` / ``"silverman"`` fit a diagonal ``H`` to the training labels with
:meth:`YAwareInfoNCE.fit`.

Scaling
-------
The two views of a sample always weigh ``K(0) = 1``. When all other labels are far apart
(``w_ab = 0`` off the positive pairs) every row's weights are a one-hot on its positive, and
``L`` is *exactly* plain InfoNCE (NT-Xent averaged over the ``2n`` rows, what ``y=None``
returns). nidl and the original code divide the same sum by ``n`` instead of ``2n``, so their
loss is twice ours (twice plain InfoNCE for far-apart labels): the factor only rescales the
learning rate, and ours keeps ``y``-aware and plain runs on one scale.

Normalisation
-------------
The paper (and nidl's docstring) normalises each row: ``ŵ_ab = w_ab / Σ_c w_ac``, so every
row is a proper soft target. nidl's and the original code's ``W /= W.sum(axis=1)`` on a numpy
array broadcasts the row sums along the *last* axis: entry ``(a, b)`` is divided by the sum
of row ``b``, which (``W`` being symmetric) is the sum of *column* ``b``.
``normalize="column"`` reproduces that: ``ŵ_ab = w_ab / Σ_c w_cb``. The two coincide when
every row has the same total weight (e.g. far-apart labels) and differ otherwise.

Categorical labels
------------------
One-hot code a categorical column (:func:`workbench.losses.label_kernels.one_hot_codes`) and the
same kernels apply: samples of one category are at distance 0 (weight 1), of different categories
at ``‖Δ‖ = √2`` (``x = √(2/h)`` under a bandwidth ``h`` on those columns);
:func:`~workbench.losses.label_kernels.categorical_bandwidth` gives the ``h`` for a chosen
cross-category weight (0 with a compact kernel: supervised-contrastive-like). Mixed continuous and
one-hot columns take a 1-D bandwidth with one entry per column; with the gaussian kernel the weight
then factorises into the continuous weight times the categorical one.

Undefined labels
----------------
A pair whose label distance is NaN (a NaN in either label) weighs 0, except the two views of
one sample, which always weigh 1: a sample with an undefined label falls back to plain InfoNCE
for its row. No check needs a host sync.

Collapse
--------
When every projection is the same vector, every similarity is ``1/τ`` and every row's softmax is
uniform over its ``2n − 1`` candidates, so ``log p_ab = −log(2n − 1)``; the weights of a row sum
to 1 (``"row"``) or those of every column do (``"column"``), hence ``L = log(2n − 1)`` with or
without labels. :meth:`YAwareInfoNCE.collapsed_loss` evaluates the loss on such constant
projections: the trivial floor a model that learned nothing scores.

Precision
---------
Similarities, softmax and weights are computed with autocast disabled in
``torch.promote_types(z.dtype, float32)`` — float32 for float16 / bfloat16 / float32 inputs,
float64 for float64 inputs — and the loss is returned in that dtype (float32 under bf16
autocast). Everything stays on the inputs' device.

References
----------
B. Dufumier, P. Gori, J. Victor, A. Grigis, M. Wessa, P. Brambilla, P. Favre, M. Polosan,
C. McDonald, C. M. Piguet, E. Duchesnay, "Contrastive Learning with Continuous Proxy Meta-Data
for 3D MRI Classification", MICCAI 2021 (arXiv 2106.08808), eq. 2. Reference implementation:
``nidl.losses.yaware_infonce`` (neurospin-deepinsight/nidl).

Example
-------
>>> import torch
>>> from workbench.losses.yaware_infonce import YAwareInfoNCE
>>> loss_fn = YAwareInfoNCE(kernel="gaussian", bandwidth=4.0, temperature=0.1)
>>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
>>> age = torch.linspace(20.0, 60.0, 8)
>>> loss_fn(z1, z2, age).shape
torch.Size([])
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import ConfigError, DataError
from workbench.losses.label_kernels import (
    BANDWIDTH_FIX,
    KERNELS,
    Bandwidth,
    BandwidthRule,
    KernelName,
    bandwidth_rule_factor,
    check_kernel,
    inverse_sqrt_bandwidth,
)


class YAwareInfoNCE(nn.Module):
    """y-Aware InfoNCE loss (Dufumier et al., MICCAI 2021); plain InfoNCE when ``y`` is None.

    See the module docstring for the formula, the scaling, the two normalisations and the
    precision policy.

    Parameters
    ----------
    kernel : str
        ``"gaussian"`` (default), ``"epanechnikov"``, ``"exponential"``, ``"linear"`` or ``"cosine"``.
    bandwidth : float, array-like, torch.Tensor or {"scott", "silverman"}
        ``H`` (plays ``σ²``): a positive scalar (``h·I``), a ``(k,)`` positive diagonal, a
        ``(k, k)`` symmetric positive-definite matrix, or a rule fitted by :meth:`fit`.
    temperature : float
        ``τ > 0`` dividing the cosine similarities (0.1 as in nidl).
    normalize : {"row", "column"}
        ``"row"`` (the paper's formula) or ``"column"`` (nidl's broadcasting behaviour).

    Attributes
    ----------
    inv_sqrt_bandwidth : torch.Tensor
        Buffer holding ``H^{-1/2}``: 0-d, ``(k,)`` or ``(k, k)``; empty until :meth:`fit` for a
        rule. Saved in checkpoints, so a fitted rule survives a resume.
    """

    inv_sqrt_bandwidth: torch.Tensor

    def __init__(
        self,
        kernel: KernelName = "gaussian",
        bandwidth: Bandwidth = 1.0,
        temperature: float = 0.1,
        normalize: Literal["row", "column"] = "row",
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float | np.floating):
            raise ConfigError(f"temperature must be a positive number, got temperature={temperature!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a positive number, got temperature={temperature!r}")
        if normalize not in ("row", "column"):
            raise ConfigError(f"normalize must be 'row' or 'column', got normalize={normalize!r}")
        self.temperature = float(temperature)
        self.normalize = normalize
        self.rule: BandwidthRule | None = None
        if isinstance(bandwidth, str):
            if bandwidth not in ("scott", "silverman"):
                raise ConfigError(f"bandwidth rule must be 'scott' or 'silverman', got {bandwidth!r}; {BANDWIDTH_FIX}")
            self.rule = bandwidth
            inverse = torch.empty(0)
        else:
            inverse = inverse_sqrt_bandwidth(bandwidth).float()
        self.register_buffer("inv_sqrt_bandwidth", inverse)

    @property
    def fitted(self) -> bool:
        """False only for a rule bandwidth neither fitted nor loaded from a checkpoint."""
        return self.inv_sqrt_bandwidth.numel() > 0

    def fit(self, y: np.ndarray | torch.Tensor) -> YAwareInfoNCE:
        """Fit a Scott / Silverman bandwidth to the training labels (no-op for a fixed bandwidth).

        The rule's ``H = diag(h_j²)``, ``h_j = f · σ_j``: ``σ_j`` the sample standard deviation
        (``ddof = 1``) of label column ``j`` and ``f`` from :func:`bandwidth_rule_factor`, over
        the rows whose labels are all finite.

        Parameters
        ----------
        y : numpy.ndarray or torch.Tensor
            ``(N,)`` or ``(N, k)`` training labels (continuous columns, one-hot categorical ones).

        Returns
        -------
        YAwareInfoNCE
            ``self``.
        """
        labels = y.detach().cpu().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, np.float64)
        labels = labels.reshape(len(labels), -1) if labels.ndim == 1 else labels
        if labels.ndim != 2:
            raise DataError(f"labels to fit the bandwidth must be (N,) or (N, k), got shape {labels.shape}")
        if self.rule is None:
            self._check_columns(labels.shape[1])
            return self
        finite = labels[np.all(np.isfinite(labels), axis=1)]
        if len(finite) < 2:
            raise DataError(
                f"the {self.rule} bandwidth needs at least 2 samples with finite labels, got {len(finite)}; "
                "give a fixed bandwidth or more labelled training windows"
            )
        std = finite.std(axis=0, ddof=1)
        if np.any(std == 0):
            constant = np.flatnonzero(std == 0).tolist()
            raise DataError(
                f"label column(s) {constant} are constant in the training data, so the {self.rule} bandwidth "
                "is 0; drop those columns or give a fixed bandwidth"
            )
        factor = bandwidth_rule_factor(self.rule, len(finite), labels.shape[1])
        inverse = torch.from_numpy(1.0 / (factor * std)).float()
        self.inv_sqrt_bandwidth = inverse.to(self.inv_sqrt_bandwidth.device)
        return self

    def _check_columns(self, k: int) -> None:
        if self.inv_sqrt_bandwidth.ndim >= 1 and self.inv_sqrt_bandwidth.shape[0] != k:
            raise ConfigError(
                f"bandwidth has {self.inv_sqrt_bandwidth.shape[0]} label columns but y has {k}; "
                "give one bandwidth entry per label column (or a scalar)"
            )

    def pair_weights(self, y: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Normalised pair weights ``ŵ`` over the ``2n`` views (views of ``z1`` first).

        Parameters
        ----------
        y : torch.Tensor
            ``(n,)`` or ``(n, k)`` labels of the ``n`` samples; NaN where undefined.
        dtype : torch.dtype, optional
            Computation dtype; ``promote_types(y.dtype, float32)`` by default.

        Returns
        -------
        torch.Tensor
            ``(2n, 2n)`` weights, zero diagonal, rows (``"row"``) or columns (``"column"``)
            summing to 1.
        """
        if not self.fitted:
            raise ConfigError(
                f"the {self.rule} bandwidth is not fitted; call fit(y_train) with the training labels first"
            )
        if y.ndim not in (1, 2):
            raise ConfigError(f"y must be (n,) or (n, k) labels, got shape {tuple(y.shape)}")
        labels = y.detach().reshape(y.shape[0], -1)
        self._check_columns(labels.shape[1])
        dtype = dtype or torch.promote_types(labels.dtype, torch.float32)
        n = labels.shape[0]
        labels = torch.cat([labels, labels]).to(dtype)
        inverse = self.inv_sqrt_bandwidth.to(device=labels.device, dtype=dtype)
        with torch.autocast(device_type=labels.device.type, enabled=False):
            scaled = labels @ inverse if inverse.ndim == 2 else labels * inverse
        distance = torch.linalg.vector_norm(scaled[:, None, :] - scaled[None, :, :], dim=-1)
        weights = KERNELS[self.kernel](distance)
        weights = torch.where(torch.isnan(distance), torch.zeros_like(weights), weights)
        index = torch.arange(2 * n, device=labels.device)
        positive = (index + n) % (2 * n)
        weights[index, positive] = 1.0  # K(0): the two views of one sample, even with an undefined label
        weights = weights.masked_fill(index[:, None] == index[None, :], 0.0)
        if self.normalize == "row":
            return weights / weights.sum(dim=1, keepdim=True)
        return weights / weights.sum(dim=0, keepdim=True)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of one batch.

        Parameters
        ----------
        z1, z2 : torch.Tensor
            ``(n, D)`` embeddings of the two views, same shape and device.
        y : torch.Tensor, optional
            ``(n,)`` or ``(n, k)`` labels; ``None`` gives plain InfoNCE (NT-Xent).

        Returns
        -------
        torch.Tensor
            Scalar loss in ``promote_types(z1.dtype, float32)``.
        """
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ConfigError(
                f"z1 and z2 must be (n, D) embeddings of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        n = z1.shape[0]
        if n == 0:
            raise ConfigError("y-Aware InfoNCE needs at least one sample, got n = 0")
        if y is not None and (y.ndim not in (1, 2) or y.shape[0] != n):
            raise ConfigError(f"y must be (n,) or (n, k) labels with n = {n} (the batch), got shape {tuple(y.shape)}")
        dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
        with torch.autocast(device_type=z1.device.type, enabled=False):
            embeddings = F.normalize(torch.cat([z1, z2]).to(dtype), dim=1)
            logits = embeddings @ embeddings.T / self.temperature
            index = torch.arange(2 * n, device=z1.device)
            self_pairs = index[:, None] == index[None, :]
            log_prob = F.log_softmax(logits.masked_fill(self_pairs, float("-inf")), dim=1)
            if y is None:
                return -log_prob[index, (index + n) % (2 * n)].mean()
            weights = self.pair_weights(y, dtype=dtype)
            return -(weights * log_prob.masked_fill(self_pairs, 0.0)).sum() / (2 * n)

    def collapsed_loss(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """The loss when every projection is one vector: ``log(2n − 1)`` (module docstring, "Collapse").

        Evaluates :meth:`forward` on constant projections, with the batch's labels when given.

        Parameters
        ----------
        n : int
            Samples in the batch (``2n`` views).
        y : torch.Tensor, optional
            ``(n,)`` or ``(n, k)`` labels, as :meth:`forward` takes them.

        Returns
        -------
        torch.Tensor
            Scalar, float32 (float64 for float64 labels), on ``y``'s device when given.
        """
        if n < 1:
            raise ConfigError(f"the collapsed loss needs at least one sample, got n = {n}")
        dtype = torch.float32 if y is None else torch.promote_types(y.dtype, torch.float32)
        constant = torch.ones(n, 1, dtype=dtype, device=None if y is None else y.device)
        return self(constant, constant, y)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A fitted rule's buffer has a shape (k,) the unfitted module cannot know in advance.
        key = prefix + "inv_sqrt_bandwidth"
        if self.rule is not None and key in state_dict:
            self.inv_sqrt_bandwidth = torch.empty_like(state_dict[key], device=self.inv_sqrt_bandwidth.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        bandwidth = self.rule if self.rule is not None else f"H^-1/2 shape {tuple(self.inv_sqrt_bandwidth.shape)}"
        return (
            f"kernel={self.kernel!r}, bandwidth={bandwidth}, temperature={self.temperature}, "
            f"normalize={self.normalize!r}"
        )
