"""The production topology on loopback (`make cluster`, scripts/cluster.py), one cluster per test session:
Postgres, moto S3, a gRPC code server, the daemon, the webserver and three Celery workers, one of them
gpu-only (CLUSTER_GPU_WORKERS=1), each with its own AVATAR_HOME. The workers reach S3 through a
fault-injecting proxy (tests/s3_fault_proxy.py) that forwards everything until a test arms it. The tests run
in file order: the last one takes the cluster down and checks that nothing it started is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import dagster as dg
import pytest

from tests.cluster_helpers import (
    ENV_CONTRACT,
    FAKE_SECRETS,
    Cluster,
    cluster_env,
    duplicate_run_keys,
    kill_worker,
    loopback_cluster,
    most_overlapping,
    pool_child,
    read_env_file,
    restart,
    run_script,
    script,
    sql,
    step_intervals,
    store_problems,
    submit,
    texts_holding,
    wait_for,
)
from avatar_assets import dagster_compat as compat
from avatar_assets.ops.demo import build_sample_bundle
from tests.s3_fault_proxy import S3FaultProxy
from tests.servers import IDENTITY_ASSETS, REPO_ROOT, VENV_BIN, avatarops, build_sample, free_port

pytestmark = pytest.mark.slow

CPU_ASSETS = ["source_upload", "validated_inputs", "voice_profile"]  # no `gpu`-pool stage among them
GPU_POOL_STEPS = {"neutral_image", "character_sheet", "backgrounds", "speech", "lip_sync"}  # the stages declaring pool="gpu"
LOAD_AVATARS = [f"load-{i}" for i in range(1, 5)]
WORKER_TAG = "avatar/worker"
QUEUE_TAG = "dagster-celery/queue"


@pytest.fixture(scope="module")
def s3_proxy():
    """Between the workers and the cluster's S3 server (its port chosen here, so the proxy knows it)."""
    s3_port = free_port()
    proxy = S3FaultProxy(f"http://127.0.0.1:{s3_port}")
    proxy.s3_port = s3_port
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_proxy):
    with loopback_cluster(tmp_path_factory.mktemp("cluster"), workers=3, gpu_workers=1, s3_port=s3_proxy.s3_port,
                          worker_s3_endpoint=s3_proxy.url) as running:
        yield running


@pytest.fixture(scope="module")
def instance(cluster):
    instance = cluster.instance()
    try:
        yield instance
    finally:
        instance.dispose()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_sample(tmp_path_factory.mktemp("bundle") / "astronaut")


def finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def test_cluster_is_up_and_its_env_file_reaches_the_instance(cluster: Cluster):
    assert set(cluster.env) == ENV_CONTRACT
    assert cluster.env["AVATAR_STORAGE"].startswith("s3://")
    # Only the env file (plus PATH): a fresh interpreter reaches the cluster's instance.
    probe = subprocess.run(
        [str(VENV_BIN / "python"), "-c",
         "import dagster as dg; i = dg.DagsterInstance.get(); "
         "print(type(i.run_storage).__name__, type(i.run_launcher).__name__, type(i.run_coordinator).__name__, "
         "i.run_monitoring_enabled, i.run_retries_enabled)"],
        cwd=REPO_ROOT, env={**cluster.env, "PATH": str(VENV_BIN), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [
        "PostgresRunStorage", "AvatarCeleryRunLauncher", "QueuedRunCoordinator", "True", "True",
    ]
    # Every process has its own homes; the webserver answers on loopback.
    homes = sorted(p.parent.name for p in (cluster.root / "homes").glob("*/avatar_home"))
    assert homes == ["code-server", "cpu1", "cpu2", "daemon", "gpu1", "webserver"]
    assert cluster.env["DAGSTER_HOME"] == str(cluster.root / "client" / "dagster_home")
    assert cluster.state.spec.host == "127.0.0.1"
    assert script._consumed_queues(cluster.state.spec) == {"gpu1": ["gpu"], "cpu1": ["cpu"], "cpu2": ["cpu"]}
    rule = cluster.s3().get_bucket_encryption(Bucket="avatars")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    print(f"cluster up in {cluster.up_seconds:.1f} s")


def test_an_upload_with_the_env_file_runs_on_the_gpu_worker_encrypted(cluster: Cluster, instance, bundle):
    """`avatarops upload` with only the env file puts the bundle in the S3 inbox; the upload sensor (in the
    daemon, another home) launches build_identity; it has `gpu`-pool stages, so it goes to the gpu queue,
    which only gpu1 takes, and reads the bundle from S3; everything written to S3 is encrypted at rest."""
    uploaded = avatarops("upload", str(bundle), env={**cluster_env(), **cluster.env})
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    [run] = wait_for(lambda: [r for r in instance.get_runs() if r.job_name == "build_identity" and r.is_finished],
                     timeout=300, what="the sensor's identity run to finish")
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.tags
    assert run.tags[QUEUE_TAG] == "gpu"
    assert run.tags[WORKER_TAG].startswith("gpu1@")
    # (The run's own events: automation may refresh an asset afterwards, so "latest" could be another run's.)
    materialized = {
        record.event_log_entry.dagster_event.asset_key.to_user_string()
        for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    }
    assert materialized == set(IDENTITY_ASSETS)

    s3 = cluster.s3()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="avatars")
            for o in page.get("Contents", [])]
    assert {"inbox", "media", "records"} <= {k.split("/")[1] for k in keys}
    unencrypted = [k for k in keys if s3.head_object(Bucket="avatars", Key=k).get("ServerSideEncryption") != "AES256"]
    assert unencrypted == []
    # Nothing shared through a disk: no home holds the bundle, media or records.
    local = [p for p in cluster.root.glob("**/avatar_home/**/*") if p.is_file() and "s3-cache" not in p.parts]
    assert [p for p in local if {"inbox", "media", "records"} & set(p.parts)] == []


