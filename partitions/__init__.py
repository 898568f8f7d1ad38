"""Partition definitions, the key format and the one automation condition every downstream asset shares.

Only built-in partition mappings are used: a custom PartitionMapping is dropped from the remote asset
graph that the daemon and the UI evaluate (dagster 1.13), which would widen avatar-exact lineage.
"""

import re
import warnings
from collections.abc import Mapping

import dagster as dg

from avatar_assets.dagster_compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

PARTITION_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
"""What an avatar id or an output slug may be (the contracts validate uploads and requests with it)."""

avatars = dg.DynamicPartitionsDefinition(name="avatars")
outputs = dg.DynamicPartitionsDefinition(name="outputs")
video_cells = dg.MultiPartitionsDefinition({"avatar": avatars, "output": outputs})

with warnings.catch_warnings():
    # Beta in 1.13 but built in, which is what the daemon's remote asset graph keeps.
    warnings.simplefilter("ignore", dg.BetaWarning)
    identity_to_video = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="avatar")

AC = dg.AutomationCondition

refresh_existing = (
    AC.any_deps_updated().since_last_handled()
    & ~AC.missing()
    & ~AC.any_deps_missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
    & AC.all_deps_blocking_checks_passed()
).with_label("refresh existing, never invent")
"""Refresh a partition that exists when a dependency changed; new partitions come from sensors or the CLI."""

_refresh_owed = (AC.any_deps_updated() | AC.newly_requested()).since(AC.newly_updated()).with_label(
    "refresh owed"
)
identity_changing = AC.any_deps_match(_refresh_owed).allow(dg.AssetSelection.groups("identity"))
"""An identity asset a video stage reads is about to change: something above it changed (or it was asked
for) and its own update has not been seen since. An identity change never reaches a video cell as a same-run
request (`will_be_requested` stops at the partition mapping), so without this a stage would run beside the
identity's refresh and again once it lands. The owed refresh is remembered across ticks: the identity asset
can wait ticks for its own gates or a run in flight, and a tick can fall between a step and its gates
(`tests/test_one_automation.py`). Every stage that reads an identity asset two levels below an upload also
reads the one between (scene_assets reads neutral_image beside character_sheet), so one level is enough.
A refresh that fails stays owed: the avatar's cells wait for its identity to be refreshed again."""

refresh_cell = (refresh_existing & ~identity_changing).with_label("refresh existing once the identity has settled")
"""What video stages use: refresh existing cells, but only once the avatar's identity has settled, so one
change refreshes each stage exactly once (`tests/test_one_automation.py`)."""


def cell_key(avatar_id: str, slug: str) -> dg.MultiPartitionKey:
    """A video cell's key; as a string (run tags, record keys) it reads `<avatar>|<slug>`."""
    return dg.MultiPartitionKey({"avatar": avatar_id, "output": slug})


def partition_key(avatar_id: str, slug: str | None) -> str:
    """The key of what a decision or a run is about: the cell when an output is named, else the avatar."""
    return cell_key(avatar_id, slug) if slug else avatar_id


def split_cell(key: str) -> tuple[str, str | None]:
    """(avatar, slug) of a cell key, (avatar, None) of an avatar's key: the inverse of `partition_key`."""
    avatar_id, _, slug = str(key).partition("|")
    return avatar_id, slug or None


def run_partition(tags: Mapping[str, str]) -> str | None:
    """The one partition a run worked on: its partition tag, or a partition range of one (automation
    asks for a range whenever the asset has a backfill policy, even for a single avatar)."""
    start = tags.get(ASSET_PARTITION_RANGE_START_TAG)
    if start is not None and start == tags.get(ASSET_PARTITION_RANGE_END_TAG):
        return start
    return tags.get(PARTITION_NAME_TAG)
