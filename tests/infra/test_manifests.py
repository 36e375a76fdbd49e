"""What can be checked offline about infra/: every manifest parses and agrees with the code.

Images, ports, environment variable names, Secret keys, resource names and the RayJob's
``lrsweep run`` line are read from the YAML and checked against the Dockerfile, pyproject.toml,
Ray's own cluster-config schema, MLflow's variable names, ``sweeps.server`` and the spec loader.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import ray.autoscaler
import yaml
from mlflow.environment_variables import MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME

from sweeps import server
from sweeps.nightly._env import GIT_ENV
from sweeps.preflight import (
    NodeInfo,
    check_fit,
    check_storage_shared,
    check_tracking_reachable,
)
from sweeps.preflight._cluster import autoscaler_groups
from sweeps.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = (INFRA / "docker" / "Dockerfile").read_text()
THIRD_PARTY_IMAGES = ("postgres:", "alpine/k8s:")  # the database; the nightly submitter
RAY_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
MLFLOW_PORT = 5000


def pinned(package: str) -> str:
    """The version pyproject.toml pins for ``package`` (``ray[tune]==2.60.0`` -> ``2.60.0``)."""
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        if name.split("[")[0] == package:
            return version
    raise LookupError(f"{package} is not pinned in pyproject.toml")


def yaml_files() -> list[Path]:
    return sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])


def documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in yaml_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path, doc


def k8s_documents(kind: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path, doc in documents()
        if "apiVersion" in doc and (kind is None or doc["kind"] == kind)
    ]


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec in a workload: Deployment/StatefulSet/Job, RayCluster head and workers."""
    spec = doc.get("spec", {})
    if doc["kind"] == "RayCluster":
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        return [group["template"]["spec"] for group in groups]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []


def containers() -> list[tuple[Path, str, dict[str, Any]]]:
    return [
        (path, doc["metadata"]["name"], container)
        for path, doc in k8s_documents()
        for pod in pod_specs(doc)
        for container in [*pod.get("initContainers", []), *pod["containers"]]
    ]


def the_one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for _, doc in k8s_documents(kind) if name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} under infra/, found {len(found)}"
    return found[0]


LRSWEEP_IMAGE = re.search(r"^# Image: (\S+)$", DOCKERFILE, re.M).group(1)  # type: ignore[union-attr]


# --- every file ---------------------------------------------------------------------------


def test_the_expected_files_exist():
    for name in (
        "ray/cluster.yaml",
        "k8s/storage.yaml",
        "k8s/raycluster.yaml",
        "k8s/mlflow.yaml",
        "k8s/nightly-cronjob.yaml",
        "k8s/rayjob-sweep.yaml",
        "k8s/postgres.yaml",
        "k8s/secrets.example.yaml",
        "k8s/networkpolicy.yaml",
        "docker/Dockerfile",
        "README.md",
    ):
        assert (INFRA / name).is_file(), f"infra/{name} is missing"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_parses_into_mappings(path: Path):
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} holds no document"
    assert all(isinstance(doc, dict) for doc in docs)


def test_kubernetes_documents_have_required_fields():
    docs = k8s_documents()
    assert len(docs) >= 8
    for path, doc in docs:
        assert doc.get("kind"), f"{path}: a document without kind"
        assert doc.get("metadata", {}).get("name"), f"{path}: a {doc['kind']} without a name"
    names = [(doc["kind"], doc["metadata"]["name"]) for _, doc in docs]
    assert len(names) == len(set(names)), "two documents share kind and name"


def test_every_container_has_a_name_an_image_and_numbered_ports():
    found = containers()
    assert found
    for path, owner, container in found:
        assert container.get("name") and container.get("image"), f"{path}: {owner}"
        for port in container.get("ports", []):
            assert isinstance(port["containerPort"], int), f"{path}: {owner} {port}"


