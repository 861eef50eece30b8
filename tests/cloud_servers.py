"""Real services for the cloud tests, on 127.0.0.1 with free ports, started and
stopped by the tests: moto's S3 server, a fault-injecting HTTP proxy in front
of it, and a Dask scheduler with worker processes that share nothing with the
test but the scheduler (their own HOME, KERAS_HOME and caches; no weights)."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: Fake credentials: the tests check that the secret appears nowhere.
ACCESS_KEY = "AKIATRANSFEREMBEDTEST"
SECRET_KEY = "te-secret-Zq81vXw7Lp0sNcR4yTgH2mKd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None,
                  timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def stop(process: subprocess.Popen) -> None:
    """End a process that a test started (its own process group), by its id."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(10)


def cloud_environment(endpoint: str) -> dict[str, str]:
    """The standard AWS chain's variables for the fake store."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def start_moto(log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(port)], stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, process)
    return process, port


class FaultProxy:
    """An HTTP proxy to ``target``: passes every request on, except that it answers
    the next ``refusing`` object reads with 503 SlowDown, and every request for
    a key in ``denied`` with 403. It counts the writes (PUTs) it passed by key."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.refusing = 0
        self.refused = 0
        self.denied: set[str] = set()
        self.puts: list[str] = []
        self.lists = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _body(self, handler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0], 16)
                if not size:
                    handler.rfile.readline()
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))

    def _refuse(self, handler, status: int, code: str) -> None:
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>refused by the test</Message></Error>").encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _verdict(self, method: str, key: str, query: str) -> tuple[int, str] | None:
        with self.lock:
            if key in self.denied:
                return 403, "AccessDenied"
            if "list-type" in query:
                self.lists += 1
            elif method == "GET" and self.refusing > 0:
                self.refusing -= 1
                self.refused += 1
                return 503, "SlowDown"
            if method == "PUT":
                self.puts.append(key)
        return None

    def handle(self, handler) -> None:
        body = self._body(handler)
        key, _, query = handler.path.lstrip("/").partition("?")
        verdict = self._verdict(handler.command, key, query)
        if verdict is not None:
            self._refuse(handler, *verdict)
            return
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("transfer-encoding", "connection", "content-length")}
        if handler.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=60)
        try:
            connection.request(handler.command, handler.path, body or None, headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)


def can_hide_folders() -> bool:
    """Whether worker processes can get a mount namespace of their own (as root)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t",
                            "tmpfs", "-o", "size=1m", "none", "/mnt"], capture_output=True)
    return probe.returncode == 0


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1; each worker in a
    folder of its own, which is its HOME, with its own KERAS_HOME and caches.

    Where the machine allows it (root), each worker runs in a mount namespace of
    its own where the folders in ``hide`` are empty: it sees none of the driver's
    files there (images, weights, caches). ``isolated`` tells whether it does.
    """

    def __init__(self, root: Path, workers: int, environment: dict[str, str],
                 hide: list[Path] = ()):
        self.root, self.environment = root, environment
        self.hide = [str(path) for path in hide if Path(path).is_dir()]
        self.isolated = bool(self.hide) and can_hide_folders()
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler = self._start("scheduler", [
            "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
            root / "scheduler")
        wait_for_port(self.port, self.scheduler)
        self.workers = [self.start_worker(f"w{n}") for n in range(workers)]

    def _start(self, name: str, arguments: list[str], home: Path,
               hidden: bool = False) -> subprocess.Popen:
        home.mkdir(parents=True, exist_ok=True)
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")}
        env = {**keep, **self.environment, "HOME": str(home),
               "KERAS_HOME": str(home / ".keras"), "XDG_CACHE_HOME": str(home / ".cache"),
               "TRANSFEREMBED_CACHE_DIR": str(home / ".cache" / "transferembed"),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-m", "dask", *arguments]
        if hidden:
            mounts = " && ".join(f"mount -t tmpfs -o size=1m none '{path}'"
                                 for path in self.hide)
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f'{mounts} && exec "$@"', "sh", *command]
        return subprocess.Popen(command, cwd=home, env=env,
                                stdout=(home / f"{name}.log").open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, name: str) -> subprocess.Popen:
        home = self.root / name
        return self._start(name, ["worker", self.address, "--nthreads", "1", "--no-nanny",
                                  "--no-dashboard", "--name", name, "--local-directory",
                                  str(home / "dask")], home, hidden=self.isolated)

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.root.glob("*/*.log"))

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            stop(process)
