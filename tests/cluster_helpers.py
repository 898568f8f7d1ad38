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


def cluster_env(**overrides: str) -> dict[str, str]:
    """A clean environment with quick sensors; the script gives every process the rest."""
    return clean_env(AVATAR_SENSOR_INTERVAL_SECONDS="3", AVATAR_UPLOAD_SETTLE_SECONDS="0", **overrides)


@contextmanager
def loopback_cluster(root: Path, *, workers: int, gpu_workers: int = 0) -> Iterator[Cluster]:
    """`cluster.py up` in `root` on free ports and a vhost of its own with the tests' environment, `cluster.py down`
    afterwards even when the test failed."""
    with shared.loopback_cluster(root, env=cluster_env(), workers=workers, gpu_workers=gpu_workers) as cluster:
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
