"""Pre-LN Vision-Transformer blocks on token sequences, as used by Brain-JEPA and I-JEPA.

A :class:`Block` is ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` (Dosovitskiy et al., 2021),
with LayerNorm ``eps = 1e-6``, a biased ``qkv`` projection, an MLP of ratio 4 with GELU and
attention through :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a
fused kernel (flash / memory-efficient / CPU flash) for the device and dtype at hand, so no
separate flash-attention package is needed. No CLS token, no dropout.

:class:`TransformerStack` is ``depth`` blocks and a final LayerNorm, with I-JEPA's
initialisation (truncated normal ``std = 0.02`` for linear and convolution weights, zero
biases, and the residual output projections of block ``l`` divided by ``sqrt(2 l)``) and
optional activation checkpointing.

Shapes: ``(B, N, D) -> (B, N, D)`` throughout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from workbench.errors import ConfigError

LAYER_NORM_EPS = 1e-6


class Block(nn.Module):
    """One pre-LN transformer block.

    Parameters
    ----------
    dim : int
        Token width ``D``; must be divisible by ``num_heads``.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        Hidden width of the MLP as a multiple of ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ConfigError(f"token width {dim} is not divisible by num_heads={num_heads}; change one of them")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D/H)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TransformerStack(nn.Module):
    """``depth`` pre-LN blocks followed by a LayerNorm.

    Parameters
    ----------
    dim, depth, num_heads : int
        Width, number of blocks, attention heads.
    mlp_ratio : float
        MLP hidden width over ``dim``.
    gradient_checkpointing : bool
        Recompute each block's activations in the backward pass
        (:func:`torch.utils.checkpoint.checkpoint`, ``use_reentrant=False``) when
        gradients are being recorded: less memory, about a third more compute.
    init_std : float
        Standard deviation of the truncated-normal weight initialisation.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        gradient_checkpointing: bool = False,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"transformer depth must be >= 1, got {depth}")
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.gradient_checkpointing = gradient_checkpointing
        self.apply(lambda m: init_vit_weights(m, init_std))
        for layer_id, block in enumerate(self.blocks, start=1):
            with torch.no_grad():
                block.proj.weight.div_(math.sqrt(2.0 * layer_id))
                block.fc2.weight.div_(math.sqrt(2.0 * layer_id))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_checkpoint = self.gradient_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        return self.norm(x)


def init_vit_weights(module: nn.Module, std: float = 0.02) -> None:
    """I-JEPA initialisation of one module: trunc-normal weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
