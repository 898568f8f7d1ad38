"""Partition definitions and the one automation condition every downstream asset shares.

Only built-in partition mappings are used: a custom PartitionMapping is dropped from the remote asset
graph that the daemon and the UI evaluate (dagster 1.13), which would widen avatar-exact lineage.
"""

import re
import warnings
from collections.abc import Mapping

import dagster as dg

PARTITION_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")

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


def is_valid_key(key: str) -> bool:
    return bool(PARTITION_KEY_PATTERN.fullmatch(key))


def cell_key(avatar_id: str, slug: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"avatar": avatar_id, "output": slug})


def run_partition(tags: Mapping[str, str]) -> str | None:
    """The one partition a run worked on: its partition tag, or a partition range of one (automation
    asks for a range whenever the asset has a backfill policy, even for a single avatar)."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    start = tags.get(ASSET_PARTITION_RANGE_START_TAG)
    if start is not None and start == tags.get(ASSET_PARTITION_RANGE_END_TAG):
        return start
    return tags.get(PARTITION_NAME_TAG)
