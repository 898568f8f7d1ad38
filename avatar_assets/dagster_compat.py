"""The one module that imports Dagster's private APIs (`dagster._…`) or touches its storage tables.

Dagster promises nothing about these between releases, so every use is here and
`tests/test_dagster_compat.py` exercises each one on SQLite and on Postgres: after an upgrade, a broken
internal fails that test with a message naming it, instead of a revoke that leaves likeness behind.
Nothing else in `avatar_assets`, `resources`, `sensors` or `partitions` imports `dagster._…` (the test
checks that too).

It sits at the bottom of the layers, beside `media/`, and imports only Dagster (and SQLAlchemy, which
Dagster's storage is written in): `partitions` reads the run tags and the gates in `checks/` build
evaluations, and both are below `ops/`, so the fence cannot live in `ops/` without a layer importing
upwards. Heavy modules (the workspace, the storage schema) are imported where used, so loading the code
location stays light (tests/test_definitions_light.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    TAGS_TO_MAYBE_OMIT_ON_RETRY,
)
from dagster_shared.serdes import deserialize_value, serialize_value

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "PARTITION_NAME_TAG",
    "RUN_KEY_TAG",
    "SENSOR_NAME_TAG",
    "TAGS_TO_MAYBE_OMIT_ON_RETRY",
    "AutomationCursor",
    "CheckRunHealthResult",
    "WorkerStatus",
    "automation_cursor_from_json",
    "automation_cursor_to_json",
    "check_evaluation_target",
    "forget_cached_asset_rows",
    "forget_partition_in_ranged_runs",
    "latest_check_evaluations",
    "latest_check_verdicts",
    "partition_range_tags",
    "reconstructable_job",
    "submit_asset_run",
    "submit_reexecution_from_failure",
]

_log = logging.getLogger("avatarops")

# ----------------------------------------------------------------------------------------------- run tags


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """The tags that make a run ranged: it materializes every partition from `first` to `last`."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


# ------------------------------------------------------------------------------------- automation cursor

AutomationCursor = AssetDaemonCursor
"""What `dg.evaluate_automation_conditions` takes and returns as `cursor`; `avatarops process` keeps it."""


def automation_cursor_from_json(raw: str | None) -> AutomationCursor | None:
    return deserialize_value(raw, AssetDaemonCursor) if raw else None


def automation_cursor_to_json(cursor: AutomationCursor) -> str:
    return serialize_value(cursor)


# -------------------------------------------------------------------------------------------- asset checks


def check_evaluation_target(materialization: dg.EventLogRecord) -> AssetCheckEvaluationTargetMaterializationData:
    """What an `AssetCheckEvaluation` names as the materialization it judged (a gate in a ranged run
    records one evaluation per partition, each aimed at that partition's latest materialization)."""
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=materialization.storage_id,
        run_id=materialization.event_log_entry.run_id,
        timestamp=materialization.timestamp,
    )


def latest_check_evaluations(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], partition: str
) -> dict[dg.AssetCheckKey, dg.EventLogEntry | None]:
    """The event of each check's latest execution for `partition` (a planned one while it runs). Check
    evaluations do not fill the event log's asset-key/partition columns (dagster 1.13), so an
    `EventRecordsFilter` finds nothing: this asks the asset-check execution table."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=partition)
    )
    return {key: latest[key].event if key in latest else None for key in keys}


def latest_check_verdicts(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], partition: str
) -> dict[dg.AssetCheckKey, dg.EventLogEntry | None]:
    """The evaluation event of each check's latest finished execution for `partition` (not a planned one: a
    gate that runs again still shows its last verdict), one indexed query per check."""
    return {
        key: next(
            (record.event for record in instance.event_log_storage.get_asset_check_execution_history(
                key, limit=1, status=_EVALUATED, partition_filter=PartitionKeyFilter(key=partition))),
            None,
        )
        for key in keys
    }


_EVALUATED = frozenset({AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED})


# ------------------------------------------------------------------------------ runs queued for the daemon


@contextlib.contextmanager
def _workspace(instance: dg.DagsterInstance, module_name: str, location_name: str) -> Iterator:
    """The code location loaded in this process under the daemon's location name."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(executable_path=sys.executable, module_name=module_name),
        location_name=location_name,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


def submit_asset_run(instance: dg.DagsterInstance, request: dg.RunRequest, *, module_name: str, location_name: str) -> str:
    """Create and submit the run of an asset `request` as the daemon's automation does; its run id."""
    from dagster._core.execution.submit_asset_runs import submit_asset_run as submit

    with _workspace(instance, module_name, location_name) as context:
        run = asyncio.run(submit(None, request, 0, instance, context, context.create_request_context(), {}, {}, _log))
    return run.run_id


