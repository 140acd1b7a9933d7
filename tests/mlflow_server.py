"""Real servers on 127.0.0.1 for the MLflow tests: an MLflow tracking server (sqlite backend, proxied
artifacts) and a tiny HTTP server that answers 502 Bad Gateway, as a proxy in front of a dead server does."""
import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


_SHARED: dict = {}  # the one tracking server of this pytest run, and how many test modules use it


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The URI of an MLflow tracking server, started once for every test module that imports this fixture
    (it takes a minute on a busy machine) and killed (process group) when the last of them is done."""
    if not _SHARED:
        _SHARED.update(_start(tmp_path_factory.mktemp("mlflow")), users=0)
    _SHARED["users"] += 1
    try:
        yield _SHARED["url"]
    finally:
        _SHARED["users"] -= 1
        if not _SHARED["users"]:
            _stop(_SHARED.pop("proc"))
            _SHARED.clear()


def _start(tmp) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
           "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers: fewer processes
    with open(tmp / "server.log", "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp,
                                env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"mlflow server did not come up:\n{(tmp / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    return {"url": url, "proc": proc}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def bad_gateway(health_ok: bool = False):
    """The URL of an HTTP server on 127.0.0.1 that answers 502 to every request (but 200 to /health when
    `health_ok`: a server that fails only once the export has started); yields (url, hits), hits counting
    the requests answered 502."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            if health_ok and self.path.startswith("/health"):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                return
            hits.append(self.path)
            self.send_response(502, "Bad Gateway")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PATCH = do_DELETE = answer

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
