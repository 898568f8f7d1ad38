"""The loopback cluster for tests: what only the tests do to it (kill a worker, restart a process, find a pool
child, look for partial objects in S3), on top of scripts/loopback_cluster.py, which the benchmarks share (its
names stay importable from here).

Nothing here is a fixture; tests/test_cluster.py holds the one session-scoped cluster.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts import loopback_cluster as shared
from scripts.loopback_cluster import (  # noqa: F401 - the tests import these names from here
    SCRIPT,
    Cluster,
    duplicate_run_keys,
    most_overlapping,
    own_vhost,
    read_env_file,
    run_script,
    script,
    sql,
    step_intervals,
    submit,
    wait_for,
)
from scripts.loopback_cluster import env_vars as _env  # noqa: F401
from tests.servers import clean_env

# What `.cluster/env` must hold, no more, no less (DAGSTER_PG_PASSWORD: the instance reads it from the env).
ENV_CONTRACT = {
    "AVATAR_HOME", "DAGSTER_HOME", "AVATAR_STORAGE", "AVATAR_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "DAGSTER_PG_PASSWORD",
}


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
def loopback_cluster(root: Path, *, workers: int, gpu_workers: int = 0, s3_port: int = 0,
                     worker_s3_endpoint: str = "") -> Iterator[Cluster]:
    """`cluster.py up` in `root` on free ports and a vhost of its own with the tests' environment, `cluster.py down`
    afterwards even when the test failed. `s3_port` and `worker_s3_endpoint` put a proxy between the workers and S3."""
    env = cluster_env(CLUSTER_WORKER_S3_ENDPOINT=worker_s3_endpoint)
    with shared.loopback_cluster(root, env=env, workers=workers, gpu_workers=gpu_workers, s3_port=s3_port) as cluster:
        yield cluster


def kill_worker(cluster: Cluster, name: str) -> list[int]:
    """SIGKILL a whole worker: the dagster-celery parent, Celery's main process and its pool child."""
    members = script.group_members(cluster.process(name))
    for pid in members:
        os.kill(pid, signal.SIGKILL)
    return members


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
