"""deploy/kubernetes: the manifests validate against the Kubernetes and JobSet schemas, and wire the
right images, commands, volumes and TF_CONFIG. No cluster is reachable here: the JobSet's shell
command is run with the environment each pod gets, and its TF_CONFIG read by tfod itself."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tfod.config.schema import parse_config
from tfod.train.cluster import Placement, read_tf_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.33"  # a supported release; kubernetes-validate ships its schemas


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _all() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in _documents(name)]


def _jobset() -> dict[str, Any]:
    (jobset,) = [d for d in _all() if d["kind"] == "JobSet"]
    return jobset


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _all() if d["kind"] == kind]


def test_every_resource_of_the_kustomization_is_listed_once() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"
    )


@pytest.mark.parametrize(
    "document",
    [d for d in _all() if d["kind"] != "JobSet"],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_kubernetes_resources_validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_jobset_validates_and_each_job_template_is_a_valid_job() -> None:
    jobset = _jobset()
    schema = json.loads((Path(__file__).parent / "jobset_v1alpha2.schema.json").read_text())
    jsonschema.validate(jobset, schema)
    for replicated in jobset["spec"]["replicatedJobs"]:
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"{jobset['metadata']['name']}-{replicated['name']}-0"},
            "spec": replicated["template"]["spec"],
        }
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    jobset = _jobset()
    jobset["spec"]["replicatedJob"] = jobset["spec"].pop("replicatedJobs")
    schema = json.loads((Path(__file__).parent / "jobset_v1alpha2.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(jobset, schema)
    claim = _by_kind("PersistentVolumeClaim")[0]
    claim["spec"]["accessMode"] = claim["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(claim, KUBERNETES, strict=True)


def _pods(jobset: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(replicated job, job index, pod spec) of every pod the JobSet makes (one pod per job)."""
    pods = []
    for replicated in jobset["spec"]["replicatedJobs"]:
        assert replicated["template"]["spec"]["parallelism"] == 1
        for index in range(replicated.get("replicas", 1)):
            pods.append(
                (replicated["name"], index, replicated["template"]["spec"]["template"]["spec"])
            )
    return pods


def _env(container: dict[str, Any], job_index: int) -> dict[str, str]:
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            assert path == "metadata.annotations['jobset.sigs.k8s.io/job-index']"
            env[item["name"]] = str(job_index)
    return env


def test_tf_config_of_every_pod_names_the_jobset_dns_and_one_chief(tmp_path: Path) -> None:
    jobset = _jobset()
    name, subdomain = jobset["metadata"]["name"], jobset["spec"]["network"]["subdomain"]
    assert jobset["spec"]["network"]["enableDNSHostnames"] is True
    fake = tmp_path / "tfod"  # stands in for the image's tfod: prints what it was given
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$TF_CONFIG" "$*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    clusters = []
    for job, index, pod in _pods(jobset):
        (container,) = pod["containers"]
        env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", **_env(container, index)}
        out = subprocess.run(
            [*container["command"], *container["args"]], env=env, capture_output=True, text=True,
            check=True,
        ).stdout.splitlines()  # fmt: skip
        assert out[1] == "train /config/tfod.yaml --runs-dir /runs --no-eval"
        cluster = read_tf_config({"TF_CONFIG": out[0]})
        assert cluster is not None
        expected = f"{name}-{job}-{index}-0.{subdomain}:2222"
        assert cluster.addresses[cluster.rank] == expected, (job, index, cluster)
        clusters.append(cluster)
    assert sorted(c.rank for c in clusters) == list(range(len(clusters)))
    assert [c.is_chief for c in clusters] == [True] + [False] * (len(clusters) - 1)
    assert {c.addresses for c in clusters} == {clusters[0].addresses}  # one cluster for all
    ports = {
        p["containerPort"] for _, _, pod in _pods(jobset) for p in pod["containers"][0]["ports"]
    }
    assert ports == {2222}


def test_images_commands_volumes_and_the_config_fit_together() -> None:
    jobset = _jobset()
    pods = _pods(jobset)
    for job, _, pod in pods:
        (container,) = pod["containers"]
        assert container["image"] == "tfod-train:latest"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
        assert mounts == {"/data": True, "/runs": job != "chief", "/config": True}  # one writer
    claims = {c["metadata"]["name"] for c in _by_kind("PersistentVolumeClaim")}
    assert all(
        c["spec"]["accessModes"] == ["ReadWriteMany"] for c in _by_kind("PersistentVolumeClaim")
    )
    used = {
        v["persistentVolumeClaim"]["claimName"]
        for d in [
            *_by_kind("Deployment"),
            *[{"spec": {"template": {"spec": p}}} for _, _, p in pods],
        ]
        for v in d["spec"]["template"]["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert used == claims == {"tfod-data", "tfod-runs"}

    (config_map,) = _by_kind("ConfigMap")
    config = parse_config(
        yaml.safe_load(config_map["data"]["tfod.yaml"]), Path("/config/tfod.yaml")
    )
    assert str(config.data.dir) == "/data/dataset" and config.train.strategy == "multi_worker"
    replicas = Placement("multi_worker", 1, read_tf_config({"TF_CONFIG": json.dumps(
        {"cluster": {"worker": [f"w{i}:1" for i in range(len(pods))]}, "task": {"type": "worker", "index": 0}}
    )})).replicas  # fmt: skip
    assert isinstance(config.train.batch_size, int) and config.train.batch_size % replicas == 0

    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in _by_kind("Deployment")
    }
    evaluator, tensorboard = deployments["tfod-evaluator"], deployments["tfod-tensorboard"]
    assert evaluator["image"] == tensorboard["image"] == "tfod-export:latest"
    assert evaluator["args"][:3] == ["eval", f"/runs/{config.name}", "--watch"]
    assert tensorboard["command"] == ["tensorboard"] and "/runs" in tensorboard["args"]
    images = {
        i["name"] for i in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["images"]
    }
    assert images == {"tfod-train", "tfod-export"}
