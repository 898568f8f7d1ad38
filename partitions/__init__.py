"""Partition definitions and the one automation condition every downstream asset shares.

Only built-in partition mappings are used: a custom PartitionMapping is dropped from the remote asset
graph that the daemon and the UI evaluate (dagster 1.13), which would widen avatar-exact lineage.
"""

import re
import warnings

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
