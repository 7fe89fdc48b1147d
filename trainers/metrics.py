"""Classification metrics, computed in torch on whatever device the predictions are on."""

from __future__ import annotations

import torch


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``pred == y`` (``pred`` holds class indices)."""
    if len(y) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((pred == y).float().mean())


def macro_f1(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN).

    Classes absent from both ``y`` and ``pred`` are left out of the mean (as scikit-learn does
    when ``labels`` is not given).
    """
    classes = torch.arange(num_classes, device=y.device)
    is_pred = pred[None, :] == classes[:, None]
    is_true = y[None, :] == classes[:, None]
    tp = (is_pred & is_true).sum(1).float()
    fp = (is_pred & ~is_true).sum(1).float()
    fn = (~is_pred & is_true).sum(1).float()
    present = (is_pred | is_true).any(1)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return float(f1[present].mean())


def classification_metrics(logits: dict[str, torch.Tensor], y: torch.Tensor,
                           num_classes: int) -> dict[str, dict[str, float]]:
    """``{"fused": {accuracy, macro_f1}, modality: {accuracy, macro_f1}}``."""
    out = {}
    for key, lg in logits.items():
        pred = lg.argmax(-1)
        out[key] = {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, num_classes)}
    return out
