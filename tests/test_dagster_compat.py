"""Contract test of `avatar_assets/dagster_compat.py`, the one module that uses Dagster's private API.

Each Dagster internal it uses is exercised here on a SQLite instance and on a Postgres one (a fresh
database, as in tests/test_postgres_instance.py: skipped without a server, a failure with
AVATAR_REQUIRE_POSTGRES=1), against a small code location of the avatar graph's shapes
(tests/dagster_compat_location.py). After a Dagster upgrade, a failure here names the internal that
changed; fix it in dagster_compat.py and nowhere else.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from avatar_assets import dagster_compat as compat
from partitions import run_partition
from tests import dagster_compat_location as location
from tests.test_postgres_instance import DEPLOY, pg_database, pg_env  # noqa: F401 (pg_database is a fixture)

ROOT = Path(__file__).resolve().parents[1]
LOCATION = {"module_name": location.__name__, "location_name": "compat_location"}
IMAGE, DOWNSTREAM = location.image.key, location.downstream.key
GATE = dg.AssetCheckKey(IMAGE, "gate")
QUEUED = """
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
"""


@contextlib.contextmanager
def internal(name: str) -> Iterator[None]:
    """Any failure inside fails the test with the name of the Dagster internal it exercises."""
    try:
        yield
    except Exception as error:
        pytest.fail(
            f"Dagster internal `{name}` no longer does what avatar_assets/dagster_compat.py relies on: "
            f"{type(error).__name__}: {error}"
        )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def instance(request, tmp_path_factory) -> Iterator[dg.DagsterInstance]:
    """A persistent instance whose run coordinator queues (nothing launches without a daemon)."""
    home = tmp_path_factory.mktemp(f"compat-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "postgres":
            for key, value in pg_env(request.getfixturevalue("pg_database")).items():
                patch.setenv(key, value)
            config = (DEPLOY / "dagster.local-postgres.yaml").read_text()
        else:
            config = "telemetry:\n  enabled: false\n"
        (home / "dagster.yaml").write_text(config + QUEUED)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield instance
        finally:
            instance.dispose()


def execute(instance: dg.DagsterInstance, partitions: list[str], **tags: str) -> dg.ExecuteInProcessResult:
    """Materialize `image` (and its gate) for one partition, or for a ranged run over several."""
    instance.add_dynamic_partitions("things", [p for p in partitions if not instance.has_dynamic_partition("things", p)])
    if len(partitions) > 1:
        tags = {**tags, **compat.partition_range_tags(partitions[0], partitions[-1])}
    job = location.defs.resolve_implicit_job_def_def_for_assets([IMAGE])
    return job.execute_in_process(
        instance=instance, asset_selection=[IMAGE], raise_on_error=False, tags=tags,
        partition_key=partitions[0] if len(partitions) == 1 else None,
    )


def materialization(instance: dg.DagsterInstance, partition: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=IMAGE, asset_partitions=[partition]), limit=1).records
    return records[0] if records else None


def cached_latest_run(instance: dg.DagsterInstance) -> str | None:
    """The run of the materialization the event log caches on the asset's row."""
    [record] = instance.get_asset_records([IMAGE])
    cached = record.asset_entry.last_materialization_record
    return cached.run_id if cached else None


def evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str | None, bool]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {r.event_log_entry.dagster_event.event_specific_data.partition: r.event_log_entry.dagster_event.event_specific_data.passed
            for r in records}


# --------------------------------------------------------------------------- the fence itself


def test_only_dagster_compat_imports_dagster_private_modules() -> None:
    private = re.compile(r"^\s*(from|import) dagster(_shared)?\._", re.MULTILINE)
    found = sorted(
        str(path.relative_to(ROOT))
        for package in ("avatar_assets", "resources", "sensors", "partitions")
        for path in (ROOT / package).rglob("*.py")
        if private.search(path.read_text())
    )
    assert found == ["avatar_assets/dagster_compat.py"]


