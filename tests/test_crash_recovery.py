"""Crash recovery: a render whose process is killed with SIGKILL mid-stage is found dead by the next command,
marked failed with an engine event naming the crash, its scratch folder and every partial file the dead
process left are removed, `status` calls it `crashed` at that stage, and `retry` redoes only that stage and
what follows. Revoke completes after such a crash (a live render is stopped by revoke itself: test_revoke.py).

Real processes: `avatarops process` runs in a subprocess that the test kills; the instance is SQLite on disk.
"""

from __future__ import annotations

import json
import signal
import subprocess

import dagster as dg
import pytest

from avatar_assets.media.partial import host_label, writer_of
from avatar_assets.video.assets import VIDEO_STAGES
from resources.layout import avatar_records
from tests.regen_helpers import avatarops, cell, restored_world, step_events, submit, world_env
from tests.servers import REPO_ROOT, VENV_BIN, wait_until

LONG_SCRIPT = (
    "Welcome back to the studio. Today we look at three ideas for your next launch. "
    "First, keep the message short and clear. Second, show the product in use. "
    "Third, end with one simple call to action. Thanks for watching, and see you next week."
)


def start_render(home, tmp_path, avatar_id: str, slug: str) -> subprocess.Popen:
    submit(home, avatar_id, slug, script=LONG_SCRIPT)
    log = open(tmp_path / f"process-{slug}.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([str(VENV_BIN / "avatarops"), "process"], cwd=REPO_ROOT, env=world_env(home),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run_in_stage(instance: dg.DagsterInstance, partition: str, stage: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": partition}), limit=1)
    if runs and stage in step_events(instance, runs[0].run_id, "STEP_START"):
        return runs[0]
    return None


def files_of_dead_writer(root, pid: int) -> list[str]:
    return [str(path) for path in root.rglob("*") if (writer_of(path) or (None, None))[1] == pid]


