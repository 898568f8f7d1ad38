"""A render the daemon launched, its run worker killed with SIGKILL mid-stage: the code server fails the
run, `avatarops status` calls it crashed at that stage, and its scratch and partial files are removed.
(The CLI's own crashed runs are `test_crash_recovery.py`'s.)
"""

from __future__ import annotations

import json
import os
import signal

import dagster as dg
import pytest

from avatar_assets.media.partial import writer_of
from tests.regen_helpers import avatarops, finished_ticks, restored_world, step_events, submit, world_env
from tests.servers import DAEMON_INSTANCE_YAML, dagster_daemon, wait_until, write_instance_yaml

pytestmark = pytest.mark.slow


def worker_pid(instance, run_id: str) -> int | None:
    """The run worker's pid, from the engine event its launcher records ("Started process for run")."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata or {}
        if "pid" in metadata:
            return int(metadata["pid"].value)
    return None


def test_a_killed_run_worker_is_failed_by_its_code_server_and_cleaned_up(tmp_path_factory, sample_bundle, tmp_path):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        write_instance_yaml(home.root / "dagster", DAEMON_INSTANCE_YAML)
        instance = dg.DagsterInstance.from_config(str(home.root / "dagster"))
        try:
            env = world_env(home, AVATAR_SENSOR_INTERVAL_SECONDS="1")
            with dagster_daemon(env=env, log_path=tmp_path / "daemon.log") as daemon:
                submit(home, "ava", "killed", script="A render whose worker is killed in the middle of lip sync. " * 3)

                def in_lip_sync():
                    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "ava|killed"}), limit=1)
                    if runs and "lip_sync" in step_events(instance, runs[0].run_id, "STEP_START") \
                            and worker_pid(instance, runs[0].run_id):
                        return runs[0]
                    return None

                run = wait_until(in_lip_sync, timeout=300, interval=0.1, what="the launched render to reach lip_sync",
                                 process=daemon)
                pid = worker_pid(instance, run.run_id)
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
                           timeout=120, interval=0.5, what="the code server to fail the run", process=daemon)
                ticks = finished_ticks(instance)
                wait_until(lambda: finished_ticks(instance) >= ticks + 2, timeout=120, interval=1,
                           what="two automation ticks after the crash", process=daemon)
                status = avatarops(home, "status", "--json")
                assert status.returncode == 0, status.stderr[-2000:]
                entry = json.loads(status.stdout)["avatars"]["ava"]["outputs"]["killed"]
                # Nothing relaunched the cell: the render named its assets, so automation did not take its own
                # progress for a change (tests/test_one_automation.py has the deterministic case).
                others = [(r.run_id, r.status.value, r.tags.get("dagster/sensor_name"))
                          for r in instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "ava|killed"}))
                          if r.run_id != run.run_id]
                assert not others, others
                assert (entry["state"], entry["run_id"]) == ("crashed", run.run_id), entry
                assert entry["stage"] in ("lip_sync", "stitched_video", "enhanced_video", "output_package"), entry
                assert not (home.root / "tmp" / run.run_id).exists()
                assert not [path for path in home.root.rglob("*") if (writer_of(path) or (None, None))[1] == pid]
                assert daemon.alive, daemon.log_tail()
        finally:
            instance.dispose()
