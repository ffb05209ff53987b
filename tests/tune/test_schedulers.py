"""The schedulers of tune.schedulers with simulated trials, driven the way Ray's TuneController drives them
(tune.simulation): every case of issue 9's list without starting a cluster."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from s3_server import s3_bucket  # noqa: F401 - the fixture

from tune.configuration import Configuration
from tune.schedulers import (
    DECISIONS_FILE,
    DecisionLog,
    GroupASHA,
    RetryPolicyScheduler,
    build_scheduler,
)
from tune.simulation import SimController, SimTrial, run_sweep, saturating_curve

GO, STOP, PAUSE = TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.PAUSE


TWO_CONFIGURATIONS = (("a0", 1.0, 0), ("a1", 1.0, 1), ("b0", 9.0, 0), ("b1", 9.0, 1))
"""(trial id, lambda scale, seed): configuration a (scale 1) and b (scale 9), two seeds each."""


def trial(trial_id: str, scale: float | None, seed: int, variant: str = "fusion_st") -> SimTrial:
    lambdas = {} if scale is None else {"fusion_st": 0.05 * scale}
    return SimTrial(
        trial_id,
        {
            "ablation": {
                "variant": variant if scale is not None else "none",
                "lambda_scale": scale,
                "lambdas": lambdas,
            },
            "seed": seed,
        },
    )


def per_config(**kwargs) -> GroupASHA:
    options = dict(
        metric="miou18",
        mode="max",
        grace_period=2,
        max_t=8,
        reduction_factor=2,
        group_by="configuration",
        group_size=2,
    )
    options.update(kwargs)
    return GroupASHA(**options)


def report(ctl: SimController, t: SimTrial, iteration: int, miou: float) -> str:
    return ctl.report(t, {"iteration": iteration, "max_iters": 8, "miou18": miou})


def test_per_config_decides_on_the_mean_over_seeds_and_stops_siblings_at_once() -> None:
    sched = per_config()
    assert sched.milestones == [2, 4]
    ctl = SimController(sched)
    a0, a1, b0, b1 = (ctl.add(trial(n, s, seed)) for n, s, seed in TWO_CONFIGURATIONS)
    assert report(ctl, a0, 2, 0.5) == PAUSE  # its sibling has not reached the rung: it waits there
    assert sched.choose_trial_to_run(ctl) is not a0  # a waiting seed is not resumed
    assert report(ctl, a1, 2, 0.7) == GO  # first at the rung: kept
    a1.status = b0.status = b1.status = Trial.RUNNING
    assert sched.choose_trial_to_run(ctl) is a0  # the rung is decided: a0 may go on
    assert report(ctl, b0, 2, 0.1) == PAUSE  # Ray's ASHA would stop b0 alone here; we wait for its sibling
    assert report(ctl, b1, 2, 0.2) == STOP  # mean 0.15 < cutoff 0.6: the whole configuration stops
    assert b1.status == b0.status == Trial.TERMINATED
    assert ctl.stopped_by_scheduler == ["b0", "b1"]  # b0 stopped at once (within b1's decision)
    assert report(ctl, a0, 4, 0.8) == PAUSE and report(ctl, a1, 4, 0.8) == GO
    assert report(ctl, a0, 8, 0.9) == STOP  # max_t
    assert "2 configurations, 1 stopped" in sched.debug_string()


@pytest.mark.parametrize(
    ("grace", "rf", "max_t", "every"),
    [(2, 3, 16, 2), (3, 1.5, 10, 1)],  # the second's milestones 4.5 and 6.75 are judged at 5 and 7, as by Ray
)
def test_plain_asha_is_rays_asha_decision_for_decision(grace: int, rf: float, max_t: int, every: int) -> None:
    """group_by='trial' reproduces ray.tune.schedulers.ASHAScheduler on the same result stream."""
    rng = random.Random(3)
    ours = build_scheduler("asha", metric="miou18", mode="max", grace_period=grace, max_t=max_t,
                           reduction_factor=rf)
    ray_asha = ASHAScheduler(
        metric="miou18", mode="max", time_attr="iteration", grace_period=grace, max_t=max_t,
        reduction_factor=rf,
    )
    trials = [trial(f"t{i}", 1.0 + i, 0) for i in range(12)]
    for t in trials:
        ray_asha.on_trial_add(None, t)
    ctl = SimController(ours)
    for t in trials:
        ctl.add(t)
    alive = {t.trial_id: t for t in trials}
    stops = set()
    for iteration in range(every, max_t + 1, every):
        for t in list(alive.values()):
            result = {"iteration": iteration, "miou18": rng.random()}
            expected = ray_asha.on_trial_result(None, t, dict(result))
            assert ours.on_trial_result(ctl, t, dict(result)) == expected, (t.trial_id, iteration)
            if expected == STOP:
                del alive[t.trial_id]
                stops.add(iteration)
    assert stops - {max_t}  # the scheduler stopped someone before the end: the rungs were exercised


def test_a_recoverable_failure_is_not_permanent() -> None:
    """Ray calls on_trial_error before every retry too; the retried seed keeps its place (issue 9 (a))."""
    sched = per_config()
    ctl = SimController(sched)
    a0, a1, b0, b1 = (ctl.add(trial(n, s, seed)) for n, s, seed in TWO_CONFIGURATIONS)
    report(ctl, a0, 2, 0.5)
    report(ctl, a1, 2, 0.7)
    for t in (b0, b1):  # a lost node: every seed of b fails once and is requeued
        report(ctl, t, 2, 0.1) if t is b0 else None
        ctl.fail(t, retry=True)
    assert report(ctl, b1, 2, 0.2) == STOP  # both seeds judged together, as if nothing had happened
    assert b0.status == Trial.TERMINATED


def test_a_rung_waiting_on_a_seed_that_failed_for_good_is_decided() -> None:
    sched = per_config()
    ctl = SimController(sched)
    a0, a1, b0, b1 = (ctl.add(trial(n, s, seed)) for n, s, seed in TWO_CONFIGURATIONS)
    report(ctl, a0, 2, 0.5)
    report(ctl, a1, 2, 0.7)
    assert report(ctl, b0, 2, 0.1) == PAUSE  # waits for b1
    ctl.fail(b1, retry=False)  # b1 is gone for good: b's rung 2 is decided over b0 alone, at once
    assert b0.status == Trial.TERMINATED and "b0" in ctl.stopped_by_scheduler


def test_nan_scores_neither_poison_the_cutoff_nor_survive_it() -> None:
    sched = per_config(group_size=1)
    ctl = SimController(sched)
    nan_cfg, good, mid, bad = (
        ctl.add(trial(n, s, 0)) for n, s in (("nan", 1.0), ("good", 2.0), ("mid", 3.0), ("bad", 4.0))
    )
    assert report(ctl, nan_cfg, 2, math.nan) == GO  # first at the rung: nothing to compare with
    assert report(ctl, good, 2, 0.9) == GO  # np.percentile over [nan] would be nan and stop nothing
    assert report(ctl, bad, 2, 0.1) == STOP
    nan_late = ctl.add(trial("nan2", 5.0, 0))
    assert report(ctl, nan_late, 2, math.nan) == STOP  # worse than any finite score
    assert report(ctl, mid, 2, 0.95) == GO


def test_the_protected_reference_is_never_stopped_but_still_ranks_the_others() -> None:
    for group_by, size in (("configuration", 2), ("trial", 1)):
        reference = Configuration.from_params(trial("r", None, 0).config).key
        sched = per_config(group_by=group_by, group_size=size, protected={reference})
        ctl = SimController(sched)
        good, bad, refs = ([ctl.add(trial(f"{name}{seed}", scale, seed)) for seed in range(size)]
                           for name, scale in (("good", 1.0), ("bad", 2.0), ("r", None)))
        waits = [PAUSE] * (size - 1)  # a configuration's earlier seeds wait at the rung for the last
        assert [report(ctl, t, 2, 0.9) for t in good] == [*waits, GO]
        # far below the cutoff: any other configuration would stop here
        assert [report(ctl, ref, 2, 0.1) for ref in refs] == [*waits, GO]
        # the reference's 0.1 counts at the rung (cutoff 0.5): bad's 0.2 is stopped
        assert [report(ctl, t, 2, 0.2) for t in bad][-1] == STOP
        assert [report(ctl, ref, 4, 0.0) for ref in refs] == [*waits, GO]  # the last rung
        assert [report(ctl, ref, 6, 0.0) for ref in refs] == [GO] * size  # not a rung: no waiting
        assert [report(ctl, ref, 8, 0.0) for ref in refs] == [STOP] * size  # max_t: it ran to the end
        assert ", 1 stopped" in sched.debug_string()  # bad only, never the reference


def test_deterministic_failures_are_not_retried(tmp_path: Path) -> None:
    for sched in (RetryPolicyScheduler(), per_config(group_size=1)):
        ctl = SimController(sched)
        nan_trial = ctl.add(trial("nan", 1.0, 0))
        nan_trial.error_file = str(tmp_path / f"{type(sched).__name__}_nan.txt")
        flaky = ctl.add(trial("flaky", 2.0, 0))
        flaky.error_file = str(tmp_path / f"{type(sched).__name__}_flaky.txt")
        ctl.fail(
            nan_trial,
            retry=True,
            error_text="tune.trainable.DeterministicTrialError: NonFiniteLossError: "
            "loss 'src_fusion' is nan at iteration 3",
        )
        ctl.fail(flaky, retry=True, error_text="RuntimeError: CUDA error: unspecified launch failure")
        assert nan_trial.status == Trial.ERROR and ("nan", True) in ctl.search_alg.completed
        assert flaky.status == Trial.PENDING  # an ordinary failure is retried as Ray would


def write_results(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut by a crash')


class _Storage:
    def __init__(self, path: Path) -> None:
        self.storage_filesystem = pyarrow.fs.LocalFileSystem()
        self.trial_fs_path = str(path)
        self.experiment_fs_path = str(path.parent)


def test_state_is_rebuilt_from_the_trials_results_after_a_resume(tmp_path: Path) -> None:
    """Ray restores trials, not the scheduler (Ray issue 30838): the rungs are replayed from result.json."""
    restored = []
    history = {
        "a0": [(2, 0.5, 10), (4, 0.8, 20)],
        "a1": [(2, 0.7, 11), (4, 0.8, 21)],
        "b0": [(2, 0.1, 12)],
        "b1": [(2, 0.2, 13)],
        "c0": [(2, 0.3, 14)],
    }
    for name, scale, seed in (*TWO_CONFIGURATIONS, ("c0", 5.0, 0)):
        t = trial(name, scale, seed)
        write_results(
            tmp_path / name, [{"iteration": i, "miou18": m, "timestamp": ts} for i, m, ts in history[name]]
        )
        t.storage = _Storage(tmp_path / name)
        t.run_metadata.last_result = {"iteration": history[name][-1][0]}
        t.status = Trial.TERMINATED if name[0] == "b" else Trial.PENDING  # b was stopped before the crash
        restored.append(t)
    c1 = trial("c1", 5.0, 1)  # never started before the crash
    sched = per_config()
    ctl = SimController(sched)
    for t in [*restored, c1]:
        ctl.add(t)
    assert sched.choose_trial_to_run(ctl) is not None  # the first hook after a restore replays history
    assert sched._rungs[2] == [pytest.approx(0.6), pytest.approx(0.15)]  # a kept, b stopped, as before
    # c (mean 0.3 + 0.35) is compared with the rebuilt rung, not waved through as a "first arrival"
    assert report(ctl, c1, 2, 0.35) == STOP and restored[4].status == Trial.TERMINATED


def test_resumed_siblings_of_a_stopped_configuration_are_stopped(tmp_path: Path) -> None:
    sched = per_config()
    ctl = SimController(sched)
    rows = {"a0": [(2, 0.9, 1)], "a1": [(2, 0.9, 2)], "b0": [(2, 0.1, 3)], "b1": [(2, 0.1, 4), (4, 0.1, 5)]}
    statuses = {"a0": Trial.TERMINATED, "a1": Trial.TERMINATED, "b0": Trial.TERMINATED, "b1": Trial.PENDING}
    trials = []
    for name, scale, seed in TWO_CONFIGURATIONS:
        t = trial(name, scale, seed)
        write_results(
            tmp_path / name, [{"iteration": i, "miou18": m, "timestamp": ts} for i, m, ts in rows[name]]
        )
        t.storage, t.status = _Storage(tmp_path / name), statuses[name]
        t.run_metadata.last_result = {"iteration": rows[name][-1][0]}
        trials.append(ctl.add(t))
    assert sched.choose_trial_to_run(ctl) is None  # b1 (interrupted while running) does not run to max_t
    assert trials[3].status == Trial.TERMINATED


def test_a_resume_keeps_the_decisions_taken_before_the_crash(tmp_path: Path) -> None:
    """b reached rung 2 first (kept: nothing to compare with yet), a after it; then the driver died. Their
    results carry the same whole-second timestamp and a's trials are faster, so a replay in time order judges
    a first and would now stop b. The decisions recorded in the experiment keep b running, as before."""
    miou = {"a0": 0.5, "a1": 0.7, "b0": 0.55, "b1": 0.5}
    seconds = {"a0": 1.0, "a1": 1.0, "b0": 9.0, "b1": 9.0}
    experiment = tmp_path / "exp"
    for name in miou:
        row = {"iteration": 2, "miou18": miou[name], "timestamp": 100, "time_total_s": seconds[name]}
        write_results(experiment / name, [row])

    def trials(restored: bool) -> list[SimTrial]:
        made = []
        for name, scale, seed in TWO_CONFIGURATIONS:
            t = trial(name, scale, seed)
            t.storage = _Storage(experiment / name)
            if restored:
                t.run_metadata.last_result = {"iteration": 2}
            made.append(t)
        return made

    before = per_config(wait_at_rungs=False)  # each seed judged as it arrives: the order matters
    ctl = SimController(before)
    a0, a1, b0, b1 = (ctl.add(t) for t in trials(restored=False))
    assert all(report(ctl, t, 2, miou[t.trial_id]) == GO for t in (b0, b1, a0, a1))
    assert before._rungs[2] == [pytest.approx(0.525), pytest.approx(0.6)]
    recorded = _recorded(experiment)
    assert [(d["milestone"], d["stopped"]) for d in recorded] == [(2, False), (2, False)]

    def resume() -> tuple[GroupASHA, list[SimTrial]]:
        sched = per_config(wait_at_rungs=False)
        ctl = SimController(sched)
        restored = [ctl.add(t) for t in trials(restored=True)]
        sched.choose_trial_to_run(ctl)  # the first hook after a restore replays the results
        return sched, restored

    after, restored = resume()
    assert after._rungs[2] == before._rungs[2]  # the same record, in the order it was judged
    assert [t.status for t in restored] == [Trial.PENDING] * 4  # b is not revised into a stop
    assert len(_recorded(experiment)) == 2  # nothing judged twice

    (experiment / DECISIONS_FILE).unlink()  # an experiment without the record: the replay by time...
    replayed, restored = resume()
    assert [t.status for t in restored] == [Trial.PENDING] * 2 + [Trial.TERMINATED] * 2  # ...revises b


def _recorded(experiment: Path) -> list[dict]:
    return [json.loads(line) for line in (experiment / DECISIONS_FILE).read_text().splitlines()]


def test_the_decision_record_round_trips_through_a_bucket(s3_bucket: str) -> None:  # noqa: F811
    """The record is written through the trials' storage filesystem: a bucket as well as a folder."""
    fs, folder = pyarrow.fs.FileSystem.from_uri(f"{s3_bucket}/exp")
    trial = SimpleNamespace(storage=SimpleNamespace(storage_filesystem=fs, experiment_fs_path=folder))
    log = DecisionLog()
    assert log.bind(trial) and log.read() == []  # a new sweep: nothing recorded
    decisions = [{"group": "a", "milestone": 2, "score": 0.6, "stopped": False},
                 {"group": "b", "milestone": 2, "score": -math.inf, "stopped": True}]
    for entry in decisions:
        log.append(entry)
    again = DecisionLog()
    again.bind(trial)
    assert [{k: v for k, v in row.items() if k != "sequence"} for row in again.read()] == decisions


