"""The loopback cluster for tests: `scripts/cluster.py up|down` run as a person would, in a temporary root
on free ports, and what the tests do to it (read its env file, submit runs, kill a worker).

Nothing here is a fixture; tests/test_cluster.py holds the one session-scoped cluster.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
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


def cluster_env(**overrides: str) -> dict[str, str]:
    """A clean environment with quick sensors; the script gives every process the rest."""
    return clean_env(AVATAR_SENSOR_INTERVAL_SECONDS="3", AVATAR_UPLOAD_SETTLE_SECONDS="0", **overrides)


@contextmanager
def loopback_cluster(root: Path, *, workers: int, gpu_workers: int = 0) -> Iterator[Cluster]:
    """`cluster.py up` in `root` on free ports, `cluster.py down` afterwards even when the test failed."""
    ui_port = free_port()
    env = cluster_env()
    started = time.monotonic()
    done = run_script("up", "--root", str(root), "--ui-port", str(ui_port), "--workers", str(workers),
                      "--gpu-workers", str(gpu_workers), env=env, timeout=420)
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
