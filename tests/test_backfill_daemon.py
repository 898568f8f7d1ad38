"""A backfill through the real daemon: what the UI's "Materialize -> partitions -> Launch backfill"
creates. The backfill daemon must run the three avatars' neutral images as ONE ranged run (the asset's
`BackfillPolicy.multi_run(8)`), every avatar's gates must be recorded for that avatar, and the
automation sensor must then refresh the three character sheets (again one ranged run) and bundles.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG, SENSOR_NAME_TAG

from tests.conftest import avatar_home, write_bundle
from tests.regen_helpers import FINISHED, last_storage_id, materializations_after, world_env
from tests.servers import DAEMON_INSTANCE_YAML, dagster_daemon, wait_until, write_instance_yaml
from tests.test_ranged_runs import AVATARS, PHOTOS, RANGE_END, RANGE_START, evaluations

pytestmark = pytest.mark.slow

NEUTRAL_GATES = {"neutral_face_geometry", "neutral_identity_consistency"}


def test_daemon_backfill_runs_three_avatars_in_one_run_then_automation_refreshes_them(
    tmp_path, photos, sample_voice
) -> None:
    with avatar_home(tmp_path / "home") as home:
        for avatar_id, photo in PHOTOS.items():
            write_bundle(home.inbox, avatar_id, {"photos/front.jpg": photos[photo]}, sample_voice)
        report = home.process()
        assert report.ok, report.as_dict()
        write_instance_yaml(home.root / "dagster", DAEMON_INSTANCE_YAML)
        instance = dg.DagsterInstance.from_config(str(home.root / "dagster"))
        try:
            runs_before = {run.run_id for run in instance.get_runs()}
            start = last_storage_id(instance)
            env = world_env(home, AVATAR_SENSOR_INTERVAL_SECONDS="1")
            with dagster_daemon(env=env, log_path=tmp_path / "daemon.log") as daemon:
                backfill = PartitionBackfill.from_asset_partitions(
                    backfill_id="ranged-images",
                    asset_graph=home.defs.resolve_asset_graph(),
                    partition_names=AVATARS,
                    asset_selection=[dg.AssetKey("neutral_image")],
                    backfill_timestamp=time.time(),
                    tags={},
                    dynamic_partitions_store=instance,
                    all_partitions=False,
                    title="neutral images of three avatars",
                    description=None,
                    run_config=None,
                )
                instance.add_backfill(backfill)
                wait_until(
                    lambda: instance.get_backfill("ranged-images").status != BulkActionStatus.REQUESTED,
                    timeout=300, interval=2, what="the backfill to finish", process=daemon,
                )
                expected = {(asset, a) for asset in ("neutral_image", "character_sheet", "identity_bundle") for a in AVATARS}

                def refreshed() -> bool:
                    active = [r for r in instance.get_runs() if r.status not in FINISHED]
                    return set(materializations_after(instance, start)) >= expected and not active

                wait_until(refreshed, timeout=300, interval=2, what="automation to refresh the sheets and bundles",
                           process=daemon)
                assert daemon.alive, daemon.log_tail()

            assert instance.get_backfill("ranged-images").status == BulkActionStatus.COMPLETED_SUCCESS
            launched = [run for run in instance.get_runs() if run.run_id not in runs_before]
            assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in launched), [r.run_id for r in launched]
            (backfill_run,) = [run for run in launched if run.tags.get(BACKFILL_ID_TAG) == "ranged-images"]
            assert (backfill_run.tags[RANGE_START], backfill_run.tags[RANGE_END]) == (AVATARS[0], AVATARS[-1])
            found = evaluations(instance, backfill_run.run_id)
            assert set(found) == {(gate, a) for gate in NEUTRAL_GATES for a in AVATARS}
            assert all(e.passed for e in found.values())

            # Automation asked for the three sheets at once: the multi_run policy made that one ranged run.
            automation = [run for run in launched if run.tags.get(SENSOR_NAME_TAG) == "avatar_automation"]
            sheet_runs = [run for run in automation if "character_sheet" in {k.to_user_string() for k in run.asset_selection}]
            assert len(sheet_runs) == 1 and sheet_runs[0].tags.get(RANGE_START) == AVATARS[0], [r.tags for r in sheet_runs]
            materialized = materializations_after(instance, start)
            assert set(materialized) == expected, sorted(materialized)
            assert all(count == 1 for count in materialized.values()), materialized
        finally:
            instance.dispose()
