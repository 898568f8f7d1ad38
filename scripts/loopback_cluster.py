"""A loopback cluster for the tests and the benchmarks: `scripts/cluster.py up|down` run as a person would, in a
temporary root on free ports and a RabbitMQ vhost of its own, and what both then do with it (submit runs, read
its Postgres: run keys, step intervals).

Imported as `scripts.loopback_cluster` from the repository root (tests/cluster_helpers.py and bench/cluster.py);
nothing here is a fixture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from avatar_assets import dagster_compat as compat
from scripts import cluster as script

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "cluster.py"
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]  # <root>/env, parsed
    ui_url: str
    up_seconds: float
    caller_env: dict[str, str]  # what `up` ran with: `down` and `restart` run with it too

    @property
    def state(self):
        return script.load_state(self.root)

    def process(self, name: str):
        [found] = [p for p in self.state.processes if p.name == name]
        return found

    def client_env(self) -> dict[str, str]:
        """The caller's environment plus the env file: what a client such as `avatarops` runs with."""
        return {**self.caller_env, **self.env}

    def instance(self) -> dg.DagsterInstance:
        """The cluster's instance as a client sees it (DAGSTER_HOME from the env file)."""
        with env_vars(self.env):
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


def run_script(*args: str, env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "python"), str(SCRIPT), *args], cwd=REPO_ROOT, env=dict(env),
        capture_output=True, text=True, timeout=timeout,
    )


@contextmanager
def own_vhost() -> Iterator[str]:
    """A broker URL on a RabbitMQ vhost of its own (`rabbitmqctl`), deleted afterwards: the queues are named `cpu`
    and `gpu`, so two clusters on one vhost would take each other's runs, and `up` refuses to start beside another
    cluster's workers. Without `rabbitmqctl`, the default vhost."""
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


class ClusterUpFailed(RuntimeError):
    """`cluster.py up` exited non-zero; the message holds its output."""


@contextmanager
def loopback_cluster(root: Path, *, env: Mapping[str, str], workers: int, gpu_workers: int = 0,
                     s3_port: int = 0) -> Iterator[Cluster]:
    """`cluster.py up` in `root` with `env` on free ports (S3 on `s3_port` when one is given) and a vhost of its own,
    `cluster.py down` afterwards even when the caller failed."""
    with own_vhost() as broker:
        caller_env = {**env, "CLUSTER_BROKER_URL": broker}
        ui_port = script.free_port(LOOPBACK)
        started = time.monotonic()
        try:
            done = run_script("up", "--root", str(root), "--ui-port", str(ui_port), "--workers", str(workers),
                              "--gpu-workers", str(gpu_workers), "--s3-port", str(s3_port), env=caller_env, timeout=420)
            if done.returncode != 0:
                raise ClusterUpFailed(f"cluster up failed:\n{done.stdout}\n{done.stderr}")
            yield Cluster(root=root, env=read_env_file(root / "env"), ui_url=f"http://{LOOPBACK}:{ui_port}",
                          up_seconds=time.monotonic() - started, caller_env=caller_env)
        finally:
            run_script("down", "--root", str(root), env=caller_env, timeout=120)


def submit(cluster: Cluster, instance: dg.DagsterInstance, assets: list[str], partition: str) -> str:
    """Submit a run of `assets` to the cluster's queue, as `avatarops regenerate` does; the daemon launches it."""
    with env_vars(cluster.env):
        return submit_asset_run(instance, assets, partition)


def submit_asset_run(instance: dg.DagsterInstance, assets: list[str], partition: str) -> str:
    """A run of `assets` for one avatar partition submitted to `instance`'s run queue (whatever its launcher)."""
    request = dg.RunRequest(
        asset_selection=[dg.AssetKey(a) for a in assets], partition_key=partition,
        tags={compat.PARTITION_NAME_TAG: partition},  # a queued run reads its partition from its tags
    )
    return compat.submit_asset_run(instance, request, module_name="avatar_assets.definitions",
                                   location_name="avatar_assets")


@contextmanager
def env_vars(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` for the duration (the instance and the code location read their settings there)."""
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
