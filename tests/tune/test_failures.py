"""Failures read as causes: the FAILED line carries every line of the error's message (cut at a sensible
length), and the record of deterministic failures that `resume` reads."""

from __future__ import annotations

import json
from pathlib import Path

from tune.experiment import MESSAGE_LINES, Experiment, error_message, error_summary
from tune.failures import FAILURES_FILE, forget, known_failures, read_failures, write_failures
from tune.status import FailedTrial, format_failures

PROBLEMS = [f"  /data/DSEC_Night/zurich_city_0{i}_a/images/left/{i:06d}.png: no file" for i in range(3)]
DATA_ERROR = "\n".join([
    "Failure # 1 (occurred at 2026-12-06_07-50-13)",
    "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=21926, ip=192.0.2.2, repr=cmda_trial)",
    '  File "/opt/cmda-tune/cmda/train.py", line 210, in run',
    "    check_training_data(config)",
    "cmda.data.check.DataCheckError: 3 data problem(s) in /data/DSEC_Night (`cmda data check ROOT` lists "
    "them all):",
    *PROBLEMS,
    "",
    "The above exception was the direct cause of the following exception:",
    "",
    '  File "/opt/cmda-tune/tune/trainable.py", line 253, in run_trainer',
    '    raise DeterministicTrialError(f"{type(exc).__name__}: {exc}") from exc',
    "tune.trainable.DeterministicTrialError: DataCheckError: 3 data problem(s) in /data/DSEC_Night "
    "(`cmda data check ROOT` lists them all):",
    *PROBLEMS,
    "",
])


def test_the_failed_line_of_a_multi_line_data_error_lists_the_problems() -> None:
    message = error_message(DATA_ERROR)
    assert message.splitlines()[0].startswith("tune.trainable.DeterministicTrialError: DataCheckError: 3 da")
    assert message.splitlines()[1:] == PROBLEMS  # the problems themselves, once (not the inner copy)
    assert error_summary(DATA_ERROR) == message.splitlines()[0]
    text = format_failures([FailedTrial("fusion_st_x1_s0_1", message, "/r/e/fusion_st_x1_s0_1/error.txt")])
    lines = text.splitlines()
    assert lines[0].startswith("FAILED fusion_st_x1_s0_1: tune.trainable.DeterministicTrialError: DataCheck")
    assert lines[0].endswith("(/r/e/fusion_st_x1_s0_1/error.txt)")
    assert lines[1:] == [f"    {p.strip()}" for p in PROBLEMS]


def test_a_long_message_is_cut_saying_how_much_is_left() -> None:
    many = DATA_ERROR.replace("\n".join(PROBLEMS), "\n".join(f"  /d/{i}.png: missing" for i in range(50)))
    lines = error_message(many).splitlines()
    assert len(lines) == MESSAGE_LINES + 1
    assert lines[-1] == f"  ... ({51 - MESSAGE_LINES} more line(s) in error.txt)"
    one_line = "Failure # 1 (x)\nray::f()\n  File \"a.py\", line 1, in f\nValueError: bad\n"
    assert error_message(one_line) == "ValueError: bad"


def test_the_record_of_deterministic_failures(tmp_path: Path) -> None:
    """Written atomically into the experiment; an errored trial whose error file shows a deterministic
    failure counts too (an experiment from before the record)."""
    experiment = Experiment(tmp_path)
    assert read_failures(experiment) == {}
    write_failures(experiment, {"a1": {"trial": "t_a1", "error": "x"}})
    assert json.loads((tmp_path / FAILURES_FILE).read_text()) == {"a1": {"trial": "t_a1", "error": "x"}}
    trial = tmp_path / "fusion_st_x1_s0_b2"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"trial_id": "b2"}))
    (trial / "error.txt").write_text(DATA_ERROR)
    assert set(known_failures(experiment)) == {"a1", "b2"}
    forget(experiment, ["a1"])
    assert read_failures(experiment) == {}
