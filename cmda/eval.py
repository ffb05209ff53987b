"""Evaluation: dataset-level confusion matrix, per-class IoU, 19- and 18-class mIoU, whole-image inference.

IoU is computed from intersections and unions summed over the whole test set (not averaged per image);
a class with an empty union is NaN and left out of the mean (mmseg's nanmean). DSEC-Night's test labels
never contain truck, so its mean is taken over the other 18 classes (`miou18`); the original's logs
print the 19-class mean and convert with x19/18, which is the same number when truck's IoU is 0.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cmda.data import CLASSES, DSEC_EXCLUDED_CLASS, IGNORE_INDEX

MIOU18_CLASSES = tuple(c for c in range(len(CLASSES)) if c != DSEC_EXCLUDED_CLASS)


def confusion_matrix(
    pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """conf[gt, pred] pixel counts (int64), ignoring label == ignore_index; predictions outside the
    class range are dropped like mmseg's histc does."""
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    keep = (label != ignore_index) & (pred >= 0) & (pred < num_classes)
    if bool(((label[label != ignore_index] < 0) | (label[label != ignore_index] >= num_classes)).any()):
        raise ValueError(f"label values outside 0..{num_classes - 1} and {ignore_index}")
    index = label[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def miou(conf: Tensor, classes: tuple[int, ...] | None = None) -> tuple[float, np.ndarray]:
    """(mean IoU over `classes` with NaN classes skipped, per-class IoU array with NaN where union is 0)."""
    conf = conf.double()
    intersection = conf.diag()
    union = conf.sum(0) + conf.sum(1) - intersection
    iou = torch.where(
        union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan"))
    ).numpy()
    selected = iou if classes is None else iou[list(classes)]
    valid = selected[~np.isnan(selected)]
    return (float(valid.mean()) if valid.size else float("nan")), iou


def metrics_from_confusion(conf: Tensor) -> dict[str, float]:
    """`miou18`, `miou19` and `iou/<class>` (in percent, like the paper's tables)."""
    m19, iou = miou(conf)
    m18, _ = miou(conf, MIOU18_CLASSES)
    metrics = {"miou18": 100 * m18, "miou19": 100 * m19}
    metrics.update({f"iou/{name}": 100 * float(v) for name, v in zip(CLASSES, iou)})
    total = conf.sum().item()
    metrics["acc"] = 100 * conf.diag().sum().item() / total if total else math.nan
    return metrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, amp: bool = False) -> dict[str, float]:
    """Whole-image inference with the fusion output (image output without events) on a test loader."""
    was_training = model.training
    model.eval()
    num_classes = model.decode_head.num_classes if hasattr(model.decode_head, "num_classes") else len(CLASSES)
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    try:
        for batch in loader:
            image = batch["image"].to(device)
            events = batch["events"].to(device) if "events" in batch else None
            label = batch["label"].to(device)
            with autocast:
                logits = model.predict(image, events)
            logits = F.interpolate(
                logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
            )
            conf += confusion_matrix(logits.argmax(dim=1), label, num_classes)
    finally:
        model.train(was_training)
    return metrics_from_confusion(conf)
