"""tune.placement: the device a trial trains on follows the GPUs Ray assigned it, and nothing else shows."""

from __future__ import annotations

import pytest

from tune.placement import (
    NOSET_VISIBLE_DEVICES,
    VISIBLE_DEVICES,
    Placement,
    PlacementError,
    device_for,
    gpus_in_request,
    memory_share,
)


@pytest.mark.parametrize(("requested", "ids", "device"), [
    ("auto", (), "cpu"),
    ("auto", ("3",), "cuda"),
    ("cpu", ("0",), "cpu"),
    ("cuda", ("2",), "cuda"),
    ("cuda:1", ("4", "5"), "cuda:1"),
    ("AUTO", (), "cpu"),
])
def test_device_follows_the_assignment(requested: str, ids: tuple[str, ...], device: str) -> None:
    assert device_for(requested, ids) == device


def test_device_that_contradicts_the_assignment_is_refused_with_the_fix() -> None:
    with pytest.raises(PlacementError, match=r"given no GPU \(resources.gpu: 0\).*train.device: auto"):
        device_for("cuda", ())
    with pytest.raises(PlacementError, match=r"sees 1 GPU\(s\) \(cuda:0..cuda:0\)"):
        device_for("cuda:1", ("7",))
    with pytest.raises(PlacementError, match="expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        device_for("tpu", ())


def test_visible_devices_are_exactly_the_assigned_ones() -> None:
    env = {VISIBLE_DEVICES: "0,1,2,3"}  # the node's variable, inherited by a zero-GPU task
    Placement(gpu_ids=(), gpus=0.0).pin_visible_devices(env)
    assert env[VISIBLE_DEVICES] == ""  # no GPU at all, not "every GPU"
    Placement(gpu_ids=("2", "3"), gpus=2.0).pin_visible_devices(env)
    assert env[VISIBLE_DEVICES] == "2,3"
    opted_out = {VISIBLE_DEVICES: "0,1", NOSET_VISIBLE_DEVICES: "1"}
    Placement(gpu_ids=(), gpus=0.0).pin_visible_devices(opted_out)
    assert opted_out[VISIBLE_DEVICES] == "0,1"  # Ray's opt-out is respected: the user manages visibility


def test_fractional_gpus_get_a_memory_share_whole_ones_do_not() -> None:
    assert [memory_share(g) for g in (0.0, 0.25, 0.5, 1.0, 2.0)] == [None, 0.25, 0.5, None, None]
    assert [gpus_in_request(g) for g in (0.0, 0.25, 1.0, 2.0)] == [0, 1, 1, 2]
    assert Placement(gpu_ids=(), gpus=0.5).limit_memory("cpu") is None  # nothing to cap on the CPU


def test_trial_threads_follow_the_cpu_request_without_importing_torch_first(tmp_path) -> None:
    """The trainable hands torch the trial's CPU count through the environment; torch honours it on import.
    Resolving the trial's config before the trainer starts imports no torch either (seconds per trial)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: a 1-thread limit is indistinguishable from torch's default here")
    base = tmp_path / "base.yaml"
    base.write_text("train: {max_iters: 4}\n")
    params = {"base_config": str(base), "overrides": {"optim.lr": "6e-5"}, "seed": 3,
              "ablation": {"variant": "fusion_st", "lambda_scale": 1.0, "lambdas": {"fusion_st": 0.05}}}
    code = ("import sys; from tune.trainable import limit_threads, resolve_trial_config; limit_threads(1); "
            f"config = resolve_trial_config({params!r}, work_dir='w', name='t'); "
            "assert config['seed'] == 3 and config['train']['work_dir'] == 'w', config; "
            "assert 'torch' not in sys.modules; import torch; print(torch.get_num_threads())")
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]  # torch's own default would be every core
