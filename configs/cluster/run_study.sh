#!/usr/bin/env bash
# Start a sweep on the Ray cluster this runs on, or resume it when its experiment already exists: the same
# command is the first submission and every re-submission after a preemption, a lost head or a killed job.
#   bash configs/cluster/run_study.sh SWEEP_FILE [STORAGE]
# STORAGE (a shared folder or s3://, gs://) overrides the sweep's storage_path. Exits with cmda-tune's code.
# It runs from the repository root (relative data paths in the configs are read from there), whatever the
# working directory of the job that calls it; SWEEP_FILE and a local STORAGE may be relative to the caller's.
# A re-submission is safe: `resume` never reruns a trial whose failure is recorded as deterministic
# (docs/ARCHITECTURE.md, tune: resume), so KubeRay's backoffLimit retries only what a retry can finish.
set -euo pipefail

sweep_file=$(realpath "${1:?usage: run_study.sh SWEEP_FILE [STORAGE]}")
storage=${2:-}
if [[ -n "$storage" && "$storage" != *://* ]]; then
  storage=$(realpath -m "$storage")
fi
cd "$(dirname "$(realpath "$0")")/../.."

# Where the sweep writes (the experiment), and whether Ray can restore it: read through the same code the
# driver uses, so a local folder and a bucket are handled alike.
experiment=$(python - "$sweep_file" "$storage" <<'EOF'
import dataclasses
import sys

from tune.driver import experiment_dir
from tune.sweep import load_sweep

spec = load_sweep(sys.argv[1])
if sys.argv[2]:
    spec = dataclasses.replace(spec, storage_path=sys.argv[2])
print(experiment_dir(spec))
EOF
)

if python -c 'import sys; from ray import tune; sys.exit(0 if tune.Tuner.can_restore(sys.argv[1]) else 1)' \
    "$experiment" 2>/dev/null; then
  echo "run_study: resuming $experiment"
  exec cmda-tune resume "$experiment" --address auto
fi
echo "run_study: starting $experiment"
exec cmda-tune sweep "$sweep_file" --address auto ${storage:+--storage "$storage"}
