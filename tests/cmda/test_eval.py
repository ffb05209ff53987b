"""mIoU from a confusion matrix: hand-computed cases, ignore label, the 18- vs 19-class mean, and the
metric definitions of every registered target."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmda.data import CLASSES
from cmda.data.targets import TARGETS, get_target
from cmda.eval import confusion_matrix, metrics_from_confusion, miou

DSEC = get_target("dsec_night")


def test_confusion_matrix_ignores_255_and_counts_gt_by_pred():
    label = torch.tensor([[0, 0, 1, 255], [1, 2, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 0], [1, 2, 0, 2]])
    conf = confusion_matrix(pred, label, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]


def test_miou_against_hand_computed_values():
    conf = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    # IoU0 = 1/(2+2-1) = 1/3, IoU1 = 2/(2+3-2) = 2/3, IoU2 = 2/(3+2-2) = 2/3
    mean, iou = miou(conf)
    np.testing.assert_allclose(iou, [1 / 3, 2 / 3, 2 / 3])
    assert mean == pytest.approx(5 / 9)


def test_class_with_empty_union_is_nan_and_skipped():
    conf = torch.zeros(3, 3, dtype=torch.long)
    conf[0, 0], conf[1, 1] = 4, 2
    mean, iou = miou(conf)
    assert math.isnan(iou[2]) and mean == pytest.approx(1.0)


def test_18_class_mean_leaves_out_truck_and_matches_the_readme_conversion():
    conf = torch.zeros(19, 19, dtype=torch.long)
    for c in range(19):
        if c != 14:
            conf[c, c] = 10
            conf[c, (c + 1) % 19] = 5  # IoU < 1, and some pixels predicted as truck (class 13 -> 14)
    metrics = metrics_from_confusion(conf, DSEC.metrics)
    assert metrics["iou/truck"] == 0.0
    assert metrics["miou18"] == pytest.approx(metrics["miou19"] * 19 / 18)
    assert 14 not in DSEC.metrics["miou18"] and len(DSEC.metrics["miou18"]) == 18
    conf[13, 14], conf[13, 13] = 0, 15  # truck never predicted: NaN, both means agree
    metrics = metrics_from_confusion(conf, DSEC.metrics)
    assert math.isnan(metrics["iou/truck"]) and metrics["miou18"] == pytest.approx(metrics["miou19"])


def test_out_of_range_labels_are_rejected():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_reports_its_declared_metrics(name):
    """Each registered target: the evaluation reports exactly `metric_names`, the headline among them,
    every mean over the classes the entry declares (checked against a direct computation)."""
    spec = get_target(name)
    generator = torch.Generator().manual_seed(len(name))
    conf = torch.randint(0, 50, (spec.num_classes, spec.num_classes), generator=generator)
    metrics = metrics_from_confusion(conf, spec.metrics)
    assert set(metrics) == set(spec.metric_names) and spec.headline_metric in metrics
    _, iou = miou(conf)
    for metric, classes in spec.metrics.items():
        assert set(classes) <= set(range(len(CLASSES)))
        assert metrics[metric] == pytest.approx(100 * np.nanmean(iou[list(classes)]))


def test_evaluation_runs_in_fp32_under_bf16_training(tiny_config):
    """With `train.amp: bf16` the training step autocasts, evaluation does not: the reported metric is the
    fp32 evaluation of the checkpoint, and an outer autocast does not reach the model."""
    from cmda.eval import evaluate
    from cmda.train import build_model, build_test_loader, load_checkpoint, run

    config = tiny_config(**{"train.amp": "bf16", "train.max_iters": 2, "train.eval_interval": 2})
    reported = run(config)
    model = build_model(config)
    model.load_state_dict(load_checkpoint(config.train.work_dir)["model"])
    dtypes = []
    model.decode_head.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    loader = build_test_loader(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metrics = evaluate(model, loader, torch.device("cpu"), config.target)
    assert dtypes and set(dtypes) == {torch.float32}
    assert metrics == pytest.approx(reported, rel=0, abs=0, nan_ok=True)
    plain = evaluate(model, loader, torch.device("cpu"), config.target)
    assert plain == pytest.approx(metrics, rel=0, abs=0, nan_ok=True)
