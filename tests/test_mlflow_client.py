"""hier_tl.analysis.mlflow_client: tracking URIs of every kind, bounded waits against real failing servers on
127.0.0.1, the experiment's kind and artifact location, the converge step and the same-machine lock."""
import importlib.util
import os
import threading
import time

import pytest

pytest.importorskip("mlflow")

from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow_server import bad_gateway, free_port  # noqa: E402

from hier_tl.analysis.mlflow_client import (  # noqa: E402
    KIND,
    KIND_TAG,
    TrackingError,
    connect,
    export_lock,
    failure,
    is_server,
    keep_earliest,
    lost_run,
    mlflow_env,
    open_experiment,
    probe,
    scheme,
    shown,
)
from hier_tl.core.errors import HierTLError  # noqa: E402


@pytest.mark.parametrize("uri, want, server", [
    ("http://127.0.0.1:5000", "http", True),
    ("HTTPS://mlflow.example.org/prefix", "https", True),
    ("databricks", "databricks", True),
    ("databricks://profile", "databricks", True),
    ("sqlite:///runs/mlflow.db", "sqlite", False),
    ("postgresql+psycopg://u@127.0.0.1/db", "postgresql", False),
    ("file:///tmp/mlruns", "file", False),
    ("/tmp/mlruns", "", False),
    ("mlruns", "", False),
])
def test_scheme_and_server(uri, want, server):
    assert scheme(uri) == want and is_server(uri) is server


