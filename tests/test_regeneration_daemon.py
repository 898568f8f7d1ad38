"""Exact regeneration through the real daemon: `dagster-daemon run -w workspace.yaml` evaluates the
shared automation condition on the *remote* asset graph (the one the UI shows), where a custom
PartitionMapping would be dropped and avatar-exact lineage would widen to "everything downstream".

The rendered world (3 avatars x 2 cells, built by the real sensors and runs) is restored, the daemon is
started and allowed one quiet automation tick, then only `neutral_image[ava]` is materialized (what the
UI's Materialize button does). The daemon's automation sensor must launch runs that materialize exactly
ava's character_sheet, identity_bundle and the five stages below scene_assets of each of its two cells.
"""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.tags import AUTOMATION_CONDITION_TAG, SENSOR_NAME_TAG

from partitions import run_partition
from tests.regen_helpers import (
    FINISHED,
    expected_after_neutral_image,
    last_storage_id,
    materializations_after,
    materialize_only,
    restored_world,
    world_env,
)
from tests.servers import DAEMON_INSTANCE_YAML, dagster_daemon, wait_until, write_instance_yaml

pytestmark = pytest.mark.slow

AUTOMATION_SENSOR = "avatar_automation"


def automation_ticks(instance: dg.DagsterInstance) -> list:
    states = [s for s in instance.all_instigator_state() if s.name == AUTOMATION_SENSOR]
    if not states:
        return []
    return list(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id))


def finished_ticks(instance: dg.DagsterInstance) -> int:
    return sum(1 for tick in automation_ticks(instance) if tick.status != TickStatus.STARTED)


def test_daemon_automation_refreshes_exactly_the_regenerated_avatars_partitions(tmp_path_factory, sample_bundle, tmp_path):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        write_instance_yaml(home.root / "dagster", DAEMON_INSTANCE_YAML)
        instance = dg.DagsterInstance.from_config(str(home.root / "dagster"))
        try:
            env = world_env(home, AVATAR_SENSOR_INTERVAL_SECONDS="1")
            with dagster_daemon(env=env, log_path=tmp_path / "daemon.log") as daemon:
                # Automation's first tick only sets its cursor; let it pass so the next one sees the change.
                wait_until(lambda: finished_ticks(instance) >= 1, timeout=180, interval=1,
                           what="the first automation tick", process=daemon)
                assert not list(instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED,
                                                                          dg.DagsterRunStatus.STARTED]))), \
                    "the daemon launched runs in an unchanged world"
                runs_before = {run.run_id for run in instance.get_runs()}
                start = last_storage_id(instance)

                materialize_only(home, "neutral_image", "ava")
                expected = expected_after_neutral_image("ava")

                def refreshed():
                    new_runs = [r for r in instance.get_runs() if r.run_id not in runs_before]
                    failed = [r for r in new_runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
                    assert not failed, f"daemon run(s) failed: {[r.run_id for r in failed]}\n{daemon.log_tail()}"
                    done = set(materializations_after(instance, start)) >= set(expected) | {("neutral_image", "ava")}
                    active = [r for r in instance.get_runs() if r.status not in FINISHED]
                    return done and not active

                wait_until(refreshed, timeout=420, interval=2, what="the daemon's refresh runs to finish", process=daemon)
                # A few more ticks: nothing else is launched once the refresh is through.
                ticks = finished_ticks(instance)
                wait_until(lambda: finished_ticks(instance) >= ticks + 3, timeout=120, interval=1,
                           what="three more automation ticks", process=daemon)
                wait_until(lambda: all(r.status in FINISHED for r in instance.get_runs()), timeout=240, interval=2,
                           what="every run to finish", process=daemon)
                assert daemon.alive, daemon.log_tail()

            materialized = materializations_after(instance, start)
            print(f"[daemon refresh: {sum(materialized.values())} materializations {sorted(materialized.items())}]")
            assert set(materialized) == set(expected) | {("neutral_image", "ava")}, sorted(materialized)
            assert materialized[("neutral_image", "ava")] == 1

            launched = [run for run in instance.get_runs() if run.run_id not in runs_before]
            daemon_runs = [run for run in launched if run.tags.get(SENSOR_NAME_TAG) == AUTOMATION_SENSOR]
            by_hand = [run for run in launched if run not in daemon_runs]
            assert len(by_hand) == 1 and by_hand[0].tags.get("dagster/partition") == "ava"
            assert daemon_runs, "the automation sensor launched nothing"
            for run in daemon_runs:
                assert run.tags.get(AUTOMATION_CONDITION_TAG) == "true", run.tags
                assert run.status == dg.DagsterRunStatus.SUCCESS
            # character_sheet has a multi_run backfill policy: automation asks for it as a range of one.
            assert {run_partition(run.tags) for run in daemon_runs} == {"ava", "ava|s1", "ava|s2"}
            print(f"[daemon automation runs: {len(daemon_runs)}]")
            # Runs that materialized a partition of ava's identity or cells, nothing of bob or cal.
            assert not any(p.startswith(("bob", "cal")) for _, p in materialized)
        finally:
            instance.dispose()
