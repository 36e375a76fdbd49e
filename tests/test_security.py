"""Security (issue 8): loopback servers, no stock admin password, no code run from a weights file,
a spec or a ``--set`` value, and no secret logged to MLflow.

Each attack is real: the pickle and the YAML carry a payload that would create a marker file, and
the test checks both that the loader refuses it and that the marker does not exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.server import (
    MLFLOW_STOCK_ADMIN_PASSWORD,
    ServerConfig,
    ServerLaunch,
    prepare_server,
)
from sweeps.spec import SpecError, load_spec, load_suite, redact
from sweeps.tracking import default_tracking_uri
from trainers import Learner, build_model, make_dataloaders

REPO = Path(__file__).resolve().parents[1]
SECRET = "TOPSECRET-value-9f3a"
_SCRIPT = Path(sys.executable).with_name("lrsweep")
LRSWEEP = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from sweeps.cli import app; app(prog_name='lrsweep')"]
)
BASE: dict[str, Any] = {
    "name": "sec",
    "task": {"dataset": {"name": "digits"}, "image_size": 8, "epochs": 1},
    "seeds": [0],
    "strategies": [{"kind": "fixed", "lr": 0.01}],
}


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- servers bind to loopback ------------------------------------------------------------------


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[ServerLaunch]:
    """Replace ``serve`` in the CLI by preparing the launch only (nothing is started)."""
    launches: list[ServerLaunch] = []

    def fake_serve(config: ServerConfig, **_: Any) -> int:
        local = ServerConfig(
            **{
                **config.__dict__,
                "backend_store_uri": config.backend_store_uri or f"sqlite:///{tmp_path}/m.db",
                "artifacts_destination": str(tmp_path / "artifacts"),
            }
        )
        launches.append(prepare_server(local, environ={}))
        return 0

    monkeypatch.setattr("sweeps.server.serve", fake_serve)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ui.db").touch()  # `lrsweep ui` browses a store that is there
    return launches


def _host_arg(launch: ServerLaunch) -> str:
    argv = list(launch.argv)
    return argv[argv.index("--host") + 1]


@pytest.mark.parametrize(
    ("args", "host"),
    [
        (["server"], "127.0.0.1"),
        (["ui", "--tracking-uri", "sqlite:///ui.db"], "127.0.0.1"),
        (["server", "--host", "0.0.0.0"], "0.0.0.0"),
        (["ui", "--tracking-uri", "sqlite:///ui.db", "--host", "10.1.2.3"], "10.1.2.3"),
    ],
)
def test_servers_bind_loopback_unless_host_says_otherwise(
    launched: list[ServerLaunch], args: list[str], host: str
) -> None:
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert len(launched) == 1
    assert _host_arg(launched[0]) == host
    assert ServerConfig().host == "127.0.0.1"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (kernel hex, e.g. ``0100007F`` = 127.0.0.1) with a socket LISTENing on
    ``port``, from the kernel's own socket tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                found.add(address)
    return found


@pytest.mark.slow
def test_a_real_server_started_without_host_listens_on_loopback_only(tmp_path: Path) -> None:
    """The tests above stop at the launch; this one starts MLflow and asks the kernel."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["server", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    args += ["--artifacts-destination", str(tmp_path / "art"), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*LRSWEEP, *args, "--workers", "1"],
            cwd=tmp_path,
            env=env | {"PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed target
        while f"MLflow is serving at {url}" not in log.read_text():
            assert proc.poll() is None, f"lrsweep server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"lrsweep server not up:\n{log.read_text()}"
            time.sleep(0.3)
        listening = _listening_addresses(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert listening == {"0100007F"}, listening  # 127.0.0.1 alone: not 0.0.0.0, not ::


# --- basic auth refuses MLflow's stock admin password --------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        (MLFLOW_STOCK_ADMIN_PASSWORD, "publicly known stock default password"),
        (None, "MLFLOW_AUTH_ADMIN_PASSWORD .*it is not set"),
        ("short-pw", "at least 12 characters"),
    ],
)
def test_server_auth_refuses_a_default_or_weak_admin_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, password: str | None, message: str
) -> None:
    started: list[Any] = []
    monkeypatch.setattr("sweeps.server.start_server", lambda *a, **k: started.append(a))
    monkeypatch.chdir(tmp_path)
    if password is None:
        monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", password)
    result = _invoke("server", "--auth", "--port", str(_free_port()))
    assert result.exit_code == 2
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.output
    assert password is None or password not in result.output
    assert started == []
    assert not (tmp_path / ".lrsweep" / "auth").exists()


