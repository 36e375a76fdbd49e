"""``lrsweep predict`` / ``sweeps.load_predictor`` by a trial run, a ``runs:/`` or ``models:/``
URI or a downloaded folder, on a real SQLite MLflow store laid out as DESIGN.md says.

The two trials' models are real ones: trainers Learners fitted on 12 px shapes and logged as a
trial logs its best model (``Tracker.log_pytorch_model`` with the data's statistics as
metadata), so no Ray sweep is run here (``test_run_sweep.py`` predicts with a swept trial's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from sweeps.best import BestConfigError
from sweeps.cli import app
from sweeps.predictor import is_model_reference, load_predictor
from sweeps.tracking import Tracker, default_tracking_uri, mlflow_tracking_uri

EXPERIMENT = "predict-test"
SHAPES = {"seed": 3, "n_per_class": 8}


def _fitted(seed: int, epochs: int) -> Any:
    from trainers import Learner, build_model, make_dataloaders

    dls = make_dataloaders("shapes", image_size=12, batch_size=12, valid_pct=0.25, **SHAPES)
    learn = Learner(build_model("simple_cnn", len(dls.classes)), dls, seed=seed, progress=False)
    learn.fit_one_cycle(epochs, 1e-2)
    return learn


def _trial(tracker: Tracker, exp_id: str, parent: str, arm: str, loss: float) -> str:
    """A finished trial run tagged as ``sweeps.trial`` tags one, with its ``best/`` metrics."""
    run = tracker.start_run(exp_id, run_name=f"{arm}-seed0", parent_run_id=parent)
    tracker.set_tags(run, {"sweeps.strategy": arm, "sweeps.arm": arm})
    tracker.log_params(run, {"strategy": arm, "lr": 0.01, "seed": 0})
    tracker.log_metrics(run, [("best/valid_loss", loss, 0), ("best/error_rate", 0.5, 0)])
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One sweep run with two trials holding real models (grid's the better), a third whose
    model was logged without its weights-only export, a failed trial without one, a run that
    is no trial, and three image files (one per class, at 20 px)."""
    from PIL import Image

    from trainers.data import open_dataset

    root = tmp_path_factory.mktemp("predict")
    uri = default_tracking_uri(root)
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent = tracker.start_run(exp_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    runs = {}
    for arm, loss, seed, epochs in (("grid", 0.4, 0, 3), ("lr_finder", 0.6, 1, 1)):
        runs[arm] = _trial(tracker, exp_id, parent, arm, loss)
        _log_model(tracker, runs[arm], _fitted(seed, epochs), root / arm)
        tracker.end_run(runs[arm])
    # a model as an lrsweep before 2026-12-07 logged it: pickled, with metadata, no export
    runs["pickled"] = _trial(tracker, exp_id, parent, "optuna", 0.7)
    _log_model(tracker, runs["pickled"], _fitted(0, 3), root / "pickled", export=False)
    tracker.end_run(runs["pickled"])
    runs["failed"] = _trial(tracker, exp_id, parent, "random", 0.3)
    tracker.set_tags(runs["failed"], {"sweeps.stop_reason": "failed"})
    tracker.end_run(runs["failed"], "FAILED")
    tracker.end_run(parent)
    runs["notebook"] = tracker.start_run(exp_id, run_name="notebook")
    tracker.end_run(runs["notebook"])
    source = open_dataset("shapes", **SHAPES)
    images = []
    for index in (0, 8, 16):
        images.append(root / f"{source.classes[int(source.labels[index])]}.png")
        Image.fromarray(source.images(20)[index].permute(1, 2, 0).numpy()).save(images[-1])
    return {"uri": uri, "root": root, "parent": parent, "images": images, **runs}


def _log_model(
    tracker: Tracker, run_id: str, learn: Any, folder: Path, *, export: bool = True
) -> None:
    """Log ``learn``'s model as a trial does, its export written in ``folder``; without
    ``export`` as an lrsweep before 2026-12-07 did (pickled, with the metadata alone)."""
    from sweeps.predictor import predictor_files

    folder.mkdir()
    metadata, files = predictor_files(learn, folder)
    example, model = learn.dls.valid_images[:2], learn.model.cpu()
    tracker.log_pytorch_model(run_id, model, example, metadata, extra_files=files if export else [])


def _predict(*args: str, uri: str | None = None, images: list[Path] | None = None) -> Any:
    files = [str(path) for path in images or []]
    given = ["--tracking-uri", uri] if uri else []
    return CliRunner().invoke(app, ["predict", *args, *files, *given])


def _answer(result: Any) -> dict[str, Any]:
    """The JSON of a run of ``lrsweep predict --format json``, which must have exited 0."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _probabilities(answer: dict[str, Any], classes: list[str]) -> torch.Tensor:
    """The probabilities the JSON gives each image, in ``classes``' order (``--top 3``)."""
    rows = []
    for image in answer["images"]:
        by_class = {p["class"]: p["probability"] for p in image["predictions"]}
        rows.append([by_class[name] for name in classes])
    return torch.tensor(rows)


def _expected(
    store: dict[str, Any], model_uri: str, **kwargs: Any
) -> tuple[torch.Tensor, list[str]]:
    predictor = load_predictor(model_uri, device="cpu", **kwargs)
    return predictor.predict([str(path) for path in store["images"]]), predictor.classes


def _same(answer: dict[str, Any], expected: tuple[torch.Tensor, list[str]]) -> bool:
    """Whether the JSON's probabilities are ``expected``'s (it rounds them to 4 places)."""
    return torch.allclose(_probabilities(answer, expected[1]), expected[0], atol=6e-5)


def test_the_two_trials_models_predict_apart(store: dict[str, Any]) -> None:
    # every test below tells one model's output from another's: they must differ
    grid = _expected(store, f"runs:/{store['grid']}/model", tracking_uri=store["uri"])
    finder = _expected(store, f"runs:/{store['lr_finder']}/model", tracking_uri=store["uri"])
    assert (grid[0] - finder[0]).abs().max() > 1e-2


def test_predict_by_runs_uri_uses_that_run_and_names_it(store: dict[str, Any]) -> None:
    model_uri = f"runs:/{store['lr_finder']}/model"  # not the best trial's
    args = (model_uri, "--top", "3")
    answer = _answer(_predict(*args, "--format", "json", uri=store["uri"], images=store["images"]))
    assert (answer["model_uri"], answer["run_id"]) == (model_uri, store["lr_finder"])
    assert _same(answer, _expected(store, model_uri, tracking_uri=store["uri"]))
    text = _predict(*args, uri=store["uri"], images=store["images"])
    assert text.exit_code == 0, text.output
    assert text.stderr.strip() == f"model {model_uri} (logged by run {store['lr_finder']})"
    assert len(text.stdout.splitlines()) == len(store["images"])


def test_predict_by_registered_version_alias_and_logged_model_id(store: dict[str, Any]) -> None:
    import mlflow

    with mlflow_tracking_uri(store["uri"]):
        version = mlflow.register_model(f"runs:/{store['lr_finder']}/model", "shapes-cnn")
    Tracker(store["uri"]).client.set_registered_model_alias(
        "shapes-cnn", "champion", str(version.version)
    )
    expected_uri = f"runs:/{store['lr_finder']}/model"
    expected = _expected(store, expected_uri, tracking_uri=store["uri"])
    with mlflow_tracking_uri(store["uri"]):  # MLflow 3's logged model, by its id
        logged = f"models:/{mlflow.models.get_model_info(expected_uri).model_id}"
    for model_uri in (
        f"models:/shapes-cnn/{version.version}",
        "models:/shapes-cnn@champion",
        logged,
    ):
        args = (model_uri, "--top", "3", "--format", "json")
        answer = _answer(_predict(*args, uri=store["uri"], images=store["images"]))
        assert (answer["model_uri"], answer["run_id"]) == (model_uri, store["lr_finder"])
        assert _same(answer, expected)
        assert _same(answer, _expected(store, model_uri, tracking_uri=store["uri"]))


def test_predict_by_downloaded_folder_needs_no_store(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    model_uri = f"runs:/{store['grid']}/model"
    with mlflow_tracking_uri(store["uri"]):
        mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "copy"))
    expected = _expected(store, model_uri, tracking_uri=store["uri"])
    monkeypatch.chdir(tmp_path)  # no mlflow.db here, nor a tracking URI in the environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    answer = _answer(
        _predict("copy/model", "--top", "3", "--format", "json", images=store["images"])
    )
    assert (answer["model_uri"], answer["run_id"]) == ("copy/model", store["grid"])
    assert _same(answer, expected)
    assert not (tmp_path / ".lrsweep").exists()
    with pytest.raises(BestConfigError, match=r"holds no MLmodel file, but \S*copy/model does"):
        load_predictor(str(tmp_path / "copy"))
    with pytest.raises(BestConfigError, match=r"^model nowhere/model: no such folder, nor a "):
        load_predictor("nowhere/model")
    # a folder that holds no model stays an experiment name, and the error says why
    result = _predict("copy", uri=store["uri"], images=store["images"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: experiment 'copy' does not exist in ")
    assert "(copy is a folder too, but no model: the folder holds no MLmodel file, but " in (
        result.stderr
    )


def test_a_file_uri_loads_the_folder_it_names(store: dict[str, Any], tmp_path: Path) -> None:
    """MLflow's ``Model.load`` refuses ``file:`` URIs; they name the folder their path does
    (``%20`` decoded), the store's own (a logged model's ``artifact_location``) included."""
    import mlflow

    model_uri = f"runs:/{store['grid']}/model"
    with mlflow_tracking_uri(store["uri"]):
        mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "my copy"))
        model_id = mlflow.models.get_model_info(model_uri).model_id
    stored = Tracker(store["uri"]).client.get_logged_model(model_id).artifact_location
    folder = tmp_path / "my copy" / "model"
    files = [str(path) for path in store["images"]]
    expected = load_predictor(model_uri, tracking_uri=store["uri"], device="cpu").predict(files)
    assert folder.as_uri().startswith("file:///") and "my%20copy" in folder.as_uri()
    assert stored.startswith("file:///")
    for uri in (
        folder.as_uri(),
        f"file:{folder}",
        f"file://localhost{folder.as_uri()[7:]}",
        stored,
    ):
        assert torch.equal(load_predictor(uri, device="cpu").predict(files), expected), uri
    answer = _answer(
        _predict(folder.as_uri(), "--top", "3", "--format", "json", images=store["images"])
    )
    assert (answer["model_uri"], answer["run_id"]) == (folder.as_uri(), store["grid"])
    assert _same(answer, _expected(store, str(folder)))
    # a file URI of a folder that is not there: the error of its path, naming the URI
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(BestConfigError) as by_path:
        load_predictor(str(missing))
    with pytest.raises(BestConfigError) as by_uri:
        load_predictor(missing.as_uri())
    assert str(by_uri.value) == str(by_path.value).replace(str(missing), missing.as_uri(), 1)
    result = _predict(missing.as_uri(), images=store["images"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == f"Error: {by_uri.value}"
    with pytest.raises(BestConfigError, match=r"^model file://server/x/model: a file: URI of host"):
        load_predictor("file://server/x/model")


@pytest.mark.parametrize("host", ["server", "localhost", "server:8080"])
def test_a_file_uri_of_another_host_is_refused_without_its_user(host: str) -> None:
    """A URI is shown without its user (``https://token@host``): the refusal of a ``file:`` URI
    of another host named the host with the user (``'TOKEN@server'``)."""
    with pytest.raises(BestConfigError) as refused:
        load_predictor(f"file://TOKEN-1234@{host}/x/model")
    assert str(refused.value) == (
        f"model file://{host}/x/model: a file: URI of host {host!r}, which this machine cannot "
        "read; give a local folder (file:///abs/path/model or the path)."
    )
    assert "TOKEN-1234" not in str(refused.value)


def test_a_name_that_is_both_a_model_folder_and_an_experiment_is_refused(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lrsweep predict NAME`` took a folder NAME holding MLmodel over the experiment NAME;
    with both there it guesses neither, and says how to name each. With one of them, that one
    is used, as before."""
    import mlflow

    with mlflow_tracking_uri(store["uri"]):  # not the best trial's model: told apart below
        mlflow.artifacts.download_artifacts(
            f"runs:/{store['lr_finder']}/model", dst_path=str(tmp_path / "download")
        )
    (tmp_path / "download" / "model").rename(tmp_path / EXPERIMENT)
    monkeypatch.chdir(tmp_path)
    for args in ([EXPERIMENT], [EXPERIMENT, "--trial", store["grid"]]):
        result = _predict(*args, "--format", "json", uri=store["uri"], images=store["images"])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.strip() == (
            f"Error: {EXPERIMENT} is both a model folder (it holds MLmodel) and an experiment of "
            f"{store['uri']}; give ./{EXPERIMENT} for the folder, or, for the sweep, one of its "
            "trials' models: --trial RUN_ID or runs:/RUN_ID/model (lrsweep best "
            f"{EXPERIMENT} names its best trial's run id)."
        )
    by_name = {
        f"./{EXPERIMENT}": store["lr_finder"],  # the folder, as the message says
        str(tmp_path / EXPERIMENT): store["lr_finder"],
        f"runs:/{store['grid']}/model": store["grid"],  # the sweep's best trial, named
    }
    for name, run_id in by_name.items():
        answer = _answer(
            _predict(name, "--format", "json", uri=store["uri"], images=store["images"])
        )
        assert answer["run_id"] == run_id, name
    # only the folder: a store without that experiment (or no store at all) takes the folder
    other = Tracker(default_tracking_uri(tmp_path / "other")).uri
    answer = _answer(_predict(EXPERIMENT, "--format", "json", uri=other, images=store["images"]))
    assert (answer["model_uri"], answer["run_id"]) == (EXPERIMENT, store["lr_finder"])
    # a named server that never answers is refused up front after one probe (5 s), as for any
    # model: the check for an experiment NAME never reaches MLflow's client, which would wait
    # out its request timeout (120 s) on each of its retries
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(0.2)
        connections: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    connections.append(silent.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            server = f"http://127.0.0.1:{silent.getsockname()[1]}"
            refused = _predict(EXPERIMENT, "--format", "json", uri=server, images=store["images"])
        finally:
            stop.set()
            thread.join()
            for connection in connections:
                connection.close()
    assert refused.exit_code == 2
    assert refused.stderr.startswith(f"Error: Cannot reach the MLflow server {server} (no answer")
    assert len(connections) == 1  # the probe's GET /health alone


@pytest.mark.parametrize("experiment", [None, EXPERIMENT])
def test_predict_by_trial_uses_that_trial_not_the_best(
    store: dict[str, Any], experiment: str | None
) -> None:
    best = _answer(
        _predict(EXPERIMENT, "--format", "json", uri=store["uri"], images=store["images"])
    )
    assert best["run_id"] == store["grid"]  # the lower best/valid_loss
    given = [experiment] if experiment else []  # --trial RUN_ID IMAGE... leaves it out
    args = (*given, "--trial", store["lr_finder"], "--top", "3")
    answer = _answer(_predict(*args, "--format", "json", uri=store["uri"], images=store["images"]))
    model_uri = f"runs:/{store['lr_finder']}/model"
    assert (answer["model_uri"], answer["run_id"]) == (model_uri, store["lr_finder"])
    assert _same(answer, _expected(store, model_uri, tracking_uri=store["uri"]))
    text = _predict(*args, uri=store["uri"], images=store["images"])
    assert text.exit_code == 0, text.output
    assert text.stderr.strip() == (
        f"model {model_uri} (trial of experiment {EXPERIMENT!r}, arm lr_finder, "
        "best/valid_loss 0.6)"
    )


def _filled(texts: list[str], store: dict[str, Any], **more: str) -> list[str]:
    """``texts`` with ``{grid}``, ``{parent}`` ... replaced by the store's run ids."""
    ids = {key: value for key, value in store.items() if isinstance(value, str)}
    return [text.format(**ids, **more) for text in texts]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs:/{grid}/model", "--metric", "valid_loss"], "--metric picks the best trial of an "),
        (["--trial", "{grid}", "--strategy", "grid"], "--strategy picks the best trial of an "),
        (["{folder}", "--run-id", "{parent}", "--metric", "error_rate"], "--metric and --run-id "),
        (["--trial", "{grid}", "models:/x/1"], "--trial and models:/x/1 both name a model: "),
    ],
)
def test_options_that_pick_the_best_trial_are_refused_with_a_named_model(
    store: dict[str, Any], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    given = _filled(args, store, folder=str(tmp_path / "model"))
    result = _predict(*given, uri=store["uri"], images=store["images"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: " + message)
    assert result.stderr.rstrip().endswith(
        (
            "already names the model: leave it out.",
            "already names the model: leave them out.",
            "give one of them.",
        )
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trial", "0123456789abcdef"], "--trial: run 0123456789abcdef: no such run in sqlite:"),
        (["--trial", "{parent}"], "--trial: run {parent} is a sweep run (the parent of its "),
        (["--trial", "{notebook}"], "--trial: run {notebook} is no trial run of lrsweep (it has "),
        (["--trial", "{failed}"], "--trial: trial {failed} logged no model (FAILED, stop reason "),
        (["other", "--trial", "{grid}"], "--trial: run {grid} is a trial of experiment 'predict-"),
        (["runs:/0123456789abcdef/model"], "model runs:/0123456789abcdef/model: run 0123456789ab"),
        (["runs:/{grid}/checkpoints"], "model runs:/{grid}/checkpoints: run {grid} has no MLflow "),
        (["models:/never-registered/1"], "model models:/never-registered/1: no registered model "),
    ],
)
def test_a_model_that_is_not_there_is_one_line_naming_it(
    store: dict[str, Any], args: list[str], message: str
) -> None:
    result = _predict(*_filled(args, store), uri=store["uri"], images=store["images"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: " + _filled([message], store)[0])
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_registered_model_without_that_version_or_alias_lists_those_it_has(
    store: dict[str, Any],
) -> None:
    import mlflow

    with mlflow_tracking_uri(store["uri"]):
        mlflow.register_model(f"runs:/{store['grid']}/model", "grid-cnn")
    for model_uri, message in (
        ("models:/grid-cnn/9", "registered model 'grid-cnn' has no version 9 (versions: ['1']"),
        ("models:/grid-cnn@prod", "registered model 'grid-cnn' has no alias 'prod' (aliases: []"),
    ):
        result = _predict(model_uri, uri=store["uri"], images=store["images"])
        assert result.exit_code == 2
        assert result.stderr.strip() == f"Error: model {model_uri}: {message})."
        with pytest.raises(BestConfigError, match=f"^model {model_uri}: registered model"):
            load_predictor(model_uri, tracking_uri=store["uri"])
    listed = _predict("models:/grid/1", uri=store["uri"], images=store["images"])
    assert "(registered there: [" in listed.stderr and "'grid-cnn'" in listed.stderr


def test_predict_with_a_trial_and_no_image_says_so(store: dict[str, Any]) -> None:
    result = _predict("--trial", store["grid"], "missing.png", uri=store["uri"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no image files given (missing.png is no file): ")


@pytest.mark.parametrize(("holds", "said"), [([], " (FOLDER: empty)"), (["a.png"], "")])
def test_a_folder_given_as_an_image_is_named_as_a_folder(
    store: dict[str, Any], tmp_path: Path, holds: list[str], said: str
) -> None:
    """It was "no such image file: FOLDER", of a folder that is there."""
    folder = tmp_path / "FOLDER"
    folder.mkdir()
    for name in holds:
        (folder / name).write_bytes(store["images"][0].read_bytes())
    model_uri = f"runs:/{store['grid']}/model"
    result = _predict(model_uri, str(store["images"][0]), str(folder), uri=store["uri"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"Error: {folder} is a folder, not an image file{said.replace('FOLDER', str(folder))}: "
        f"give the image files in it (e.g. {folder}/*.png)."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runs:/0a1b/model", True),
        ("models:/shapes-cnn/3", True),
        ("models:/shapes-cnn@champion", True),
        ("s3://bucket/models/m-1", True),
        ("file:///abs/copy/model", True),
        ("file:copy/model", True),
        ("digits-lr", False),
        ("team/digits-lr", False),  # tracking.experiment may hold a /
        ("FOLDER", True),
        ("EMPTY", False),
    ],
)
def test_is_model_reference(tmp_path: Path, text: str, expected: bool) -> None:
    (tmp_path / "with").mkdir()
    (tmp_path / "with" / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "empty").mkdir()
    folders = {"FOLDER": str(tmp_path / "with"), "EMPTY": str(tmp_path / "empty")}
    assert is_model_reference(folders.get(text, text)) is expected


@pytest.mark.parametrize(
    "model_uri",
    [
        "https://alice:TOPSECRET@127.0.0.1:9/artifacts/model",
        "s3://AKIAEXAMPLE:TOPSECRET@bucket/models/m-1",
        "mlflow-artifacts://alice:TOPSECRET@127.0.0.1:9/0/abc/artifacts/model",
        "https://127.0.0.1:9/artifacts/model?password=TOPSECRET",
    ],
)
def test_a_model_uri_with_a_password_is_refused_without_showing_it(
    store: dict[str, Any], model_uri: str
) -> None:
    # MLflow's and boto's errors quote the URI (boto: 'Invalid bucket name "AKIA...:secret@b"')
    for more in (["--format", "text"], ["--format", "json"], ["--trial", "abc"], ["--top", "2"]):
        ranked = ["--metric", "valid_loss"] if more[0] == "--top" else []  # refused: said so
        result = _predict(model_uri, *more, *ranked, uri=store["uri"], images=store["images"])
        assert result.exit_code == 2, result.output
        assert "TOPSECRET" not in result.output and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        if more[0] == "--format":
            assert result.stderr.startswith("Error: model ") and "holds a password" in (
                result.stderr
            )
    with pytest.raises(BestConfigError, match="holds a password") as refused:
        load_predictor(model_uri)
    assert "TOPSECRET" not in str(refused.value)


@pytest.mark.parametrize(
    "model_uri",
    [
        "https://tok3n@127.0.0.1:9/artifacts/model",  # MLflow's http client: a ValueError
        "mlflow-artifacts://tok3n@127.0.0.1:9/0/abc/artifacts/model",
    ],
)
def test_a_model_uri_its_artifact_client_cannot_read_is_one_line_exit_2(
    store: dict[str, Any], model_uri: str
) -> None:
    """Any failure of a foreign artifact client (MLflow's http one, boto, google-cloud) is the
    one-line error every other missing model is, with the URI's user (a token) left out."""
    result = _predict(model_uri, uri=store["uri"], images=store["images"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "tok3n" not in result.output
    assert result.stderr.startswith(f"Error: model {model_uri.replace('tok3n@', '')}: ")
    assert len(result.stderr.strip().splitlines()) == 1
    # an http(s) address says how to name a model an MLflow server holds (it said nothing)
    said = " ".join(result.stderr.split())
    named = "give runs:/<run id>/model or models:/<name>/<version> and the server as --tracking-uri"
    assert (named in said) == model_uri.startswith("https:"), said


def test_the_model_loads_from_its_weights_only_export_as_the_pickled_model_predicts(
    store: dict[str, Any],
) -> None:
    import mlflow.pytorch

    from trainers import Predictor

    model_uri = f"runs:/{store['grid']}/model"
    predictor = load_predictor(model_uri, tracking_uri=store["uri"], device="cpu")
    with mlflow_tracking_uri(store["uri"]):
        pickled = mlflow.pytorch.load_model(model_uri)
        fields = mlflow.models.Model.load(model_uri).metadata["predictor"]
    assert type(predictor.model) is type(pickled)  # rebuilt by build_model, not unpickled
    assert predictor.model is not pickled
    for name, weights in pickled.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[name], weights), name
    for name in ("classes", "image_size", "in_channels", "mean", "std", "resize_method"):
        assert getattr(predictor, name) == fields[name], name
    reference = Predictor(
        pickled, **{k: v for k, v in fields.items() if k not in ("arch", "n_classes")}
    )
    files = [str(path) for path in store["images"]]
    assert torch.equal(predictor.predict(files), reference.predict(files))


def test_a_model_without_the_export_is_refused_unless_pickle_is_allowed(
    store: dict[str, Any],
) -> None:
    model_uri = f"runs:/{store['pickled']}/model"
    with pytest.raises(BestConfigError, match=r"holds no weights-only export .*allow_pickle=True"):
        load_predictor(model_uri, tracking_uri=store["uri"])
    refused = _predict(model_uri, uri=store["uri"], images=store["images"])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert "lrsweep predict --allow-pickle" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    args = (model_uri, "--allow-pickle", "--top", "3", "--format", "json")
    answer = _answer(_predict(*args, uri=store["uri"], images=store["images"]))
    expected = _expected(store, model_uri, tracking_uri=store["uri"], allow_pickle=True)
    assert _same(answer, expected)
    # a model with the export loads from it whether pickles are allowed or not
    grid = f"runs:/{store['grid']}/model"
    with_export = load_predictor(grid, tracking_uri=store["uri"], allow_pickle=True)
    without = load_predictor(grid, tracking_uri=store["uri"])
    files = [str(path) for path in store["images"]]
    assert torch.equal(with_export.predict(files), without.predict(files))


def test_a_model_without_the_export_whose_code_is_gone_says_so_with_allow_pickle(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial logged by other code (an older lrsweep, a model class of one's own): without
    the export, --allow-pickle unpickles a model whose class this Python lacks, which said
    only "cannot be read (ModuleNotFoundError: No module named ...)"; without --allow-pickle
    the refusal offered unpickling as the only way."""
    import importlib
    import sys

    (tmp_path / "gone_models.py").write_text(
        "import torch\n"
        "class GoneNet(torch.nn.Linear):\n"
        "    def forward(self, x):\n"
        "        return super().forward(x.flatten(1))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = importlib.import_module("gone_models").GoneNet(3 * 12 * 12, 3)
    tracker = Tracker(default_tracking_uri(tmp_path))
    run_id = tracker.start_run(tracker.ensure_experiment(EXPERIMENT), run_name="grid-seed0")
    fields = {"classes": ["a", "b", "c"], "image_size": 12, "in_channels": 3}
    metadata = {"predictor": {**fields, "mean": [0.5] * 3, "std": [0.25] * 3}}
    tracker.log_pytorch_model(run_id, model, torch.zeros(2, 3, 12, 12), metadata)
    tracker.end_run(run_id)
    monkeypatch.delitem(sys.modules, "gone_models")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    model_uri = f"runs:/{run_id}/model"
    refused = _predict(model_uri, uri=tracker.uri, images=store["images"])
    assert refused.exit_code == 2 and "re-run the trial with this lrsweep" in refused.stderr
    result = _predict(model_uri, "--allow-pickle", uri=tracker.uri, images=store["images"])
    assert result.exit_code == 2 and result.stdout == ""
    said = result.stderr.strip()
    assert said.startswith(f"Error: model {model_uri}: its pickled model names code this Python")
    assert "No module named 'gone_models'" in said and "re-run the trial" in said
    assert len(said.splitlines()) == 1


class _Payload:
    """Unpickling this writes ``marker``: what a malicious model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def test_a_model_file_that_runs_code_is_never_unpickled_by_default(
    store: dict[str, Any], tmp_path: Path
) -> None:
    """A downloaded model folder whose pickled ``data/model.pth`` was swapped for one that runs
    code on unpickling: with its export, the prediction comes from the export alone; without
    it, the model is refused. Only ``allow_pickle`` runs it (the control: the file is live)."""
    import mlflow

    from trainers.export import EXPORT_FORMAT

    with mlflow_tracking_uri(store["uri"]):
        for arm in ("grid", "pickled"):
            uri = f"runs:/{store[arm]}/model"
            mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / arm))
    marker = tmp_path / "marker"
    for arm in ("grid", "pickled"):
        torch.save(_Payload(marker), tmp_path / arm / "model" / "data" / "model.pth")
    files = [str(path) for path in store["images"]]
    expected = _expected(store, f"runs:/{store['grid']}/model", tracking_uri=store["uri"])
    assert torch.equal(load_predictor(str(tmp_path / "grid" / "model")).predict(files), expected[0])
    with pytest.raises(BestConfigError, match="holds no weights-only export"):
        load_predictor(str(tmp_path / "pickled" / "model"))
    assert not marker.exists()
    # an export that is not weights only is refused too, named, and runs nothing
    exported = tmp_path / "grid" / "model" / "extra_files" / "export.pt"
    torch.save({"format": EXPORT_FORMAT, "x": _Payload(marker)}, exported)
    with pytest.raises(BestConfigError, match=r"its export extra_files/export\.pt does not load"):
        load_predictor(str(tmp_path / "grid" / "model"))
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017  the payload is no model: what fails is MLflow's
        load_predictor(str(tmp_path / "pickled" / "model"), allow_pickle=True)
    assert marker.read_text() == "pwned"


def _one_model(root: Path) -> tuple[str, str, Path]:
    """A store of its own holding one model logged as a trial logs it: the store's URI, the
    model's ``runs:/`` URI and its export's file in the store's artifacts (to damage)."""
    import mlflow

    tracker = Tracker(default_tracking_uri(root))
    run_id = tracker.start_run(tracker.ensure_experiment(EXPERIMENT), run_name="grid-seed0")
    _log_model(tracker, run_id, _fitted(0, 1), root / "written")
    tracker.end_run(run_id)
    model_uri = f"runs:/{run_id}/model"
    with mlflow_tracking_uri(tracker.uri):
        model_id = mlflow.models.get_model_info(model_uri).model_id
    location = tracker.client.get_logged_model(model_id).artifact_location
    return tracker.uri, model_uri, Path(location.removeprefix("file://")) / "extra_files/export.pt"


@pytest.mark.parametrize("damage", ["runs code", "weights of another shape"])
def test_an_export_that_does_not_load_is_one_line_naming_it_with_no_advice_to_unpickle(
    store: dict[str, Any], tmp_path: Path, damage: str
) -> None:
    """torch's error for an export that is not weights only is paragraphs long and tells how
    to load it unsafely (``weights_only=False``, ``add_safe_globals``); a state dict that does
    not fit is a line per tensor; and either named the temporary copy the export was read
    from, deleted by then."""
    from trainers.export import EXPORT_FORMAT

    uri, model_uri, exported = _one_model(tmp_path)
    marker = tmp_path / "marker"
    if damage == "runs code":
        torch.save({"format": EXPORT_FORMAT, "x": _Payload(marker)}, exported)
    else:
        state = torch.load(exported, weights_only=True)
        state["model"] = {k: v[..., :1] if v.ndim > 1 else v for k, v in state["model"].items()}
        torch.save(state, exported)
    result = _predict(model_uri, uri=uri, images=store["images"])
    assert result.exit_code == 2 and result.stdout == ""
    said = result.stderr.strip()
    assert said.startswith(f"Error: model {model_uri}: its export extra_files/export.pt does not")
    assert len(said.splitlines()) == 1, said
    assert f"{model_uri}/extra_files/export.pt" in said and "lrsweep-model-" not in said
    for advice in ("weights_only=False", "add_safe_globals", "\x1b"):
        assert advice not in said
    # the pickled model is offered only for an export that is damaged, never for one altered
    unpickle = "pass allow_pickle=True (lrsweep predict --allow-pickle) to unpickle its pickled"
    assert (unpickle in said) is (damage != "runs code")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("cut short", "PytorchStreamReader failed reading zip archive"),
        ("weights of another shape", "holds weights that do not fit its model 'simple_cnn'"),
        (
            "removed",
            "its MLmodel lists the weights-only export extra_files/export.pt, which cannot",
        ),
    ],
)
def test_an_unreadable_export_falls_back_to_the_pickled_model_only_with_allow_pickle(
    store: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    why: str,
) -> None:
    """An export its MLmodel lists that is damaged or missing: refused, one line saying how to
    use the pickled model anyway; with ``allow_pickle`` that model answers (the same weights,
    the same predictions) and a warning names the export and why."""
    uri, model_uri, exported = _one_model(tmp_path)
    files = [str(path) for path in store["images"]]
    predictor = load_predictor(model_uri, tracking_uri=uri, device="cpu")
    expected = predictor.predict(files), predictor.classes
    if damage == "cut short":
        exported.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    elif damage == "removed":
        exported.unlink()
    else:
        state = torch.load(exported, weights_only=True)
        state["model"] = {k: v[..., :1] if v.ndim > 1 else v for k, v in state["model"].items()}
        torch.save(state, exported)
    unpickle = "pass allow_pickle=True (lrsweep predict --allow-pickle) to unpickle its pickled"
    with pytest.raises(BestConfigError, match=f"^model {model_uri}: ") as refused:
        load_predictor(model_uri, tracking_uri=uri)
    assert why in str(refused.value) and unpickle in str(refused.value)
    assert "\n" not in str(refused.value)
    result = _predict(model_uri, uri=uri, images=store["images"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == f"Error: {refused.value}"
    with caplog.at_level(logging.WARNING, logger="sweeps.predictor"):
        allowed = load_predictor(model_uri, tracking_uri=uri, device="cpu", allow_pickle=True)
    assert torch.equal(allowed.predict(files), expected[0])
    [warned] = [record for record in caplog.records if record.name == "sweeps.predictor"]
    assert warned.levelno == logging.WARNING
    said = warned.getMessage()
    assert said.startswith(f"model {model_uri}: its ") and why in said
    assert said.endswith("; unpickling its pickled model instead (allow_pickle)")
    args = (model_uri, "--allow-pickle", "--top", "3", "--format", "json")
    assert _same(_answer(_predict(*args, uri=uri, images=store["images"])), expected)


class _Scripted(torch.nn.Module):
    """A module whose TorchScript archive holds its code (``forward``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning")
@pytest.mark.parametrize("altered", ["a pickle that runs code", "a TorchScript archive"])
def test_an_export_that_holds_more_than_weights_is_refused_even_with_allow_pickle(
    store: dict[str, Any], tmp_path: Path, altered: str
) -> None:
    """An export that is more than weights was altered: the pickled model beside it is not
    loaded in its place, ``allow_pickle`` or not. That pickle runs code too here, so a
    fallback would show (the control at the end proves it live). A TorchScript archive (code,
    which torch.load refuses with weights_only=True before unpickling anything, not with an
    UnpicklingError) is more than weights too: it fell back to the pickle."""
    import mlflow.pytorch

    from trainers.export import EXPORT_FORMAT

    uri, model_uri, exported = _one_model(tmp_path)
    marker = tmp_path / "marker"
    if altered == "a TorchScript archive":
        torch.jit.save(torch.jit.script(_Scripted()), str(exported))
    else:
        torch.save({"format": EXPORT_FORMAT, "x": _Payload(marker)}, exported)
    torch.save(_Payload(marker), exported.parent.parent / "data" / "model.pth")
    for allow_pickle in (False, True):
        with pytest.raises(BestConfigError, match=r"holds more than weights") as refused:
            load_predictor(model_uri, tracking_uri=uri, allow_pickle=allow_pickle)
        assert "its pickled model is not loaded either, allow_pickle or not" in str(refused.value)
        assert "--allow-pickle" not in str(refused.value)
    result = _predict(model_uri, "--allow-pickle", uri=uri, images=store["images"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == f"Error: {refused.value}"
    assert not marker.exists()
    with mlflow_tracking_uri(uri), pytest.raises(Exception):  # noqa: B017  the payload: no model
        mlflow.pytorch.load_model(model_uri)
    assert marker.read_text() == "pwned"


def test_an_export_of_pickle_protocol_0_is_refused_even_with_allow_pickle(
    store: dict[str, Any], tmp_path: Path
) -> None:
    """torch.load(weights_only=True) cannot read a file torch.save wrote with pickle protocol
    0, which trainers.export never writes: it was taken for a damaged export, so allow_pickle
    unpickled the pickled model beside it (here one that runs code: the marker shows it)."""
    from trainers.export import EXPORT_FORMAT

    uri, model_uri, exported = _one_model(tmp_path)
    marker = tmp_path / "marker"
    old = {"format": EXPORT_FORMAT, "x": _Payload(marker)}
    torch.save(old, exported, _use_new_zipfile_serialization=False, pickle_protocol=0)
    torch.save(_Payload(marker), exported.parent.parent / "data" / "model.pth")
    for allow_pickle in (False, True):
        with pytest.raises(
            BestConfigError, match=r"was written with pickle protocol 0 or 1, "
        ) as e:
            load_predictor(model_uri, tracking_uri=uri, allow_pickle=allow_pickle)
        assert f"{model_uri}/extra_files/export.pt" in str(e.value)
        assert "its pickled model is not loaded either, allow_pickle or not" in str(e.value)
    result = _predict(model_uri, "--allow-pickle", uri=uri, images=store["images"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == f"Error: {e.value}"
    assert not marker.exists()


def test_an_export_its_model_lists_but_the_store_lacks_is_named_not_the_model(
    store: dict[str, Any], tmp_path: Path
) -> None:
    """The model is there, its export is not (an upload cut short, a file removed): the error
    said the run had no MLflow model at all."""
    uri, model_uri, exported = _one_model(tmp_path)
    exported.unlink()
    with pytest.raises(BestConfigError, match=r"lists the weights-only export extra_files/expo"):
        load_predictor(model_uri, tracking_uri=uri)
    result = _predict(model_uri, uri=uri, images=store["images"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "has no MLflow model" not in result.stderr


def test_logging_a_model_with_its_export_prints_no_progress_bar(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow copies ``extra_files`` through its artifact download, whose progress bar every
    trial worker printed (two lines a trial in a sweep's console)."""
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    tracker = Tracker(default_tracking_uri(tmp_path))
    run_id = tracker.start_run(tracker.ensure_experiment("bars"), run_name="trial")
    capfd.readouterr()
    _log_model(tracker, run_id, _fitted(0, 1), tmp_path / "export")
    assert "Downloading artifacts" not in capfd.readouterr().err
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ


def test_a_deleted_trial_run_is_refused_with_the_command_that_restores_it(tmp_path: Path) -> None:
    """The message gave `mlflow runs restore --run-id ID` without the store, which mlflow then
    looked for in ./mlruns of wherever it was typed."""
    import mlflow

    from sweeps.predictor import trial_model

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri)
    run_id = tracker.start_run(tracker.ensure_experiment("gone"), run_name="trial")
    tracker.end_run(run_id, "FINISHED")
    mlflow.MlflowClient(uri).delete_run(run_id)

    with pytest.raises(BestConfigError) as refused:
        trial_model(run_id, tracking_uri=uri)

    assert f"run {run_id} was deleted from {uri}: restore it (MLFLOW_TRACKING_URI={uri} " in (
        str(refused.value)
    )
    assert f"mlflow runs restore --run-id {run_id})" in str(refused.value)
