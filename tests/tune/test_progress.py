"""The live table printed while a sweep runs (`LiveTable`, `tune.watch`): N from the start, the ETA, rung
means and heartbeats, redrawn on a terminal and appended a line per change otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from ray.tune.experiment import Trial

from tune.configuration import Configuration
from tune.live_table import CLEAR_BLOCK, LiveTable, OncePerMessage
from tune.simulation import SimTrial
from tune.watch import TrialView, Watch, duration

NONE = {"variant": "none", "lambda_scale": None, "lambdas": {}}
FUSION = {"variant": "fusion_st", "lambda_scale": 1.0, "lambdas": {"fusion_st": 0.05}}


def sim(trial_id: str, ablation: dict, seed: int, status: str = Trial.PENDING) -> SimTrial:
    return SimTrial(trial_id, {"ablation": ablation, "seed": seed}, status=status)


def result(table: LiveTable, trial: SimTrial, iteration: int, value: float | None, seconds: float) -> None:
    report = {"iteration": iteration, "max_iters": 80, "time_total_s": seconds}
    if value is not None:
        report["miou18"] = value
    trial.run_metadata.last_result = report
    table.on_trial_result(0, [trial], trial, report)


def view(configuration: Configuration, seed: int, state: str, evaluations: dict[int, float],
         seconds: float | None = None) -> TrialView:
    last = max(evaluations) if evaluations else 0
    return TrialView(f"{configuration.label}{seed}", configuration, seed, state, 80, dict(evaluations), last,
                     seconds)


def test_counts_eta_and_rung_means() -> None:
    none, fusion = Configuration("none"), Configuration("fusion_st", {"fusion_st": 0.05}, lambda_scale=1.0)
    trials = [
        view(none, 0, "TERMINATED", {20: 30.0, 40: 31.0, 80: 33.0}, seconds=80.0),
        view(none, 1, "RUNNING", {20: 32.0, 40: 33.0}, seconds=40.0),
        view(fusion, 0, "RUNNING", {20: 40.0}, seconds=20.0),
        view(fusion, 1, "ERROR", {20: 20.0}, seconds=20.0),
    ]
    watch = Watch(total=10, metric="miou18", rungs=(20, 40), max_iters=80, expected_share=0.5)
    assert watch.counts(trials) == {"done": 1, "running": 2, "errored": 1, "pending": 6}
    assert watch.seconds_per_iteration(trials) == pytest.approx(160 / 160)
    # (80-40 + 80-20 + 6 pending x 80) iterations x share 0.5 x 1 s / 2 slots
    assert watch.eta_s(trials) == pytest.approx((40 + 60 + 480) * 0.5 / 2)
    means = {c.label: (rung, mean, n) for c, rung, mean, n in watch.rung_means(trials)}
    # none: rung 40 holds for both seeds; fusion_st: its running seed has not reached 40 yet, the errored
    # one never will, so its last completed rung is 20
    assert means == {"none": (40, 32.0, 2), "fusion_st x1": (20, 30.0, 2)}
    assert duration(7530) == "2h05m" and duration(450) == "7m30s" and duration(3) == "3s"


def test_the_live_table_appends_a_line_per_change_when_not_a_terminal() -> None:
    stream = io.StringIO()
    table = LiveTable("miou18", interval_s=0.0, stream=stream, total=4, rungs=(20,), max_iters=80, tty=False)
    a, b = sim("a", NONE, 0, Trial.RUNNING), sim("b", FUSION, 0)
    table.on_step_end(0, [a, b])
    first = stream.getvalue().splitlines()
    assert len(first) == 2 and "0 of 4 done, 1 running, 3 pending, 0 errored" in first[0]
    assert first[1] == "  running: none, seed 0: iteration 0/80"
    table.on_step_end(0, [a, b])
    assert stream.getvalue().splitlines() == first  # nothing changed: nothing appended
    result(table, a, 20, 30.5, seconds=10.0)
    b.status = Trial.RUNNING
    table.on_step_end(0, [a, b])
    added = stream.getvalue().splitlines()[len(first):]
    assert "0 of 4 done, 2 running, 2 pending" in added[0] and "0.5 s/iter, 2 slot(s), ETA" in added[0]
    assert "  none  miou18 30.50 at 20 (1 seed)" in added
    assert "  running: none, seed 0: iteration 20/80, miou18 30.50 at 20" in added
    assert not any(CLEAR_BLOCK[:2] in line for line in stream.getvalue().splitlines())


def test_the_live_table_redraws_in_place_on_a_terminal_and_shows_heartbeats() -> None:
    stream = io.StringIO()
    table = LiveTable("miou18", interval_s=0.0, stream=stream, total=2, max_iters=80, tty=True)
    a = sim("a", NONE, 0, Trial.RUNNING)
    table.on_step_end(0, [a])
    block = stream.getvalue()
    assert block.count("\n") == 2 and "\x1b[" not in block
    table._views["a"].heartbeat, table._views["a"].heartbeat_at = 35, 0.0  # what the board read
    table.on_step_end(0, [a])
    redraw = stream.getvalue()[len(block):]
    assert redraw.startswith(CLEAR_BLOCK.format(n=2))  # the previous two lines are cleared, then redrawn
    assert "running: none, seed 0: iteration 35/80 (heartbeat " in redraw


def test_rays_repeated_warnings_are_printed_once() -> None:
    once = OncePerMessage()
    text = "Experiment state snapshotting has been triggered multiple times in the last {} seconds"
    records = [logging.LogRecord("ray.tune", logging.WARNING, "f", 1, text.format(s), None, None)
               for s in (5.0, 5.0, 7.5)]
    assert [once.filter(r) for r in records] == [True, False, False]
    info = logging.LogRecord("ray.tune", logging.INFO, "f", 1, "Trial started", None, None)
    assert once.filter(info) and once.filter(info)


def test_the_filter_sits_on_rays_handler_only_while_the_sweep_runs() -> None:
    handlers = logging.getLogger("ray").handlers
    assert handlers  # Ray's own handler (its loggers do not propagate past "ray")
    table = LiveTable("miou18", interval_s=0.0, stream=io.StringIO(), tty=False)
    table.setup()
    assert all(any(isinstance(f, OncePerMessage) for f in h.filters) for h in handlers)
    table.on_experiment_end([])
    assert not any(isinstance(f, OncePerMessage) for h in handlers for f in h.filters)


def test_a_decide_sweep_counts_its_fresh_seeds_into_n_and_says_how_many_may_follow() -> None:
    """10 initial trials, fresh seeds up to 20: once 14 exist, N is 14 (never "14 of 10"), and the
    headline says how many trials the decision may still add."""
    done = [view(Configuration("none", {}), seed, "TERMINATED", {80: 30.0}) for seed in range(14)]
    watch = Watch(total=10, metric="miou18", upper=20)
    assert watch.counts(done) == {"done": 14, "running": 0, "errored": 0, "pending": 0}
    assert watch.headline(done).startswith("14 of 14 (fresh seeds: up to 20) done")
    assert Watch(total=10, metric="miou18", upper=14).headline(done).startswith("14 of 14 done")
    assert Watch(total=10, metric="miou18").headline(done[:3]).startswith("3 of 10 done")