# --- weights and checkpoints never unpickle code ------------------------------------------------


class _Payload:
    """Unpickling this runs ``code``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def _malicious_file(path: Path, marker: Path, *, wrapped: bool) -> Path:
    """A torch file whose unpickling would create ``marker``; ``wrapped`` hides it inside an
    otherwise valid checkpoint layout."""
    payload: Any = _Payload(marker)
    if wrapped:
        payload = {"format": "lrsweep.learner/1", "model": {"w": torch.zeros(1)}, "x": payload}
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "inside-a-checkpoint"])
def test_the_malicious_file_is_live(tmp_path: Path, wrapped: bool) -> None:
    """Control: a plain ``torch.load(weights_only=False)`` does run the payload."""
    marker = tmp_path / "control-marker"
    path = _malicious_file(tmp_path / "evil.pt", marker, wrapped=wrapped)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.fixture(scope="module")
def learner() -> Learner:
    dls = make_dataloaders("digits", image_size=8, batch_size=64)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, dls, progress=False)


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "inside-a-checkpoint"])
def test_build_model_refuses_pretrained_weights_that_run_code(
    tmp_path: Path, wrapped: bool
) -> None:
    marker = tmp_path / "marker"
    path = _malicious_file(tmp_path / "evil.pt", marker, wrapped=wrapped)
    with pytest.raises(ValueError, match=r"evil\.pt.*weights_only=True.*refused"):
        build_model("simple_cnn", 10, pretrained=path, in_channels=1)
    assert not marker.exists()


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "inside-a-checkpoint"])
def test_learner_load_refuses_a_checkpoint_that_runs_code(
    tmp_path: Path, learner: Learner, wrapped: bool
) -> None:
    marker = tmp_path / "marker"
    path = _malicious_file(tmp_path / "evil.pt", marker, wrapped=wrapped)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"evil\.pt.*cannot be read safely"):
        learner.load(path)
    assert not marker.exists()
    after = learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


UNSAFE_CALLS = [
    (
        re.compile(r"torch\.load\((?![^)]*weights_only=True)"),
        "torch.load without weights_only=True",
    ),
    (re.compile(r"\bpickle\.loads?\(|\bcloudpickle\.loads?\("), "pickle.load"),
    (re.compile(r"yaml\.(unsafe_load|full_load)\(|Loader=yaml\.(Unsafe|Full)?Loader"), "yaml"),
    (re.compile(r"yaml\.load\((?![^)]*Loader=SpecLoader)"), "yaml.load without SpecLoader"),
    (re.compile(r"shell=True"), "a shell"),
    (re.compile(r"(?<![\w.])(eval|exec)\("), "eval/exec"),
]


# Ray Tune's own contract: a Searcher saves and restores its state with pickle in the sweep's
# storage folder, which Tuner.restore unpickles anyway (Ray trusts its storage path by design).
ALLOWED = {("sweeps/_ray.py", "pickle.load")}


def test_no_unsafe_deserialisation_or_shell_in_the_packages() -> None:
    offenders = []
    for package in ("sweeps", "trainers"):
        for path in sorted((REPO / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                for pattern, what in UNSAFE_CALLS:
                    where = path.relative_to(REPO).as_posix()
                    if pattern.search(code) and "``" not in code and (where, what) not in ALLOWED:
                        offenders.append(f"{where}:{number}: {what}")
    assert offenders == []


# --- specs are plain YAML: tags refused, nothing executed ---------------------------------------

YAML_PAYLOADS = [
    "name: !!python/object/apply:os.system ['touch {marker}']",
    "name: !!python/object/apply:subprocess.check_call [[touch, '{marker}']]",
    "name: !!python/object/new:subprocess.Popen [[touch, '{marker}']]",
    "name: !!python/name:os.system",
    "name: !!python/module:os",
    "name: !custom 'x'",
]


@pytest.mark.parametrize("payload", YAML_PAYLOADS)
def test_spec_yaml_tags_are_refused_and_nothing_runs(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "marker"
    base = {k: v for k, v in BASE.items() if k != "name"}
    path = tmp_path / "spec.yaml"
    path.write_text(payload.format(marker=marker) + "\n" + yaml.safe_dump(base))
    with pytest.raises(SpecError, match=r"spec\.yaml.*only plain YAML values are accepted"):
        load_spec(path)
    result = _invoke("validate", str(path))
    assert result.exit_code == 2
    assert "only plain YAML values are accepted" in result.stderr
    assert "Traceback" not in result.output
    assert not marker.exists()


def test_suite_yaml_tags_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "suite.yaml"
    path.write_text(
        f"name: !!python/object/apply:os.system ['touch {marker}']\n"
        "entries: [{spec_path: spec.yaml}]\n"
    )
    with pytest.raises(SpecError, match=r"suite\.yaml.*only plain YAML values"):
        load_suite(path)
    assert not marker.exists()


# --- secrets never reach MLflow params ---------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["password", "db_password", "API_TOKEN", "client_secret", "SecretKey", "passwd"]
)
def test_secret_named_keys_are_redacted_at_any_depth(key: str) -> None:
    config = {"task": {"dataset": {"options": {key: SECRET, "n": 1}}}, "l": [{key: [SECRET]}]}
    hidden = redact(config)
    assert SECRET not in repr(hidden)
    assert hidden["task"]["dataset"]["options"] == {key: "***", "n": 1}
    assert config["l"] == [{key: [SECRET]}]  # the input is left alone


@pytest.fixture
def options_any_builder_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dataset options as a builder taking ``**kwargs`` sees them: any name passes the spec.

    No built-in dataset takes a secret-named option (or ``cmd``), so the spec would refuse one
    by name; a user's own builder may take such a keyword, and these tests need one to carry a
    secret or a hostile value through the spec.
    """
    monkeypatch.setattr("sweeps.spec._task._dataset_options", lambda name: None)
    # nor does the driver's preflight, which opens a bundled dataset with the options as a trial
    # does: the trial, in its own worker, is left to refuse them
    monkeypatch.setattr("sweeps.preflight.check_local_data", lambda spec, **_: None)