def test_status_shows_the_worker_of_each_run(cluster: Cluster):
    """`avatarops status` with the env file alone names the worker that ran the identity run, JSON and text."""
    env = {**cluster_env(), **cluster.env}
    shown = avatarops("status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    identity = json.loads(shown.stdout)["avatars"]["astronaut"]["identity"]
    assert identity["worker"].startswith("gpu1@")
    text = avatarops("status", env=env)
    assert f"avatar astronaut: ready (identity run on {identity['worker']})" in text.stdout, text.stdout


def request_video(cluster: Cluster, avatar: str, slug: str, tmp_path) -> None:
    """A one-sentence video request, from a client with only the env file: it goes into the S3 inbox."""
    script_file = tmp_path / f"{avatar}-{slug}.txt"
    script_file.write_text("Hello from the cluster.")
    done = avatarops("request", avatar, slug, "--script", str(script_file), env={**cluster_env(), **cluster.env})
    assert done.returncode == 0 and "s3://" in done.stdout, done.stdout + done.stderr


def runs_of(instance: dg.DagsterInstance, **tags: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


@pytest.mark.timeout(1200)  # 330-420 s on 2 shared cores, 300 s more where the kill lands in a launch
def test_load_with_a_daemon_restart_mid_tick(cluster: Cluster, instance, tmp_path_factory):
    """Four bundles uploaded at once (the daemon is killed -9 while its sensor submits their runs and started
    again), four cpu-only refreshes, then four one-sentence video requests: every upload and request completes,
    no run key launches twice, none is lost, the `gpu` pool limit holds across workers, and both cpu workers
    took work.

    Where the kill lands while the daemon launches a run (marked STARTING, its Celery task not yet sent), that
    run stays STARTING until run monitoring's start timeout (300 s) fails it, and run retries launch it again:
    the upload then completes in that retry, under the same run key."""
    started = time.monotonic()
    env = {**cluster_env(), **cluster.env}
    folder = tmp_path_factory.mktemp("load")
    bundles = [build_sample_bundle(folder / avatar, avatar) for avatar in LOAD_AVATARS]
    uploads = [subprocess.Popen([str(VENV_BIN / "avatarops"), "upload", str(b)], env=env, cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for b in bundles]
    for upload in uploads:
        assert upload.wait(timeout=120) == 0, upload.stdout.read()

    def identity_runs() -> list[dg.DagsterRun]:
        return [r for r in instance.get_runs(filters=dg.RunsFilter(job_name="build_identity"))
                if r.tags.get(compat.PARTITION_NAME_TAG) in LOAD_AVATARS and "dagster/parent_run_id" not in r.tags]

    def outcome(run: dg.DagsterRun) -> dg.DagsterRun:
        """The run, or the newest automatic retry of it (newest first)."""
        return next(iter(runs_of(instance, **{"dagster/root_run_id": run.run_id})), run)

    def identity_outcomes() -> list[dg.DagsterRun] | None:
        runs = identity_runs()
        if len({r.tags[compat.PARTITION_NAME_TAG] for r in runs}) < 4:
            return None
        outcomes = [outcome(r) for r in runs]
        finished = all(r.is_finished for r in outcomes)
        return outcomes if finished and all(r.status == dg.DagsterRunStatus.SUCCESS or
                                            r.tags.get("dagster/retry_number") == "2" for r in outcomes) else None

    # Mid-tick: the sensor has submitted one of the four runs; kill -9 the daemon's whole group and restart it.
    wait_for(identity_runs, timeout=120, interval=0.1, what="the upload sensor to submit a load run")
    restarted = restart(cluster, "daemon")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    done = wait_for(identity_outcomes, timeout=840, what="four uploads to complete (in a retry where the kill lost a launch)")
    assert len(identity_runs()) == 4, "one run per upload, none twice"
    assert sorted(r.tags[compat.PARTITION_NAME_TAG] for r in done) == LOAD_AVATARS
    assert {r.status for r in done} == {dg.DagsterRunStatus.SUCCESS}, [(r.run_id, r.status, r.tags) for r in done]
    identities_at = time.monotonic() - started

    refreshes = [submit(cluster, instance, CPU_ASSETS, avatar) for avatar in LOAD_AVATARS]
    for avatar in LOAD_AVATARS:
        request_video(cluster, avatar, "hello", folder)

    def requested() -> list[dg.DagsterRun] | None:
        """The request sensor's runs of the four cells (automation may refresh a cell too, in runs of its own)."""
        runs = [r for a in LOAD_AVATARS for r in runs_of(instance, **{"dagster/sensor_name": "output_request_sensor",
                                                                     compat.PARTITION_NAME_TAG: f"{a}|hello"})]
        cells = {r.tags[compat.PARTITION_NAME_TAG] for r in runs}
        return runs if len(cells) == 4 and all(r.is_finished for r in runs) else None

    videos = wait_for(requested, timeout=480, what="four video runs to finish")
    assert len(videos) == 4, "one run per request, none twice"
    assert {r.status for r in videos} == {dg.DagsterRunStatus.SUCCESS}, [(r.run_id, r.status) for r in videos]
    def refreshed() -> list[dg.DagsterRun] | None:
        runs = [instance.get_run_by_id(run_id) for run_id in refreshes]
        return runs if all(r.is_finished for r in runs) else None

    cpu_runs = wait_for(refreshed, timeout=240, what="the cpu refreshes to finish")
    assert {r.status for r in cpu_runs} == {dg.DagsterRunStatus.SUCCESS}
    took = time.monotonic() - started

    assert duplicate_run_keys(cluster) == []
    assert {r.tags[WORKER_TAG].split("@")[0] for r in [*done, *videos]} == {"gpu1"}
    assert {r.tags[WORKER_TAG].split("@")[0] for r in cpu_runs} == {"cpu1", "cpu2"}, "both cpu workers took work"
    load_runs = {r.run_id for r in [*done, *videos]}
    intervals = step_intervals(cluster, GPU_POOL_STEPS)  # every run's: the limit holds for all of them
    # neutral_image and character_sheet per identity, backgrounds, speech and lip_sync per video
    assert len([i for i in intervals if i[0] in load_runs]) == 4 * 2 + 4 * 3, intervals
    assert "default_limit: 1" in (cluster.root / "dagster.yaml").read_text()  # the `gpu` pool's limit
    assert most_overlapping(intervals) <= 1
    assert store_problems(cluster) == []
    print(f"load: 4 identities in {identities_at:.0f} s, with 4 refreshes and 4 videos {took:.0f} s")


def test_a_killed_pool_child_during_stitched_video_fails_the_run_and_the_retry_redoes_from_there(
        cluster: Cluster, instance, tmp_path):
    """SIGKILL the prefork child executing a video run while it is in `stitched_video`: nothing partial shows in
    S3, run monitoring fails the run (Celery reports the lost task), and the run retry (FROM_FAILURE) executes
    only stitched_video and what follows."""
    request_video(cluster, "astronaut", "crash", tmp_path)
    partition = "astronaut|crash"

    def in_stitched_video():
        runs = runs_of(instance, **{compat.PARTITION_NAME_TAG: partition})
        if not runs:
            return None
        [row] = sql(cluster, "SELECT count(*) FROM event_logs WHERE run_id = %s AND step_key = 'stitched_video' "
                             "AND dagster_event_type = 'STEP_START'", (runs[-1].run_id,))
        return runs[-1] if row[0] else None

    run = wait_for(in_stitched_video, timeout=300, interval=0.1, what="the video run to enter stitched_video")
    worker = instance.get_run_by_id(run.run_id).tags[WORKER_TAG].split("@")[0]
    os.kill(pool_child(cluster, worker), signal.SIGKILL)
    killed_at = time.monotonic()

    failed = wait_for(lambda: finished(instance, run.run_id), timeout=120, what="run monitoring to fail the run")
    latency = time.monotonic() - killed_at
    assert failed.status == dg.DagsterRunStatus.FAILURE
    [row] = sql(cluster, "SELECT count(*) FROM event_logs WHERE run_id = %s AND step_key = 'stitched_video' "
                         "AND dagster_event_type = 'STEP_SUCCESS'", (run.run_id,))
    assert row[0] == 0, "the kill came after stitched_video had finished"
    assert store_problems(cluster) == []

    retry = wait_for(
        lambda: [r for r in runs_of(instance, **{"dagster/parent_run_id": run.run_id}) if r.is_finished],
        timeout=300, what="the retry run to finish")[0]
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert retry.tags.get("dagster/retry_strategy", "FROM_FAILURE") == "FROM_FAILURE"
    materialized = {
        record.event_log_entry.dagster_event.asset_key.to_user_string()
        for record in instance.get_records_for_run(retry.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    }
    assert materialized == {"stitched_video", "enhanced_video", "output_package"}
    assert store_problems(cluster) == []
    print(f"run failed {latency:.1f} s after its pool child was killed")


def test_a_killed_worker_fails_its_run_and_the_retry_runs_on_the_other(cluster: Cluster, instance):
    """A cpu-only run goes to a cpu worker; SIGKILL that whole worker mid-run: the stock health check would
    see STARTED forever, ours pings the worker, so monitoring fails the run within 60 s and the run retry
    executes on the other cpu worker."""
    run_id = submit(cluster, instance, CPU_ASSETS, "astronaut")
    started = wait_for(
        lambda: (r := instance.get_run_by_id(run_id)) and r.status == dg.DagsterRunStatus.STARTED
        and WORKER_TAG in r.tags and r.tags[WORKER_TAG].split("@")[0] in {"cpu1", "cpu2"} and r,
        timeout=180, interval=0.2, what="the cpu run to start on a cpu worker",
    )
    assert started.tags[QUEUE_TAG] == "cpu"
    victim = started.tags[WORKER_TAG].split("@")[0]
    survivor = ({"cpu1", "cpu2"} - {victim}).pop()
    assert len(kill_worker(cluster, victim)) >= 3, "parent, Celery main process and its pool child"
    killed_at = time.monotonic()

    failed = wait_for(lambda: finished(instance, run_id), timeout=90, what="run monitoring to fail the run")
    took = time.monotonic() - killed_at
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert took <= 60, f"failed {took:.0f} s after the kill"
    print(f"run failed {took:.1f} s after its worker was killed")

    retry = wait_for(
        lambda: [r for r in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
                 if r.is_finished],
        timeout=240, what="the retry run to finish",
    )[0]
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert retry.tags[QUEUE_TAG] == "cpu"
    assert retry.tags[WORKER_TAG].startswith(f"{survivor}@")


VOICE_RECORD = "records/avatars/astronaut/voice_profile.json"
RUN_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def status_names_the_worker(env: dict[str, str], instance: dg.DagsterInstance, avatar: str) -> dict:
    """`avatarops status --json`'s entry for the avatar's newest run, once it names the worker that executed
    that run (automation may queue a refresh after the runs a test made, and a queued run has no worker yet)."""
    def named() -> dict | None:
        identity = json.loads(avatarops("status", "--json", env=env).stdout)["avatars"][avatar]["identity"]
        run = instance.get_run_by_id(identity["run_id"])
        return identity if identity["worker"] and identity["worker"] == run.tags.get(WORKER_TAG) else None

    return wait_for(named, timeout=240, interval=2, what=f"status to name the worker of {avatar}'s newest run")


def stored(cluster: Cluster, key: str) -> bytes:
    """An object's bytes as the S3 server itself holds them (not through the workers' proxy)."""
    return cluster.s3().get_object(Bucket="avatars", Key=f"cluster/{key}")["Body"].read()


def test_s3_answering_500_during_a_put_is_retried_and_the_previous_record_stays(cluster: Cluster, instance, s3_proxy):
    """For 6 s from the first put of astronaut's voice_profile record, S3 answers that put with 500: botocore
    and the stage's RetryPolicy try again, the run succeeds, and meanwhile the previous record is there,
    whole; nothing half-written is referenced."""
    previous = stored(cluster, VOICE_RECORD)
    s3_proxy.fail_puts(f"{VOICE_RECORD}$", seconds=6)
    try:
        run_id = submit(cluster, instance, ["voice_profile"], "astronaut")
        wait_for(lambda: s3_proxy.failed, timeout=180, interval=0.1, what="the first put of the record to fail")
        assert stored(cluster, VOICE_RECORD) == previous, "the previous version changed under a failing put"
        run = wait_for(lambda: finished(instance, run_id), timeout=180, what="the run to finish")
    finally:
        s3_proxy.clear()
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.tags
    assert len(s3_proxy.failed) >= 2, "the put was tried again inside the window"
    assert json.loads(stored(cluster, VOICE_RECORD))["kind"] == json.loads(previous)["kind"]
    assert store_problems(cluster) == []
    print(f"{len(s3_proxy.failed)} puts answered 500; the run succeeded")


def test_an_s3_outage_outlasting_the_retries_fails_the_run_naming_the_key_and_avatarops_retry_completes_it(
        cluster: Cluster, instance, s3_proxy):
    """The CLI with the env file alone: `regenerate` queues a run (the daemon launches it on a cpu worker);
    S3 answers every put of its record with 500 until the retries are spent: the run fails with an error
    naming the key and the previous record intact. Once S3 answers, `avatarops retry RUN` queues the
    re-execution from failure, which completes on a worker; `status` shows it with that worker."""
    env = {**cluster_env(), **cluster.env}
    previous = stored(cluster, VOICE_RECORD)
    s3_proxy.fail_puts(f"{VOICE_RECORD}$")
    try:
        queued = avatarops("regenerate", "voice_profile", "--avatar", "astronaut", env=env)
        assert queued.returncode == 0, queued.stdout + queued.stderr
        [run_id] = RUN_ID.findall(queued.stdout)
        failed = wait_for(lambda: finished(instance, run_id), timeout=240, what="the run to exhaust its retries")
    finally:
        s3_proxy.clear()
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert failed.tags[WORKER_TAG].split("@")[0] in {"cpu1", "cpu2"}
    [failure] = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    error = failure.event_log_entry.dagster_event.step_failure_data.error
    assert f"s3://avatars/cluster/{VOICE_RECORD}" in error.to_string(), error.to_string()
    assert stored(cluster, VOICE_RECORD) == previous
    assert store_problems(cluster) == []
    print(f"{len(s3_proxy.failed)} puts answered 500 before the run failed")

    again = avatarops("retry", run_id, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    [retry_id] = [found for found in RUN_ID.findall(again.stdout) if found != run_id]
    retry = wait_for(lambda: finished(instance, retry_id), timeout=240, what="the retry to finish")
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert retry.tags[WORKER_TAG].split("@")[0] in {"cpu1", "cpu2"}
    assert retry.tags["dagster/parent_run_id"] == run_id
    assert store_problems(cluster) == []

    assert status_names_the_worker(env, instance, "astronaut")["worker"].split("@")[0] in {"gpu1", "cpu1", "cpu2"}


def test_the_cli_drives_the_cluster(cluster: Cluster, instance):
    """With the env file alone: `process` is refused (a daemon drives the instance); `backfill` queues its
    runs and prints their ids; they execute on the cluster's cpu workers and `status` names the worker."""
    env = {**cluster_env(), **cluster.env}
    refused = avatarops("process", env=env)
    assert refused.returncode == 2 and "a dagster-daemon runs on this instance" in refused.stderr, refused.stderr

    queued = avatarops("backfill", "voice_profile", "--avatar", "astronaut", env=env)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    run_ids = RUN_ID.findall(queued.stdout)
    assert run_ids, queued.stdout
    runs = wait_for(lambda: all(finished(instance, r) for r in run_ids) and [instance.get_run_by_id(r) for r in run_ids],
                    timeout=300, what="the backfill's runs to finish")
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert {r.tags[WORKER_TAG].split("@")[0] for r in runs} <= {"cpu1", "cpu2"}
    assert status_names_the_worker(env, instance, "astronaut")["worker"].split("@")[0] in {"gpu1", "cpu1", "cpu2"}


def test_postgres_dropping_every_connection_mid_run_is_survived(cluster: Cluster, instance):
    """`pg_terminate_backend` on every connection to the cluster's database (but the one asking) while a run
    is in a step: the run completes (or fails and its automatic retry completes), the daemon keeps
    heartbeating and launches a run submitted afterwards. Every process's pool pings a connection before
    handing it out (resources/pooled_postgres.py), so none uses a dead one."""
    run_id = submit(cluster, instance, CPU_ASSETS, "astronaut")

    def in_a_step():
        [(count,)] = sql(cluster, "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                                  "'STEP_START'", (run_id,))
        return count

    wait_for(in_a_step, timeout=180, interval=0.1, what="the run to enter a step")
    # (In the select list, not the WHERE clause: there Postgres may call it before excluding its own pid.)
    terminated = [pid for pid, done in sql(
        cluster, "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                 "AND pid <> pg_backend_pid()", (cluster.state.db_name,)) if done]
    killed_at = time.time()
    assert terminated, "no connection was open"

    def completed(run_id: str) -> dg.DagsterRun | None:
        """The run, or its retry, once it succeeded; None while either is still going."""
        run = finished(instance, run_id)
        if run is None or run.status == dg.DagsterRunStatus.SUCCESS:
            return run
        retries = runs_of(instance, **{"dagster/parent_run_id": run_id})
        return next((r for r in retries if r.status == dg.DagsterRunStatus.SUCCESS), None)

    done = wait_for(lambda: completed(run_id), timeout=300, what="the run (or its retry) to complete")
    assert done.status == dg.DagsterRunStatus.SUCCESS
    wait_for(lambda: (beats := instance.get_daemon_heartbeats()) and all(b.timestamp > killed_at for b in beats.values()),
             timeout=120, what="every daemon to heartbeat after the connections were dropped")
    later = submit(cluster, instance, ["voice_profile"], "astronaut")
    run = wait_for(lambda: finished(instance, later), timeout=240, what="a run submitted afterwards to finish")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    print(f"{len(terminated)} connections terminated; {done.run_id[:8]} completed "
          f"({'retry' if done.run_id != run_id else 'same run'})")


def test_secrets_reach_processes_only_through_the_environment(cluster: Cluster):
    """The fake secrets every process had in its environment (S3, Postgres, webhook) are in no table of the
    instance's database (event log, runs with their tags and config, ticks), no S3 object, no dagster.yaml
    and no log or home under the cluster's root; the instance files name the variable instead."""
    secrets = [script.FAKE_AWS["AWS_SECRET_ACCESS_KEY"], FAKE_SECRETS["DAGSTER_PG_PASSWORD"],
               FAKE_SECRETS["AVATAR_WEBHOOK_SECRET"], FAKE_SECRETS["AVATAR_WEBHOOK_SECRET"].removeprefix("whsec_")]
    assert read_env_file(cluster.root / "env")["DAGSTER_PG_PASSWORD"] == FAKE_SECRETS["DAGSTER_PG_PASSWORD"]
    assert "password: {env: DAGSTER_PG_PASSWORD}" in (cluster.root / "dagster.yaml").read_text()
    assert texts_holding(cluster, secrets) == []


def test_cluster_down_stops_everything_it_started(cluster: Cluster):
    processes = cluster.state.processes
    assert {p.name for p in processes} == {"s3", "code-server", "daemon", "webserver", "gpu1", "cpu1", "cpu2"}
    done = run_script("down", "--root", str(cluster.root), env=cluster_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in processes if script.group_members(p)] == []
    assert not (cluster.root / "state.json").exists()
    assert read_env_file(cluster.root / "env")  # the env file stays, for a person to read