@pytest.mark.slow  # restores (or first builds) the rendered world
def test_a_render_killed_mid_stage_is_failed_cleaned_up_and_retried_from_that_stage(tmp_path_factory, sample_bundle, tmp_path):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, partition = home.instance, cell("ava", "crash")
        worker = start_render(home, tmp_path, "ava", "crash")
        try:
            run = wait_until(lambda: run_in_stage(instance, partition, "stitched_video"), timeout=300, interval=0.05,
                             what="the render to reach stitched_video")
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        started = step_events(instance, run.run_id, "STEP_START")
        finished = set(step_events(instance, run.run_id, "STEP_SUCCESS"))
        stage = [step for step in started if step not in finished and step in VIDEO_STAGES][-1]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # nobody has looked yet
        # What a SIGKILL leaves: the run's scratch folder and, wherever a write was under way, a partial file.
        # One more partial file stands for an interrupted record write, so the sweep is always exercised.
        planted = home.root / "records" / f".crash.json.{host_label()}.{worker.pid}-x.part"
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_text("{half a record")
        assert files_of_dead_writer(home.root, worker.pid)

        status = avatarops(home, "status", "--json")
        assert status.returncode == 0, status.stderr[-3000:]
        entry = json.loads(status.stdout)["avatars"]["ava"]["outputs"]["crash"]
        assert (entry["state"], entry["stage"], entry["run_id"]) == ("crashed", stage, run.run_id), entry
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        engine = [e.dagster_event.message or "" for e in instance.all_logs(run.run_id) if e.dagster_event]
        assert any(f"pid {worker.pid}" in message and "is gone" in message for message in engine), engine[-5:]
        assert not (home.root / "tmp" / run.run_id).exists()
        assert files_of_dead_writer(home.root, worker.pid) == []
        again = avatarops(home, "status")
        assert f"output crash: crashed at {stage}: its process died" in again.stdout, again.stdout

        retried = avatarops(home, "retry", run.run_id)
        assert retried.returncode == 0, retried.stdout + retried.stderr[-3000:]
        [retry] = instance.get_runs(dg.RunsFilter(tags={"avatarops/retry_of": run.run_id}))
        materialized = [
            r.event_log_entry.dagster_event.asset_key.to_user_string()
            for r in instance.get_records_for_run(retry.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        ]
        assert materialized == VIDEO_STAGES[VIDEO_STAGES.index(stage):], (stage, materialized)
        assert json.loads(avatarops(home, "status", "--json").stdout)["avatars"]["ava"]["outputs"]["crash"]["state"] == "done"
        assert not (home.root / "tmp").exists() or not list((home.root / "tmp").iterdir())


@pytest.mark.slow
def test_revoke_completes_after_a_crash_and_leaves_nothing_of_the_dead_render(tmp_path_factory, sample_bundle, tmp_path):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance = home.instance
        worker = start_render(home, tmp_path, "bob", "crash")
        try:
            run = wait_until(lambda: run_in_stage(instance, cell("bob", "crash"), "lip_sync"), timeout=300, interval=0.05,
                             what="the render to reach lip_sync")
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        revoked = avatarops(home, "revoke", "bob", "--reason", "consent withdrawn", timeout=120)
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr[-3000:]
        assert instance.get_run_by_id(run.run_id) is None  # the crashed run, with its events, is deleted too
        assert not (home.root / "tmp" / run.run_id).exists()
        assert files_of_dead_writer(home.root, worker.pid) == []
        assert list(home.store.list_keys(avatar_records("bob"))) == []
        assert not (home.root / "inbox" / "avatars" / "bob").exists()
        report = json.loads(avatarops(home, "status", "--json").stdout)
        assert report["avatars"]["bob"]["state"] == "revoked"
        refused = avatarops(home, "request", "bob", "again", "--script", str(write_script(tmp_path)))
        assert refused.returncode == 2 and "was revoked" in refused.stderr, refused.stderr


def test_an_interrupted_revoke_says_revoking_refuses_requests_and_resumes(home, sample_bundle, tmp_path):
    from datetime import UTC, datetime

    from avatar_assets.contracts import Tombstone
    from resources.layout import tombstone_key
    from tests.conftest import copy_sample

    copy_sample(sample_bundle, home.inbox, "dan")
    home.instance.add_dynamic_partitions("avatars", ["dan"])
    # What a revoke killed after its first step leaves: the tombstone says `revoking`, nothing is deleted yet.
    stone = Tombstone(avatar_id="dan", status="revoking", revoked_at=datetime.now(UTC), by="legal", reason="takedown")
    home.store.write_text(tombstone_key("dan"), stone.model_dump_json())
    assert json.loads(avatarops(home, "status", "--json").stdout)["avatars"]["dan"]["state"] == "revoking"
    refused = avatarops(home, "request", "dan", "s1", "--script", str(write_script(tmp_path)))
    assert refused.returncode == 2 and "was revoked" in refused.stderr and "takedown" in refused.stderr
    resumed = avatarops(home, "revoke", "dan", "--reason", "takedown")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(avatarops(home, "status", "--json").stdout)["avatars"]["dan"]["state"] == "revoked"
    assert not (home.inbox / "dan").exists()


def write_script(tmp_path):
    path = tmp_path / "script.txt"
    path.write_text("Hello there.")
    return path


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_revoke_stops_the_process_named_in_a_runs_tags(home, monkeypatch, ignores_sigterm):
    """What revoke does to a render running in another process, deterministically: SIGTERM, then SIGKILL for
    a process that ignores it; then the run, whose process is gone, is failed."""
    import socket
    import sys
    import time

    from avatar_assets.ops import revoke, run_health

    monkeypatch.setattr(run_health, "TERMINATE_GRACE_S", 1.0)
    code = "import signal, time\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignores_sigterm else "") + \
        "print('ready', flush=True)\ntime.sleep(120)\n"
    render = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert render.stdout.readline().strip() == "ready"
    tags = {"avatar": "dan", run_health.HOST_TAG: socket.gethostname(), run_health.PID_TAG: str(render.pid),
            run_health.PID_STARTED_TAG: run_health.process_started_at(render.pid)}
    run = home.instance.add_run(dg.DagsterRun(job_name="render_video", run_id="a" * 36, tags=tags,
                                           status=dg.DagsterRunStatus.STARTED))
    started = time.monotonic()
    revoke.stop_runs(home.instance, "dan", wait_s=10)
    assert render.wait(timeout=10) == (-signal.SIGKILL if ignores_sigterm else -signal.SIGTERM)
    assert time.monotonic() - started < 8
    assert home.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
