"""configs/cluster: the launcher file passes Ray's own cluster-config validation, the RayJob uses only fields
of KubeRay's RayJob CRD, the study entrypoint resumes an existing experiment, and the README walkthrough runs
the same commands as the examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from cmda.io import load_yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "configs" / "cluster"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STUDY = "configs/sweeps/l2_ablation_b2.yaml"
IMAGE_REPO = "/opt/cmda-tune"  # where configs/cluster/Dockerfile puts the repository


def test_launcher_config_passes_rays_own_validation() -> None:
    """What `ray up` does before it touches the cloud: merge the provider defaults, validate the schema."""
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(load_yaml(CLUSTER / "cluster.yaml"))
    validate_config(config)
    nodes = config["available_node_types"]
    gpu = nodes["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1  # the autoscaler starts GPU workers from zero
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}  # trials never land on the head
    commands = "\n".join(config["setup_commands"])
    assert f'"ray[default]=={ray.__version__}"' in commands  # one Ray version, the one tested here
    assert "ln -sfn /mnt/shared/data ~/cmda-tune/data" in commands  # data where the configs look
    assert any("/mnt/shared" in c and "mount" in c for c in config["initialization_commands"])
    assert {"data", "pretrained", ".venv"} <= set(config["rsync_exclude"])  # no data or venv uploaded
    assert "--autoscaling-config" in " ".join(config["head_start_ray_commands"])


def test_rayjob_uses_only_kuberay_rayjob_fields() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((FIXTURES / "kuberay_rayjob_v1_fields.json").read_text())
    job = load_yaml(CLUSTER / "rayjob.yaml")
    jsonschema.validate(job, schema)
    typo = json.loads(json.dumps(job))
    typo["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 8
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(typo, schema)  # the subset catches what kubectl --validate=strict would


def test_rayjob_autoscales_keeps_results_and_resumes() -> None:
    spec = load_yaml(CLUSTER / "rayjob.yaml")["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    for group in cluster["workerGroupSpecs"]:
        if group["minReplicas"] < group["maxReplicas"]:
            assert cluster["enableInTreeAutoscaling"] is True, group["groupName"]  # else the range is idle
    # absolute paths that exist in the image (the repository at /opt/cmda-tune): the job's cwd is Ray's
    assert spec["entrypoint"] == f"bash {IMAGE_REPO}/configs/cluster/run_study.sh {IMAGE_REPO}/{STUDY} " \
                                 "/mnt/shared/ray_results"
    for word in spec["entrypoint"].split():
        if word.startswith(IMAGE_REPO):
            assert (REPO / word[len(IMAGE_REPO) + 1:]).is_file(), word
    assert spec["backoffLimit"] >= 1  # KubeRay's retry re-runs the entrypoint, which resumes
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["image"].rsplit(":", 1)[1] != "latest"  # a pinned image
        shared = [m for m in container["volumeMounts"] if m["name"] == "shared"]
        mounts = {m["mountPath"]: m.get("subPath") for m in shared}
        work = container["workingDir"]
        assert mounts == {f"{work}/data": "data", f"{work}/pretrained": "pretrained", "/mnt/shared": None}
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile and "/opt/cmda-tune" in dockerfile


def test_study_entrypoint_starts_then_resumes(tmp_path: Path) -> None:
    """run_study.sh runs `cmda-tune sweep` first, `cmda-tune resume` once Ray can restore the experiment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    stub = bin_dir / "cmda-tune"
    stub.write_text(f'#!/bin/sh\necho "$(pwd) $@" >> {calls}\n')
    stub.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO)}  # `python` is this interpreter
    storage = tmp_path / "results"
    command = ["bash", str(CLUSTER / "run_study.sh"), STUDY, str(storage)]
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    experiment = storage / "l2_ablation_b2"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"")  # what Ray writes first; Tuner.can_restore looks for it
    command[2] = str(REPO / STUDY)  # from another working directory: the script runs from the repository
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert calls.read_text().splitlines() == [
        f"{REPO} sweep {REPO / STUDY} --address auto --storage {storage}",
        f"{REPO} resume {experiment} --address auto",
    ]


def _walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Running on a cluster\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no '## Running on a cluster' section"
    return match.group(1)


def test_readme_walkthrough_runs_the_examples_commands() -> None:
    walkthrough = _walkthrough()
    header = "\n".join(line[2:] for line in (CLUSTER / "cluster.yaml").read_text().splitlines()
                       if line.startswith("#   "))
    for line in header.splitlines():  # every command in the launcher file's header is in the README
        assert line.strip() in walkthrough, line
    assert load_yaml(CLUSTER / "rayjob.yaml")["spec"]["entrypoint"] in walkthrough
    assert "kubectl apply -f configs/cluster/rayjob.yaml" in walkthrough
    assert "cmda-tune plan" in walkthrough and "preempt" in walkthrough
    for path in re.findall(r"configs/[\w/.-]+\.(?:yaml|sh)|configs/cluster/Dockerfile", walkthrough):
        assert (REPO / path).is_file(), path