def test_validate_prints_no_secret(tmp_path: Path, options_any_builder_takes: None) -> None:
    spec = {**BASE, "task": {**BASE["task"], "dataset": {"name": "digits"}}}
    spec["task"]["dataset"]["options"] = {"api_token": SECRET}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = _invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert "api_token: '***'" in result.output


@pytest.mark.parametrize(
    "override",
    [
        f"task.dataset.option.api_token={SECRET}",  # a misspelt path: the error quotes the --set
        f"task.dataset.optionz.url=https://user:{SECRET}@example.com/data",
        f"task.dataset.options.db_password=[{SECRET}",  # a value YAML refuses
    ],
)
def test_a_refused_override_is_quoted_without_its_secret(tmp_path: Path, override: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    result = _invoke("validate", str(path), "--set", override)
    assert result.exit_code == 2, result.output
    assert SECRET not in result.output
    assert "***" in result.output


@pytest.mark.slow
def test_a_real_sweep_logs_no_secret_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options_any_builder_takes: None
) -> None:
    """A tiny real sweep (Ray + MLflow) whose spec holds secrets: params and artifacts hide them.

    No built-in dataset takes a secret-named option: the driver's spec check is widened here
    (``options_any_builder_takes``), and the trial itself fails in its worker before it opens
    a child run; the spec reaches MLflow through the parent
    run's params and ``spec.yaml``, which is what is checked, together with every run's params
    and tags and every byte of the store.
    """
    from sweeps.run import run_sweep

    monkeypatch.chdir(tmp_path)
    options = {"api_token": SECRET, "nested": {"db_password": SECRET + "-2"}}
    spec = {
        **BASE,
        "task": {**BASE["task"], "dataset": {"name": "digits", "options": options}},
        "strategies": [{"kind": "random", "lr": {"min": 0.01, "max": 0.02}, "trials": 1}],
        "failure": {"max_failures": 0},
    }
    uri = default_tracking_uri(tmp_path)
    result = run_sweep(spec, tracking_uri=uri, storage_path=tmp_path / "ray")
    client = MlflowClient(uri)
    runs = client.search_runs([result.experiment_id])
    assert runs, "the sweep logged no run"
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["task.dataset.options.api_token"] == "***"
    assert parent.data.params["task.dataset.options.nested.db_password"] == "***"
    for run in runs:
        assert SECRET not in repr(run.data.params) + repr(run.data.tags)
    spec_yaml = Path(client.download_artifacts(result.parent_run_id, "spec.yaml", str(tmp_path)))
    assert "api_token: '***'" in spec_yaml.read_text() and SECRET not in spec_yaml.read_text()
    store = tmp_path / ".lrsweep"
    leaks = [p for p in store.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []


def test_tracking_uri_with_a_password_is_refused_and_not_echoed() -> None:
    uri = f"https://alice:{SECRET}@mlflow.example.com"
    with pytest.raises(SpecError, match=r"tracking\.uri: must not contain a password") as caught:
        load_spec({**BASE, "tracking": {"uri": uri}})
    assert SECRET not in str(caught.value)


# --- --set cannot inject anything but typed values -------------------------------------------

# (override, what happens): a SpecError matching the text, or ("inert", path, literal value kept)
SET_INJECTIONS: list[tuple[str, Any]] = [
    ("name=$(touch {marker})", "name: must match"),
    ("name=`touch {marker}`", "not valid YAML: found character '`'"),
    ("name=a; touch {marker}", "name: must match"),
    ("name=a && touch {marker} | cat > /dev/null", "name: must match"),
    ("task.epochs=$((1+2))", "task.epochs: must be a whole number"),
    ("task.epochs=${{EPOCHS}}", "task.epochs: must be a whole number"),
    ("task.epochs={{__class__: int}}", "task.epochs: must be a whole number"),
    ("__class__=x", "unknown key '__class__'"),
    ("task.__class__.__init__=x", "unknown key '__class__'"),
    ("task.dataset.__dict__=x", "unknown key '__dict__'"),
    ("task.opt=__import__('os').system('touch {marker}')", "task.opt: unknown value"),
    ("task.epochs=!!python/object/apply:os.system ['touch {marker}']", "only plain YAML"),
    ("seeds=[0, !!python/name:os.system ]", "only plain YAML"),
    ("seeds=&a [0]", "task|seeds"),  # an anchor alone is harmless YAML; see inert rows
    ("seeds=[*a]", "YAML aliases"),
    ("task.epochs=3\nname: evil", "not valid YAML"),
    ("tracking.uri=https://u:pw@host", "must not contain a password"),
    ("name=" + "x" * 10_001, "longer than 10000 characters"),
    ("task.opt=sgd\x00", "unacceptable character #x0000"),
    ("task.dataset.options.cmd=$(touch {marker})", ("inert", "cmd", "$(touch {marker})")),
    ("task.dataset.options.cmd='`rm -rf /`'", ("inert", "cmd", "`rm -rf /`")),
    ("task.dataset.options.path=../../etc/passwd", ("inert", "path", "../../etc/passwd")),
    ("task.epochs=!!int '3'", ("inert", "epochs", 3)),
]


@pytest.mark.parametrize(("override", "outcome"), SET_INJECTIONS)
def test_set_overrides_stay_typed_and_inert(
    tmp_path: Path,
    override: str,
    outcome: Any,
    options_any_builder_takes: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a shell would touch ./marker; relative, so that no name outgrows its length limit first
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    override = override.format(marker="marker")
    if isinstance(outcome, tuple):
        _, field, value = outcome
        value = value.format(marker="marker") if isinstance(value, str) else value
        spec = load_spec(BASE, overrides=[override])
        task = spec.task
        read = task.epochs if field == "epochs" else task.dataset.options[field]
        assert read == value and type(read) is type(value)
        assert spec.name == "sec"
    elif outcome == "task|seeds":
        spec = load_spec(BASE, overrides=[override])
        assert spec.seeds == [0]
    else:
        with pytest.raises(SpecError, match=re.escape(outcome) if "|" not in outcome else outcome):
            load_spec(BASE, overrides=[override])
    assert not marker.exists()


def test_set_shell_metacharacters_reach_no_shell_from_the_real_cli(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(BASE))
    overrides = ["--set", f"name=$(touch {marker})", "--set", f"task.opt=sgd; touch {marker}"]
    done = subprocess.run(
        [*LRSWEEP, "validate", str(spec), *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "name: must match" in done.stderr and "task.opt: unknown value" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not marker.exists()
