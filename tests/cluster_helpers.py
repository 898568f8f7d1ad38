"""The loopback cluster for tests: `scripts/cluster.py up|down` run as a person would, in a temporary root
on free ports, and what the tests do to it (read its env file, submit runs, kill a worker).

Nothing here is a fixture; tests/test_cluster.py holds the one session-scoped cluster.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from avatar_assets import dagster_compat as compat
from tests.servers import REPO_ROOT, VENV_BIN, clean_env, free_port

SCRIPT = REPO_ROOT / "scripts" / "cluster.py"
# What `.cluster/env` must hold, no more, no less (DAGSTER_PG_PASSWORD: the instance reads it from the env).
ENV_CONTRACT = {
    "AVATAR_HOME", "DAGSTER_HOME", "AVATAR_STORAGE", "AVATAR_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "DAGSTER_PG_PASSWORD",
}


def _script_module():
    spec = importlib.util.spec_from_file_location("cluster_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cluster_script", module)
    spec.loader.exec_module(module)
    return module


script = _script_module()


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]  # <root>/env, parsed
    ui_url: str
    up_seconds: float

    @property
    def state(self):
        return script.load_state(self.root)

    def process(self, name: str):
        [found] = [p for p in self.state.processes if p.name == name]
        return found

    def instance(self) -> dg.DagsterInstance:
        """The cluster's instance as a client sees it (DAGSTER_HOME from the env file)."""
        with _env(self.env):
            return dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    def s3(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.env["AVATAR_S3_ENDPOINT_URL"], region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip())
    return {key: value for key, value in pairs}


def run_script(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "python"), str(SCRIPT), *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )


# Fake secrets every cluster process and client gets from its environment, as a deployment's would (Postgres
# trusts loopback; nothing listens on the webhook's port, so every delivery fails and is logged). Nothing the
# cluster writes may hold them; with the S3 secret of scripts/cluster.py they are what tests grep for.
FAKE_SECRETS = {
    "DAGSTER_PG_PASSWORD": "pg-fake-secret-7c1d",
    "AVATAR_WEBHOOK_SECRET": "whsec_ZmFrZS13ZWJob29rLXNlY3JldC05YTJmLWxvb3BiYWNr",  # fake-webhook-secret-9a2f-loopback
    "AVATAR_WEBHOOK_URL": "http://127.0.0.1:9/hooks",
}


def cluster_env(**overrides: str) -> dict[str, str]:
    """A clean environment with quick sensors and the fake secrets; the script gives every process the rest."""
    return clean_env(AVATAR_SENSOR_INTERVAL_SECONDS="3", AVATAR_UPLOAD_SETTLE_SECONDS="0", **FAKE_SECRETS,
                     **overrides)


@contextmanager
def own_vhost() -> Iterator[str]:
    """A broker URL on a RabbitMQ vhost of this test session's own (`rabbitmqctl`), deleted afterwards: the
    queues are named `cpu` and `gpu`, so two clusters on one vhost would take each other's runs, and `up`
    refuses to start beside another cluster's workers. Without `rabbitmqctl`, the default vhost."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        yield script.Spec.model_fields["broker"].default
        return
    vhost = f"avatar_test_{uuid.uuid4().hex[:10]}"
    subprocess.run([rabbitmqctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)
        yield f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([rabbitmqctl, "delete_vhost", vhost], capture_output=True, timeout=60)


@contextmanager
def loopback_cluster(root: Path, *, workers: int, gpu_workers: int = 0, s3_port: int = 0,
                     worker_s3_endpoint: str = "") -> Iterator[Cluster]:
    """`cluster.py up` in `root` on free ports and a vhost of its own, `cluster.py down` afterwards even when
    the test failed. `s3_port` and `worker_s3_endpoint` put a proxy between the workers and S3."""
    with own_vhost() as broker:
        with _loopback_cluster(root, workers=workers, gpu_workers=gpu_workers, broker=broker, s3_port=s3_port,
                               worker_s3_endpoint=worker_s3_endpoint) as cluster:
            yield cluster


@contextmanager
def _loopback_cluster(root: Path, *, workers: int, gpu_workers: int, broker: str, s3_port: int,
                      worker_s3_endpoint: str) -> Iterator[Cluster]:
    ui_port = free_port()
    env = cluster_env(CLUSTER_BROKER_URL=broker, CLUSTER_WORKER_S3_ENDPOINT=worker_s3_endpoint)
    started = time.monotonic()
    done = run_script("up", "--root", str(root), "--ui-port", str(ui_port), "--workers", str(workers),
                      "--gpu-workers", str(gpu_workers), "--s3-port", str(s3_port), env=env, timeout=420)
    try:
        assert done.returncode == 0, f"cluster up failed:\n{done.stdout}\n{done.stderr}"
        yield Cluster(root=root, env=read_env_file(root / "env"), ui_url=f"http://127.0.0.1:{ui_port}",
                      up_seconds=time.monotonic() - started)
    finally:
        run_script("down", "--root", str(root), env=env, timeout=120)


def submit(cluster: Cluster, instance: dg.DagsterInstance, assets: list[str], partition: str) -> str:
    """Submit a run of `assets` to the cluster's queue, as `avatarops regenerate` does; the daemon launches it."""
    request = dg.RunRequest(
        asset_selection=[dg.AssetKey(a) for a in assets], partition_key=partition,
        tags={compat.PARTITION_NAME_TAG: partition},  # a queued run reads its partition from its tags
    )
    with _env(cluster.env):
        return compat.submit_asset_run(
            instance, request, module_name="avatar_assets.definitions", location_name="avatar_assets"
        )


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def kill_worker(cluster: Cluster, name: str) -> list[int]:
    """SIGKILL a whole worker: the dagster-celery parent, Celery's main process and its pool child."""
    members = script.group_members(cluster.process(name))
    for pid in members:
        os.kill(pid, signal.SIGKILL)
    return members


