"""`max_concurrent_trials: auto`: trials per node, whole groups of seeds, the autoscaler's maxima."""

from __future__ import annotations

from tune.capacity import UNLIMITED, NodeKind, in_seed_groups, resolve, trial_slots, trials_per_node


def test_a_trial_needs_its_resources_on_one_node() -> None:
    assert trials_per_node({"CPU": 32, "GPU": 8}, cpu=8, gpu=1) == 4  # the CPUs bound it
    assert trials_per_node({"CPU": 64, "GPU": 8}, cpu=8, gpu=1) == 8
    assert trials_per_node({"CPU": 8, "GPU": 3}, cpu=1, gpu=2) == 1  # not 1.5
    assert trials_per_node({"CPU": 0}, cpu=1, gpu=0) == 0  # a KubeRay head
    assert trials_per_node({"CPU": 4, "GPU": 1}, cpu=1, gpu=0.25) == 4


def test_whole_groups_of_seeds() -> None:
    assert in_seed_groups(32, 3) == 30 and in_seed_groups(8, 3) == 6 and in_seed_groups(2, 3) == 2
    assert in_seed_groups(0, 1) == 1 and in_seed_groups(7, 1) == 7


def test_auto_counts_nodes_up_and_nodes_the_autoscaler_may_start() -> None:
    kinds = [NodeKind({"CPU": 0}, 1), NodeKind({"CPU": 64, "GPU": 8}, 4)]  # 4 nodes x 8 GPUs
    got = resolve("auto", cpu=8, gpu=1, seeds=3, kinds=kinds)
    assert got.trials == 30 and "32 GPUs" in got.reason  # the 4 x 8 GPUs: not 8 trials
    assert resolve("auto", cpu=8, gpu=1, seeds=3, kinds=kinds, cluster_gpus=12).trials == 12
    assert resolve(8, cpu=8, gpu=1, seeds=3, kinds=kinds).trials == 8  # a number is kept
    assert resolve(None, cpu=8, gpu=1, seeds=3).trials is None
    assert trial_slots([NodeKind({"CPU": 8, "GPU": 1}, UNLIMITED)], cpu=8, gpu=1) is None
    waiting = resolve("auto", cpu=8, gpu=1, seeds=3, kinds=[NodeKind({"CPU": 0}, 1)])
    assert waiting.trials is None and "cluster_gpus" in waiting.reason
    assert resolve("auto", cpu=2, gpu=0, seeds=2, kinds=[NodeKind({"CPU": 7}, 1)]).trials == 2  # CPU sweep
