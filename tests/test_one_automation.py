"""One automation, whoever drives it: regenerating any asset refreshes exactly its downstream closure.

For every asset of the graph (each identity asset and each video stage), in one shared rendered world,
`avatarops regenerate` re-materializes one partition and the materializations that follow must be exactly
the closure of existing partitions below it, computed from the asset graph (not a hand list): no asset
twice for one change, nothing of another avatar or cell, and every `output_package` newer than the
`enhanced_video` it packages. The daemon path (regenerate handing its run to the daemon's queue) is
`test_regeneration_daemon.py`; `process` beside a live daemon is refused there too.
"""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner

from tests.regen_helpers import (
    AVATARS,
    SLUGS,
    cell,
    expected_refresh,
    is_video,
    last_storage_id,
    materializations_after,
    restored_world,
)

pytestmark = pytest.mark.slow


def latest_storage_id(instance, asset: str, partition: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0].storage_id


def test_regenerating_any_asset_refreshes_exactly_its_downstream_closure(tmp_path_factory, sample_bundle):
    from avatar_assets.cli import main

    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, graph = home.instance, home.defs.resolve_asset_graph()
        keys = [key for key in graph.toposorted_asset_keys if graph.get(key).partitions_def is not None]
        assert len(keys) == 15, keys  # 6 identity assets and 9 video stages: a new asset joins this test
        for key in keys:
            partition = cell("ava", "s1") if is_video(graph, key) else "ava"
            args = ["regenerate", key.to_user_string(), "--avatar", "ava", *(["--output", "s1"] if is_video(graph, key) else [])]
            start = last_storage_id(instance)
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
            materialized = materializations_after(instance, start)
            expected = expected_refresh(graph, key, partition)
            assert materialized == expected, (
                key.to_user_string(),
                {"missing": sorted(set(expected) - set(materialized)), "extra": sorted(set(materialized) - set(expected)),
                 "twice": sorted(k for k, n in materialized.items() if n > 1)},
            )
            for avatar_id in AVATARS:
                for slug in SLUGS:
                    packaged = latest_storage_id(instance, "output_package", cell(avatar_id, slug))
                    assert packaged > latest_storage_id(instance, "enhanced_video", cell(avatar_id, slug)), (key, avatar_id, slug)
