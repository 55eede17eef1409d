"""Fine-tune a pre-trained Brain-JEPA target encoder with a linear head on labelled windows.

The downstream recipe of Brain-JEPA (Dong et al., NeurIPS 2024, section 4): the target
(EMA) encoder over all tokens, mean-pooled, normalised, then a head. The head here is the
reference's linear-probe head, ``BatchNorm1d(affine=False)`` + ``Linear``, on a **copy**
of the encoder that :meth:`~workbench.models.jepa.BrainJEPA.embed` reads (the target
encoder, or the online one with ``embed_with="online"``; the method itself is left
untouched). Training uses AdamW with a single learning rate and weight decay; the
reference's layer-wise learning-rate decay (0.75), drop-path (0.1) and LARS optimiser for
the frozen probe are not reproduced.
For a frozen-feature linear probe use the scikit-learn probe of the evaluation module
on :meth:`~workbench.models.jepa.BrainJEPA.embed`, or ``freeze_encoder=True`` here.

Metrics on the validation windows: accuracy and macro-F1 for classification, mean
squared error (in the units of ``y``) and Pearson r for regression.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from workbench.errors import ConfigError, DataError
from workbench.models.jepa.model import BrainJEPA, pool_tokens, windows_to_image

TASKS = ("classification", "regression")


class FinetuneModel(nn.Module):
    """Copied encoder + gradient buffer + ``BatchNorm1d(affine=False)`` + ``Linear``.

    ``forward(x (B, T, R)) -> (B, n_outputs)``: logits or standardised regression outputs.
    """

    def __init__(
        self, method: BrainJEPA, n_outputs: int, freeze_encoder: bool, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.patch_size = method.config.patch_size
        self.crop = method.config.crop
        self.encoder = copy.deepcopy(method.embedding_encoder).requires_grad_(not freeze_encoder)
        self.register_buffer("gradients", method._fitted_gradients().detach().clone())
        dim = method.config.embed_dim
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, n_outputs))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01, generator=generator)  # the reference's init
        nn.init.zeros_(self.head[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, _ = windows_to_image(x, self.patch_size, self.crop)
        return self.head(pool_tokens(self.encoder(image, self.gradients)))


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes
    ----------
    metrics : dict
        Validation metrics: ``accuracy``, ``f1`` (macro) or ``mse``, ``pearson_r``.
    train_loss : list of float
        Mean training loss per epoch.
    model : FinetuneModel
        The fine-tuned copy (eval mode).
    classes : numpy.ndarray or None
        Class labels in the order of the logits (classification only).
    """

    metrics: dict[str, float]
    train_loss: list[float] = field(default_factory=list)
    model: FinetuneModel | None = None
    classes: np.ndarray | None = None


def _check_xy(x: np.ndarray | torch.Tensor, y: np.ndarray, name: str, n_rois: int) -> tuple[torch.Tensor, np.ndarray]:
    x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = np.asarray(y)
    if x_t.ndim != 3 or x_t.shape[2] != n_rois:
        raise DataError(f"finetune: x_{name} must have shape (N, T, {n_rois}), got {tuple(x_t.shape)}")
    if y.ndim != 1 or len(y) != x_t.shape[0]:
        raise DataError(f"finetune: y_{name} must hold one label per window ({x_t.shape[0]}), got shape {y.shape}")
    if not torch.isfinite(x_t).all():
        raise DataError(f"finetune: x_{name} holds NaN or inf values")
    return x_t, y


def finetune(
    method: BrainJEPA,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task: str = "classification",
    epochs: int = 20,
    lr: float = 1e-4,
    batch_size: int = 16,
    seed: int = 0,
    weight_decay: float = 0.05,
    freeze_encoder: bool = False,
    device: str | torch.device | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``method``'s embedding encoder (target or online) with a linear head and score it.

    Parameters
    ----------
    method : BrainJEPA
        A prepared (or trained) Brain-JEPA; it is not modified.
    x_train, x_val : array
        ``(N, T, R)`` standardised windows.
    y_train, y_val : array
        ``(N,)`` class labels (any hashable values) or real targets.
    task : {"classification", "regression"}
        Cross-entropy on classes, or MSE on ``y`` standardised with the training mean
        and standard deviation (metrics are reported in the original units).
    epochs, lr, batch_size, weight_decay : training settings (AdamW, constant lr).
        A last training batch of one window is skipped (BatchNorm needs two).
    seed : int
        Seeds the head initialisation and the batch order: same seed, same result.
    freeze_encoder : bool
        Train only the head (a linear probe on the frozen features).
    device : optional
        Where to train; default: the device of ``method``.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ConfigError
        On an unknown ``task`` or non-positive settings.
    DataError
        On mismatched shapes, non-finite values, a validation class absent from training,
        or fewer than two training windows.
    """
    if task not in TASKS:
        raise ConfigError(f"finetune: task={task!r}; choose one of {list(TASKS)}")
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ConfigError(f"finetune: need epochs >= 1, batch_size >= 2, lr > 0; got {epochs}, {batch_size}, {lr}")
    xtr, ytr = _check_xy(x_train, y_train, "train", method.n_rois)
    xva, yva = _check_xy(x_val, y_val, "val", method.n_rois)
    if len(ytr) < 2:
        raise DataError("finetune: need at least 2 training windows")
    classes = None
    if task == "classification":
        classes, target_train = np.unique(ytr, return_inverse=True)
        unseen = sorted(set(np.unique(yva).tolist()) - set(classes.tolist()))
        if unseen:
            raise DataError(f"finetune: validation labels {unseen[:5]} never occur in the training labels")
        target = torch.as_tensor(target_train, dtype=torch.long)
        n_outputs = len(classes)
    else:
        ytr_f, yva_f = ytr.astype(np.float64), yva.astype(np.float64)
        if not (np.isfinite(ytr_f).all() and np.isfinite(yva_f).all()):
            raise DataError("finetune: regression targets hold NaN or inf values")
        mean, std = ytr_f.mean(), ytr_f.std() or 1.0
        target = torch.as_tensor((ytr_f - mean) / std, dtype=torch.float32).unsqueeze(1)
        n_outputs = 1

    device = torch.device(device) if device is not None else method.gradients.device
    model = FinetuneModel(method, n_outputs, freeze_encoder, torch.Generator().manual_seed(seed)).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    order_rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        model.train()
        order = order_rng.permutation(len(ytr))
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            out = model(xtr[idx].to(device))
            labels = target[idx].to(device)
            loss = F.cross_entropy(out.float(), labels) if task == "classification" else F.mse_loss(out.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))

    model.eval()
    with torch.no_grad():
        out = torch.cat([model(xva[i : i + 256].to(device)).float().cpu() for i in range(0, len(yva), 256)])
    if task == "classification":
        predicted = classes[out.argmax(dim=1).numpy()]
        metrics = {
            "accuracy": float(accuracy_score(yva, predicted)),
            "f1": float(f1_score(yva, predicted, average="macro")),
        }
    else:
        predicted = out[:, 0].numpy().astype(np.float64) * std + mean
        r = pearsonr(predicted, yva_f).statistic if np.ptp(predicted) > 0 and np.ptp(yva_f) > 0 else float("nan")
        metrics = {"mse": float(np.mean((predicted - yva_f) ** 2)), "pearson_r": float(r)}
    return FinetuneResult(metrics, history, model, classes)