def _study_shape(order: str, scheduler: TrialScheduler) -> float:
    """25 configurations x 3 seeds, 8 at a time, an evaluation every 4000 of 40000 iterations."""
    rng = random.Random(0)
    configs = [(f"v{i % 7}", 1.0 + i) for i in range(25)]
    quality = {}
    trials = []
    pairs = [(c, s) for c in configs for s in range(3)]
    if order == "ray":
        pairs = [(c, s) for s in range(3) for c in configs]
    for (variant, scale), seed in pairs:
        t = trial(f"{variant}_{scale}_{seed}", scale, seed, variant=variant)
        quality[t.trial_id] = 50 + 3 * math.sin(scale) + rng.gauss(0, 0.5)
        trials.append(t)
    speed = {t.trial_id: rng.uniform(0.9, 1.1) for t in trials}
    curve = saturating_curve(quality, tau=8000, noise=lambda t, i: 0.0)
    outcome = run_sweep(
        scheduler,
        trials,
        curve,
        max_iters=40000,
        eval_interval=4000,
        concurrency=8,
        speed=lambda t: speed[t.trial_id],
    )
    return sum(outcome.iterations.values()) / (len(trials) * 40000)


def test_configuration_major_launch_order_saves_compute_under_per_config_asha() -> None:
    def make() -> GroupASHA:
        # wait_at_rungs off: in Ray order, seeds waiting for unlaunched siblings would hold every slot
        return per_config(grace_period=8000, max_t=40000, group_size=3, wait_at_rungs=False)

    together, ray_order = _study_shape("together", make()), _study_shape("ray", make())
    assert together < ray_order - 0.1, (together, ray_order)
    assert together < 0.75


