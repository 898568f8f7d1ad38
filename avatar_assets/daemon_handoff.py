"""One automation, whoever drives it: when a daemon runs on the instance, sensors and automation are its.

`avatarops process` evaluates sensors and automation itself, with its own cursors; run beside a daemon that
does the same with its cursors, the two would each see part of a change and refresh part of its closure.
So a command first asks the instance for the daemon's heartbeat. Where one is fresh, `process` refuses, and
`regenerate`, `backfill` and `retry` hand their runs to the instance's run queue (what the UI's Materialize
and Re-execute buttons do); the daemon launches them and its automation refreshes what follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator

import dagster as dg

HEARTBEAT_FRESH_S = 60.0
LOCATION_NAME = "avatar_assets"
"""The code location's name in workspace.yaml: queued runs name it, and the daemon launches them from it."""

_log = logging.getLogger("avatarops")


def live_daemon_age(instance: dg.DagsterInstance) -> float | None:
    """Seconds since the freshest daemon heartbeat on this instance, or None when none is fresher than 60 s."""
    beats = [beat.timestamp for beat in instance.get_daemon_heartbeats().values()]
    if not beats:
        return None
    age = time.time() - max(beats)
    return age if age < HEARTBEAT_FRESH_S else None


@contextlib.contextmanager
def _workspace(instance: dg.DagsterInstance) -> Iterator:
    """The code location loaded in this process under the daemon's location name."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(executable_path=sys.executable, module_name="avatar_assets.definitions"),
        location_name=LOCATION_NAME,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


def submit_asset_run(
    instance: dg.DagsterInstance,
    asset_keys: list[dg.AssetKey],
    *,
    tags: dict[str, str],
    partition_key: str | None = None,
    partition_range: list[str] | None = None,
) -> str:
    """Queue one run of `asset_keys` (one partition, or a consecutive range) for the daemon; its run id."""
    from dagster._core.execution.submit_asset_runs import submit_asset_run as submit
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from avatar_assets.definitions import defs

    if partition_range:
        tags = {**tags, ASSET_PARTITION_RANGE_START_TAG: partition_range[0], ASSET_PARTITION_RANGE_END_TAG: partition_range[-1]}
    elif partition_key is not None:
        # The queued run reads its partition from these tags (the daemon's own requests carry them too).
        partitions_def = defs.resolve_asset_graph().get(asset_keys[0]).partitions_def
        tags = {**tags, **partitions_def.get_tags_for_partition_key(partition_key)}
    request = dg.RunRequest(asset_selection=asset_keys, partition_key=partition_key, tags=tags)
    with _workspace(instance) as context:
        run = asyncio.run(
            submit(None, request, 0, instance, context, context.create_request_context(), {}, {}, _log)
        )
    return run.run_id


def submit_retry(instance: dg.DagsterInstance, run: dg.DagsterRun, tags: dict[str, str]) -> str:
    """Queue a re-execution of a failed run from its failure (finished steps are reused), with `tags`."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy

    with _workspace(instance) as context:
        workspace = context.create_request_context()
        location = workspace.get_code_location(LOCATION_NAME)
        repository = next(iter(location.get_repositories().values()))
        selector = JobSubsetSelector(
            location_name=LOCATION_NAME, repository_name=repository.name, job_name=run.job_name,
            op_selection=None, asset_selection=run.asset_selection, asset_check_selection=run.asset_check_selection,
        )
        remote_job = location.get_job(selector)
        retry = instance.create_reexecuted_run(
            request_context=workspace, parent_run=run, code_location=location, remote_job=remote_job, strategy=ReexecutionStrategy.FROM_FAILURE,
            extra_tags=tags, use_parent_run_tags=False,
        )
        instance.submit_run(retry.run_id, workspace)
    return retry.run_id
