"""`make cluster` / `make cluster-down`: the production topology on loopback, each piece its own process.

    python scripts/cluster.py up   [--root .cluster] [--workers N] [--gpu-workers K] [--ui-port P] ...
    python scripts/cluster.py down [--root .cluster]

`up` creates a Postgres database for the instance, starts a moto S3 server (bucket with default
encryption), writes the instance's dagster.yaml, then starts a gRPC code server, `dagster-daemon`,
`dagster-webserver` (both reading deploy/workspace.yaml) and N Celery workers, waits until every one
answers, prints the UI address and writes `<root>/env`: the environment a client needs
(`set -a; source .cluster/env`). Every process gets its own AVATAR_HOME and DAGSTER_HOME folder: nothing is
shared through the disk, only through Postgres, S3 and the broker. Each runs in its own session; its
PID, process group and start time are recorded in `<root>/state.json`, so `down` stops exactly those
groups (children, moto and workers included) and nothing else, then drops the database.

The cluster is ephemeral: moto keeps S3 in memory, so `down` drops the database with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKSPACE = REPO / "deploy" / "workspace.yaml"
CELERY_APP = "avatar_assets.cluster.worker"
BUCKET = "avatars"
STORAGE_PREFIX = "cluster"
# moto accepts any credentials; these never leave loopback. The secret is one no other text holds, so a
# test can grep everything the cluster wrote for it.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "cluster", "AWS_SECRET_ACCESS_KEY": "loopback-fake-aws-secret-5b8e",
            "AWS_DEFAULT_REGION": "us-east-1"}
# What selects homes, storage or credentials: a cluster process gets the cluster's, never the caller's.
_CALLER_ONLY = ("AVATAR_HOME", "DAGSTER_HOME", "AVATAR_STORAGE", "AVATAR_S3_ENDPOINT_URL", "AWS_")


class ClusterError(RuntimeError):
    """Something the person running the command can fix; printed as one message, never a traceback."""


class Spec(BaseModel):
    """What `up` starts: flags first, then CLUSTER_* variables, then the defaults."""

    root: Path
    workers: int = Field(2, ge=1, le=16)
    gpu_workers: int = Field(0, ge=0)
    host: str = "127.0.0.1"
    ui_port: int = Field(3000, ge=1, le=65535)
    code_port: int = Field(0, ge=0, le=65535)  # 0: a free port
    s3_port: int = Field(0, ge=0, le=65535)
    # The S3 endpoint the workers use, when it is not the cluster's S3 server itself (a VPC endpoint, a
    # caching or fault-injecting proxy in front of it); clients, the daemon and the code server keep the server.
    worker_s3_endpoint: str = ""
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    db_name: str = ""  # empty: avatar_cluster_<random>
    broker: str = "pyamqp://guest:guest@127.0.0.1:5672//"
    backend: str = "redis://127.0.0.1:6379/0"
    max_tasks_per_child: int = Field(20, ge=1)
    max_runtime_seconds: int = Field(3600, ge=60)
    startup_timeout: float = Field(240, gt=0)

    @field_validator("gpu_workers")
    @classmethod
    def _fewer_gpu_than_workers(cls, value: int, info) -> int:
        workers = info.data.get("workers", 2)
        if value and value >= workers:
            raise ValueError(f"{value} gpu-only workers of {workers}: at least one worker must take the cpu queue")
        return value

    def worker_queues(self) -> list[tuple[str, list[str]]]:
        """(name, queues) per worker. Without gpu-only workers every worker takes both queues (no GPU here);
        with them, those take `gpu` only and the rest `cpu` only, as GPU and CPU boxes would."""
        if not self.gpu_workers:
            return [(f"worker{i}", ["cpu", "gpu"]) for i in range(1, self.workers + 1)]
        gpu = [(f"gpu{i}", ["gpu"]) for i in range(1, self.gpu_workers + 1)]
        return gpu + [(f"cpu{i}", ["cpu"]) for i in range(1, self.workers - self.gpu_workers + 1)]


class Process(BaseModel):
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells our process from a later one with the same PID
    log: Path
    args: list[str] = []  # the command line, for `restart`


class State(BaseModel):
    """What `up` started, for `down` (<root>/state.json)."""

    spec: Spec
    db_name: str
    s3_endpoint: str
    code_port: int
    db_created: bool = False  # only a database `up` created is dropped by `down`
    processes: list[Process] = []


# ------------------------------------------------------------------------------------------ processes


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _group(pgid: int, since_ticks: int) -> list[int]:
    """Live members of process group `pgid` started no earlier than its leader: ours, not a reused id."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid and int(fields[19]) >= since_ticks:
            members.append(int(entry.name))
    return members