def test_services_target_ports_their_pods_declare():
    for path, service in k8s_documents("Service"):
        selector = service["spec"]["selector"]
        pods = [
            pod
            for _, doc in k8s_documents()
            for pod in pod_specs(doc)
            if doc["kind"] in ("Deployment", "StatefulSet")
            and selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"{path}: Service {service['metadata']['name']} selects no workload"
        ports = [
            port
            for pod in pods
            for container in pod["containers"]
            for port in container.get("ports", [])
        ]
        declared = {port.get("name") for port in ports} | {port["containerPort"] for port in ports}
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in declared


def _selected_pods(selector: dict[str, str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(workload, pod spec)`` of every pod ``selector`` picks; RayCluster pods carry KubeRay's
    ``ray.io/cluster: NAME`` label."""
    found = []
    for _, doc in k8s_documents():
        if doc["kind"] == "RayCluster":
            labels = {"ray.io/cluster": doc["metadata"]["name"]}
        elif doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
        else:
            continue
        if selector.items() <= labels.items():
            found += [(doc, pod) for pod in pod_specs(doc)]
    return found


def test_network_policies_select_real_pods_and_open_only_their_ports():
    policies = {doc["metadata"]["name"]: doc["spec"] for _, doc in k8s_documents("NetworkPolicy")}
    assert set(policies) == {"lrsweep-ray", "lrsweep-mlflow", "lrsweep-postgres"}
    selected = {}
    for name, spec in policies.items():
        pods = _selected_pods(spec["podSelector"]["matchLabels"])
        assert pods, f"NetworkPolicy {name} selects no pod of infra/k8s"
        selected[name] = {doc["kind"] for doc, _ in pods}
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec["ingress"]:
            if _is_operator_rule(rule):
                continue
            # else same-namespace sources only: no namespaceSelector, ipBlock
            assert all(set(source) == {"podSelector"} for source in rule["from"]), name
            served = {
                port["containerPort"]
                for _, pod in pods
                for c in pod["containers"]
                for port in c.get("ports", [])
            }
            assert {port["port"] for port in rule.get("ports", [])} <= served, name
            for source in rule["from"]:
                labels = source["podSelector"].get("matchLabels")
                assert labels is None or _selected_pods(labels), f"{name}: {labels} selects nothing"
    assert selected == {
        "lrsweep-ray": {"RayCluster"},
        "lrsweep-mlflow": {"Deployment"},
        "lrsweep-postgres": {"StatefulSet"},
    }
    assert [p["port"] for p in policies["lrsweep-mlflow"]["ingress"][0]["ports"]] == [MLFLOW_PORT]
    postgres_from = [
        s["podSelector"]["matchLabels"] for s in policies["lrsweep-postgres"]["ingress"][0]["from"]
    ]
    assert {"ray.io/cluster": the_one("RayCluster")["metadata"]["name"]} in postgres_from
    # one rule reaches beyond the namespace: KubeRay's operator, on the head's job API alone
    # (it reads a RayJob's status there; without it no RayJob ends SUCCEEDED)
    operator = [r for spec in policies.values() for r in spec["ingress"] if _is_operator_rule(r)]
    assert operator == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: OPERATOR_NAMESPACE}}}],
            "ports": [{"protocol": "TCP", "port": RAY_PORTS["dashboard"]}],
        }
    ]
    assert operator[0] in policies["lrsweep-ray"]["ingress"]
    assert f"--namespace {OPERATOR_NAMESPACE}" in (INFRA / "README.md").read_text()


NAMESPACE_LABEL = "kubernetes.io/metadata.name"
OPERATOR_NAMESPACE = "kuberay-system"


def _is_operator_rule(rule: dict[str, Any]) -> bool:
    return any("namespaceSelector" in source for source in rule["from"])


def test_every_referenced_secret_key_exists_in_the_example():
    secrets = {
        doc["metadata"]["name"]: set(doc.get("stringData", {}))
        for _, doc in k8s_documents("Secret")
    }
    refs = [
        env["valueFrom"]["secretKeyRef"]
        for _, _, container in containers()
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    ]
    assert refs
    for ref in refs:
        assert ref["key"] in secrets.get(ref["name"], set()), (
            f"no Secret {ref['name']}/{ref['key']}"
        )


def test_secrets_example_holds_only_placeholders_the_server_would_accept():
    values = {
        key: value for _, doc in k8s_documents("Secret") for key, value in doc["stringData"].items()
    }
    for key, value in values.items():
        if re.search(r"password|secret|key_id|_key$", key, re.I):
            assert "CHANGE-ME" in value, f"{key} must be a CHANGE-ME placeholder"
    assert "EXAMPLE ONLY" in (INFRA / "k8s" / "secrets.example.yaml").read_text()
    admin = {
        server.ADMIN_USERNAME_ENV: values[server.ADMIN_USERNAME_ENV],
        server.ADMIN_PASSWORD_ENV: values[server.ADMIN_PASSWORD_ENV],
    }
    # A copy applied unedited must not start a server with a password anyone can read here ...
    with pytest.raises(server.ServerConfigError, match="CHANGE-ME"):
        server.admin_username_from_env(admin)
    # ... while the same value with the placeholder replaced passes every other rule (not the
    # stock password, 12+ characters), so the refusal names the one thing to fix.
    edited = {
        **admin,
        server.ADMIN_PASSWORD_ENV: admin[server.ADMIN_PASSWORD_ENV].replace("CHANGE-ME", "chosen"),
    }
    assert server.admin_username_from_env(edited) == "admin"


def test_the_secrets_copy_is_private_and_deleted_after_applying():
    # `cp` keeps the example's mode (644): the filled-in copy would be readable by every user.
    for path in (INFRA / "README.md", INFRA / "k8s" / "secrets.example.yaml"):
        text = path.read_text()
        assert "install -m 600 infra/k8s/secrets.example.yaml ~/lrsweep-secrets.yaml" in text, path
        assert "cp infra/k8s/secrets.example.yaml" not in text, path
        assert "rm ~/lrsweep-secrets.yaml" in text, path


# --- one image, one set of versions -------------------------------------------------------


def test_one_lrsweep_image_everywhere_tagged_with_the_project_version():
    assert LRSWEEP_IMAGE.rsplit(":", 1)[1] == PYPROJECT["project"]["version"]
    images = {container["image"] for _, _, container in containers()}
    images.add(yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())["docker"]["image"])
    ours = {image for image in images if not image.startswith(THIRD_PARTY_IMAGES)}
    assert ours == {LRSWEEP_IMAGE}
    assert f"-t {LRSWEEP_IMAGE} " in DOCKERFILE  # the documented build command makes that tag


def test_dockerfile_pins_the_project_versions_and_runs_as_non_root():
    assert "torch==2.14.1" in DOCKERFILE and "torch==2.14.1" in PYPROJECT["project"]["dependencies"]
    assert f"torchvision=={pinned('torchvision')}" in DOCKERFILE
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)  # type: ignore[union-attr]
    assert base.startswith(f"rayproject/ray:{pinned('ray')}-py311")
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")


def test_the_image_records_the_commit_a_night_reports():
    # The image holds no .git: without the commit baked in, every night run from it records
    # nightly.git_commit "unknown", and a regression cannot be traced to a change.
    assert re.search(rf"^ARG {GIT_ENV}=$", DOCKERFILE, re.M)
    assert re.search(rf"^ENV {GIT_ENV}=\$\{{{GIT_ENV}\}}$", DOCKERFILE, re.M)
    for text in (DOCKERFILE, (INFRA / "README.md").read_text()):
        assert f"--build-arg {GIT_ENV}=$(git rev-parse HEAD)" in text
    # `ray up` installs the checkout (without .git) over the image's code: naming the image's
    # commit there would blame the wrong one.
    cluster = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    assert f"--env {GIT_ENV}=" in cluster["docker"]["run_options"]


def test_ray_versions_agree_with_pyproject():
    assert the_one("RayCluster")["spec"]["rayVersion"] == pinned("ray")
    assert ray.__version__ == pinned("ray")


# --- ports --------------------------------------------------------------------------------


def test_ray_head_ports_are_the_standard_ones():
    head = the_one("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {port["name"]: port["containerPort"] for port in head["ports"]} == RAY_PORTS
    start = " ".join(yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())[
        "head_start_ray_commands"
    ])  # fmt: skip
    for flag, port in (
        ("--port", RAY_PORTS["gcs-server"]),
        ("--dashboard-port", RAY_PORTS["dashboard"]),
        ("--ray-client-server-port", RAY_PORTS["client"]),
    ):
        assert f"{flag}={port}" in start


def mlflow_server_containers() -> list[dict[str, Any]]:
    return [
        container
        for _, _, container in containers()
        if container.get("command", [])[:2] == ["lrsweep", "server"]
    ]


def test_mlflow_server_serves_on_5000_behind_a_service_of_that_port():
    servers = mlflow_server_containers()
    assert servers, "no container runs `lrsweep server` under infra/"
    for container in servers:
        assert "--port=5000" in container["command"] and "--host=0.0.0.0" in container["command"]
        assert {port["containerPort"] for port in container["ports"]} == {MLFLOW_PORT}
    ports = {
        doc["metadata"]["name"]: {port["port"] for port in doc["spec"]["ports"]}
        for _, doc in k8s_documents("Service")
    }
    for uri in tracking_uris():
        parts = urlsplit(uri)
        assert parts.port == MLFLOW_PORT and MLFLOW_PORT in ports[str(parts.hostname)]


def test_mlflow_server_reads_its_credentials_from_the_environment_only():
    postgres_port = the_one("Service", "lrsweep-postgres")["spec"]["ports"][0]["port"]
    for container in mlflow_server_containers():
        env = {item["name"] for item in container["env"]}
        assert {server.ADMIN_PASSWORD_ENV, server.ADMIN_USERNAME_ENV, server.SECRET_KEY_ENV} <= env
        assert "PGPASSWORD" in env
        for arg in container["command"]:
            if arg.startswith(("--backend-store-uri=", "--auth-db-uri=")):
                uri = urlsplit(arg.split("=", 1)[1])
                assert uri.password is None, f"{arg} carries a password"
                assert (uri.hostname, uri.port) == ("lrsweep-postgres", postgres_port)


# --- the Ray pods and the RayJob ----------------------------------------------------------


def ray_containers() -> list[dict[str, Any]]:
    return [pod["containers"][0] for pod in pod_specs(the_one("RayCluster"))]


def tracking_uris() -> list[str]:
    uris = [
        env["value"]
        for container in ray_containers()
        for env in container["env"]
        if env["name"] == "MLFLOW_TRACKING_URI"
    ]
    return [*uris, entrypoint_options()["--tracking-uri"][0]]


def test_ray_pods_carry_the_tracking_variables_the_code_reads():
    assert (
        "MLFLOW_TRACKING_URI" in (ROOT / "sweeps" / "_uri.py").read_text()
    )  # resolve_tracking_uri
    names = {"MLFLOW_TRACKING_URI", MLFLOW_TRACKING_USERNAME.name, MLFLOW_TRACKING_PASSWORD.name}
    for container in ray_containers():
        assert names <= {env["name"] for env in container["env"]}


def entrypoint() -> list[str]:
    return shlex.split(the_one("RayJob")["spec"]["entrypoint"])


def entrypoint_options() -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    words = entrypoint()[3:]
    for flag, value in zip(words[::2], words[1::2], strict=True):
        assert flag.startswith("--"), f"unexpected word {flag!r} in the RayJob entrypoint"
        options.setdefault(flag, []).append(value)
    return options


def rayjob_spec():
    command, sub, spec_path = entrypoint()[:3]
    assert (command, sub) == ("lrsweep", "run")
    assert (ROOT / spec_path).is_file(), f"the RayJob's spec {spec_path} is not in the repository"
    return load_spec(ROOT / spec_path, overrides=entrypoint_options().get("--set", []))


def test_rayjob_entrypoint_is_a_valid_lrsweep_run_line_that_passes_preflight():
    options = entrypoint_options()
    assert options["--address"] == ["auto"]
    spec = rayjob_spec()  # load_spec accepts the spec with the overrides
    assert check_tracking_reachable(options["--tracking-uri"][0], alive_nodes=2) == []
    check_storage_shared(spec.storage, alive_nodes=2)
    mounts = [mount["mountPath"] for c in ray_containers() for mount in c["volumeMounts"]]
    assert any(str(spec.storage.path).startswith(f"{mount}/") for mount in mounts)


def test_rayjob_runs_on_the_raycluster_from_the_image_folder():
    job = the_one("RayJob")["spec"]
    assert job["clusterSelector"]["ray.io/cluster"] == the_one("RayCluster")["metadata"]["name"]
    working_dir = yaml.safe_load(job["runtimeEnvYAML"])["working_dir"]
    assert re.search(rf"^WORKDIR {re.escape(working_dir)}$", DOCKERFILE, re.M)


def _rayjobs() -> list[dict[str, Any]]:
    """Every RayJob of infra/k8s, with the one the nightly CronJob creates from its ConfigMap."""
    jobs = [doc for _, doc in k8s_documents("RayJob")]
    for _, doc in k8s_documents("ConfigMap"):
        jobs += [
            job
            for text in doc.get("data", {}).values()
            if isinstance(job := yaml.safe_load(text), dict) and job.get("kind") == "RayJob"
        ]
    return jobs


def test_every_rayjob_runs_one_lrsweep_command_from_the_image_folder():
    """KubeRay pastes the entrypoint into its submitter's own ``bash -c`` line, so a shell
    operator in it (``cd X && lrsweep ...``) would submit only its first part to Ray and run
    the rest in the submitter pod: the folder comes from the runtime env instead."""
    jobs = _rayjobs()
    assert len(jobs) == 2, [job["metadata"] for job in jobs]
    for job in jobs:
        words = shlex.split(job["spec"]["entrypoint"])
        assert words[0] == "lrsweep", words
        lexer = shlex.shlex(job["spec"]["entrypoint"], posix=True, punctuation_chars=True)
        assert not set(lexer) & {"&&", "||", ";", "|", "&"}, job["spec"]["entrypoint"]
        working_dir = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"]
        assert re.search(rf"^WORKDIR {re.escape(working_dir)}$", DOCKERFILE, re.M)


def test_rayjob_options_exist_on_the_run_command():
    import typer

    from sweeps.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    if "run" not in commands:
        pytest.skip("`lrsweep run` is not registered yet")
    known = {opt for param in commands["run"].params for opt in getattr(param, "opts", [])}
    assert set(entrypoint_options()) <= known


def kuberay_nodes() -> list[NodeInfo]:
    """The RayCluster's groups as Ray sees them: CPU/GPU from limits, labels from ray start."""
    nodes = []
    spec = the_one("RayCluster")["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        params = group["rayStartParams"]
        resources = {
            "CPU": float(params.get("num-cpus", limits["cpu"])),
            "GPU": float(limits.get("nvidia.com/gpu", 0)),
        }
        labels = dict(group.get("labels", {}))  # KubeRay >= 1.5: the top-level field
        name = group.get("groupName", "head")
        nodes.append(NodeInfo(node_id=name, address="", hostname=name, resources=resources,
                              labels=labels))  # fmt: skip
    return nodes


def test_rayjob_trials_fit_the_raycluster_worker_group():
    head, gpu = kuberay_nodes()
    trial_nodes, slots = check_fit(rayjob_spec().resources, [head, gpu])
    assert trial_nodes == (gpu.name,)  # the head has num-cpus 0: no trials there
    assert slots == 4  # 4 CPUs and 1 GPU per node at cpu: 1, gpu: 0.25
    workers = the_one("RayCluster")["spec"]["workerGroupSpecs"]
    assert all(group["minReplicas"] >= 1 for group in workers)  # preflight sees a GPU node


def test_node_labels_follow_the_spec_resource_names():
    spec = load_spec(
        ROOT / "sweeps" / "specs" / "digits.yaml",
        overrides=["resources.gpu=1", "resources.node_labels={lrsweep.io/pool: gpu}"],
    )
    head, gpu = kuberay_nodes()
    assert check_fit(spec.resources, [head, gpu])[0] == (gpu.name,)


def test_ray_node_labels_are_the_top_level_field_kuberay_1_5_requires():
    # KubeRay >= 1.5 refuses rayStartParams.labels, and Ray's autoscaler ignores it: the group
    # would start unlabeled and a `node_labels:` spec would never be placed.
    spec = the_one("RayCluster")["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        assert "labels" not in group["rayStartParams"], group.get("groupName", "head")
        assert isinstance(group["labels"], dict) and group["labels"], group.get("groupName", "head")
        assert all(isinstance(v, str) for v in group["labels"].values())
    assert "KubeRay >= 1.5" in (INFRA / "k8s" / "raycluster.yaml").read_text()
    readme = (INFRA / "README.md").read_text()
    install = re.search(r"^helm install kuberay-operator .*(?:\\\n.*)*", readme, re.M)
    assert install and re.search(r"--version 1\.(?:[5-9]|\d\d)\.\d+\b", install.group(0))


STORAGE = INFRA / "k8s" / "storage.yaml"
RWX_PLACEHOLDER = "set-your-rwx-class"


def test_every_claim_lives_in_storage_yaml_apart_from_the_workloads():
    # `kubectl delete -f raycluster.yaml` (or mlflow.yaml) deletes every object the file
    # defines: a claim defined there took every checkpoint and artifact with it.
    claims = {
        doc["metadata"]["name"]: (path, doc) for path, doc in k8s_documents("PersistentVolumeClaim")
    }
    assert claims and {path for path, _ in claims.values()} == {STORAGE}
    used = {
        volume["persistentVolumeClaim"]["claimName"]
        for _, doc in k8s_documents()
        for pod in pod_specs(doc)
        for volume in pod.get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    assert used == set(claims)
    assert all(
        doc["kind"] == "PersistentVolumeClaim" for doc in yaml.safe_load_all(STORAGE.read_text())
    )


def test_the_shared_claim_names_an_rwx_class_the_readme_has_the_deployer_set():
    # Without storageClassName the claim takes the cluster's default class, ReadWriteOnce on
    # EKS/GKE/AKS, and stays Pending: no Ray pod starts.
    claims = {
        doc["metadata"]["name"]: doc["spec"] for _, doc in k8s_documents("PersistentVolumeClaim")
    }
    mounts = {m["name"]: m["mountPath"] for c in ray_containers() for m in c["volumeMounts"]}
    volumes = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for pod in pod_specs(the_one("RayCluster"))
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    shared = claims[volumes[next(n for n, p in mounts.items() if p == "/mnt/shared")]]
    assert shared["accessModes"] == ["ReadWriteMany"]
    assert shared["storageClassName"] == RWX_PLACEHOLDER
    readme = (INFRA / "README.md").read_text()
    apply = "infra/k8s/storage.yaml | kubectl -n lrsweep apply -f -"
    assert f'sed "s/{RWX_PLACEHOLDER}/$RWX_CLASS/" {apply}' in readme


def test_readme_applies_storage_first_and_deletes_it_only_as_a_destructive_step():
    readme = (INFRA / "README.md").read_text()
    lines = readme.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    storage = first(r"infra/k8s/storage\.yaml \| kubectl -n lrsweep apply")
    assert storage < first(r"apply -f infra/k8s/mlflow\.yaml")
    assert storage < first(r"apply -f infra/k8s/raycluster\.yaml")
    teardown = readme[readme.index("### Tear down") :]
    teardown = teardown[: teardown.index("\n## ")]
    blocks = re.findall(r"```bash\n(.*?)```", teardown, re.S)
    keep, destroy = blocks
    assert "delete" in keep and "storage.yaml" not in keep and "pvc" not in keep
    assert "namespace" not in keep
    assert destroy.startswith("# DESTRUCTIVE")
    assert "delete -f infra/k8s/storage.yaml" in destroy and "delete namespace" in destroy
    assert "keep the data" not in readme  # the old claim that the first lines kept it


# --- ray up -------------------------------------------------------------------------------


def cluster_config() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())


def test_ray_up_config_validates_against_rays_schema():
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster_config(), json.loads(schema_path.read_text()))


def test_ray_up_config_has_a_cpu_head_and_an_autoscaling_gpu_group():
    config = cluster_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_groups = [t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_groups and all(0 <= g["min_workers"] < g["max_workers"] for g in gpu_groups)
    assert max(g["max_workers"] for g in gpu_groups) <= config["max_workers"]


def test_preflight_counts_the_ray_up_gpu_group_the_autoscaler_may_start():
    config = cluster_config()
    head_type = config["available_node_types"][config["head_node_type"]]
    head = NodeInfo(node_id="head", address="", hostname="head", resources=head_type["resources"])
    groups = autoscaler_groups(INFRA / "ray" / "cluster.yaml")
    trial_nodes, slots = check_fit(rayjob_spec().resources, [head, *groups])
    assert trial_nodes == ("autoscaler group 'gpu'",) and slots == 0


DLAMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)


def test_ray_up_names_an_ami_the_deployer_sets_not_rays_old_default():
    # Ray resolves `latest_dlami` (or no ImageId) to an Ubuntu 18.04 DLAMI with CUDA 11.2,
    # whose driver cannot run the image's CUDA 12.8.
    config = cluster_config()
    images = {t["node_config"].get("ImageId", "") for t in config["available_node_types"].values()}
    assert len(images) == 1
    (image,) = images
    assert image.lower() not in ("", "latest_dlami") and "SET-ME" in image
    for text in ((INFRA / "README.md").read_text(), (INFRA / "ray" / "cluster.yaml").read_text()):
        assert DLAMI_PARAMETER in text
    assert image in (INFRA / "README.md").read_text()


def test_ray_up_gpu_workers_get_an_instance_profile():
    # Ray's AWS provider gives its default IAM role to the head only: trials on workers
    # writing s3:// storage would find no credentials.
    config = cluster_config()
    for name, node_type in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue
        arn = node_type["node_config"]["IamInstanceProfile"]["Arn"]
        assert re.fullmatch(r"arn:aws:iam::ACCOUNT_ID:instance-profile/[\w+=,.@-]+", arn), arn
    assert "IamInstanceProfile" in (INFRA / "README.md").read_text()


TRACKING_ENV = "/home/ray/tracking.env"


def test_ray_up_nodes_get_the_tracking_user_from_a_private_file_read_by_ray_start():
    # The quick-start server runs with --auth: without MLFLOW_TRACKING_USERNAME/PASSWORD in
    # the environment `ray start` passes on, the driver and every trial get 401s.
    config = cluster_config()
    local = config["file_mounts"][TRACKING_ENV]
    assert local.startswith("~/") and not local.startswith("~/.lrsweep")  # outside the checkout
    source = "set -a; . ~/tracking.env; set +a;"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all(c.startswith(source) for c in starts), key
    readme = (INFRA / "README.md").read_text()
    assert f"install -m 600 /dev/null {local}" in readme
    assert "/api/2.0/mlflow/users/create" in readme.split("## Option B")[0]  # Option A's user


def test_no_documented_command_puts_credentials_in_the_runtime_env():
    # --runtime-env-json is shown in the dashboard and stored with the job.
    for path in [*INFRA.rglob("*.md"), *yaml_files()]:
        for line in path.read_text().splitlines():
            if "runtime-env" in line or "runtime_env" in line:
                assert not re.search(r"PASSWORD|SECRET|TOKEN", line, re.I), f"{path}: {line}"


def test_option_a_submits_its_entrypoint_through_bash_c():
    # Ray single-quotes every entrypoint word (shlex.join) for the head's shell: a $(...) in
    # the words reaches lrsweep unexpanded. One `bash -c '...'` word is expanded on the head.
    readme = (INFRA / "README.md").read_text()
    option_a = readme[readme.index("## Option A") : readme.index("## Option B")]
    submit = re.search(r"^ray job submit .*?(?<!\\)\n", option_a, re.M | re.S)
    assert submit, "no `ray job submit` in Option A"
    command = submit.group(0).replace("\\\n", " ")
    words = shlex.split(command)
    entry = words[words.index("--") + 1 :]
    assert entry[:2] == ["bash", "-c"] and len(entry) == 3, entry
    inner = shlex.split(entry[2].replace("\\\n", " "))
    assert inner[:2] == ["lrsweep", "run"] and "$(hostname -I" in entry[2]


# --- README -------------------------------------------------------------------------------


def test_readme_documents_every_infra_file_and_the_commands():
    readme = (INFRA / "README.md").read_text()
    for path in [*yaml_files(), INFRA / "docker" / "Dockerfile"]:
        assert str(path.relative_to(ROOT)) in readme, f"{path} is not in infra/README.md"
    for command in (
        "ray up infra/ray/cluster.yaml",
        "ray down infra/ray/cluster.yaml",
        "ray job submit",
        "--working-dir .",
        "port-forward svc/lrsweep-mlflow 5000:5000",
        f"port-forward svc/{the_one('RayCluster')['metadata']['name']}-head-svc 8265:8265",
        "1,000 trials",
    ):
        assert command in readme
    services = {doc["metadata"]["name"] for _, doc in k8s_documents("Service")}
    assert "lrsweep-mlflow" in services


def test_no_documented_command_puts_a_secret_on_a_remote_command_line():
    # `ray exec --tmux 'CMD'` runs `bash -c 'CMD; exec bash'`, which stays alive as the server's
    # parent: a password assigned inside CMD shows in `ps` on the head (and in ssh's argv here).
    secret_assignment = re.compile(r"\b\w*(PASSWORD|SECRET|TOKEN)\w*=(?!\$)", re.IGNORECASE)
    for path in INFRA.rglob("*.md"):
        for line in path.read_text().splitlines():
            if "ray exec" in line or "bash -c" in line or "ray job submit" in line:
                assert not secret_assignment.search(line), f"{path}: {line}"


def _run_nightly_submitter(tmp_path: Path, answers: list[str]) -> subprocess.CompletedProcess:
    """The CronJob's script under /bin/sh, with ``kubectl`` answering ``answers`` in turn to its
    ``get`` reads (``!`` fails the read as an unreachable API server does) and ``sleep``
    returning at once: no Kubernetes here, only the script's own logic is under test."""
    cronjob = the_one("CronJob", "lrsweep-nightly")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = pod["containers"][0]["args"][0]
    tools = tmp_path / "bin"
    tools.mkdir(parents=True)
    (tmp_path / "answers").write_text("\n".join(answers) + "\n")
    kubectl = f"""#!/bin/sh
[ "$1" = create ] && {{ echo lrsweep-nightly-abc; exit 0; }}
answer=$(head -n 1 {tmp_path}/answers); sed -i 1d {tmp_path}/answers
[ -n "$answer" ] || {{ echo "no answer left: the script polled past its end" >&2; exit 9; }}
[ "$answer" = "!" ] && {{ echo "connection refused" >&2; exit 1; }}
printf %s "$answer"
"""
    for name, text in (("kubectl", kubectl), ("sleep", "#!/bin/sh\nexit 0\n")):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    env = {"PATH": f"{tools}:/usr/bin:/bin"}
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )


def test_the_nightly_submitter_outlasts_a_failed_read_and_ends_on_every_terminal_state(
    tmp_path: Path,
):
    # One failed `kubectl get` (an API server restart during a 4-hour night) ended the Job as
    # failed while the night ran on; a RayJob KubeRay refused (ValidationFailed) was polled
    # until the Job's 5-hour deadline.
    done = _run_nightly_submitter(tmp_path / "a", ["RUNNING/Running", "!", "SUCCEEDED/Complete"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "night passed (lrsweep-nightly-abc)" in done.stdout
    done = _run_nightly_submitter(tmp_path / "b", ["/Initializing", "/ValidationFailed"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "kubectl describe rayjob lrsweep-nightly-abc" in done.stdout
    done = _run_nightly_submitter(tmp_path / "c", ["RUNNING/Running", "FAILED/Complete"])
    assert done.returncode == 1 and "night did not pass" in done.stdout


# --- the team server's host, the schedules, and the files holding their secrets ------------


def test_one_mlflow_host_placeholder_everywhere():
    for path in INFRA.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"(?<![\w.])mlflow\.internal", text), path
    for path in (
        INFRA / "cron" / "lrsweep-nightly.cron",
        INFRA / "systemd" / "lrsweep-nightly.service",
        INFRA / "mlflow" / "mlflow.env.example",
        INFRA / "mlflow" / "README.md",
    ):
        assert "mlflow.example.internal" in path.read_text(), path


def _env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def test_the_systemd_server_listens_on_loopback_behind_its_tls_proxy():
    env = _env_file(INFRA / "mlflow" / "mlflow.env.example")
    assert env["LRSWEEP_MLFLOW_HOST"] == "127.0.0.1"
    readme = (INFRA / "mlflow" / "README.md").read_text()
    assert "127.0.0.1:5000" in readme and "https://mlflow.example.internal" in readme
    hosts = env["LRSWEEP_MLFLOW_ALLOWED_HOSTS"].split(",")
    assert "mlflow.example.internal" in hosts  # the Host header the proxy passes on


HARD_PASSWORD = "a\"b\\c $d `e` 'f' %s g"  # every character that broke a quoted form


def _user_json_commands() -> list[tuple[Path, str]]:
    """Each documented ``users/create`` call's JSON writer: the ``python3 -c '...'`` before it."""
    found = []
    for path in INFRA.rglob("*.md"):
        text = path.read_text()
        for match in re.finditer(r"users/create", text):
            start = text.rfind("python3 -c '", 0, match.start())
            assert start != -1 and match.start() - start < 400, (path, "no JSON writer")
            end = text.index("' |", start)
            found.append((path, text[start + len("python3 -c '") : end]))
    return found


def test_no_documented_command_puts_a_password_in_argv():
    # `curl -u user:password` and a JSON body with a literal password show in `ps` and land
    # in the shell's history; JSON written from the environment into `curl -d @-`, and curl's
    # own prompt, do not.
    for path in INFRA.rglob("*.md"):
        text = path.read_text()
        assert not re.search(r"curl[^\n]*\s-u\s+[\"']?[^\s\"']+:", text), path
        assert not re.search(r'"password":\s*"', text), path
        for match in re.finditer(r"users/create", text):
            command = text[match.start() : match.end() + 120]
            assert "-d @-" in command, path
            assert "curl -u admin " in text[match.start() - 120 : match.start()], path
    assert len(_user_json_commands()) == 3  # alice's, Option A's and Option B's


def test_the_documented_user_json_stays_valid_with_any_password():
    # printf '{"password": "%s"}' wrote broken JSON for a password holding " or \.
    env = {
        "PATH": "/usr/bin:/bin",
        "PW": HARD_PASSWORD,
        "MLFLOW_TRACKING_USERNAME": "lrsweep",
        "MLFLOW_TRACKING_PASSWORD": HARD_PASSWORD,
    }
    for path, code in _user_json_commands():
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(out)["password"] == HARD_PASSWORD, path


def test_the_documented_env_files_source_back_to_the_password(tmp_path: Path):
    # The head's ~/mlflow.env and the nodes' tracking.env are read with `set -a; . FILE`: a
    # password written with printf %s broke there on a space, a quote or a $.
    text = (INFRA / "README.md").read_text()
    writers = re.findall(r"printf '([A-Z_]+=[^']*)' \"\$pw\"", text)
    assert len(writers) == 2, writers
    for form in writers:
        env_file = tmp_path / "x.env"
        script = f'pw="$1"; printf \'{form}\' "$pw" > {env_file}; set -a; . {env_file}; set +a; '
        name = form.rstrip("\\n").split("%q")[0].split("\\n")[-1].rstrip("=")
        script += f'printf %s "${name}"'
        out = subprocess.run(
            ["bash", "-c", script, "bash", HARD_PASSWORD],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out == HARD_PASSWORD, form


def test_the_k8s_nightly_submitter_image_is_pinned_and_has_a_shell():
    pod = the_one("CronJob", "lrsweep-nightly")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # bitnami/kubectl's free tags were withdrawn from Docker Hub: the Job could never pull it.
    assert re.fullmatch(r"alpine/k8s:\d+\.\d+\.\d+", container["image"]), container["image"]
    assert container["command"][0] == "/bin/sh"
    assert {"name": "HOME", "value": "/tmp"} in container.get("env", [])  # uid 1001 has no home


CRON = INFRA / "cron" / "lrsweep-nightly.cron"
NIGHTLY_ENV = ".config/lrsweep/nightly.env"


def _cron_command() -> str:
    (line,) = [line for line in CRON.read_text().splitlines() if line and line[0].isdigit()]
    return line.split(None, 5)[5]


def test_cron_reads_the_tracking_credentials_from_a_private_file(tmp_path: Path):
    assert f"install -m 600 /dev/null ~/{NIGHTLY_ENV}" in CRON.read_text()
    assert "PASSWORD" not in "".join(
        line for line in CRON.read_text().splitlines() if not line.startswith("#")
    )
    # Run the line's own prefix under cron's /bin/sh, with and without the file.
    prefix = _cron_command().split("; cd /opt/lrsweep", 1)[0] + ";"
    probe = prefix + ' printf "%s|%s" "$MLFLOW_TRACKING_USERNAME" "$MLFLOW_TRACKING_URI"'
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "https://a"}
    run = subprocess.run(["/bin/sh", "-c", probe], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == "|https://a", run
    (tmp_path / NIGHTLY_ENV).parent.mkdir(parents=True)
    (tmp_path / NIGHTLY_ENV).write_text("MLFLOW_TRACKING_USERNAME=nightly\n")
    probe += '; sh -c \'printf "|%s" "$MLFLOW_TRACKING_USERNAME"\''  # exported to children
    run = subprocess.run(["/bin/sh", "-c", probe], env=env, capture_output=True, text=True)
    assert run.stdout == "nightly|https://a|nightly", run


def test_systemd_setup_steps_create_what_the_units_assume():
    server_unit = (INFRA / "mlflow" / "lrsweep-mlflow.service").read_text()
    # `install -m 600 FILE /etc/lrsweep/mlflow.env` fails while /etc/lrsweep does not exist.
    assert server_unit.index("install -d -m 700 /etc/lrsweep") < server_unit.index(
        "/etc/lrsweep/mlflow.env   #"
    )
    nightly = (INFRA / "systemd" / "lrsweep-nightly.service").read_text()
    assert nightly.index("useradd --system") < nightly.index("chown -R lrsweep:lrsweep")
    assert "install -m 600 -o root -g root /dev/null /etc/lrsweep/nightly.env" in nightly
    assert "EnvironmentFile=-/etc/lrsweep/nightly.env" in nightly
