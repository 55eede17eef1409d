"""Fine-tune any family's encoder end to end with a linear head, layer-wise learning rates and early stopping.

Every family maps standardised windows ``(B, T, F)`` to ``(B, D)`` with
:meth:`~workbench.models.base.Method.embed`, and that map is differentiable. :func:`finetune`
trains a **copy** of a trained (or untrained) method with a head on labelled windows, so a
representation is judged by what it becomes under supervision, beside the frozen-feature probes
of :mod:`workbench.evaluation.decoding`. The original method is never modified.

The recipe is Brain-JEPA's fine-tuning protocol (Dong et al., "Brain-JEPA: Brain Dynamics
Foundation Model with Gradient Positioning and Spatiotemporal Masking", NeurIPS 2024, section 4
and its reference code: AdamW, weight decay 0.05, layer-wise learning-rate decay 0.75, the head
``BatchNorm1d(affine=False)`` + ``Linear`` with a truncated-normal initialisation of std 0.01),
made generic over the families:

* **Which parameters train.** :func:`layer_depths` runs ``embed`` once and keeps the parameters it
  reaches (a backward pass tells); predictors, projection heads, decoders and target networks the
  embedding does not read are left out and never optimised. Parameters the embedding reads are
  trained even where the family froze them (Brain-JEPA's target encoder, a fixed ROI mixture):
  this is full fine-tuning.
* **Layer-wise learning-rate decay** (Clark et al., "ELECTRA", ICLR 2020; Bao et al., "BEiT",
  ICLR 2022): forward pre-hooks record the order in which modules run. The blocks of the
  ``nn.ModuleList`` stacks the embedding runs through (``nn.TransformerEncoder.layers``,
  :class:`workbench.models.vit.TransformerStack` ``.blocks``) get depths ``1 .. L`` in call order;
  everything that runs before the first block gets 0 (patch embedding, positional code, input
  projection), everything after the last one ``L + 1`` (final norm, the family's own output head),
  and a module between two blocks the depth of the next block. Depth ``d`` trains at
  ``lr * layer_decay ** (L + 1 - d)``; the head sits at ``L + 1`` and trains at ``lr``. A family
  without a ``ModuleList`` (the connectome backbone) has every parameter at depth 0, which is then
  the top depth: one rate, ``lr``.
* **Weight decay** as the code base's optimisers (:meth:`~workbench.models.base.Method.param_groups`):
  on parameters of two or more dimensions only, never on biases, norms or other 1-D parameters.
* **Early stopping** on an inner validation split of the training rows
  (:func:`inner_validation_split`): the weights of the epoch with the lowest validation loss are
  kept and restored, training stops after ``patience`` epochs without improvement. The split holds
  out whole groups (subjects, runs) when there are two or more, so no group is on both sides.
* **Targets.** ``"categorical"``: cross-entropy over the classes of the training labels (any
  codes; predictions come back as those codes). ``"continuous"``: mean squared error on the target
  standardised with the fitting rows' mean and standard deviation; predictions come back in the
  original units.

The learning rate is constant (the reference's warm-up and cosine schedule and its drop-path 0.1
are not reproduced). On CUDA the forward passes run under bf16 autocast and the losses are
computed in float32. Randomness (head initialisation, batch order, dropout, the inner split)
follows ``seed`` and leaves torch's global random state untouched: the same seed gives the same
result.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.normalize import Standardizer
from workbench.errors import ConfigError, DataError
from workbench.models.base import Method

KINDS = ("categorical", "continuous")
PREDICT_BATCH = 256


@dataclass(frozen=True)
class FinetuneSettings:
    """How :func:`finetune` trains (defaults: Brain-JEPA's fine-tuning recipe, Dong et al. 2024).

    Attributes
    ----------
    lr : float
        Learning rate of the head and of the top depth (``> 0``).
    layer_decay : float
        Layer-wise decay of the learning rate per depth below the top, in ``(0, 1]``; 1 trains every
        depth at ``lr`` (Clark et al. 2020; Bao et al. 2022; 0.75 in Brain-JEPA).
    weight_decay : float
        AdamW's decoupled weight decay on parameters of two or more dimensions (``>= 0``).
    max_epochs : int
        Most epochs over the fitting rows (``>= 1``).
    patience : int
        Epochs without a lower validation loss before training stops (``>= 1``).
    batch_size : int
        Windows per optimiser step (``>= 2``: the head's BatchNorm needs two).
    val_fraction : float
        Share of the groups (or, with one group, of the rows) held out for early stopping, in
        ``(0, 1)``.
    """

    lr: float = 1e-3
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    max_epochs: int = 30
    patience: int = 5
    batch_size: int = 32
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        checks = (
            ("lr", _is_number(self.lr) and self.lr > 0, "a number > 0"),
            ("layer_decay", _is_number(self.layer_decay) and 0 < self.layer_decay <= 1, "a number in (0, 1]"),
            ("weight_decay", _is_number(self.weight_decay) and self.weight_decay >= 0, "a number >= 0"),
            ("max_epochs", _is_integer(self.max_epochs) and self.max_epochs >= 1, "an integer >= 1"),
            ("patience", _is_integer(self.patience) and self.patience >= 1, "an integer >= 1"),
            ("batch_size", _is_integer(self.batch_size) and self.batch_size >= 2, "an integer >= 2"),
            ("val_fraction", _is_number(self.val_fraction) and 0 < self.val_fraction < 1, "a number in (0, 1)"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(
                    f"FinetuneSettings.{name}={getattr(self, name)!r} is out of range; it must be {allowed}"
                )


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# -- which parameters, at which depth ---------------------------------------------------------------


def _embed(method: Method, x: torch.Tensor, readout: str) -> torch.Tensor:
    return method.embed(x) if readout == "mean" else method.embed(x, readout=readout)


def _device_of(method: Method) -> torch.device:
    for tensor in itertools.chain(method.parameters(), method.buffers()):
        return tensor.device
    return torch.device("cpu")


def _trace(
    method: Method, example: np.ndarray | torch.Tensor, readout: str = "mean"
) -> tuple[dict[str, int], int, int]:
    """Depth of every parameter ``embed`` reads (:func:`layer_depths`), the number of blocks and the width ``D``."""
    x = torch.as_tensor(np.asarray(example, dtype=np.float32) if not torch.is_tensor(example) else example)
    x = x.to(device=_device_of(method), dtype=torch.float32)
    module_names = {id(m): name for name, m in method.named_modules()}
    first_call: dict[str, int] = {}
    counter = itertools.count()

    def record(module: nn.Module, args: Any) -> None:
        first_call.setdefault(module_names[id(module)], next(counter))

    params = dict(method.named_parameters())
    flags = {name: p.requires_grad for name, p in params.items()}
    modes = [(m, m.training) for m in method.modules()]
    handles = [m.register_forward_pre_hook(record) for m in method.modules()]
    try:
        for p in params.values():
            p.requires_grad_(True)
        for m, _ in modes:
            m.training = False  # no dropout, no BatchNorm statistics updated
        with torch.enable_grad():
            out = _embed(method, x, readout)
            if out.requires_grad and params:
                grads = torch.autograd.grad(out.float().sum(), list(params.values()), allow_unused=True)
            else:
                grads = (None,) * len(params)
    finally:
        for handle in handles:
            handle.remove()
        for name, p in params.items():
            p.requires_grad_(flags[name])
        for m, mode in modes:
            m.training = mode
    used = [name for name, g in zip(params, grads) if g is not None]

    # the blocks: children of the outermost ModuleLists that hold a used parameter, in call order
    lists = [name for name, m in method.named_modules() if isinstance(m, nn.ModuleList)]
    outer = [n for n in lists if not any(n != o and n.startswith(f"{o}.") for o in lists)]
    blocks = []
    for list_name in outer:
        prefix = f"{list_name}." if list_name else ""
        for child, _ in method.get_submodule(list_name).named_children():
            name = prefix + child
            if name in first_call and any(p.startswith(f"{name}.") for p in used):
                blocks.append((first_call[name], name))
    blocks.sort()
    block_depth = {name: i + 1 for i, (_, name) in enumerate(blocks)}
    starts = [t for t, _ in blocks]

    def called_at(owner: str) -> int:
        """First call of the owning module, else of its nearest called ancestor, else -1 (before everything)."""
        while True:
            if owner in first_call:
                return first_call[owner]
            if not owner:
                return -1
            owner = owner.rpartition(".")[0]

    depths = {}
    for name in used:
        owner = name.rpartition(".")[0]
        block = next((b for b in block_depth if owner == b or owner.startswith(f"{b}.")), None)
        if block is not None:
            depths[name] = block_depth[block]
        else:
            started = sum(t < called_at(owner) for t in starts)
            depths[name] = 0 if started == 0 else started + 1
    return depths, len(blocks), int(out.reshape(out.shape[0], -1).shape[1])


def layer_depths(method: Method, example: np.ndarray | torch.Tensor, readout: str = "mean") -> dict[str, int]:
    """The layer-wise learning-rate decay grouping of a family's embedding, by parameter name.

    Runs ``method.embed(example)`` once (eval mode, gradients enabled) with a forward pre-hook on
    every module and a backward pass to the parameters. Parameters the embedding does not reach
    (predictors, projection heads, decoders) are left out. The children of the outermost
    ``nn.ModuleList`` stacks the embedding runs through are the blocks, numbered ``1 .. L`` in call
    order; a parameter inside block ``i`` gets ``i``, one whose module first runs before the first
    block 0 (BEiT's convention: patch embedding, positional code; a parameter owned by a module that
    encloses the blocks, such as a class token, counts as before them), after the last block
    ``L + 1`` and between two blocks the depth of the next one (Bao et al., "BEiT: BERT
    Pre-Training of Image Transformers", ICLR 2022). Without a ``ModuleList`` every parameter is at
    depth 0. ``method`` is left as it was (modes, ``requires_grad`` flags, no ``.grad`` written).

    Parameters
    ----------
    method : Method
        Any family (prepared where its ``embed`` needs it, e.g. Brain-JEPA's gradients).
    example : array or tensor
        A few standardised windows ``(B, T, F)``.
    readout : str
        The pooling ``embed`` uses (``Method.readouts``).

    Returns
    -------
    dict of str to int
        Parameter name (as ``method.named_parameters()``) -> depth.
    """
    return _trace(method, example, readout)[0]


# -- the inner split --------------------------------------------------------------------------------


def inner_validation_split(
    groups: np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fitting and validation rows for early stopping, whole groups on one side.

    Parameters
    ----------
    groups : array of shape (n,)
        The group of every row (subject, run); rows are windows in time order.
    val_fraction : float
        In ``(0, 1)``. With two groups or more, ``round(val_fraction * n_groups)`` groups (at least
        one, at most all but one), drawn with ``seed``, are held out whole. With a single group the
        last ``round(val_fraction * n)`` rows (at least one, at most ``n - 1``) are held out, a
        contiguous stretch in time; windows that overlap across that boundary share frames with
        both sides, so the validation loss is then slightly optimistic.
    seed : int
        Seeds the draw of the held-out groups.

    Returns
    -------
    fit_rows, val_rows : numpy.ndarray of int
        Sorted row indices.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) < 2:
        raise DataError(
            f"groups must be one label per row with at least 2 rows (got shape {groups.shape}); "
            "pass the subject or run of every training window"
        )
    if not _is_number(val_fraction) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction={val_fraction!r} is out of range; it must be in (0, 1)")
    n = len(groups)
    names, codes = np.unique(groups, return_inverse=True)
    if len(names) >= 2:
        n_val = min(len(names) - 1, max(1, math.floor(val_fraction * len(names) + 0.5)))
        held = np.random.default_rng(seed).choice(len(names), size=n_val, replace=False)
        is_val = np.isin(codes, held)
    else:
        n_val = min(n - 1, max(1, math.floor(val_fraction * n + 0.5)))
        is_val = np.arange(n) >= n - n_val
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# -- the model --------------------------------------------------------------------------------------


class FinetuneModel(nn.Module):
    """A copied family + the head ``BatchNorm1d(D, affine=False)`` + ``Linear(D, n_outputs)``.

    ``forward(x (B, T, F)) -> (B, n_outputs)``: logits, or the standardised continuous target.
    """

    def __init__(self, method: Method, dim: int, n_outputs: int, readout: str, generator: torch.Generator) -> None:
        super().__init__()
        self.method = method
        self.readout = readout
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, n_outputs))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01, generator=generator)  # the reference's init
        nn.init.zeros_(self.head[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _embed(self.method, x, self.readout)
        return self.head(z.reshape(z.shape[0], -1))


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _outputs(model: FinetuneModel, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Head outputs of standardised windows, eval mode, batches of 256, no grad; float32 on the CPU."""
    model.eval()
    out = []
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(x), PREDICT_BATCH):
            out.append(model(torch.from_numpy(x[i : i + PREDICT_BATCH]).to(device)).float().cpu())
    n_out = model.head[1].out_features
    return torch.cat(out) if out else torch.zeros(0, n_out)


@dataclass
class FineTuned:
    """What :func:`finetune` returns.

    Attributes
    ----------
    model : FinetuneModel
        The fine-tuned copy with its head, holding the weights of the best validation epoch.
    standardizer : Standardizer
        Applied to raw windows by :meth:`predict` and :meth:`outputs`.
    kind : {"categorical", "continuous"}
    classes : numpy.ndarray or None
        The class codes in the order of the logits (categorical).
    target_mean, target_std : float
        The fitting rows' target statistics (continuous; 0 and 1 otherwise).
    history : dict
        ``train_loss`` and ``val_loss`` (one per epoch run), ``best_epoch`` (whose weights were
        restored) and ``stopped_epoch`` (the last epoch run; below ``max_epochs`` when early
        stopping ended training), epochs counted from 1. Losses are in the units the head is trained
        in (cross-entropy; mean squared error of the standardised target).
    learning_rates : dict of int to float
        Depth -> learning rate (:func:`layer_depths`); the head trains at the top depth's rate.
    validation_rows : numpy.ndarray
        The training rows held out for early stopping.
    device : torch.device
    """

    model: FinetuneModel
    standardizer: Standardizer
    kind: str
    classes: np.ndarray | None
    target_mean: float
    target_std: float
    history: dict[str, Any]
    learning_rates: dict[int, float]
    validation_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def outputs(self, windows: np.ndarray) -> np.ndarray:
        """Raw head outputs ``(n, n_outputs)`` of raw windows: logits, or the standardised target."""
        x = _check_windows(windows, self.model.method.n_features, "windows")
        return _outputs(self.model, self.standardizer.transform(x), self.device).numpy()

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Predictions for raw windows ``(n, T, F)``: class codes, or the target in its original units."""
        out = self.outputs(windows)
        if self.kind == "categorical":
            return self.classes[out.argmax(axis=1)]
        return out[:, 0].astype(np.float64) * self.target_std + self.target_mean


# -- checks -----------------------------------------------------------------------------------------


def _check_windows(windows: np.ndarray, n_features: int, name: str) -> np.ndarray:
    x = np.asarray(windows)
    if x.ndim != 3 or x.shape[2] != n_features or x.shape[0] < 1:
        raise DataError(
            f"{name} must have shape (n, T, {n_features}) with n >= 1 (the method was built for {n_features} "
            f"features per frame), got {x.shape}; pass windows of frames, time first"
        )
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise DataError(f"{name} hold NaN or inf values; drop or impute those windows before fine-tuning")
    return x.astype(np.float32, copy=False)


def _check_kind_readout(method: Method, kind: str, readout: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"finetune: kind={kind!r} is unknown; use one of {list(KINDS)}")
    if readout not in method.readouts:
        raise ConfigError(
            f"finetune: readout={readout!r} is not offered by family {method.name!r}; it offers {list(method.readouts)}"
        )


def _targets(y: np.ndarray, kind: str, fit_rows: np.ndarray) -> tuple[torch.Tensor, np.ndarray | None, float, float]:
    """Training targets (codes or the standardised value), the classes, the target's mean and std."""
    if kind == "categorical":
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise DataError("y holds NaN or inf labels; drop the windows whose class is undefined")
        classes, codes = np.unique(y, return_inverse=True)
        if len(np.unique(codes[fit_rows])) < 2:
            raise DataError(
                f"y: the fitting rows hold a single class ({classes[codes[fit_rows[0]]]!r}); categorical "
                "fine-tuning needs at least 2 classes there: pass windows of several classes (or other groups)"
            )
        return torch.as_tensor(codes.reshape(-1), dtype=torch.long), classes, 0.0, 1.0
    if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y.astype(np.float64)).all():
        raise DataError("y holds NaN, inf or non-numeric values; a continuous target must be finite numbers")
    values = y.astype(np.float64)
    mean, std = float(values[fit_rows].mean()), float(values[fit_rows].std())
    std = std if std > 0 else 1.0
    return torch.as_tensor((values - mean) / std, dtype=torch.float32).unsqueeze(1), None, mean, std


def _loss(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    out = out.float()
    return F.cross_entropy(out, target) if kind == "categorical" else F.mse_loss(out, target)


def _seed_for(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's CPU RNG and ``device``'s (dropout) inside the block; restore both after it."""
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


# -- fine-tuning ------------------------------------------------------------------------------------


def finetune(
    method: Method,
    standardizer: Standardizer,
    windows: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    kind: str,
    settings: FinetuneSettings = FinetuneSettings(),
    seed: int = 0,
    device: str | torch.device | None = None,
    readout: str = "mean",
) -> FineTuned:
    """Fine-tune a copy of ``method``'s embedding with a linear head (module docstring for the recipe).

    Parameters
    ----------
    method : Method
        A trained (or untrained, prepared) family; it is not modified.
    standardizer : Standardizer
        The scaling the method was trained with (``TrainResult.standardizer``); applied here.
    windows : numpy.ndarray
        Raw training windows ``(n, T, F)`` with ``F = method.n_features``, in time order within a group.
    y : numpy.ndarray
        ``(n,)`` class codes (``kind="categorical"``, any values) or real targets (``"continuous"``).
    groups : numpy.ndarray
        ``(n,)`` the group of every window (subject, run) for the inner validation split.
    kind : {"categorical", "continuous"}
    settings : FinetuneSettings
    seed : int
        Seeds the inner split, the head initialisation, the batch order and dropout.
    device : str or torch.device, optional
        Where to train; default: the method's device.
    readout : str
        How ``embed`` pools (``Method.readouts``; jepa also offers ``"roi"``).

    Returns
    -------
    FineTuned

    Raises
    ------
    ConfigError
        An unknown ``kind`` or ``readout``; ``settings`` not a :class:`FinetuneSettings`.
    DataError
        Windows of the wrong shape or with NaN/inf; ``y`` or ``groups`` not one value per window;
        non-finite continuous targets; fewer than 2 fitting rows; a single class in the fitting rows.
    """
    _check_kind_readout(method, kind, readout)
    if not isinstance(settings, FinetuneSettings):
        raise ConfigError(f"finetune: settings must be a FinetuneSettings, got {type(settings).__name__}")
    x = _check_windows(windows, method.n_features, "windows")
    y, groups = np.asarray(y), np.asarray(groups)
    for name, values in (("y", y), ("groups", groups)):
        if values.shape != (len(x),):
            raise DataError(f"{name} must hold one value per window: shape ({len(x)},), got {values.shape}")
    fit_rows, val_rows = inner_validation_split(groups, settings.val_fraction, seed)
    if len(fit_rows) < 2:
        raise DataError(
            f"windows: only {len(fit_rows)} fitting row(s) remain after holding out {len(val_rows)} for validation; "
            "fine-tuning needs at least 2: pass more windows (or more groups)"
        )
    target, classes, mean, std = _targets(y, kind, fit_rows)
    xs = standardizer.transform(x)
    device = torch.device(device) if device is not None else _device_of(method)

    with _seeded(seed, device):
        encoder = copy.deepcopy(method).to(device)
        depths, n_blocks, dim = _trace(encoder, xs[fit_rows[:2]], readout)
        for name, p in encoder.named_parameters():
            p.requires_grad_(name in depths)
        n_out = len(classes) if kind == "categorical" else 1
        model = FinetuneModel(encoder, dim, n_out, readout, torch.Generator().manual_seed(_seed_for(seed, 1)))
        model.to(device)
        top = n_blocks + 1 if n_blocks else 0  # L + 1, where the head sits; 0 without blocks
        rates = {d: settings.lr * settings.layer_decay ** (top - d) for d in sorted({*depths.values(), top})}
        optimizer = torch.optim.AdamW(_param_groups(encoder, depths, model.head, rates, settings), lr=settings.lr)
        history = _fit(model, optimizer, xs, target, fit_rows, val_rows, kind, settings, seed, device)
    return FineTuned(model, standardizer, kind, classes, mean, std, history, rates, val_rows, device)


def _param_groups(
    encoder: Method, depths: dict[str, int], head: nn.Module, rates: dict[int, float], settings: FinetuneSettings
) -> list[dict[str, Any]]:
    """AdamW groups by (depth, decay or not); weight decay on >= 2-D parameters only; the head at ``lr``."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    named = dict(encoder.named_parameters())
    for name, depth in depths.items():
        p = named[name]
        groups.setdefault((rates[depth], p.ndim >= 2), []).append(p)
    for p in head.parameters():
        groups.setdefault((settings.lr, p.ndim >= 2), []).append(p)
    return [
        {"params": params, "lr": lr, "weight_decay": settings.weight_decay if decay else 0.0}
        for (lr, decay), params in groups.items()
    ]


def _fit(
    model: FinetuneModel,
    optimizer: torch.optim.Optimizer,
    xs: np.ndarray,
    target: torch.Tensor,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    kind: str,
    settings: FinetuneSettings,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Train with early stopping on ``val_rows``; restore the best epoch's weights; return the history."""
    order_rng = torch.Generator().manual_seed(_seed_for(seed, 2))
    x_val, t_val = xs[val_rows], target[val_rows]
    keep = {name for name, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}
    train_loss: list[float] = []
    val_loss: list[float] = []
    best, best_epoch, best_state, since = math.inf, 0, None, 0
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = fit_rows[torch.randperm(len(fit_rows), generator=order_rng).numpy()]
        total, count = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            if len(rows) < 2:  # BatchNorm needs two windows
                continue
            with _autocast(device):
                out = model(torch.from_numpy(xs[rows]).to(device))
            loss = _loss(out, target[rows].to(device), kind)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        train_loss.append(total / count)
        val_loss.append(float(_loss(_outputs(model, x_val, device), t_val, kind)))
        if val_loss[-1] < best:
            best, best_epoch, since = val_loss[-1], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in keep}
        else:
            since += 1
            if since >= settings.patience:
                break
    if best_state is None:
        raise DataError(
            "finetune: the validation loss was never finite (NaN or inf in every epoch); check the windows' "
            "scale and lower FinetuneSettings.lr"
        )
    model.load_state_dict(best_state, strict=False)
    model.eval()
    return {"train_loss": train_loss, "val_loss": val_loss, "best_epoch": best_epoch, "stopped_epoch": len(train_loss)}


def finetune_predictions(
    method: Method,
    standardizer: Standardizer,
    train_windows: np.ndarray,
    train_y: np.ndarray,
    train_groups: np.ndarray,
    test_windows: np.ndarray,
    kind: str,
    settings: FinetuneSettings = FinetuneSettings(),
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Fine-tune on the training windows of a fold and predict its test windows (:func:`finetune`).

    Returns
    -------
    numpy.ndarray
        ``(n_test,)`` class codes (categorical) or values in the units of ``train_y`` (continuous).
    """
    _check_kind_readout(method, kind, "mean")
    n = len(_check_windows(train_windows, method.n_features, "train_windows"))
    for name, values in (("train_y", train_y), ("train_groups", train_groups)):
        if np.shape(values) != (n,):
            raise DataError(f"{name} must hold one value per training window: shape ({n},), got {np.shape(values)}")
    _check_windows(test_windows, method.n_features, "test_windows")
    tuned = finetune(method, standardizer, train_windows, train_y, train_groups, kind, settings, seed, device)
    return tuned.predict(test_windows)


__all__ = [
    "KINDS",
    "FineTuned",
    "FinetuneModel",
    "FinetuneSettings",
    "finetune",
    "finetune_predictions",
    "inner_validation_split",
    "layer_depths",
]