def submit_reexecution_from_failure(
    instance: dg.DagsterInstance, run: dg.DagsterRun, tags: Mapping[str, str], *, module_name: str, location_name: str
) -> str:
    """Create and submit a re-execution of a failed run from its failure (what the UI's button does),
    with exactly `tags`; its run id."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy

    with _workspace(instance, module_name, location_name) as context:
        workspace = context.create_request_context()
        location = workspace.get_code_location(location_name)
        repository = next(iter(location.get_repositories().values()))
        selector = JobSubsetSelector(
            location_name=location_name, repository_name=repository.name, job_name=run.job_name,
            op_selection=None, asset_selection=run.asset_selection, asset_check_selection=run.asset_check_selection,
        )
        remote_job = location.get_job(selector)
        retry = instance.create_reexecuted_run(
            request_context=workspace, parent_run=run, code_location=location, remote_job=remote_job,
            strategy=ReexecutionStrategy.FROM_FAILURE, extra_tags=dict(tags), use_parent_run_tags=False,
        )
        instance.submit_run(retry.run_id, workspace)
    return retry.run_id


def reconstructable_job(module_name: str, job_name: str, attribute: str = "defs") -> ReconstructableJob:
    """A job of the `Definitions` at `module_name.attribute` that `dg.execute_job` can run (and re-execute)."""
    return ReconstructableRepository.for_module(module_name, attribute).get_reconstructable_job(job_name)


# ------------------------------------------------------------------------- revoke: event-log table deletes
#
# Open-source Dagster cannot wipe asset partitions: SQLite and Postgres event logs raise
# NotImplementedError from `wipe_asset_partitions` (dagster issue #14749). Revoke therefore deletes the
# avatar's runs, and the two functions below remove what run deletion leaves behind in the event-log
# tables. They write SQL into Dagster's own schema, which no release promises to keep; the contract test
# runs them on both backends.


def forget_cached_asset_rows(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], run_ids: Sequence[str]) -> None:
    """SQL event logs cache each asset's latest materialization (with its metadata: thumbnails) on the asset
    row, and check executions in their own table; drop what points at the deleted runs."""
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, AssetKeyTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage) or not run_ids:
        return
    with storage.index_connection() as conn:
        conn.execute(
            AssetKeyTable.update()
            .where(AssetKeyTable.c.asset_key.in_([key.to_string() for key in keys]))
            .where(AssetKeyTable.c.last_run_id.in_(run_ids))
            .values(last_materialization=None, last_run_id=None)
        )
        if storage.has_table("asset_check_executions"):
            conn.execute(AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id.in_(run_ids)))
    for key in keys:
        storage.wipe_asset_cached_status(key)


def forget_partition_in_ranged_runs(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], partition: str) -> None:
    """A ranged run (a batch of avatars) also holds other partitions' history, so it is kept; only this
    partition's materializations (their metadata holds its thumbnails) and check verdicts are deleted,
    from the run's events and from the index (separate databases on SQLite, one on Postgres)."""
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, AssetKeyTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return
    for run in instance.get_runs():
        if ASSET_PARTITION_RANGE_START_TAG not in run.tags:
            continue
        # The index first: on Postgres it is the run's database too, and the event ids found there
        # are what its asset_event_tags rows point at.
        with storage.index_connection() as conn:
            if _delete_partition_events(conn, run.run_id, partition, with_tags=True):
                # The asset rows cache the latest materialization, which may be one just deleted.
                conn.execute(
                    AssetKeyTable.update()
                    .where(AssetKeyTable.c.last_run_id == run.run_id)
                    .values(last_materialization=None, last_run_id=None)
                )
            if storage.has_table("asset_check_executions"):
                conn.execute(
                    AssetCheckExecutionsTable.delete()
                    .where(AssetCheckExecutionsTable.c.run_id == run.run_id)
                    .where(AssetCheckExecutionsTable.c.partition == partition)
                )
        with storage.run_connection(run.run_id) as conn:
            _delete_partition_events(conn, run.run_id, partition, with_tags=False)
    for key in keys:
        storage.wipe_asset_cached_status(key)


def _delete_partition_events(conn, run_id: str, partition: str, *, with_tags: bool) -> int:
    import sqlalchemy as db
    from dagster._core.storage.event_log.schema import AssetEventTagsTable
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable as event_table

    kinds = [dg.DagsterEventType.ASSET_MATERIALIZATION.value, dg.DagsterEventType.ASSET_CHECK_EVALUATION.value]
    rows = conn.execute(
        db.select(event_table.c.id, event_table.c.event).where(event_table.c.run_id == run_id).where(event_table.c.dagster_event_type.in_(kinds))
    ).fetchall()
    ids = [row_id for row_id, body in rows if _event_partition(deserialize_value(body, dg.EventLogEntry).dagster_event) == partition]
    if ids:
        if with_tags:
            conn.execute(AssetEventTagsTable.delete().where(AssetEventTagsTable.c.event_id.in_(ids)))
        conn.execute(event_table.delete().where(event_table.c.id.in_(ids)))
    return len(ids)


def _event_partition(event) -> str | None:
    if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        return event.event_specific_data.partition
    return event.partition
