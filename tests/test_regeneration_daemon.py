"""Exact regeneration through the real daemon: `dagster-daemon run -w workspace.yaml` evaluates the
shared automation condition on the *remote* asset graph (the one the UI shows), where a custom
PartitionMapping would be dropped and avatar-exact lineage would widen to "everything downstream".

The rendered world (3 avatars x 2 cells, built by the real sensors and runs) is restored, the daemon is
started and allowed one quiet automation tick. With the daemon alive, `avatarops process` refuses (the
daemon owns sensors and automation) and `avatarops regenerate` hands its run to the daemon's queue; for
neutral_image, voice_profile and speech the daemon's automation must then materialize exactly the
downstream closure (computed from the asset graph), each partition once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest
from dagster._core.storage.tags import AUTOMATION_CONDITION_TAG, SENSOR_NAME_TAG

from partitions import run_partition, split_cell
from tests.conftest import Home
from tests.regen_helpers import (
    AUTOMATION_SENSOR,
    FINISHED,
    avatarops,
    expected_refresh,
    explain_materializations,
    finished_ticks,
    last_storage_id,
    materializations_after,
    restored_world,
    world_env,
)
from tests.servers import DAEMON_INSTANCE_YAML, ManagedProcess, dagster_daemon, wait_until, write_instance_yaml

pytestmark = pytest.mark.slow


@dataclass
class LiveDaemon:
    home: Home
    instance: dg.DagsterInstance
    graph: object
    daemon: ManagedProcess


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory, sample_bundle) -> Iterator[LiveDaemon]:
    """The restored world with a daemon on it that has had its first, quiet automation tick. One for the
    module: each change below is its own test (and has its own timeout), in the order they are listed."""
    with restored_world(tmp_path_factory, sample_bundle) as home:
        write_instance_yaml(home.root / "dagster", DAEMON_INSTANCE_YAML)
        instance = dg.DagsterInstance.from_config(str(home.root / "dagster"))
        try:
            env = world_env(home, AVATAR_SENSOR_INTERVAL_SECONDS="1")
            log_path = tmp_path_factory.mktemp("regeneration-daemon") / "daemon.log"
            with dagster_daemon(env=env, log_path=log_path) as daemon:
                # Automation's first tick only sets its cursor; let it pass so the next one sees the change.
                wait_until(lambda: finished_ticks(instance) >= 1, timeout=180, interval=1,
                           what="the first automation tick", process=daemon)
                assert not list(instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED,
                                                                          dg.DagsterRunStatus.STARTED]))), \
                    "the daemon launched runs in an unchanged world"
                yield LiveDaemon(home, instance, home.defs.resolve_asset_graph(), daemon)
                assert daemon.alive, daemon.log_tail()
        finally:
            instance.dispose()


def test_process_beside_a_live_daemon_is_refused(live_daemon):
    refused = avatarops(live_daemon.home, "process")
    assert refused.returncode == 2 and "a dagster-daemon runs on this instance" in refused.stderr, refused.stderr


# A stray run of one change would land in the next change's count, so only the last needs quiet ticks of its own.
@pytest.mark.parametrize("asset, partition, quiet_ticks",
                         [("neutral_image", "ava", 0), ("voice_profile", "bob", 0), ("speech", "cal|s1", 3)])
def test_regenerate_beside_a_live_daemon_is_queued_and_its_automation_refreshes_exactly_the_closure(
    live_daemon, asset, partition, quiet_ticks
):
    regenerate_through_the_daemon(live_daemon.home, live_daemon.instance, live_daemon.graph, live_daemon.daemon,
                                  asset, partition, quiet_ticks=quiet_ticks)


def regenerate_through_the_daemon(home, instance, graph, daemon, asset: str, partition: str, quiet_ticks: int) -> None:
    runs_before = {run.run_id for run in instance.get_runs()}
    start = last_storage_id(instance)
    avatar_id, slug = split_cell(partition)
    queued = avatarops(home, "regenerate", asset, "--avatar", avatar_id, *(["--output", slug] if slug else []))
    assert queued.returncode == 0 and "queued" in queued.stdout, queued.stdout + queued.stderr[-2000:]
    expected = expected_refresh(graph, dg.AssetKey(asset), partition)

    def refreshed():
        new_runs = [r for r in instance.get_runs() if r.run_id not in runs_before]
        failed = [r for r in new_runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
        assert not failed, f"daemon run(s) failed: {[r.run_id for r in failed]}\n{daemon.log_tail()}"
        done = set(materializations_after(instance, start)) >= set(expected)
        return done and all(r.status in FINISHED for r in instance.get_runs())

    wait_until(refreshed, timeout=420, interval=2, what=f"the daemon's refresh after {asset}", process=daemon)
    # A few more ticks: nothing else is launched once the refresh is through.
    ticks = finished_ticks(instance)
    wait_until(lambda: finished_ticks(instance) >= ticks + quiet_ticks, timeout=120, interval=1,
               what=f"{quiet_ticks} more automation ticks", process=daemon)
    wait_until(lambda: all(r.status in FINISHED for r in instance.get_runs()), timeout=240, interval=2,
               what="every run to finish", process=daemon)
    materialized = materializations_after(instance, start)
    assert materialized == expected, (asset, sorted(set(materialized) ^ set(expected)),
                                      sorted(k for k, n in materialized.items() if n > 1),
                                      explain_materializations(instance, start, sorted(
                                          set(materialized) ^ set(expected) | {k for k, n in materialized.items() if n > 1})))
    launched = [run for run in instance.get_runs() if run.run_id not in runs_before]
    daemon_runs = [run for run in launched if run.tags.get(SENSOR_NAME_TAG) == AUTOMATION_SENSOR]
    [by_hand] = [run for run in launched if run not in daemon_runs]
    assert by_hand.tags.get("avatarops/regenerate") == asset and run_partition(by_hand.tags) == partition
    for run in daemon_runs:
        assert run.tags.get(AUTOMATION_CONDITION_TAG) == "true" and run.status == dg.DagsterRunStatus.SUCCESS, run.tags
