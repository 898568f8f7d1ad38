"""One automation, whoever drives it: when a daemon runs on the instance, sensors and automation are its.

`avatarops process` evaluates sensors and automation itself, with its own cursors; run beside a daemon that
does the same with its cursors, the two would each see part of a change and refresh part of its closure.
So a command first asks the instance for the daemon's heartbeat. Where one is fresh, `process` refuses, and
`regenerate`, `backfill` and `retry` hand their runs to the instance's run queue (what the UI's Materialize
and Re-execute buttons do); the daemon launches them and its automation refreshes what follows.
"""

from __future__ import annotations

import time

import dagster as dg

from avatar_assets import dagster_compat

HEARTBEAT_FRESH_S = 60.0
MODULE_NAME = "avatar_assets.definitions"
LOCATION_NAME = "avatar_assets"
"""The code location's name in workspace.yaml: queued runs name it, and the daemon launches them from it."""


def live_daemon_age(instance: dg.DagsterInstance) -> float | None:
    """Seconds since the freshest daemon heartbeat on this instance, or None when none is fresher than 60 s."""
    beats = [beat.timestamp for beat in instance.get_daemon_heartbeats().values()]
    if not beats:
        return None
    age = time.time() - max(beats)
    return age if age < HEARTBEAT_FRESH_S else None


def submit_asset_run(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    asset_keys: list[dg.AssetKey],
    *,
    tags: dict[str, str],
    partition_key: str | None = None,
    partition_range: list[str] | None = None,
) -> str:
    """Queue one run of `asset_keys` (one partition, or a consecutive range) for the daemon; its run id."""
    if partition_range:
        tags = {**tags, **dagster_compat.partition_range_tags(partition_range[0], partition_range[-1])}
    elif partition_key is not None:
        # The queued run reads its partition from these tags (the daemon's own requests carry them too).
        partitions_def = defs.resolve_asset_graph().get(asset_keys[0]).partitions_def
        tags = {**tags, **partitions_def.get_tags_for_partition_key(partition_key)}
    request = dg.RunRequest(asset_selection=asset_keys, partition_key=partition_key, tags=tags)
    return dagster_compat.submit_asset_run(instance, request, module_name=MODULE_NAME, location_name=LOCATION_NAME)


def submit_retry(instance: dg.DagsterInstance, run: dg.DagsterRun, tags: dict[str, str]) -> str:
    """Queue a re-execution of a failed run from its failure (finished steps are reused), with `tags`."""
    return dagster_compat.submit_reexecution_from_failure(
        instance, run, tags, module_name=MODULE_NAME, location_name=LOCATION_NAME
    )
