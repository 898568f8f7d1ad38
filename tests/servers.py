"""Real servers for integration tests: an S3 API (moto), `dagster-daemon`, `dagster-webserver`, `avatarops serve`.

Everything binds to 127.0.0.1 on a free port, runs with a temporary DAGSTER_HOME / AVATAR_HOME, and
is torn down by a context manager even when the test fails: subprocesses get their own session
(process group), and the whole group - code servers and run workers included - is terminated, then
killed if it lingers. Nothing here is a pytest fixture, so any test module can use it without a
conftest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WORKSPACE = REPO_ROOT / "workspace.yaml"
LOOPBACK = "127.0.0.1"

# Dummy credentials for the S3 API server; boto3 signs with them, moto accepts anything.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Never read a developer's ~/.aws or reach the instance metadata service.
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}

# Variables that select homes, storage or behaviour; a test's subprocess starts without them.
_SCRUBBED_PREFIXES = ("AVATAR_", "DAGSTER_", "AWS_")

# For write_instance_yaml: sensors tick in threads, runs dequeue every second (both daemon tests).
DAEMON_INSTANCE_YAML = """\
sensors:
  use_threads: true
  num_workers: 2
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""

# What one identity run materializes and checks (shared by the daemon and Postgres tests).
IDENTITY_ASSETS = [
    "source_upload",
    "validated_inputs",
    "neutral_image",
    "character_sheet",
    "voice_profile",
    "identity_bundle",
]
IDENTITY_CHECKS = {
    ("validated_inputs", "usable_photo_and_consent"),
    ("neutral_image", "neutral_face_geometry"),
    ("neutral_image", "neutral_identity_consistency"),
    ("character_sheet", "sheet_identity_consistency"),
    ("voice_profile", "voice_sample_quality"),
}



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def clean_env(**overrides: str | os.PathLike) -> dict[str, str]:
    """os.environ without AVATAR_*/DAGSTER_*/AWS_* settings, plus `overrides` and the venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("AVATAR_LOG_LEVEL", "WARNING")
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def write_instance_yaml(dagster_home: Path, extra: str = "") -> Path:
    """A dagster.yaml with telemetry off plus `extra` (YAML text)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    path.write_text("telemetry:\n  enabled: false\n" + extra)
    return path


# --------------------------------------------------------------------------- waiting


class ServerDied(RuntimeError):
    pass


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.5,
    what: str = "condition",
    process: ManagedProcess | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise ServerDied(
                f"{process.name} exited with {process.popen.returncode} while waiting for {what}\n"
                f"{process.log_tail()}"
            )
        try:
            value = predicate()
        except Exception as error:  # noqa: BLE001 - a server that is still starting refuses, times out...
            last_error = error
        else:
            if value:
                return value
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    tail = f"\n{process.log_tail()}" if process is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}{tail}")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.status, response.read()


def graphql(base_url: str, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30.0) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
        document = json.loads(response.read())
    if document.get("errors"):
        raise AssertionError(f"GraphQL errors: {json.dumps(document['errors'], indent=2)[:4000]}")
    return document["data"]


# --------------------------------------------------------------------------- S3 API server


@dataclass
class S3Server:
    endpoint_url: str
    env: dict[str, str]

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextlib.contextmanager
def moto_s3_server() -> Iterator[S3Server]:
    """moto's S3 API on 127.0.0.1; port 0 lets the kernel pick a free port without a race."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        yield S3Server(endpoint_url=endpoint, env={**DUMMY_AWS_ENV, "AVATAR_S3_ENDPOINT_URL": endpoint})
    finally:
        server.stop()


# --------------------------------------------------------------------------- subprocesses


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"[{self.name}: no log at {self.log_path}]"
        return f"--- last of {self.log_path} ---\n{text[-chars:]}"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


def _group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) processes of a process group, from /proc; None where /proc is not there."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    members = _group_members(pgid)
    if members is not None:
        # Orphaned zombies are reaped by init; in a container without one they would linger, so
        # only processes that can still run count.
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_group(process: ManagedProcess, grace: float = 15.0) -> None:
    """SIGTERM the process group (the server and every child it spawned), then SIGKILL what is left."""
    pgid = process.popen.pid  # start_new_session=True: the leader's pid is the group id
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.popen.poll()  # reap the leader so it does not linger as a zombie group member
        if process.popen.returncode is not None and not _group_alive(pgid):
            break
        time.sleep(0.2)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(timeout=10)
    wait_until(lambda: not _group_alive(pgid), timeout=10, interval=0.1, what=f"{process.name} group to exit")


@contextlib.contextmanager
def managed_process(
    name: str, args: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path = REPO_ROOT
) -> Iterator[ManagedProcess]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = ManagedProcess(name=name, popen=popen, log_path=log_path)
    try:
        yield process
    finally:
        terminate_group(process)


@contextlib.contextmanager
def dagster_daemon(*, env: Mapping[str, str], log_path: Path, workspace: Path = WORKSPACE) -> Iterator[ManagedProcess]:
    """`dagster-daemon run -w workspace.yaml` (sensors, run queue, automation) with `env`'s DAGSTER_HOME."""
    args = [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)]
    with managed_process("dagster-daemon", args, env=env, log_path=log_path) as process:
        yield process


@dataclass
class Webserver:
    process: ManagedProcess
    base_url: str


