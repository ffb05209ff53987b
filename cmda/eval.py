"""Evaluation: dataset-level confusion matrix, per-class IoU, the target's mIoUs, whole-image inference.

IoU is computed from intersections and unions summed over the whole test set (not averaged per image);
a class with an empty union is NaN and left out of the mean (mmseg's nanmean). Which means are reported
(and over which classes) is the target's registry entry: DSEC-Night's test labels never contain truck, so
its headline `miou18` leaves it out (the original's logs print the 19-class mean and convert with x19/18,
the same number when truck's IoU is 0); Dark Zurich reports `miou19` over its labelled validation split.

`evaluate` is the one evaluation routine: the trainer calls it every `eval_interval`, `cmda test` calls it
on a checkpoint (with a callback that writes each prediction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from cmda.data import CLASSES, IGNORE_INDEX
from cmda.data.targets import TargetSpec
from cmda.models.cpu_kernels import resize_bilinear

OnPrediction = Callable[[str, Tensor], None]
"""on_prediction(sample name, predicted trainIds [H, W] on the CPU)."""


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


def metrics_from_confusion(conf: Tensor, metrics: Mapping[str, tuple[int, ...]]) -> dict[str, float]:
    """Each named mean of `metrics` (name -> trainIds), `iou/<class>` and `acc`, in percent like the paper."""
    _, iou = miou(conf)
    out = {name: 100 * miou(conf, classes)[0] for name, classes in metrics.items()}
    out.update({f"iou/{name}": 100 * float(v) for name, v in zip(CLASSES, iou)})
    total = conf.sum().item()
    out["acc"] = 100 * conf.diag().sum().item() / total if total else math.nan
    return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    target: TargetSpec,
    on_prediction: OnPrediction | None = None,
) -> dict[str, float]:
    """Whole-image inference on a test loader with the branch the target evaluates: the fusion of image and
    second modality (DSEC-Night: events), or the image branch alone (Dark Zurich, as the original).

    Always in fp32, whatever `train.amp` trains with (autocast is switched off here even inside an outer
    autocast): the metric that the scheduler and the analysis compare must not move with the precision.
    """
    was_training = model.training
    model.eval()
    num_classes = target.num_classes
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    try:
        for index, batch in enumerate(loader):
            image = batch["image"].to(device, torch.float32)
            fuses = target.eval_branch == "fusion"
            second_modality = batch[target.second_modality].to(device, torch.float32) if fuses else None
            label = batch["label"].to(device)
            with torch.autocast(device.type, enabled=False):
                logits = model.predict(image, second_modality)
            logits = resize_bilinear(logits.float(), label.shape[-2:])
            prediction = logits.argmax(dim=1)
            conf += confusion_matrix(prediction, label, num_classes)
            if on_prediction is not None:
                names = batch.get("name", [str(index)] * len(prediction))
                for name, single in zip(names, prediction.cpu()):
                    on_prediction(str(name), single)
    finally:
        model.train(was_training)
    return metrics_from_confusion(conf, target.metrics)