def test_launch_groups_start_a_configurations_seeds_together_only_when_all_fit() -> None:
    """tune.simulation's model of group launch: 3 seeds per configuration, 4 slots; the per-configuration
    decision then never waits for a seed that has not started, so no seed trains past a rung unjudged."""
    trials = [trial(f"c{c}_s{s}", float(c + 1), s) for c in range(4) for s in range(3)]
    sched = per_config(group_size=3, max_t=8)
    seen = []

    def curve(t: SimTrial, iteration: int) -> float:
        seen.append((t.trial_id, iteration))
        return float(t.config["ablation"]["lambda_scale"])

    outcome = run_sweep(sched, trials, curve, max_iters=8, eval_interval=2, concurrency=4,
                        launch_group=lambda t: t.config["ablation"]["lambda_scale"])
    first_report = {}
    for order, (trial_id, _) in enumerate(seen):
        first_report.setdefault(trial_id, order)
    for c in range(4):  # siblings report their first evaluation one right after the other
        orders = sorted(first_report[f"c{c}_s{s}"] for s in range(3))
        assert orders[-1] - orders[0] == 2, orders
    ends = {c: {outcome.last_report[f"c{c}_s{s}"] for s in range(3)} for c in range(4)}
    assert all(len(e) == 1 for e in ends.values())  # every configuration's seeds end at one iteration
    with pytest.raises(ValueError, match="cannot fit 2 slots"):
        run_sweep(per_config(group_size=3), trials, curve, max_iters=8, eval_interval=2, concurrency=2,
                  launch_group=lambda t: t.config["ablation"]["lambda_scale"])


