"""Security defaults and bad input found in review: a busy port, an exposed host, a password on
the server's command line, secrets in URL queries, lr-find's output paths and data errors."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.server import ServerConfig, ServerConfigError, prepare_server, serve
from sweeps.spec import redact, uri_has_password
from sweeps.tracking import TrackingUriError, check_tracking_uri, redact_uri

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on (as another server would)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_busy_port_is_refused_naming_it_before_anything_is_created(
    busy_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []
    monkeypatch.setattr("sweeps.server.start_server", lambda launch: started.append(launch))
    config = ServerConfig(
        backend_store_uri=f"sqlite:///{tmp_path / 'db' / 'm.db'}",
        artifacts_destination=str(tmp_path / "artifacts"),
        port=busy_port,
    )
    with pytest.raises(ServerConfigError, match=rf"port {busy_port} .*already in use.*--port"):
        serve(config)
    assert (
        started == [] and not (tmp_path / "db").exists() and not (tmp_path / "artifacts").exists()
    )


def test_cli_on_a_busy_port_exits_2_with_the_port_and_no_traceback(
    busy_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ui.db").touch()  # ui browses a store that is there
    result = CliRunner().invoke(app, ["ui", "--port", str(busy_port)])
    assert result.exit_code == 2
    assert f"port {busy_port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / ".lrsweep").exists()


def test_a_free_port_passes_the_check() -> None:
    from sweeps.server import check_port_free

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check_port_free("127.0.0.1", port)


def _serve_checked(config: object = None, *, on_starting: Any = None, **_: Any) -> int:
    """``serve`` whose checks all pass: it warns (``on_starting``) and starts nothing."""
    if on_starting is not None:
        on_starting()
    return 0


@pytest.mark.parametrize(
    ("args", "warned"),
    [
        (["server"], False),
        (["server", "--host", "localhost"], False),
        (["server", "--host", "0.0.0.0"], True),
        (["ui", "--tracking-uri", "sqlite:///ui.db", "--host", "0.0.0.0"], True),
    ],
)
def test_binding_beyond_loopback_without_auth_warns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], warned: bool
) -> None:
    monkeypatch.setattr("sweeps.server.serve", _serve_checked)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ui.db").touch()  # ui browses a store that is there
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    warning = "Warning: listening on every interface, not only this machine: with no authentication"
    assert (warning in result.stderr.replace("\n", " ")) is warned
    assert ("lrsweep server --auth" in result.stderr) is warned
    assert ("Add --allowed-hosts name:port" in result.stderr.replace("\n", " ")) is warned


@pytest.mark.parametrize("command", [["server"], ["ui", "--tracking-uri", "sqlite:///ui.db"]])
@pytest.mark.parametrize("where", ["option", "environment"])
def test_allowed_hosts_reach_the_server_and_silence_the_403_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str], where: str
) -> None:
    configs: list[Any] = []
    monkeypatch.setattr(
        "sweeps.server.serve", lambda config, **kw: configs.append(config) or _serve_checked(**kw)
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ui.db").touch()  # ui browses a store that is there
    args = [*command, "--host", "0.0.0.0"]
    if where == "option":
        args += ["--allowed-hosts", "mlflow.team.example:5000"]
    else:
        monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", "mlflow.team.example:5000")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Invalid Host header" not in result.stderr
    (config,) = configs
    expected = "mlflow.team.example:5000" if where == "option" else None
    assert config.allowed_hosts == expected


@pytest.mark.parametrize("option", ["backend_store_uri", "auth_db_uri"])
@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://mlflow:{pw}@127.0.0.1:5432/mlflow",
        "postgresql://127.0.0.1/mlflow?password={pw}",
    ],
)
def test_a_store_uri_with_a_password_is_refused_without_echoing_it(
    tmp_path: Path, option: str, uri: str
) -> None:
    secret = "hunter2-review-secret"
    config = ServerConfig(
        **{option: uri.format(pw=secret)},  # type: ignore[arg-type]
        artifacts_destination=str(tmp_path / "a"),
        auth=option == "auth_db_uri",
    )
    with pytest.raises(ServerConfigError, match=r"must not contain a password.*PGPASSWORD") as info:
        prepare_server(config, environ={"MLFLOW_AUTH_ADMIN_PASSWORD": "x" * 16})
    assert secret not in str(info.value)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@db/x?password=hunter2", "postgresql://u@db/x?password=***"),
        # a "#" does not end a secret value: "#f" may be the rest of it
        ("https://host/data?a=1&api_token=hun#ter2", "https://host/data?a=1&api_token=***"),
        ("https://host/data?a=1#f&token=hunter2", "https://host/data?a=1#f&token=***"),
        ("https://host?X-Amz-Security-Token=hunter2", "https://host?X-Amz-Security-Token=***"),
        ("https://u:hun#ter2@host/x", "https://u:***@host/x"),
        ("https://u:hun@ter2@host/x", "https://u:***@host/x"),
        ("https://u:hun ter2@host/x", "https://u:***@host/x"),
        ("https://host:443/@scope/pkg?q=1", "https://host:443/@scope/pkg?q=1"),
    ],
)
def test_secrets_in_url_queries_and_odd_passwords_are_redacted(url: str, expected: str) -> None:
    assert redact({"task": {"dataset": {"path": [url]}}}) == {
        "task": {"dataset": {"path": [expected]}}
    }


def test_validate_hides_a_token_in_a_dataset_uri_query() -> None:
    """In a URI the spec takes (a storage path: no dataset reads a URI, and digits reads no
    path at all, which run and now validate refuse)."""
    spec = str(REPO / "sweeps" / "specs" / "digits.yaml")
    path = "s3://bucket/sweeps?X-Amz-Security-Token=hunter2-review"
    result = CliRunner().invoke(app, ["validate", spec, "--set", f"storage.path={path}"])
    assert result.exit_code == 0, result.output
    assert "hunter2-review" not in result.output
    assert "X-Amz-Security-Token=***" in result.output


LR_FIND = ["lr-find", "--dataset", "digits", "--arch", "simple_cnn", "--image-size", "8"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "{tmp}"], r"--out '{tmp}' is a folder; give a file name"),
        (["--json", "{tmp}"], r"--json '{tmp}' is a folder; give a file name"),
        (["--out", "{tmp}/plot.xyz"], r"matplotlib cannot write '\.xyz' files.*\.png"),
        (
            ["--dataset", "mnist", "--path", "{tmp}/file.txt"],
            r"--dataset mnist \(--path\): Could not .*mnist",
        ),
    ],
)
def test_lr_find_refuses_bad_outputs_and_data_with_exit_2(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    args = [*LR_FIND, "--num-it", "20", *(arg.format(tmp=tmp_path) for arg in extra)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stderr.startswith("Error: ")
    assert re.search(message.format(tmp=re.escape(str(tmp_path))), result.stderr.replace("\n", " "))
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.png"))


def test_lr_find_prints_the_plot_file_it_wrote(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*LR_FIND, "--num-it", "20", "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.png").is_file()
    assert f"Plot: {tmp_path / 'x.png'}" in result.stdout


ODD_PASSWORDS = ["hun#ter2", "hun?ter2", "hun@ter2", "hun ter2", "hun%23ter2"]


@pytest.mark.parametrize("password", ODD_PASSWORDS)
@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_a_printed_tracking_uri_never_shows_an_odd_password(scheme: str, password: str) -> None:
    # urlsplit ends the host at "#" or "?": the URI was shown whole and not refused
    uri = f"{scheme}://alice:{password}@host:5000/db"
    assert redact_uri(uri) == f"{scheme}://host:5000/db"
    assert uri_has_password(uri)
    with pytest.raises(TrackingUriError, match="must not contain a password") as info:
        check_tracking_uri(uri, source="--tracking-uri")
    assert "ter2" not in str(info.value)


@pytest.mark.parametrize(
    ("uri", "has_password"),
    [
        ("postgresql://u@db/x?sslpassword=k", True),
        ("postgresql://u@db/x?passwd=k", True),
        ("http://u:@host:5000", False),
        ("http://u@host:5000", False),
        ("http://host:5000/@scope?q=1", False),
        ("not a url", False),
    ],
)
def test_uri_has_password_reads_the_user_information_and_the_query(
    uri: str, has_password: bool
) -> None:
    assert uri_has_password(uri) is has_password


def test_redact_and_redact_uri_differ_only_in_the_user() -> None:
    uri = "postgresql://alice:hun#ter2@db:5432/x?token=abc&n=1"
    assert redact(uri) == "postgresql://alice:***@db:5432/x?token=***&n=1"
    assert redact_uri(uri) == "postgresql://db:5432/x?token=***&n=1"


@pytest.mark.parametrize(
    "override", ["task.dataset.name=https://u:hunter2@host/x", "task.epochs=https://u:hunter2@h/x"]
)
def test_a_refused_value_is_quoted_with_its_password_masked(override: str) -> None:
    spec = str(REPO / "sweeps" / "specs" / "digits.yaml")
    result = CliRunner().invoke(app, ["validate", spec, "--set", override])
    assert result.exit_code == 2, result.output
    assert "'https://u:***@h" in result.output and "hunter2" not in result.output
