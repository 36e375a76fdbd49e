"""Preflight: a sweep that cannot work where it is about to run is refused before it starts.

Pure checks run on tables of nodes; the cluster checks run on a real two-node Ray cluster on this
machine (``ray.cluster_utils.Cluster``: a head and a worker with its own custom resource and
label), started once for this module. Ray allows one runtime per process, so the fixture stops
any Ray the session started first and restarts it afterwards.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from sweeps import _ray
from sweeps.preflight import (
    NodeInfo,
    PreflightError,
    check_accelerator,
    check_artifact_location,
    check_artifacts_shared,
    check_cluster,
    check_fit,
    check_local_data,
    check_local_resources,
    check_local_weights,
    check_portable_inputs,
    check_storage_shared,
    check_tracking_reachable,
    connect,
    explain_connect_error,
    head_address,
    label_matches,
)
from sweeps.spec import ResourcesSpec, StorageSpec, SweepSpec, load_spec

DIGITS = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "digits.yaml"
SERVER = "http://mlflow.example.internal:5000"


def make_spec(**sections: Any) -> SweepSpec:
    """The digits demo spec with whole top-level sections replaced."""
    data = load_spec(DIGITS).resolved()
    data.update(sections)
    return load_spec(data)


def node(name: str, labels: dict[str, str] | None = None, **resources: float) -> NodeInfo:
    return NodeInfo(
        node_id=f"{name}-id", address="10.0.0.1", hostname=name, resources=resources,
        labels=labels or {},
    )  # fmt: skip


# --- pure: resources, labels, tracking, storage -------------------------------------------


@pytest.mark.parametrize(
    ("selector", "value", "expected"),
    [
        ("a100", "a100", True),
        ("a100", "h100", False),
        ("a100", None, False),
        ("!spot", "spot", False),
        ("!spot", None, True),
        ("in(a100, h100)", "h100", True),
        ("in(a100,h100)", "t4", False),
        ("!in(a100,h100)", "t4", True),
        ("!in(a100,h100)", "a100", False),
    ],
)
def test_label_selector_follows_ray_syntax(selector: str, value: str | None, expected: bool):
    assert label_matches(selector, value) is expected


CPU_NODE = node("cpu-box", CPU=8.0)
GPU_NODE = node("gpu-box", {"gpu": "a100"}, CPU=4.0, GPU=1.0, A100=1.0)


@pytest.mark.parametrize(
    ("resources", "nodes", "fits_on", "slots"),
    [
        ({"cpu": 2}, [CPU_NODE], [CPU_NODE], 4),
        ({"cpu": 1}, [CPU_NODE, GPU_NODE], [CPU_NODE, GPU_NODE], 12),
        ({"cpu": 1, "gpu": 0.25}, [CPU_NODE, GPU_NODE], [GPU_NODE], 4),  # 4 share one GPU
        ({"cpu": 1, "gpu": 1, "custom": {"A100": 1}}, [CPU_NODE, GPU_NODE], [GPU_NODE], 1),
        ({"cpu": 1, "node_labels": {"gpu": "in(a100,h100)"}}, [CPU_NODE, GPU_NODE], [GPU_NODE], 4),
        ({"cpu": 1, "node_labels": {"gpu": "!a100"}}, [CPU_NODE, GPU_NODE], [CPU_NODE], 8),
    ],
)
def test_trials_fit_and_slots_count_whole_trials(
    resources: dict[str, Any], nodes: list[NodeInfo], fits_on: list[NodeInfo], slots: int
):
    fitting, counted = check_fit(ResourcesSpec(**resources), nodes)
    assert counted == slots
    assert fitting == tuple(node.name for node in fits_on)


@pytest.mark.parametrize(
    ("resources", "nodes", "message"),
    [
        ({"gpu": 1}, [CPU_NODE], r"gpu asks for 1 GPU per trial, but the largest node has 0"),
        ({"gpu": 2}, [GPU_NODE, GPU_NODE], r"gpu asks for 2 GPU .* largest node has 1 \(gpu-box"),
        ({"cpu": 16}, [CPU_NODE, GPU_NODE], r"cpu asks for 16 CPU .* largest node has 8 \(cpu-box"),
        ({"custom": {"TPU": 4}}, [CPU_NODE], r"resources\.custom\.TPU asks for 4 TPU .* has 0"),
        ({"node_labels": {"gpu": "h100"}}, [GPU_NODE], r"node_labels\.gpu asks for 'h100'.*'a100'"),
        ({"node_labels": {"zone": "b"}}, [CPU_NODE], r"node_labels\.zone .*no node has the label"),
        ({"cpu": 6, "gpu": 1}, [CPU_NODE, GPU_NODE], r"no node has all of \{CPU: 6, GPU: 1\}"),
        ({"cpu": 6, "gpu": 1}, [CPU_NODE, GPU_NODE], r"gpu-box \(10.0.0.1, node .*\) lacks CPU 4"),
        ({"cpu": 1}, [], r"reports no alive node"),
    ],
)  # fmt: skip
def test_no_fitting_node_names_resource_ask_and_largest(
    resources: dict[str, Any], nodes: list[NodeInfo], message: str
):
    with pytest.raises(PreflightError, match=message):
        check_fit(ResourcesSpec(**resources), nodes)


def test_an_autoscaler_group_that_fits_is_enough_but_holds_no_slot_yet():
    group = NodeInfo(
        node_id="group:gpu", address="", hostname="gpu", resources={"CPU": 8.0, "GPU": 1.0},
        can_start=True,
    )  # fmt: skip
    fitting, slots = check_fit(ResourcesSpec(gpu=1), [CPU_NODE, group])
    assert fitting == ("autoscaler group 'gpu'",)
    assert slots == 0


@pytest.mark.parametrize(
    ("uri", "nodes", "outcome"),
    [
        ("sqlite:////tmp/x/mlflow.db", 1, "ok"),
        ("sqlite:////tmp/x/mlflow.db", 2, "SQLite file on this machine"),
        ("/tmp/mlruns", 2, "folder on this machine"),
        ("file:///tmp/mlruns", 3, "folder on this machine"),
        ("http://127.0.0.1:5000", 2, "warn"),
        ("http://localhost:5000", 2, "warn"),
        ("postgresql://mlflow@localhost/mlflow", 2, "warn"),
        (SERVER, 2, "ok"),
        ("https://mlflow.example.org", 100, "ok"),
    ],
)
def test_tracking_store_must_be_reachable_from_every_node(uri: str, nodes: int, outcome: str):
    if outcome in ("ok", "warn"):
        warnings = check_tracking_reachable(uri, alive_nodes=nodes)
        assert bool(warnings) is (outcome == "warn")
    else:
        with pytest.raises(PreflightError, match=f"{outcome}(.|\n)*--tracking-uri http"):
            check_tracking_reachable(uri, alive_nodes=nodes)


@pytest.mark.parametrize(
    ("storage", "nodes", "refused"),
    [
        ({}, 1, False),
        ({}, 2, True),
        ({"path": "/tmp/ray-results"}, 2, True),
        ({"path": "/mnt/shared/ray", "shared": True}, 2, False),
        ({"path": "s3://bucket/sweeps"}, 2, False),
        ({"path": "gs://bucket/sweeps"}, 2, False),
        ({"path": "file:///tmp/ray"}, 2, True),
    ],
)
def test_storage_must_be_shared_on_more_than_one_node(
    storage: dict[str, Any], nodes: int, refused: bool
):
    spec = StorageSpec(**storage)
    if refused:
        with pytest.raises(PreflightError, match=r"storage\.path .*s3://BUCKET.*storage\.shared"):
            check_storage_shared(spec, alive_nodes=nodes)
    else:
        check_storage_shared(spec, alive_nodes=nodes)


def test_version_mismatch_from_ray_is_explained_with_both_versions():
    from ray._private.utils import check_version_info  # Ray's own check, for its exact message

    with pytest.raises(RuntimeError) as raised:
        check_version_info({"ray_version": "2.59.0", "python_version": "3.10.4"}, "Ray Client")
    error = explain_connect_error(raised.value, "ray://head:10001")
    assert isinstance(error, PreflightError)
    assert "ray://head:10001: the cluster runs Ray 2.59.0 on Python 3.10.4" in str(error)
    assert f"this process Ray {ray.__version__}" in str(error)
    assert "ray job submit" in str(error)


def test_other_connect_errors_name_the_address_and_how_to_start_a_cluster():
    error = explain_connect_error(ConnectionError("no GCS at 10.0.0.9:6379"), "10.0.0.9:6379")
    assert "Cannot connect to the Ray cluster at 10.0.0.9:6379: no GCS" in str(error)
    assert "ray start --head" in str(error)


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "no-such-head.invalid"])
def test_an_address_where_nothing_answers_is_refused_at_once(host: str) -> None:
    """A typo in --address: ray.init retried for 13 min 44 s before its error (a user's run)."""
    port = _closed_port()
    address = f"{host}:{port}"
    started = time.monotonic()  # Ray names this machine's own address for 127.0.0.1
    with pytest.raises(
        PreflightError, match=rf"at {address}: nothing answers at \S+:{port} \("
    ) as raised:
        connect(address)
    assert time.monotonic() - started < 30  # the probe's 5 s at most, plus name resolution
    assert not ray.is_initialized()
    # 127.0.0.1 is tried at this node's IP, as Ray connects: the message says so (a helper's
    # dashboard port, bound to the loopback alone, "did not answer" at an address not typed)
    rewritten = f"where Ray connects for {address}: a port bound to 127.0.0.1 only"
    assert (rewritten in str(raised.value)) == (head_address(address) != address)


def test_a_ray_client_address_without_a_port_says_which_port() -> None:
    """The message was "nothing answers at HOST (invalid literal for int() with base 10: ...)"."""
    with pytest.raises(
        PreflightError,
        match=r"at ray://127\.0\.0\.1: nothing answers at 127\.0\.0\.1 \(no port given: Ray "
        r"Client listens at ray://HOST:10001",
    ):
        connect("ray://127.0.0.1")
    assert not ray.is_initialized()


def test_a_head_that_answers_but_refuses_the_driver_names_token_authentication(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray reports a missing token only in its C++ log: the error said "start one or fix
    --address" for a head that was running at the right address."""
    refused = ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6390.")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    error = str(explain_connect_error(refused, "10.0.0.9:6390", answers="10.0.0.9:6390"))
    assert "The head answers at 10.0.0.9:6390, so the address is right" in error
    assert "set RAY_AUTH_MODE=token for lrsweep too" in error and "start" not in error.lower()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    error = str(explain_connect_error(refused, "10.0.0.9:6390", answers="10.0.0.9:6390"))
    assert "RAY_AUTH_MODE=token is set here: check that the token" in error


# --- this machine: resources and artifact folder ------------------------------------------


def test_trials_that_only_an_autoscaler_group_fits_count_its_machine(
    ray_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A fresh ``ray up`` cluster (infra/ray/cluster.yaml): one node alive, the GPU group not
    started, so every GPU trial runs on another machine; a SQLite store or storage on this
    disk were let through because one node was alive."""
    from sweeps.preflight import _check
    from sweeps.preflight._cluster import autoscaler_groups

    config = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(DIGITS.parents[2] / "infra" / "ray" / "cluster.yaml", config)
    monkeypatch.setattr(_check, "autoscaler_groups", lambda: autoscaler_groups(config))
    gpu = {"cpu": 1, "gpu": 0.25}
    with pytest.raises(PreflightError, match=r"SQLite file on this machine, which the 2 nodes"):
        check_cluster(
            make_spec(resources=gpu), address=None, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
        )
    with pytest.raises(PreflightError, match=r"storage\.path .* is not marked shared, but 2"):
        unshared = make_spec(resources=gpu, storage={"path": str(tmp_path / "ray")})
        check_cluster(unshared, address=None, tracking_uri=SERVER)
    shared = make_spec(resources=gpu, storage=shared_storage(tmp_path))
    report = check_cluster(shared, address=None, tracking_uri=SERVER)
    assert report.trial_slots == 0 and report.trial_nodes == ("autoscaler group 'gpu'",)
    # a CPU trial fits the node alive (and the group): still one machine more possible
    with pytest.raises(PreflightError, match=r"SQLite file on this machine"):
        check_cluster(make_spec(), address=None, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def test_local_gpu_trial_without_a_gpu_is_refused_at_once():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(PreflightError, match=r"resources\.gpu asks for 1 GPU(.|\n)*local run"):
        check_local_resources(make_spec(resources={"cpu": 1, "gpu": 1}))


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"cpu": 3}, r"resources\.cpu asks for 3 CPU per trial, but the largest node has 2"),
        ({"cpu": 1, "custom": {"worker_node": 1}}, r"resources\.custom\.worker_node"),
        ({"cpu": 1, "node_labels": {"zone": "b"}}, r"resources\.node_labels\.zone"),
    ],
)
def test_local_run_refuses_what_this_machine_lacks(resources: dict[str, Any], message: str):
    with pytest.raises(PreflightError, match=message):
        check_local_resources(make_spec(resources=resources), num_cpus=2, num_gpus=0)


def test_local_run_counts_trials_that_fit():
    assert check_local_resources(make_spec(resources={"cpu": 1}), num_cpus=2, num_gpus=0) == 2
    spec = make_spec(resources={"cpu": 1, "gpu": 0.5})
    assert check_local_resources(spec, num_cpus=4, num_gpus=1) == 2


def test_cpu_bf16_is_refused_at_an_image_size_it_cannot_train():
    task = load_spec(DIGITS).resolved()["task"]
    bf16 = {**task, "accelerator": {"amp": "bf16"}}
    with pytest.raises(PreflightError, match=r"task\.accelerator\.amp(.|\n)*task\.image_size 8"):
        check_accelerator(make_spec(task={**bf16, "image_size": 8}))
    resnet = {**bf16, "model": {"arch": "resnet18"}}
    with pytest.raises(PreflightError, match=r"'body\.4\.0\.conv1'"):
        check_accelerator(make_spec(task={**resnet, "image_size": 16}))
    assert check_accelerator(make_spec(task={**resnet, "image_size": 32})) is True
    assert check_accelerator(make_spec(task={**bf16, "image_size": 16})) is True
    assert check_accelerator(make_spec(task={**task, "image_size": 8})) is False  # float32
    gpu = make_spec(task={**bf16, "image_size": 8}, resources={"cpu": 1, "gpu": 0.5})
    assert check_accelerator(gpu) is False  # GPUs have no such fault
    # a progressive-resizing stage trains at its own, smaller size: every trial failed there
    staged = {**bf16, "image_size": 16, "progressive_resizing": [{"size": 8, "epochs": 1}]}
    refused = r"at task\.progressive_resizing\.0\.size 8(.|\n)*raise task\.progressive_resizing"
    with pytest.raises(PreflightError, match=refused):
        check_accelerator(make_spec(task=staged))


def test_pretrained_weights_are_loaded_into_the_specs_arch_before_anything_starts(
    tmp_path: Path,
):
    import torch

    from trainers.models import build_model

    task = load_spec(DIGITS).resolved()["task"]

    def with_weights(arch: str, path: Path) -> SweepSpec:
        return make_spec(task={**task, "model": {"arch": arch, "pretrained": str(path)}})

    own = tmp_path / "own.pt"  # a learn.save-style checkpoint of the same arch, other head
    torch.save({"model": build_model("simple_cnn", 3, in_channels=1).state_dict()}, own)
    assert check_local_weights(with_weights("simple_cnn", own)) is True
    assert check_local_weights(make_spec(task=task)) is False  # no weights: nothing to read
    resnet = tmp_path / "resnet18.pt"
    torch.save(build_model("resnet18", 10).state_dict(), resnet)
    with pytest.raises(
        PreflightError, match=r"task\.model\.pretrained: .*resnet18\.pt.* into simple_cnn"
    ):
        check_local_weights(with_weights("simple_cnn", resnet))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PreflightError, match=r"junk\.pt' could not be read as a torch file"):
        check_local_weights(with_weights("simple_cnn", junk))


def test_pretrained_weights_are_checked_against_the_datas_channels(tmp_path: Path):
    """RGB weights load into a 3-channel simple_cnn, but digits' trials build a 1-channel one."""
    import torch
    import torchvision

    from trainers.models import build_model

    task = load_spec(DIGITS).resolved()["task"]
    rgb = tmp_path / "rgb.pt"
    torch.save(build_model("simple_cnn", 10, in_channels=3).state_dict(), rgb)
    model = {"arch": "simple_cnn", "pretrained": str(rgb)}
    with pytest.raises(
        PreflightError,
        match=r"(?s)rgb\.pt' into simple_cnn built for 1-channel digits images: .*size mismatch",
    ):
        check_local_weights(make_spec(task={**task, "model": model}))
    as_rgb = {**task["dataset"], "options": {"channels": 3}}
    assert check_local_weights(make_spec(task={**task, "model": model, "dataset": as_rgb}))
    resnet = tmp_path / "resnet18.pt"  # torchvision's RGB format: the trials adapt the first conv
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    grey_resnet = {"arch": "resnet18", "pretrained": str(resnet)}
    assert check_local_weights(make_spec(task={**task, "model": grey_resnet})) is True


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (
            {"name": "shapes", "options": {"n_classes": 7}},
            r"task\.dataset: the trials could not build 'shapes': shapes n_classes must be an "
            r"integer from 2 to 6 .*but got 7\. Fix task\.dataset\.options",
        ),
        (
            {"name": "shapes", "options": {"n_per_class": 0}},
            r"task\.dataset: .*n_per_class must be a positive integer, but got 0",
        ),
        (  # one image a class: none to hold out (every trial failed on the split, retried)
            {"name": "shapes", "options": {"n_per_class": 1}},
            r"task\.dataset: the trials could not split 'shapes' into training and validation "
            r"images: valid_pct=0\.2 leaves no validation images out of 3",
        ),
        (
            {"name": "digits", "options": {"channels": 2}},
            r"task\.dataset: .*digits channels must be 1 or 3, but got 2",
        ),
        (  # digits is bundled: the spec takes a path, the builder refuses it
            {"name": "digits", "path": "/"},
            r"task\.dataset: .*path is only used by the datasets .*, not 'digits'.*remove "
            r"task\.dataset\.path",
        ),
    ],
)
def test_dataset_settings_its_builder_refuses_are_reported_before_the_start(
    dataset: dict[str, Any], message: str
):
    """The spec checks option names against the builder's signature; their values (and whether
    it reads a path) only the builder knows, which every trial would otherwise call and fail on."""
    task = load_spec(DIGITS).resolved()["task"]
    with pytest.raises(PreflightError, match=message):
        check_local_data(make_spec(task={**task, "dataset": dataset}))
    good = {"name": dataset["name"]}
    assert check_local_data(make_spec(task={**task, "dataset": good})) is not None


def test_unknown_torchvision_weights_name_is_refused_listing_the_names():
    task = load_spec(DIGITS).resolved()["task"]
    typo = make_spec(task={**task, "model": {"arch": "resnet18", "pretrained": "IMAGENET1K_V3"}})
    with pytest.raises(
        PreflightError,
        match=r"task\.model\.pretrained: pretrained='IMAGENET1K_V3' is neither .* for resnet18; "
        r"the weights names are \['IMAGENET1K_V1', 'DEFAULT'\]",
    ):
        check_local_weights(typo)
    known = make_spec(task={**task, "model": {"arch": "resnet18", "pretrained": "IMAGENET1K_V1"}})
    assert check_portable_inputs(known) is None  # a cluster's nodes fetch their own


def test_torchvision_weights_a_local_sweep_cannot_fetch_are_refused_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, every trial failed on its download (each retried), after Ray had started and
    the parent run existed. In torch's cache, they are read from there (what the trials do)."""
    import urllib.request

    import torch
    import torchvision

    task = load_spec(DIGITS).resolved()["task"]
    spec = make_spec(task={**task, "model": {"arch": "resnet18", "pretrained": "IMAGENET1K_V1"}})
    # urlopen keeps the opener (and the proxies) of its first call: this test's goes with it
    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # no network
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(PreflightError, match=r"task\.model\.pretrained: Could not download") as e:
        check_local_weights(spec)
    assert "put resnet18-f37072fd.pth (from https://download.pytorch.org/models/resnet18-" in (
        str(e.value)
    )
    assert str(cache) in str(e.value)
    cache.mkdir(parents=True, exist_ok=True)  # torch made it for its download
    torch.save(torchvision.models.resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    assert check_local_weights(spec) is True


def test_a_torchvision_dataset_a_local_sweep_cannot_fetch_is_refused_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, `validate` passed an mnist spec and `run` started Ray and made the sweep's run,
    then every trial failed on its own download (each retried, all into one folder at once).
    With the files in place, they are read from there, as the trials read them."""
    import urllib.request

    from tests.trainers.test_data import write_mnist

    monkeypatch.setattr(urllib.request, "_opener", None)  # see the weights test above
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # no network
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    task = load_spec(DIGITS).resolved()["task"]
    root = tmp_path / "data"
    root.mkdir()
    spec = make_spec(task={**task, "dataset": {"name": "mnist", "path": str(root)}})
    assert check_local_data(spec, fetch=False) is None  # validate downloads nothing
    with pytest.raises(PreflightError, match=r"task\.dataset: the trials could not load 'mnist': "):
        check_local_data(spec)
    assert not list(root.rglob("*-ubyte*"))  # no partial download left for the trials
    no_download = {"name": "mnist", "path": str(root), "options": {"download": False}}
    offline = make_spec(task={**task, "dataset": no_download})
    with pytest.raises(PreflightError, match=r"download=False: put torchvision's files for mnist"):
        check_local_data(offline)
    write_mnist(root, "MNIST")
    assert check_local_data(spec) is not None
    assert check_local_data(offline) is not None


def test_artifact_folder_is_created_and_checked(tmp_path: Path):
    store = tmp_path / "store"
    assert check_artifact_location(f"sqlite:///{store}/mlflow.db") == store
    assert store.is_dir()
    assert check_artifact_location(tmp_path / "ray") == tmp_path / "ray"
    assert check_artifact_location((tmp_path / "art").as_uri()) == tmp_path / "art"
    assert check_artifact_location(SERVER) is None
    assert check_artifact_location("s3://bucket/prefix") is None
    assert not list(store.iterdir())  # the probe file is gone


def test_unwritable_artifact_folder_is_refused_before_training(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(
        PreflightError,
        match=rf"^The artifact folder {blocker}/artifacts cannot be created: {blocker} is a file, "
        "not a folder. Move that file away",
    ):
        check_artifact_location(blocker / "artifacts")
    with pytest.raises(
        PreflightError, match=rf"^The artifact folder {blocker}/deeper/still cannot be created: "
    ):
        check_artifact_location(blocker / "deeper" / "still")
    # a path no one can make: neither a file in the way nor permissions (root passes those)
    with pytest.raises(
        PreflightError,
        match=r"^The SQLite store's folder /proc/lrsweep-nothing cannot be created or written \(",
    ):
        check_artifact_location("sqlite:////proc/lrsweep-nothing/mlflow.db")


def test_full_disk_is_refused_naming_free_and_needed_space(tmp_path: Path):
    with pytest.raises(PreflightError, match=r"has \d+ MB free, but at least 1000000000 MB"):
        check_artifact_location(tmp_path, min_free_mb=1e9)


# --- a real two-node cluster --------------------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[str]:
    """A head (1 CPU) and a worker node (1 CPU, ``worker_node: 1``, label ``zone=b``).

    Ray's files go to a private ``RAY_TMPDIR``: ``Cluster`` records its address in
    ``<tmp>/ray/ray_current_cluster``, where any other process's plain ``ray.init()`` on this
    machine would otherwise find it and join this test's cluster.
    """
    was_running = ray.is_initialized()
    _ray.shutdown_ray()
    ray_tmp = tempfile.mkdtemp(prefix="lrsweep-pf-", dir="/tmp")  # short: socket paths
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", ray_tmp)
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        try:
            cluster.add_node(num_cpus=1, resources={"worker_node": 1}, labels={"zone": "b"})
            cluster.wait_for_nodes()
            connect(cluster.address)
            yield cluster.address
        finally:
            _ray.shutdown_ray()
            cluster.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if was_running:
        _ray.init_ray(num_cpus=2)  # the session's local Ray (tests/conftest.py)


def shared_storage(tmp_path: Path) -> dict[str, Any]:
    return {"path": str(tmp_path / "ray"), "shared": True}


def test_resources_no_node_has_fail_fast_not_hang(two_nodes: str, tmp_path: Path):
    spec = make_spec(resources={"cpu": 1, "gpu": 1}, storage=shared_storage(tmp_path))
    with pytest.raises(
        PreflightError, match=r"resources\.gpu asks for 1 GPU .* largest node has 0"
    ):
        check_cluster(spec, address=two_nodes, tracking_uri=SERVER)
    # refused from the node table alone: no probe task was sent to a node (each would have
    # written its marker under the shared storage path), so nothing waited on the cluster
    assert not (tmp_path / "ray").exists()


def test_custom_resource_beyond_the_largest_node_is_named(two_nodes: str, tmp_path: Path):
    spec = make_spec(resources={"cpu": 1, "custom": {"worker_node": 2}})
    with pytest.raises(
        PreflightError, match=r"custom\.worker_node asks for 2 .* largest node has 1"
    ):
        check_cluster(spec, address=two_nodes, tracking_uri=SERVER)


def test_sqlite_tracking_on_two_nodes_is_refused(two_nodes: str, tmp_path: Path):
    spec = make_spec(storage=shared_storage(tmp_path))
    with pytest.raises(PreflightError, match=r"SQLite file on this machine, which the 2 nodes"):
        check_cluster(spec, address=two_nodes, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def test_unshared_storage_on_two_nodes_is_refused(two_nodes: str, tmp_path: Path):
    spec = make_spec(storage={"path": str(tmp_path / "ray")})
    with pytest.raises(PreflightError, match=r"storage\.path .* is not marked shared, but 2 nodes"):
        check_cluster(spec, address=two_nodes, tracking_uri=SERVER)


def test_image_folder_missing_on_a_worker_names_path_and_node(two_nodes: str, tmp_path: Path):
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    dataset = {"name": "image_folder", "path": str(images), "valid_pct": 0.2, "seed": 0}
    spec = make_spec(
        task={**load_spec(DIGITS).resolved()["task"], "dataset": dataset},
        storage=shared_storage(tmp_path),
    )
    shutil.rmtree(images)  # present when the spec was loaded, gone when the nodes look
    with pytest.raises(PreflightError) as raised:
        check_cluster(spec, address=two_nodes, tracking_uri=SERVER)
    message = str(raised.value)
    assert f"task.dataset.path: folder '{images}' does not exist" in message
    for alive in ray.nodes():  # reported once per node, each node named
        assert f"node {alive['NodeID'][:8]}): task.dataset.path" in message


def test_a_cluster_that_fits_reports_nodes_slots_and_versions(two_nodes: str, tmp_path: Path):
    spec = make_spec(
        resources={"cpu": 1, "custom": {"worker_node": 1}, "node_labels": {"zone": "b"}}
    )
    storage = StorageSpec(**shared_storage(tmp_path))  # run_sweep's storage_path overrides spec
    report = check_cluster(
        spec, address=two_nodes, tracking_uri="http://127.0.0.1:5000", storage=storage
    )
    assert report.multi_node and len(report.nodes) == 2
    assert report.nodes[0].is_head
    assert report.trial_slots == 1  # only the worker node has worker_node and zone=b
    assert report.trial_nodes == (report.nodes[1].name,)
    assert set(report.cluster_ray_versions.values()) == {ray.__version__}
    assert any("127.0.0.1" in warning for warning in report.warnings)
    assert not list((tmp_path / "ray").iterdir())  # the shared-storage markers are removed


def test_mlflow_credentials_the_nodes_lack_are_refused_naming_them(
    two_nodes: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The driver had the login of a basic-auth server, the nodes' workers did not: every trial
    failed with HTTP 401, after the parent run existed. Only the variables' names travel."""
    spec = make_spec(storage=shared_storage(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")  # after the nodes started
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-never-sent")
    with pytest.raises(PreflightError) as raised:
        check_cluster(spec, address=two_nodes, tracking_uri=SERVER)
    message = str(raised.value)
    assert "the MLflow server needs credentials this node's trials lack" in message
    assert "MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=... ray start" in message
    assert message.count("needs credentials") == 2 and "s3cret-never-sent" not in message
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")  # a driver without them asks nothing
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    assert check_cluster(spec, address=two_nodes, tracking_uri=SERVER).multi_node


@pytest.fixture
def postgres_store() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, as a tracking URI."""
    from _server_helpers import new_database

    with new_database("lrsweep_preflight") as name:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


def test_a_database_store_whose_artifacts_stay_on_this_disk_is_refused_on_a_cluster(
    postgres_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow gives an experiment of a database store ``./mlruns`` of the process creating it:
    on several nodes each trial would keep its checkpoints and model on its own disk."""
    from sweeps.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    check_artifacts_shared(postgres_store, "new", alive_nodes=1)  # one machine: one disk
    with pytest.raises(PreflightError, match=r"'new' .*does not exist yet.*\./mlruns"):
        check_artifacts_shared(postgres_store, "new", alive_nodes=2)
    tracker = Tracker(postgres_store)
    tracker.ensure_experiment("local")
    with pytest.raises(
        PreflightError, match=r"'local' .*keeps its artifacts in .*mlruns.*lrsweep server"
    ):
        check_artifacts_shared(postgres_store, "local", alive_nodes=3)
    tracker.client.create_experiment("shared", artifact_location="s3://bucket/lrsweep")
    check_artifacts_shared(postgres_store, "shared", alive_nodes=3)
    for other in ("http://mlflow:5000", "sqlite:////tmp/x/mlflow.db"):  # their own checks
        check_artifacts_shared(other, "new", alive_nodes=3)