@pytest.mark.parametrize("uri, preset, file_store", [
    ("http://127.0.0.1:5000", {}, False),
    ("sqlite:///x.db", {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"}, False),
    ("file:///tmp/mlruns", {}, True),
    ("/tmp/mlruns", {"MLFLOW_ALLOW_FILE_STORE": "false"}, True),
])
def test_mlflow_env_bounds_waits_allows_file_stores_and_keeps_the_users_settings(monkeypatch, uri, preset,
                                                                                 file_store):
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT",
             "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    for k in names:
        monkeypatch.delenv(k, raising=False)
    for k, v in preset.items():
        monkeypatch.setenv(k, v)
    before = dict(os.environ)
    with mlflow_env(uri, {"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}):
        inside = {k: os.environ.get(k) for k in names}
    assert dict(os.environ) == before
    assert inside["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == preset.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    assert inside["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1" and inside["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert inside["MLFLOW_ALLOW_FILE_STORE"] == (preset.get("MLFLOW_ALLOW_FILE_STORE", "true") if file_store else None)
    assert inside["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"


def _one_line(e: pytest.ExceptionInfo, *parts: str) -> None:
    text = str(e.value)
    assert isinstance(e.value, HierTLError) and "\n" not in text and len(text) < 400, text
    for p in parts:
        assert p in text, text


@pytest.mark.parametrize("make_uri, words", [
    (lambda d: "foo://bar", ["no store for 'foo' URIs", "sqlite:///"]),
    pytest.param(lambda d: f"sqlite:///{d}/a-file/mlflow.db", ["cannot write", "a-file"],
                 marks=pytest.mark.slow),  # SQLAlchemy's first start: seconds
    (lambda d: f"file://{d}/a-file", ["cannot write", "a-file"]),
    pytest.param(lambda d: "postgresql://u:secret@127.0.0.1:9/db",
                 ["--tracking-uri postgresql://u:***@127.0.0.1:9/db needs the Python package psycopg", "pip install"],
                 marks=pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None,
                                          reason="psycopg is installed")),
])
def test_an_unusable_tracking_uri_is_one_line_naming_it(tmp_path, make_uri, words):
    (tmp_path / "a-file").write_text("not a folder")
    uri = make_uri(tmp_path)
    with mlflow_env(uri), pytest.raises(TrackingError) as e:
        connect(uri)
    _one_line(e, f"--tracking-uri {shown(uri)}", *words)
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("uri, want", [
    ("postgresql://u:secret@127.0.0.1:5432/db", "postgresql://u:***@127.0.0.1:5432/db"),
    ("https://u:secret@mlflow.example.org", "https://u:***@mlflow.example.org"),
    ("http://u@127.0.0.1:5000", "http://u@127.0.0.1:5000"),
    ("sqlite:////runs/mlflow.db", "sqlite:////runs/mlflow.db"),
    ("/runs/mlruns", "/runs/mlruns"),
])
def test_messages_show_a_uri_without_its_password(uri, want):
    assert shown(uri) == want


@pytest.mark.parametrize("make_uri", [lambda d: (d / "plain").as_posix(), lambda d: (d / "fs").as_uri()])
def test_the_file_store_works_although_mlflow_3_refuses_it_by_default(tmp_path, make_uri):
    uri = make_uri(tmp_path)
    with mlflow_env(uri):
        client = connect(uri)
        eid = open_experiment(client, "e", None, print)
        assert client.get_experiment_by_name("e").experiment_id == eid


def test_a_server_answering_502_fails_at_once():
    with bad_gateway() as (url, hits):
        t = time.monotonic()
        with pytest.raises(TrackingError) as e:
            probe(url)
        assert time.monotonic() - t < 5 and hits == ["/health"]
    _one_line(e, url, "answers 502 Bad Gateway")


def test_a_closed_port_fails_at_once():
    url = f"http://127.0.0.1:{free_port()}"  # closed again: nothing listens there
    with pytest.raises(ConnectionError) as e:
        probe(url)
    _one_line(e, url, "unreachable")


@pytest.mark.slow
@pytest.mark.parametrize("retries, calls, max_s", [(None, 1 + 3, 20), ("1", 1 + 1, 10)])
def test_a_server_failing_after_its_health_check_gives_up_after_a_few_retries(monkeypatch, retries, calls, max_s):
    """Backoff factor 1: sleeps of 0, 2 and 4 s (+ up to 0.5 s jitter) between 4 calls: ~7 s, not ~4 minutes;
    a user's MLFLOW_HTTP_REQUEST_MAX_RETRIES wins."""
    if retries:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", retries)
    with bad_gateway(health_ok=True) as (url, hits), mlflow_env(url):
        t = time.monotonic()
        with pytest.raises(TrackingError) as e:
            connect(url)
        assert time.monotonic() - t < max_s
    assert len(hits) == calls
    _one_line(e, url, "502", f"after {retries or 3} retries", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


@pytest.fixture
def store(tmp_path):
    """A client of a fresh file store (the quickest real store)."""
    uri = (tmp_path / "mlruns").as_uri()
    with mlflow_env(uri):
        yield connect(uri)


def test_open_experiment_tags_the_kind_and_places_artifacts(store, tmp_path):
    lines = []
    eid = open_experiment(store, "e", (tmp_path / "arts").as_uri(), lines.append)
    exp = store.get_experiment(eid)
    assert exp.tags[KIND_TAG] == KIND == "custom_model_development"
    assert exp.artifact_location == (tmp_path / "arts").as_uri()
    assert lines == [f"mlflow: new experiment 'e', artifacts in {(tmp_path / 'arts').as_uri()}"]

    store.set_experiment_tag(eid, KIND_TAG, "genai_development")  # the user's choice in the UI
    store.delete_experiment(eid)
    lines.clear()
    assert open_experiment(store, "e", (tmp_path / "other").as_uri(), lines.append) == eid
    exp = store.get_experiment(eid)
    assert exp.lifecycle_stage == "active" and exp.tags[KIND_TAG] == "genai_development"
    assert lines[0] == "mlflow: restoring deleted experiment 'e'"
    assert "keeps its artifact location" in lines[1] and (tmp_path / "arts").as_uri() in lines[1]


def test_keep_earliest_keeps_one_run_per_key_and_deletes_the_rest(store):
    eid = open_experiment(store, "e", None, print)
    made = {}
    for name, key, start in [("a-late", "a", 3000), ("a-first", "a", 1000), ("a-mid", "a", 2000),
                             ("b-x", "b", 500), ("b-y", "b", 500), ("c", "c", 9), ("other", None, 1)]:
        made[name] = store.create_run(eid, start_time=start, tags={"k": key} if key else {}, run_name=name)
    b_first, b_second = sorted(["b-x", "b-y"], key=lambda n: made[n].info.run_id)  # equal starts: by run id
    lines = []
    kept, dropped = keep_earliest(store, store.search_runs([eid]), lambda r: r.data.tags.get("k"), lines.append)
    assert {k: r.info.run_name for k, r in kept.items()} == {"a": "a-first", "b": b_first, "c": "c"}
    assert sorted(r.info.run_name for r in dropped) == sorted(["a-mid", "a-late", b_second])
    for name, run in made.items():
        deleted = store.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
        assert deleted is (name in ("a-mid", "a-late", b_second)), name
    assert len(lines) == 3 and all("(a concurrent export): deleted" in line for line in lines)


def test_writing_to_a_run_deleted_meanwhile_is_recognised(store):
    run = store.create_run(open_experiment(store, "e", None, print))
    store.delete_run(run.info.run_id)
    with pytest.raises(MlflowException) as e:
        store.log_metric(run.info.run_id, "m", 1.0)
    assert lost_run(e.value)
    assert not lost_run(ValueError("'active'")) and failure("http://127.0.0.1:1", ValueError("a bug")) is None


def test_exports_of_one_sweep_take_turns_on_a_machine():
    held, release, order, lines = threading.Event(), threading.Event(), [], []

    def first():
        with export_lock("http://127.0.0.1:5000/", "exp", "/results/s", print):
            held.set()
            release.wait(10)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    held.wait(10)
    with export_lock("http://127.0.0.1:5000", "exp", "/results/other", lines.append):
        order.append("other sweep")  # another sweep does not wait
    threading.Timer(0.5, release.set).start()
    with export_lock("http://127.0.0.1:5000", "exp", "/results/s", lines.append):
        order.append("second")
    t.join()
    assert order == ["other sweep", "first done", "second"]
    assert lines == ["mlflow: waiting for another export of /results/s to http://127.0.0.1:5000 to finish"]