def sql(cluster: Cluster, statement: str, params: tuple = ()) -> list[tuple]:
    """Rows of `statement` on the cluster's own database (runs, tags and events live there)."""
    import psycopg2

    spec = cluster.state.spec
    connection = psycopg2.connect(host=spec.pg_host, port=spec.pg_port, user=spec.pg_user,
                                  dbname=cluster.state.db_name, password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
                                  connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def duplicate_run_keys(cluster: Cluster) -> list[tuple[str, int]]:
    """Run keys carried by more than one run that is not a retry (a retry may inherit its parent's tags)."""
    return sql(cluster, """
        SELECT t.value, count(*) FROM run_tags t
        WHERE t.key = 'dagster/run_key' AND NOT EXISTS (
            SELECT 1 FROM run_tags p WHERE p.run_id = t.run_id AND p.key = 'dagster/parent_run_id')
        GROUP BY t.value HAVING count(*) > 1""")


def step_intervals(cluster: Cluster, step_keys: set[str]) -> list[tuple[str, str, float, float]]:
    """(run id, step key, start, end) of every execution of `step_keys`, from the step events in Postgres; a step
    still open (or killed) ends now."""
    rows = sql(cluster, """
        SELECT run_id, step_key, dagster_event_type, extract(epoch from timestamp) FROM event_logs
        WHERE step_key = ANY(%s) AND dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE')
        ORDER BY id""", (list(step_keys),))
    opened, intervals = {}, []
    for run_id, step_key, kind, at in rows:
        if kind == "STEP_START":
            opened[(run_id, step_key)] = float(at)
        elif (run_id, step_key) in opened:
            intervals.append((run_id, step_key, opened.pop((run_id, step_key)), float(at)))
    now = time.time()
    intervals.extend((run_id, step_key, start, now) for (run_id, step_key), start in opened.items())
    return intervals


def most_overlapping(intervals: list[tuple[str, str, float, float]]) -> int:
    """The most intervals open at one instant (an end at the same instant as a start does not overlap)."""
    edges = sorted([(start, 1) for *_, start, _ in intervals] + [(end, -1) for *_, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most


def restart(cluster: Cluster, name: str) -> subprocess.CompletedProcess:
    """`cluster.py restart NAME`: kill -9 the process's group and start it again with the same command."""
    return run_script("restart", name, "--root", str(cluster.root), env=cluster_env(), timeout=60)


def pool_child(cluster: Cluster, name: str) -> int:
    """The prefork pool child of worker `name` (the process executing its run): the member of its group whose
    parent is Celery's main process, itself a child of the recorded dagster-celery process."""
    members = set(script.group_members(cluster.process(name)))

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    leader = cluster.process(name).pid
    mains = {pid for pid in members if parent(pid) == leader}
    children = [pid for pid in members if parent(pid) in mains]  # (the run's own subprocesses, ffmpeg, are below)
    assert len(children) == 1, f"{name}: expected one pool child in {sorted(members)}, found {children}"
    return children[0]


MEDIA_REF = re.compile(r"media/[0-9a-f]{2}/[0-9a-f]{64}\.[A-Za-z0-9]+")


def store_problems(cluster: Cluster) -> list[str]:
    """What a reader of the bucket must never see: temporary or partial keys, and records naming media that
    are not there."""
    s3, bucket = cluster.s3(), cluster.env["AVATAR_STORAGE"].removeprefix("s3://").split("/", 1)[0]
    prefix = cluster.env["AVATAR_STORAGE"].removeprefix(f"s3://{bucket}").strip("/")
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}
    problems = [f"temporary key {k}" for k in keys if re.search(r"(\.part|\.tmp|~)$|/tmp|\.partial", k)]
    for key in sorted(k for k in keys if k.startswith(f"{prefix}/records/") and k.endswith(".json")):
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        problems += [f"{key} names missing {ref}" for ref in set(MEDIA_REF.findall(text)) if f"{prefix}/{ref}" not in keys]
    return problems


def texts_holding(cluster: Cluster, secrets: list[str]) -> list[str]:
    """Where the cluster keeps any of `secrets`: rows of any table of its database (runs and their config and
    tags, event logs, ticks, heartbeats), objects in its bucket, files under its root (instance
    dagster.yaml files, worker config, process logs, homes) other than the env file, which holds them
    for a client by design."""
    found = []
    tables = [name for (name,) in sql(cluster, "SELECT table_name FROM information_schema.tables "
                                               "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
    for table in tables:
        for secret in secrets:
            [(count,)] = sql(cluster, f'SELECT count(*) FROM "{table}" AS r WHERE r::text LIKE %s', (f"%{secret}%",))
            found += [f"table {table}: {count} row(s) hold {secret}"] if count else []
    s3, bucket = cluster.s3(), cluster.env["AVATAR_STORAGE"].removeprefix("s3://").split("/", 1)[0]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found += [f"s3 {item['Key']} holds {secret}" for secret in secrets if secret.encode() in body]
    for path in cluster.root.rglob("*"):
        if path.is_file() and path != cluster.root / "env":
            data = path.read_bytes()
            found += [f"{path} holds {secret}" for secret in secrets if secret.encode() in data]
    return found