@contextlib.contextmanager
def dagster_webserver(
    *, env: Mapping[str, str], log_path: Path, workspace: Path = WORKSPACE, timeout: float = 120
) -> Iterator[Webserver]:
    """`dagster-webserver` on 127.0.0.1 and a free port, returned once /server_info answers and the
    code location has loaded."""
    port = free_port()
    args = [
        str(VENV_BIN / "dagster-webserver"),
        "-w", str(workspace),
        "-h", LOOPBACK,
        "-p", str(port),
    ]
    with managed_process("dagster-webserver", args, env=env, log_path=log_path) as process:
        base_url = f"http://{LOOPBACK}:{port}"
        wait_until(
            lambda: http_get(f"{base_url}/server_info")[0] == 200,
            timeout=timeout,
            what="dagster-webserver /server_info",
            process=process,
        )
        wait_until(
            lambda: _location_loaded(base_url),
            timeout=timeout,
            what="the code location to load in the webserver",
            process=process,
        )
        yield Webserver(process=process, base_url=base_url)


def _location_loaded(base_url: str) -> bool:
    data = graphql(
        base_url,
        """{ workspaceOrError { __typename ... on Workspace { locationEntries {
               name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }""",
    )
    entries = data["workspaceOrError"].get("locationEntries", [])
    for entry in entries:
        if entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"]["__typename"] == "PythonError":
            raise ServerDied(f"code location {entry['name']} failed to load: {entry['locationOrLoadError']['message']}")
    return bool(entries) and all(
        e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries
    )


@dataclass
class JobApi:
    process: ManagedProcess
    base_url: str


@contextlib.contextmanager
def avatarops_serve(*, env: Mapping[str, str], log_path: Path, timeout: float = 120) -> Iterator[JobApi]:
    """`avatarops serve` (the job API) on 127.0.0.1 and a free port, returned once its schema answers."""
    port = free_port()
    args = [str(VENV_BIN / "avatarops"), "serve", "--host", LOOPBACK, "--port", str(port)]
    with managed_process("avatarops serve", args, env=env, log_path=log_path) as process:
        base_url = f"http://{LOOPBACK}:{port}"
        wait_until(lambda: http_get(f"{base_url}/v1/openapi.json")[0] == 200, timeout=timeout,
                   what="avatarops serve /v1/openapi.json", process=process)
        yield JobApi(process=process, base_url=base_url)


# --------------------------------------------------------------------------- the sample avatar


def build_sample(target: Path) -> Path:
    """The bundled demo avatar (`astronaut`) as an upload bundle at `target`."""
    from avatar_assets.ops.demo import build_sample_bundle

    return build_sample_bundle(target)


def avatarops(*args: str, env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a clean interpreter, configured by `env` alone."""
    return subprocess.run(
        [str(VENV_BIN / "avatarops"), *args],
        cwd=REPO_ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def upload_and_process(bundle: Path, *, env: Mapping[str, str], timeout: float = 300) -> dict:
    """`avatarops upload BUNDLE` then `avatarops process --json`; returns the process report."""
    uploaded = avatarops("upload", str(bundle), env=env, timeout=120)
    assert uploaded.returncode == 0, f"avatarops upload failed:\n{uploaded.stdout}\n{uploaded.stderr}"
    processed = avatarops("process", "--json", env=env, timeout=timeout)
    assert processed.returncode == 0, f"avatarops process failed:\n{processed.stdout}\n{processed.stderr[-6000:]}"
    start = processed.stdout.find("{")
    assert start >= 0, f"no JSON report from avatarops process:\n{processed.stdout}\n{processed.stderr[-4000:]}"
    return json.loads(processed.stdout[start:])


# --------------------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,1000",
]


def chromium_binary() -> str | None:
    """AVATAR_CHROMIUM, else Debian's /usr/bin/chromium (scripts/install-browser.sh), else one on PATH."""
    import shutil

    candidates = [os.environ.get("AVATAR_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser"), shutil.which("google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def run_chromium(binary: str, profile: Path, args: list[str], *, timeout: float = 90) -> subprocess.CompletedProcess:
    """One-shot Chromium (--dump-dom, --screenshot) with a fresh profile; its process group dies with it."""
    profile.mkdir(parents=True, exist_ok=True)
    popen = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    process = ManagedProcess(name="chromium", popen=popen, log_path=profile / "none.log")
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate_group(process, grace=5)
        raise
    terminate_group(process, grace=5)  # helpers (zygote, GPU/network services) go with it
    return subprocess.CompletedProcess(popen.args, popen.returncode, stdout.decode(errors="replace"),
                                       stderr.decode(errors="replace"))


class CdpPage:
    """Just enough of the Chrome DevTools Protocol to drive one page: navigate, evaluate, screenshot.

    The websocket client is `websockets`, which dagster-webserver already depends on (uvicorn[standard]).
    """

    def __init__(self, websocket):
        self._ws = websocket
        self._ids = 0

    def call(self, method: str, **params) -> dict:
        self._ids += 1
        message_id = self._ids
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path) -> Path:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


@contextlib.contextmanager
def chromium_page(binary: str, profile: Path, *, log_path: Path, width: int = 1400, height: int = 1000) -> Iterator[CdpPage]:
    """Headless Chromium with DevTools on a kernel-chosen loopback port; yields its first page."""
    from websockets.sync.client import connect

    profile.mkdir(parents=True, exist_ok=True)
    args = [
        binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
    ]
    with managed_process("chromium", args, env=os.environ, log_path=log_path) as process:
        port_file = profile / "DevToolsActivePort"
        port = wait_until(
            lambda: port_file.is_file() and int(port_file.read_text().split()[0]),
            timeout=30, interval=0.1, what="Chromium's DevTools port", process=process,
        )
        _, listing = http_get(f"http://{LOOPBACK}:{port}/json/list")
        target = next(t for t in json.loads(listing) if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as websocket:
            page = CdpPage(websocket)
            page.call("Page.enable")
            page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            yield page