def group_members(process: Process) -> list[int]:
    return _group(process.pid, process.start_ticks)


def stop(process: Process, grace: float = 15.0) -> None:
    """SIGTERM the process's group, SIGKILL what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        members = group_members(process)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_members(process):
            time.sleep(0.2)


def spawn(name: str, args: list[str], env: Mapping[str, str], logs: Path) -> Process:
    """A process in its own session (its group is everything it starts), output to <logs>/<name>.log."""
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            args, env=dict(env), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    ticks = _start_ticks(popen.pid)
    if ticks is None:
        raise ClusterError(f"{name} exited at once: see {log}")
    return Process(name=name, pid=popen.pid, start_ticks=ticks, log=log, args=list(args))


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(what: str, ready: Callable[[], bool], processes: list[Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if not group_members(process):
                tail = process.log.read_text(errors="replace")[-3000:] if process.log.exists() else ""
                raise ClusterError(f"{process.name} exited while waiting for {what}; last of {process.log}:\n{tail}")
        try:
            if ready():
                return
        except Exception:  # not answering yet
            pass
        time.sleep(1.0)
    raise ClusterError(f"{what} not ready after {timeout:g} s; logs in {processes[0].log.parent}")


# ---------------------------------------------------------------------------------------------- config


def instance_yaml(spec: Spec, state: State) -> str:
    """The instance every cluster process and client reads: Postgres, the Celery launcher, queue limits,
    monitoring and retries. Run and step events go to Postgres; no compute-log manager: Celery
    replaces a worker's stdout and stderr, so captured step output would be empty."""
    slots = spec.workers
    return f"""\
# Written by scripts/cluster.py (make cluster); deploy/README.md explains each block.
telemetry:
  enabled: false
storage:
  custom:
    module: resources.pooled_postgres
    class: PooledPostgresStorage
    config:
      postgres_db:
        hostname: {spec.pg_host}
        port: {spec.pg_port}
        username: {spec.pg_user}
        password: {{env: DAGSTER_PG_PASSWORD}}
        db_name: {state.db_name}
        scheme: postgresql+psycopg2
run_launcher:
  module: avatar_assets.cluster.launcher
  class: AvatarCeleryRunLauncher
  config:
    broker: "{spec.broker}"
    backend: "{spec.backend}"
    default_queue: cpu
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    # One run per worker slot: a task waiting in the broker longer than start_timeout_seconds fails its run.
    max_concurrent_runs: {slots}
  pools:
    default_limit: 1
    granularity: op
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  poll_interval_seconds: 5
  # The backstop behind the worker ping (avatar_assets/cluster/launcher.py).
  max_runtime_seconds: {spec.max_runtime_seconds}
  # A lost run is retried as a new run (run_retries); dagster-celery 0.29's resume task is not usable.
  max_resume_run_attempts: 0
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
sensors:
  use_threads: true
  num_workers: 2
auto_materialize:
  use_threads: true
  num_workers: 2
"""


def worker_yaml(spec: Spec) -> str:
    """The workers' own Celery config (`dagster-celery worker start -y`): without the result backend here
    task state stays PENDING and run monitoring fails every run."""
    return f"""\
execution:
  config:
    broker: "{spec.broker}"
    backend: "{spec.backend}"
"""