def test_dagster_compat_imports_nothing_of_ours() -> None:
    """It sits below every layer, so any layer may use it."""
    tree = ast.parse((ROOT / "avatar_assets" / "dagster_compat.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in imported} & {"avatar_assets", "resources", "sensors", "partitions"} == set()


# --------------------------------------------------------------------------- run launcher


def test_run_health_is_what_run_monitoring_reads() -> None:
    """avatar_assets/cluster/launcher.py answers run monitoring with these types."""
    with internal("dagster._core.launcher.CheckRunHealthResult/WorkerStatus"):
        from dagster._daemon.monitoring import run_monitoring

        assert run_monitoring.WorkerStatus is compat.WorkerStatus
        result = compat.CheckRunHealthResult(compat.WorkerStatus.FAILED, "gone")
        assert (result.status, result.msg) == (compat.WorkerStatus.FAILED, "gone")


# --------------------------------------------------------------------------- run tags


def test_partition_tags(instance) -> None:
    with internal("dagster._core.storage.tags.PARTITION_NAME_TAG"):
        single = execute(instance, ["tag-a"])
        assert instance.get_run_by_id(single.run_id).tags[compat.PARTITION_NAME_TAG] == "tag-a"
        assert run_partition(single.dagster_run.tags) == "tag-a"
    with internal("dagster._core.storage.tags.ASSET_PARTITION_RANGE_START_TAG/_END_TAG"):
        ranged = execute(instance, ["tag-b", "tag-c", "tag-d"])
        assert ranged.success
        materialized = {r.event_log_entry.dagster_event.partition for r in instance.get_records_for_run(
            ranged.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records}
        assert materialized == {"tag-b", "tag-c", "tag-d"}, "the range tags no longer make a ranged run"
        assert run_partition(compat.partition_range_tags("tag-b", "tag-b")) == "tag-b"


def test_sensor_run_tags(instance) -> None:
    """The sensor daemon tags its runs with the sensor and run key; runner.py does the same and the
    approval sensor finds its runs by run key."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    instance.add_dynamic_partitions("things", [location.SENSOR_PARTITION])
    target = ModuleTarget(module_name=location.__name__, attribute=None, working_directory=str(ROOT),
                          location_name=LOCATION["location_name"])
    with internal("dagster._core.storage.tags.RUN_KEY_TAG/SENSOR_NAME_TAG"):
        with WorkspaceProcessContext(instance, target) as context:
            list(execute_sensor_iteration(context, logging.getLogger("compat"), None, None))
        found = instance.get_runs(dg.RunsFilter(tags={compat.SENSOR_NAME_TAG: "tagger", compat.RUN_KEY_TAG: location.SENSOR_RUN_KEY}))
        assert [run.tags[compat.PARTITION_NAME_TAG] for run in found] == [location.SENSOR_PARTITION]


def test_tags_omitted_on_retry(instance) -> None:
    """A re-execution (retry.py) keeps the failed run's own and partition tags, not Dagster's verdict on it."""
    with internal("dagster._core.storage.tags.TAGS_TO_MAYBE_OMIT_ON_RETRY"):
        failed = execute(instance, ["bad-omit"], who="parent")
        run = instance.get_run_by_id(failed.run_id)
        assert run.tags["dagster/failure_reason"] == "STEP_FAILURE"
        kept = {key for key in run.tags if key not in compat.TAGS_TO_MAYBE_OMIT_ON_RETRY}
        assert kept == {"who", compat.PARTITION_NAME_TAG, "dagster/partition_set"}


# --------------------------------------------------------------------------- automation cursor


def test_automation_cursor_round_trip(instance) -> None:
    execute(instance, ["cursor-a"])
    with internal("dagster._core.definitions.asset_daemon_cursor.AssetDaemonCursor"):
        first = dg.evaluate_automation_conditions(defs=location.defs, instance=instance)
        raw = compat.automation_cursor_to_json(first.cursor)
        cursor = compat.automation_cursor_from_json(raw)
        assert compat.automation_cursor_to_json(cursor) == raw
        assert compat.automation_cursor_from_json(None) is None
        again = dg.evaluate_automation_conditions(defs=location.defs, instance=instance, cursor=cursor)
        assert "cursor-a" not in again.get_requested_partitions(DOWNSTREAM), "the stored cursor was not honoured"


# --------------------------------------------------------------------------- asset checks


def test_check_evaluations_of_a_ranged_run(instance) -> None:
    ranged = execute(instance, ["chk-a", "bad-chk", "chk-c"])
    with internal("dagster._core.definitions.asset_checks.asset_check_evaluation.AssetCheckEvaluationTargetMaterializationData"):
        assert evaluations(instance, ranged.run_id) == {"chk-a": True, "bad-chk": False, "chk-c": True}
        for partition in ["chk-a", "bad-chk", "chk-c"]:
            [verdict] = [
                r.event_log_entry.dagster_event.event_specific_data
                for r in instance.get_records_for_run(ranged.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
                if r.event_log_entry.dagster_event.event_specific_data.partition == partition
            ]
            assert verdict.target_materialization_data == compat.check_evaluation_target(materialization(instance, partition))
    with internal("dagster._core.event_api.PartitionKeyFilter / EventLogStorage.get_latest_asset_check_execution_by_key"):
        latest = compat.latest_check_evaluations(instance, [GATE, dg.AssetCheckKey(IMAGE, "absent")], "bad-chk")
        entry = latest[GATE]
        assert entry.dagster_event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        assert entry.run_id == ranged.run_id and not entry.dagster_event.event_specific_data.passed
        assert latest[dg.AssetCheckKey(IMAGE, "absent")] is None
        assert compat.latest_check_evaluations(instance, [GATE], "never-run") == {GATE: None}
    with internal("dagster._core.storage.asset_check_execution_record.AssetCheckExecutionRecordStatus / "
                  "EventLogStorage.get_asset_check_execution_history"):
        verdicts = compat.latest_check_verdicts(instance, [GATE, dg.AssetCheckKey(IMAGE, "absent")], "chk-a")
        assert verdicts[GATE].run_id == ranged.run_id and verdicts[GATE].dagster_event.event_specific_data.passed
        assert verdicts[dg.AssetCheckKey(IMAGE, "absent")] is None
        assert compat.latest_check_verdicts(instance, [GATE], "never-run") == {GATE: None}


# --------------------------------------------------------------------------- runs queued for the daemon


def test_submit_asset_run(instance) -> None:
    instance.add_dynamic_partitions("things", ["queued-a", "queued-b"])
    request = dg.RunRequest(asset_selection=[IMAGE], tags={"who": "compat", **compat.partition_range_tags("queued-a", "queued-b")})
    with internal("dagster._core.execution.submit_asset_runs.submit_asset_run (and the in-process workspace)"):
        run = instance.get_run_by_id(compat.submit_asset_run(instance, request, **LOCATION))
        assert run.status == dg.DagsterRunStatus.QUEUED
        assert run.asset_selection == {IMAGE}
        assert run.tags["who"] == "compat" and run_partition(run.tags) is None
        assert (run.tags[compat.ASSET_PARTITION_RANGE_START_TAG], run.tags[compat.ASSET_PARTITION_RANGE_END_TAG]) == ("queued-a", "queued-b")
        assert run.remote_job_origin.location_name == LOCATION["location_name"], "the daemon would not know where to launch it"


def test_submit_reexecution_from_failure(instance) -> None:
    failed = execute(instance, ["bad-queue"], who="parent")
    with internal("JobSubsetSelector / ReexecutionStrategy.FROM_FAILURE / DagsterInstance.create_reexecuted_run"):
        parent = instance.get_run_by_id(failed.run_id)
        retry = instance.get_run_by_id(compat.submit_reexecution_from_failure(instance, parent, {"why": "compat"}, **LOCATION))
        assert retry.status == dg.DagsterRunStatus.QUEUED
        assert (retry.parent_run_id, retry.root_run_id) == (parent.run_id, parent.run_id)
        assert retry.tags["why"] == "compat" and "who" not in retry.tags, "parent tags are not to be inherited"
        assert retry.step_keys_to_execute == ["image_gate"], "only the failed step is to run again"


def test_reconstructable_job_reexecutes_from_failure(instance) -> None:
    failed = execute(instance, ["bad-retry"])
    with internal("dagster._core.definitions.reconstruct.ReconstructableRepository"):
        job = compat.reconstructable_job(location.__name__, failed.dagster_run.job_name)
        result = dg.execute_job(
            job, instance=instance, reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
            tags={compat.PARTITION_NAME_TAG: "bad-retry"},
        )
        assert result.dagster_run.parent_run_id == failed.run_id
        assert result.get_step_success_events() == [] and not result.success, "the gate fails again"
        assert not instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records, \
            "the finished step was run again"


# --------------------------------------------------------------------------- revoke's table deletes


def test_dagster_still_cannot_wipe_partitions(instance) -> None:
    """Why revoke deletes rows itself (dagster issue #14749). If this fails, `wipe_asset_partitions`
    works on open-source storage and revoke can use it instead of dagster_compat's SQL."""
    execute(instance, ["wipe-a"])
    try:
        instance.wipe_asset_partitions(IMAGE, ["wipe-a"])
    except NotImplementedError:
        return
    pytest.fail("Dagster now wipes asset partitions here (dagster issue #14749): revoke can call "
                "wipe_asset_partitions instead of dagster_compat's table deletes")


def test_event_log_is_sql(instance) -> None:
    """The table deletes skip any other storage: on ours they must run."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    with internal("dagster._core.storage.event_log.sql_event_log.SqlEventLogStorage"):
        assert isinstance(instance.event_log_storage, SqlEventLogStorage)


def test_forget_cached_asset_rows(instance) -> None:
    kept = execute(instance, ["row-a"])
    doomed = execute(instance, ["row-a"])
    assert cached_latest_run(instance) == doomed.run_id
    assert compat.latest_check_evaluations(instance, [GATE], "row-a")[GATE].run_id == doomed.run_id
    instance.delete_run(doomed.run_id)
    with internal("event-log tables asset_keys / asset_check_executions (schema.AssetKeyTable, AssetCheckExecutionsTable)"):
        compat.forget_cached_asset_rows(instance, [IMAGE], [doomed.run_id])
        assert cached_latest_run(instance) != doomed.run_id
        assert compat.latest_check_evaluations(instance, [GATE], "row-a")[GATE].run_id == kept.run_id
        assert materialization(instance, "row-a").run_id == kept.run_id


def test_forget_partition_in_ranged_runs(instance) -> None:
    from dagster._core.storage.event_log.schema import AssetEventTagsTable

    def tags_of(event_ids: set[int]) -> list:
        with instance.event_log_storage.index_connection() as conn:
            return conn.execute(AssetEventTagsTable.select().where(AssetEventTagsTable.c.event_id.in_(event_ids))).fetchall()

    ranged = execute(instance, ["rng-keep", "rng-gone"])
    doomed = {materialization(instance, "rng-gone").storage_id}
    assert tags_of(doomed), "materializations carry indexed tags (data version)"
    with internal("event-log tables event_logs / asset_event_tags / asset_keys / asset_check_executions"):
        compat.forget_partition_in_ranged_runs(instance, [IMAGE], "rng-gone")
        assert materialization(instance, "rng-gone") is None
        assert materialization(instance, "rng-keep").run_id == ranged.run_id
        assert evaluations(instance, ranged.run_id) == {"rng-keep": True}
        assert [r.event_log_entry.dagster_event.partition for r in instance.get_records_for_run(
            ranged.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records] == ["rng-keep"]
        assert compat.latest_check_evaluations(instance, [GATE], "rng-gone") == {GATE: None}
        assert compat.latest_check_evaluations(instance, [GATE], "rng-keep")[GATE].run_id == ranged.run_id
        assert tags_of(doomed) == [], "the deleted materialization's tags stay in the index"
        cached = instance.get_asset_records([IMAGE])[0].asset_entry.last_materialization_record
        assert cached is None or cached.storage_id not in doomed, "the asset row still caches the deleted materialization"