class _ExperimentStorage(_Storage):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.experiment_fs_path = str(path.parent)


def test_a_resume_replays_the_recorded_rung_decisions_not_the_timestamps(tmp_path: Path) -> None:
    """Before the crash a was judged first (kept), then c and b (stopped). result.json's whole-second
    timestamps put c before a; judged in that order c would be the rung's first arrival and kept. The
    recorded decisions are applied instead, in their sequence."""
    scores = {"a": (0.5, 0.7), "b": (0.1, 0.2), "c": (0.3, 0.35)}
    scales = {"a": 1.0, "b": 9.0, "c": 5.0}
    first = per_config()
    ctl = SimController(first)
    live = {}
    for name, seed in ((name, seed) for name in "acb" for seed in (0, 1)):
        live[f"{name}{seed}"] = t = trial(f"{name}{seed}", scales[name], seed)
        t.storage = _ExperimentStorage(tmp_path / t.trial_id)
        ctl.add(t)
    for name in "acb":
        for seed in (0, 1):
            report(ctl, live[f"{name}{seed}"], 2, scores[name][seed])
    assert (tmp_path / "scheduler_decisions.jsonl").is_file()
    assert [t.status for t in live.values()][2:] == [Trial.TERMINATED] * 4  # c and b stopped at the rung
    second = per_config()
    ctl = SimController(second)
    for name in "acb":
        for seed in (0, 1):
            t = trial(f"{name}{seed}", scales[name], seed)
            stamp = {"c": 100, "a": 101, "b": 101}[name]
            row = {"iteration": 2, "miou18": scores[name][seed], "timestamp": stamp}
            write_results(tmp_path / t.trial_id, [row])
            t.storage = _ExperimentStorage(tmp_path / t.trial_id)
            t.run_metadata.last_result = {"iteration": 2}
            t.status = Trial.PENDING if name == "a" else Trial.TERMINATED
            ctl.add(t)
    assert second.choose_trial_to_run(ctl) is not None
    assert second._rungs[2] == first._rungs[2] == pytest.approx([0.6, 0.325, 0.15])
    stopped = {k: g.stopped_at for k, g in first._groups.items()}
    assert {k: g.stopped_at for k, g in second._groups.items()} == stopped
    assert sorted(stopped.values(), key=str) == [2, 2, None]


