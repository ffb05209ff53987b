"""The trial table printed while a sweep runs (`LiveTable`) and by `cmda-tune status`."""

from __future__ import annotations

import io

from ray.tune.experiment import Trial

from tune.live_table import LiveTable
from tune.simulation import SimTrial


def test_live_table_has_variant_lambda_seed_iteration_and_metric_columns() -> None:
    stream = io.StringIO()
    table = LiveTable("miou18", "max", interval_s=0.0, stream=stream)
    scaled = SimTrial(
        "rgb_st+event_st_x0.5_s1_a",
        {
            "ablation": {
                "variant": "rgb_st+event_st",
                "lambda_scale": 0.5,
                "lambdas": {"rgb_st": 0.05, "event_st": 0.025},
            },
            "seed": 1,
        },
        status=Trial.RUNNING,
    )
    explicit = SimTrial(
        "fusion_st_l0.2_s0_b",
        {
            "ablation": {"variant": "fusion_st", "lambda_scale": None, "lambdas": {"fusion_st": 0.2}},
            "seed": 0,
        },
    )
    baseline = SimTrial(
        "none_s0_c",
        {"ablation": {"variant": "none", "lambda_scale": None, "lambdas": {}}, "seed": 0},
        status=Trial.TERMINATED,
    )
    for value, iteration in ((41.5, 4000), (40.25, 8000)):
        scaled.run_metadata.last_result = {"iteration": iteration, "max_iters": 40000, "miou18": value}
        table.on_trial_result(0, [scaled], scaled, scaled.last_result)
    baseline.run_metadata.last_result = {"iteration": 8000, "max_iters": 40000, "miou18": 39.0}
    table.on_step_end(0, [scaled, explicit, baseline])
    header, *rows, summary = stream.getvalue().strip().splitlines()
    assert header.split() == [
        "trial",
        "variant",
        "lambda",
        "seed",
        "state",
        "iteration",
        "miou18",
        "best",
        "miou18",
        "failures",
    ]
    assert rows[0].split() == [
        "rgb_st+event_st_x0.5_s1_a",
        "rgb_st+event_st",
        "x0.5",
        "1",
        "RUNNING",
        "8000/40000",
        "40.2500",
        "41.5000",
        "0",
    ]
    assert rows[1].split()[:6] == ["fusion_st_l0.2_s0_b", "fusion_st", "fusion_st=0.2", "0", "PENDING", "-"]
    assert rows[2].split()[:6] == ["none_s0_c", "none", "-", "0", "TERMINATED*", "8000/40000"]
    assert summary.startswith("3 trials: 1 PENDING, 1 RUNNING, 1 TERMINATED")
    table.on_step_end(0, [scaled, explicit, baseline])
    assert stream.getvalue().count("trial  ") == 1  # unchanged: not printed again
