"""Regenerating one asset partition: which partition a request means, and the queue the job API writes.

`avatarops regenerate` runs (or queues) the run itself. The job API only serves, so it records the request
in the media store, where the approval sensor turns it into a run (run key `regenerate:<id>`) on whichever
host drives the instance: the daemon, `avatarops process` or the cluster. A request stays queued until its
run exists, so a daemon restart loses none.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import dagster as dg

from avatar_assets.contracts import Regeneration
from avatar_assets.pipeline.lifecycle import SEED_TAG
from partitions import partition_key
from resources.layout import REGENERATION_QUEUE, queued_regeneration_key
from resources.media_store import MediaStore

REGENERATE_TAG = "avatarops/regenerate"
"""On a regeneration's run: the asset it regenerates (the CLI's runs carry it too)."""


class RegenerationError(ValueError):
    """A regeneration that names no existing asset partition; the message says which part is wrong."""


def target(graph, instance: dg.DagsterInstance, asset: str, avatar_id: str, output: str | None) -> tuple[dg.AssetKey, str]:
    """The asset key and partition key `asset` of `avatar_id` (and `output`, for a video stage) name."""
    key = dg.AssetKey(asset)
    if not graph.has(key):
        raise RegenerationError(f"no asset {asset}")
    if not instance.has_dynamic_partition("avatars", avatar_id):
        raise RegenerationError(f"avatar {avatar_id} does not exist")
    is_video = isinstance(graph.get(key).partitions_def, dg.MultiPartitionsDefinition)
    if is_video and (not output or not instance.has_dynamic_partition("outputs", output)):
        raise RegenerationError(f"{asset} is a video stage: give an existing output slug")
    if not is_video and output:
        raise RegenerationError(f"{asset} is an identity stage: it has no output")
    return key, str(partition_key(avatar_id, output if is_video else None))


def queue(store: MediaStore, *, asset: str, avatar_id: str, output: str | None, seed: int | None, by: str) -> Regeneration:
    """Queue a regeneration that `target` accepted, for the approval sensor."""
    now = datetime.now(UTC)
    regeneration = Regeneration(
        regeneration_id=f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}", asset=asset, avatar_id=avatar_id,
        output=output, seed=seed, by=by, at=now,
    )
    store.write_text(queued_regeneration_key(regeneration.regeneration_id), regeneration.model_dump_json(indent=2))
    return regeneration


def queued(store: MediaStore) -> list[Regeneration]:
    found = []
    for key in sorted(store.list_keys(REGENERATION_QUEUE)):
        text = store.read_text(key)
        if text is not None:  # dequeued since the listing
            found.append(Regeneration.model_validate_json(text))
    return found


def dequeue(store: MediaStore, regeneration: Regeneration) -> None:
    store.delete_key(queued_regeneration_key(regeneration.regeneration_id))


def run_request(regeneration: Regeneration) -> dg.RunRequest:
    """The run of a queued regeneration; the automation then refreshes what follows, as after the CLI's."""
    return dg.RunRequest(
        run_key=f"regenerate:{regeneration.regeneration_id}",
        job_name="render_video" if regeneration.output else "build_identity",
        partition_key=str(partition_key(regeneration.avatar_id, regeneration.output)),
        asset_selection=[dg.AssetKey(regeneration.asset)],
        tags={"avatar": regeneration.avatar_id, REGENERATE_TAG: regeneration.asset, "requested_by": regeneration.by,
              **({SEED_TAG: str(regeneration.seed)} if regeneration.seed is not None else {})},
    )