@pytest.mark.parametrize("order", range(6))
def test_a_configurations_seeds_end_at_one_iteration_whatever_order_reports_arrive_in(order: int) -> None:
    """Seeds of one configuration train at different speeds (a new draw per case), so their reports reach
    each rung in every order; waiting at undecided rungs makes every configuration end at one iteration."""
    rng = random.Random(order)
    trials = [trial(f"c{c}_s{s}", float(c + 1), s) for c in range(5) for s in range(3)]
    speed = {t.trial_id: rng.uniform(0.5, 2.0) for t in trials}
    quality = {t.trial_id: rng.uniform(0.0, 1.0) for t in trials}
    outcome = run_sweep(per_config(group_size=3), trials, lambda t, i: quality[t.trial_id] * i,
                        max_iters=8, eval_interval=2, concurrency=6, speed=lambda t: speed[t.trial_id],
                        launch_group=lambda t: t.config["ablation"]["lambda_scale"])
    ends = {c: {outcome.last_report[f"c{c}_s{s}"] for s in range(3)} for c in range(5)}
    assert all(len(e) == 1 for e in ends.values()), ends
    assert {e.pop() for e in ends.values()} - {8}  # some configuration was stopped at a rung


def test_a_seed_paused_after_its_configuration_was_stopped_is_stopped_again() -> None:
    """Ray may finish pausing a seed (its checkpoint was being saved) after the group's stop: the next hook
    stops it, so a stopped configuration never keeps a paused seed."""
    sched = per_config()
    ctl = SimController(sched)
    a0, a1, b0, b1 = (ctl.add(trial(n, s, seed)) for n, s, seed in TWO_CONFIGURATIONS)
    report(ctl, a0, 2, 0.5)
    report(ctl, a1, 2, 0.7)
    assert report(ctl, b0, 2, 0.1) == PAUSE
    assert report(ctl, b1, 2, 0.2) == STOP and b0.status == Trial.TERMINATED
    b0.status = Trial.PAUSED  # the late end of Ray's pause
    sched.choose_trial_to_run(ctl)
    assert b0.status == Trial.TERMINATED


def test_a_paused_seed_stopped_with_its_configuration_is_marked_for_the_experiment_state() -> None:
    """Ray writes only marked trials into the experiment state, and stopping a trial without an actor (paused
    at a rung) does not mark it: the state file kept PAUSED for stopped configurations' seeds. The
    scheduler marks every paused or pending trial it stops; a running one Ray marks itself."""

    class MarkingController(SimController):
        def __init__(self, scheduler: GroupASHA) -> None:
            super().__init__(scheduler)
            self.marked: list[str] = []

        def _mark_trial_to_checkpoint(self, trial: SimTrial) -> None:
            self.marked.append(trial.trial_id)

    sched = per_config()
    ctl = MarkingController(sched)
    a0, a1, b0, b1 = (ctl.add(trial(n, s, seed)) for n, s, seed in TWO_CONFIGURATIONS)
    report(ctl, a0, 2, 0.5)
    report(ctl, a1, 2, 0.7)
    assert report(ctl, b0, 2, 0.1) == PAUSE and b0.status == Trial.PAUSED
    assert report(ctl, b1, 2, 0.2) == STOP
    assert b0.status == Trial.TERMINATED and ctl.marked == ["b0"]
