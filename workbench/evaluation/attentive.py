"""Attentive probe: a learned query attends over frozen tokens, then a linear head.

V-JEPA (Bardes et al., "Revisiting Feature Prediction for Learning Visual Representations from
Video", 2024) evaluates its frozen encoders with an attentive probe instead of a mean pool: one
cross-attention block whose single learnable query attends over the encoder's tokens, followed
by a linear classifier. A token grid keeps *where* a signal is (which ROI, which time patch); the
mean over all tokens mixes it with every other token, and the learned query can pick it out
again. Only the probe trains; the tokens are frozen features.

Here the block is ``h = q + Attn(q, x, x)``, ``h = h + MLP(LN(h))``, then ``Linear(LN(h))``. The
tokens are standardised per feature with the training fold's statistics (in place of V-JEPA's
LayerNorm over each token, which on narrow tokens can wash out the one feature that matters);
a continuous target is standardised with the training fold's mean and std and predicted back in
its units. Training: AdamW, a fixed number of epochs over shuffled mini-batches, cross-entropy
(categorical) or mean squared error (continuous), everything seeded from ``seed`` without
touching torch's global random state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from workbench.errors import ConfigError, DataError

KINDS = ("categorical", "continuous")


class AttentivePooler(nn.Module):
    """One learnable query, one cross-attention block, a linear head.

    ``forward(tokens (B, N, D)) -> (B, n_outputs)``.
    """

    def __init__(self, dim: int, n_outputs: int, num_heads: int = 1, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm_head = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_outputs)

    def attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """``Attn(q, x, x)`` of the block, ``(B, N, D) -> (B, D)``, without projecting every token.

        With one query the attention factorises: head ``h`` scores token ``x_n`` by
        ``x_n · (W_k,hᵀ q_h) / √d_h`` (the key bias is the same for every token and cancels in the
        softmax), and, since the weights sum to one, its output is ``W_v,h (Σ_n a_n x_n) + b_v,h``.
        That costs ``O(N·D·H)`` per window instead of the ``O(N·D²)`` of projecting keys and
        values, with the parameters and the result of ``self.attention`` (a test checks both).
        """
        batch, _, dim = tokens.shape
        heads = self.attention.num_heads
        w_q, w_k, w_v = self.attention.in_proj_weight.chunk(3)
        b_q, _, b_v = self.attention.in_proj_bias.chunk(3)
        q = (self.query[0, 0] @ w_q.T + b_q).view(heads, -1)  # (H, d_h)
        scale = q.shape[1] ** -0.5
        u = torch.einsum("he,hed->dh", q, w_k.view(heads, -1, dim)) * scale  # (D, H)
        weights = torch.softmax(tokens @ u, dim=1)  # (B, N, H)
        pooled = torch.einsum("bnh,bnd->bhd", weights, tokens)  # (B, H, D)
        values = torch.einsum("bhd,hed->bhe", pooled, w_v.view(heads, -1, dim)) + b_v.view(heads, -1)
        return self.attention.out_proj(values.reshape(batch, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.query[:, 0] + self.attend(tokens)
        h = h + self.mlp(self.norm_mlp(h))
        return self.head(self.norm_head(h))


def attentive_probe(
    train_tokens: np.ndarray,
    train_y: np.ndarray,
    test_tokens: np.ndarray,
    kind: str = "categorical",
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-2,
    weight_decay: float = 1e-2,
    num_heads: int = 1,
    device: str = "cpu",
) -> np.ndarray:
    """Train an :class:`AttentivePooler` on the training tokens and predict the test tokens.

    Parameters
    ----------
    train_tokens, test_tokens : numpy.ndarray
        ``(n, N, D)`` frozen token features (e.g. Brain-JEPA's ROI × time-patch grid).
    train_y : numpy.ndarray
        ``(n_train,)`` category codes or values.
    kind : {"categorical", "continuous"}
        Cross-entropy over the training classes, or mean squared error on the standardised target.
    seed : int
        Seeds the initialisation and the batch order (torch's global RNG is left untouched).
    epochs, batch_size, lr, weight_decay, num_heads
        Training of the probe; ``D`` must be divisible by ``num_heads``.
    device : str
        Torch device of the probe.

    Returns
    -------
    numpy.ndarray
        ``(n_test,)`` predicted codes (categorical) or values (continuous).
    """
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r}: choose one of {list(KINDS)}")
    train_tokens, test_tokens = np.asarray(train_tokens, np.float32), np.asarray(test_tokens, np.float32)
    if train_tokens.ndim != 3 or test_tokens.shape[1:] != train_tokens.shape[1:]:
        raise DataError(f"token features must be (n, N, D) alike; got {train_tokens.shape} and {test_tokens.shape}")
    if train_tokens.shape[2] % num_heads:
        raise ConfigError(f"num_heads={num_heads} must divide the token width {train_tokens.shape[2]}")
    train_y = np.asarray(train_y)
    mean = train_tokens.mean(axis=(0, 1))
    std = train_tokens.std(axis=(0, 1))
    std = np.where(std > 0, std, 1.0)
    if kind == "categorical":
        classes, target = np.unique(train_y, return_inverse=True)
        target = torch.as_tensor(target, dtype=torch.long)
        loss_fn, n_out = nn.functional.cross_entropy, len(classes)
    else:
        y_mean, y_std = float(train_y.mean()), float(train_y.std()) or 1.0
        target = torch.as_tensor((train_y - y_mean) / y_std, dtype=torch.float32)[:, None]
        loss_fn, n_out = nn.functional.mse_loss, 1
    x = torch.as_tensor((train_tokens - mean) / std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttentivePooler(x.shape[2], n_out, num_heads).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            loss = loss_fn(model(x[batch].to(device)), target[batch].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    test = torch.as_tensor((test_tokens - mean) / std)
    with torch.no_grad():
        out = torch.cat([model(test[i : i + 1024].to(device)).float().cpu() for i in range(0, len(test), 1024)])
    if kind == "categorical":
        return classes[out.argmax(dim=1).numpy()]
    return out[:, 0].numpy().astype(np.float64) * y_std + y_mean


__all__ = ["AttentivePooler", "attentive_probe"]