def process_env(spec: Spec, state: State, folder: Path, *, worker: bool = False) -> dict[str, str]:
    """The environment contract: own homes, S3 storage, fake credentials, the code server's address; a
    worker reaches S3 through `worker_s3_endpoint` when one is set."""
    avatar_home, dagster_home = folder / "avatar_home", folder / "dagster_home"
    avatar_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    dagster_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(spec.root / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CALLER_ONLY)}
    return {
        **env,
        **contract_env(state, avatar_home, dagster_home),
        **({"AVATAR_S3_ENDPOINT_URL": spec.worker_s3_endpoint} if worker and spec.worker_s3_endpoint else {}),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AVATAR_CODE_SERVER_HOST": spec.host,
        "AVATAR_CODE_SERVER_PORT": str(state.code_port),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def contract_env(state: State, avatar_home: Path, dagster_home: Path) -> dict[str, str]:
    """What `<root>/env` holds: enough for `avatarops` and `DagsterInstance.get()` to reach the cluster."""
    return {
        "AVATAR_HOME": str(avatar_home),
        "DAGSTER_HOME": str(dagster_home),
        "AVATAR_STORAGE": f"s3://{BUCKET}/{STORAGE_PREFIX}",
        "AVATAR_S3_ENDPOINT_URL": state.s3_endpoint,
        **FAKE_AWS,
        "DAGSTER_PG_PASSWORD": os.environ.get("DAGSTER_PG_PASSWORD", ""),  # dagster.yaml reads it; never inline
    }


# ------------------------------------------------------------------------------------------ up and down


def _save(state: State) -> None:
    (state.spec.root / "state.json").write_text(state.model_dump_json(indent=2))


def load_state(root: Path) -> State | None:
    path = root / "state.json"
    return State.model_validate_json(path.read_text()) if path.exists() else None


def _postgres(spec: Spec, statement: str) -> None:
    import psycopg2

    try:
        connection = psycopg2.connect(
            host=spec.pg_host, port=spec.pg_port, user=spec.pg_user, dbname="postgres",
            password=os.environ.get("DAGSTER_PG_PASSWORD", ""), connect_timeout=5,
        )
    except psycopg2.OperationalError as error:
        raise ClusterError(f"no PostgreSQL at {spec.pg_host}:{spec.pg_port} as {spec.pg_user}: {error}".strip()) from None
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    except psycopg2.Error as error:
        raise ClusterError(f"PostgreSQL refused `{statement}`: {str(error).strip()}") from None
    finally:
        connection.close()


def _s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
                        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"])


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.status == 200


def _quiet(args: list[str], env: Mapping[str, str]) -> bool:
    return subprocess.run(args, env=dict(env), cwd=REPO, capture_output=True, timeout=60).returncode == 0


def _answering_workers(spec: Spec) -> set[str]:
    """The node names of the Celery workers that answer a ping on the cluster's broker."""
    from celery import Celery

    app = Celery(broker=spec.broker)
    try:
        return {name for reply in app.control.ping(timeout=2.0) for name in reply}
    except Exception as error:
        raise ClusterError(f"the broker {spec.broker} does not answer: {error}") from None
    finally:
        app.close()


def _check_backend(spec: Spec) -> None:
    """The result backend answers: without it every task stays PENDING and monitoring fails every run."""
    import redis

    try:
        redis.Redis.from_url(spec.backend, socket_connect_timeout=3).ping()
    except (redis.RedisError, ValueError) as error:
        raise ClusterError(f"the result backend {spec.backend} does not answer: {error}") from None


def _purge_stale_tasks(spec: Spec) -> None:
    """Drop tasks a cluster that is gone left in the queues (no worker answers, checked just before):
    a worker of this cluster would take them and fail on run ids its instance never had."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    with Connection(spec.broker, connect_timeout=5) as connection:
        for queue in ("cpu", "gpu"):
            channel = connection.channel()  # a fresh one: the broker closes a channel after NOT_FOUND
            try:
                channel.queue_purge(queue)
            except NotFound:  # never declared: nothing to drop
                pass


def _consumed_queues(spec: Spec) -> dict[str, list[str]]:
    """Worker name (without @host) -> the queues it consumes, as the workers themselves report them."""
    from celery import Celery

    app = Celery(broker=spec.broker)
    try:
        replies = app.control.inspect(timeout=3.0).active_queues() or {}
    finally:
        app.close()
    return {node.split("@")[0]: [queue["name"] for queue in queues] for node, queues in replies.items()}


def _workers_answer(spec: Spec, names: list[str]) -> bool:
    answered = _answering_workers(spec)
    return all(any(a.startswith(f"{n}@") for a in answered) for n in names)


# What `up` writes under its root; the only names it removes there before starting again.
_WRITTEN = ("logs", "homes", "client", "env", "dagster.yaml", "worker.yaml", "state.json")


def _clear(root: Path) -> None:
    if not root.exists():
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in _WRITTEN)
    if foreign:
        raise ClusterError(f"{root} holds {', '.join(foreign[:5])}: not a cluster folder; pick another --root")
    for name in _WRITTEN:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def up(spec: Spec) -> State:
    existing = load_state(spec.root)
    if existing and any(group_members(p) for p in existing.processes):
        raise ClusterError(f"a cluster is already running from {spec.root}: `make cluster-down` first")
    _clear(spec.root)
    logs = spec.root / "logs"
    logs.mkdir(parents=True, mode=0o700)
    spec.root.chmod(0o700)  # the env file holds credentials; the homes hold personal data
    host = spec.host
    state = State(
        spec=spec,
        db_name=spec.db_name or f"avatar_cluster_{uuid.uuid4().hex[:10]}",
        s3_endpoint=f"http://{host}:{spec.s3_port or free_port(host)}",
        code_port=spec.code_port or free_port(host),
    )
    _save(state)
    try:
        _start(spec, state, logs)
    except BaseException:
        down(spec.root)
        raise
    return state


def _start(spec: Spec, state: State, logs: Path) -> None:
    def started(process: Process) -> Process:
        state.processes.append(process)
        _save(state)
        return process

    others = _answering_workers(spec)
    if others:
        raise ClusterError(
            f"Celery workers of another cluster already consume {spec.broker} ({', '.join(sorted(others))}): they "
            "would take this cluster's runs. Take that cluster down, or set CLUSTER_BROKER_URL to another vhost."
        )
    _purge_stale_tasks(spec)
    _check_backend(spec)
    _postgres(spec, f'CREATE DATABASE "{state.db_name}"')
    state.db_created = True
    _save(state)
    s3_port = state.s3_endpoint.rsplit(":", 1)[1]
    moto = started(spawn("s3", [str(BIN / "moto_server"), "-H", spec.host, "-p", s3_port], os.environ, logs))
    wait_for("the S3 server", lambda: _http_ok(f"{state.s3_endpoint}/moto-api/"), [moto], 60)
    s3 = _s3_client(state.s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})

    (spec.root / "dagster.yaml").write_text(instance_yaml(spec, state))
    (spec.root / "worker.yaml").write_text(worker_yaml(spec))
    homes = spec.root / "homes"

    code_env = process_env(spec, state, homes / "code-server")
    code = started(spawn("code-server", [
        str(BIN / "dagster"), "code-server", "start", "-m", "avatar_assets.definitions",
        "-h", spec.host, "-p", str(state.code_port), "--location-name", "avatar_assets",
    ], code_env, logs))
    wait_for("the code server", lambda: _quiet([
        str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(state.code_port), "-h", spec.host,
    ], code_env), [code], spec.startup_timeout)

    daemon_env = process_env(spec, state, homes / "daemon")
    daemon = started(spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)], daemon_env, logs))
    webserver = started(spawn("webserver", [
        str(BIN / "dagster-webserver"), "-w", str(WORKSPACE), "-h", spec.host, "-p", str(spec.ui_port),
    ], process_env(spec, state, homes / "webserver"), logs))
    workers = []
    for name, queues in spec.worker_queues():
        workers.append(started(spawn(name, [
            str(BIN / "dagster-celery"), "worker", "start", "-A", CELERY_APP, "-y", str(spec.root / "worker.yaml"),
            # One comma-separated -q: dagster-celery passes each -q on as -Q, and Celery 5 keeps only the last -Q.
            "-q", ",".join(queues), "--name", name, "--",
            "--concurrency", "1", "--max-tasks-per-child", str(spec.max_tasks_per_child),
        ], process_env(spec, state, homes / name, worker=True), logs)))

    client = spec.root / "client"
    client_env = process_env(spec, state, client)
    env_lines = contract_env(state, client / "avatar_home", client / "dagster_home")
    (spec.root / "env").write_text("".join(f"{key}={value}\n" for key, value in env_lines.items()))

    everything = [code, daemon, webserver, *workers]
    wait_for("the webserver", lambda: _http_ok(f"http://{spec.host}:{spec.ui_port}/server_info"), everything, spec.startup_timeout)
    expected = dict(spec.worker_queues())
    wait_for("the Celery workers", lambda: _workers_answer(spec, list(expected)), everything, spec.startup_timeout)
    consumed = _consumed_queues(spec)
    wrong = {name: queues for name, queues in consumed.items() if sorted(queues) != sorted(expected[name])}
    if wrong:
        raise ClusterError(f"workers consume other queues than asked: {wrong}, expected {expected}")
    wait_for("the daemon's heartbeats", lambda: _quiet([str(BIN / "dagster-daemon"), "liveness-check"], client_env),
             everything, spec.startup_timeout)


def down(root: Path) -> list[str]:
    """Stop what `up` recorded under `root` (newest first), drop its database; the names stopped."""
    state = load_state(root)
    if state is None:
        return []
    stopped = []
    for process in reversed(state.processes):
        if group_members(process):
            stop(process)
            stopped.append(process.name)
    try:
        if state.db_created:
            _postgres(state.spec, f'DROP DATABASE IF EXISTS "{state.db_name}" WITH (FORCE)')
    except ClusterError as error:
        print(f"cluster: database {state.db_name} not dropped: {error}", file=sys.stderr)
    (root / "state.json").unlink()
    return stopped


def restart(root: Path, name: str) -> Process:
    """SIGKILL one recorded process's whole group, as a crash would, and start it again with the same command,
    homes and environment (`cluster.py restart daemon`): what a supervisor (ECS, systemd, Kubernetes) does."""
    state = load_state(root)
    if state is None:
        raise ClusterError(f"nothing running from {root}")
    found = [p for p in state.processes if p.name == name]
    if not found or not found[0].args:
        raise ClusterError(f"no restartable process {name!r} in {root / 'state.json'}")
    old = found[0]
    for pid in group_members(old):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while group_members(old) and time.monotonic() < deadline:
        time.sleep(0.1)
    folder = root / "homes" / name
    worker = name in dict(state.spec.worker_queues())
    env = dict(os.environ) if name == "s3" else process_env(state.spec, state, folder, worker=worker)
    new = spawn(name, old.args, env, old.log.parent)
    state.processes[state.processes.index(old)] = new
    _save(state)
    return new


# ------------------------------------------------------------------------------------------------- CLI


def _spec(args: argparse.Namespace) -> Spec:
    env = os.environ
    values = {
        "root": args.root,
        "workers": args.workers if args.workers is not None else env.get("CLUSTER_WORKERS"),
        "gpu_workers": args.gpu_workers if args.gpu_workers is not None else env.get("CLUSTER_GPU_WORKERS"),
        "host": args.host or env.get("CLUSTER_HOST"),
        "ui_port": args.ui_port if args.ui_port is not None else env.get("CLUSTER_UI_PORT"),
        "code_port": args.code_port, "s3_port": args.s3_port,
        "pg_host": env.get("CLUSTER_PG_HOST"), "pg_port": env.get("CLUSTER_PG_PORT"),
        "pg_user": env.get("CLUSTER_PG_USER"), "db_name": args.db_name,
        "broker": env.get("CLUSTER_BROKER_URL"), "backend": env.get("CLUSTER_BACKEND_URL"),
        "max_runtime_seconds": env.get("CLUSTER_MAX_RUNTIME_SECONDS"),
        "worker_s3_endpoint": args.worker_s3_endpoint or env.get("CLUSTER_WORKER_S3_ENDPOINT"),
    }
    return Spec.model_validate({k: v for k, v in values.items() if v not in (None, "")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "restart"])
    parser.add_argument("name", nargs="?", help="restart: the process to kill -9 and start again (e.g. daemon)")
    parser.add_argument("--root", type=Path, default=REPO / ".cluster", help="state, logs, homes (default .cluster)")
    parser.add_argument("--workers", type=int, help="Celery workers (CLUSTER_WORKERS, default 2)")
    parser.add_argument("--gpu-workers", type=int, help="of them gpu-only (CLUSTER_GPU_WORKERS, default 0)")
    parser.add_argument("--host", help="address every server binds (CLUSTER_HOST, default 127.0.0.1)")
    parser.add_argument("--ui-port", type=int, help="webserver port (CLUSTER_UI_PORT, default 3000)")
    parser.add_argument("--code-port", type=int, help="gRPC code server port (default: a free one)")
    parser.add_argument("--s3-port", type=int, help="moto S3 port (default: a free one)")
    parser.add_argument("--worker-s3-endpoint", help="S3 endpoint the workers use (CLUSTER_WORKER_S3_ENDPOINT, "
                        "default: the cluster's S3 server), e.g. a proxy in front of it")
    parser.add_argument("--db-name", help="Postgres database to create (default avatar_cluster_<random>)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "restart":
            if not args.name:
                parser.error("restart needs the name of a process (daemon, webserver, code-server, a worker)")
            process = restart(root, args.name)
            print(f"cluster: restarted {process.name} (pid {process.pid})")
            return 0
        if args.command == "down":
            stopped = down(root)
            print(f"cluster: stopped {', '.join(stopped)}" if stopped else f"cluster: nothing running from {root}")
            return 0
        spec = _spec(argparse.Namespace(**{**vars(args), "root": root}))
        state = up(spec)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        print(f"cluster: bad configuration: {problems}", file=sys.stderr)
        return 2
    except ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    workers = ", ".join(f"{name} ({'+'.join(queues)})" for name, queues in spec.worker_queues())
    print(f"cluster: up. UI http://{spec.host}:{spec.ui_port}  code server {spec.host}:{state.code_port}  "
          f"S3 {state.s3_endpoint}{f' (workers: {spec.worker_s3_endpoint})' if spec.worker_s3_endpoint else ''}  database {state.db_name}\ncluster: workers {workers}\n"
          f"cluster: for a client: set -a; source {root / 'env'}; set +a\ncluster: logs in {root / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
