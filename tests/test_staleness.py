"""Staleness as the UI shows it: Dagster's stale-status resolver over the real instance.

Assets carry code versions, and every output's data version is its record's content hash. So after an
upstream change exactly the partitions that consumed the old version show "changed upstream" (stale
with a DATA cause naming the dependency), a re-materialization that produced identical content marks
nothing stale, and refreshing (automation) makes everything fresh again. Checked on both the
definitions' asset graph and the remote asset graph the webserver builds from the code location.
"""

from __future__ import annotations

import contextlib

import dagster as dg
import pytest

from tests.regen_helpers import (
    AVATARS,
    cell,
    materialize_only,
    restored_world,
    stale_partitions,
)


@contextlib.contextmanager
def remote_asset_graph(instance):
    """The asset graph the webserver and daemon use (remote representation of the code location)."""
    from dagster._core.test_utils import in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = LoadableTargetOrigin(module_name="avatar_assets.definitions", attribute="defs")
    with in_process_test_workspace(instance, origin) as workspace:
        yield workspace.asset_graph


def data_version(instance, asset: str, partition: str) -> str | None:
    event = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records[0].event_log_entry.asset_materialization
    return event.tags.get("dagster/data_version")


def code_version_of(key: dg.AssetKey) -> str:
    from avatar_assets.identity import assets as identity
    from avatar_assets.video import assets as video

    return identity.CODE_VERSION if key in {a.key for a in identity.IDENTITY_ASSETS} else video.CODE_VERSION


@pytest.mark.slow  # restores (or first builds) the rendered world and refreshes one avatar
def test_only_partitions_that_consumed_a_changed_upstream_are_stale(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, graph = home.instance, home.defs.resolve_asset_graph()
        for key in graph.get_all_asset_keys():
            assert graph.get(key).code_version == code_version_of(key), key  # code versions are on every asset
        for avatar_id in AVATARS:
            assert data_version(instance, "character_sheet", avatar_id) == home.record("character_sheet", avatar_id).content_hash()
        assert data_version(instance, "lip_sync", cell("bob", "s1")) == home.record("lip_sync", cell("bob", "s1")).content_hash()
        assert stale_partitions(home) == {}

        # Same content again (content cache hit): a new materialization but the same data version.
        materialize_only(home, "neutral_image", "bob")
        assert stale_partitions(home) == {}

        # New content: character_sheet of ava with another seed.
        old = home.record("character_sheet", "ava").content_hash()
        materialize_only(home, "character_sheet", "ava", tags={"avatar/seed": "5"})
        new = home.record("character_sheet", "ava").content_hash()
        assert new != old and data_version(instance, "character_sheet", "ava") == new
        expected = {("identity_bundle", "ava"), ("scene_assets", "ava|s1"), ("scene_assets", "ava|s2")}
        stale = stale_partitions(home)
        assert set(stale) == expected, stale
        for causes in stale.values():
            assert causes == ["character_sheet: has a new dependency data version"], causes
        with remote_asset_graph(instance) as remote:
            remote_stale = stale_partitions(home, remote)
        assert remote_stale == stale

        # Automation refreshes them (and what they feed) - and bob's, whose neutral_image was re-materialized
        # (a materialization is an update for automation even when the content is the same; the cache makes
        # that refresh cheap). Then nothing is stale any more.
        report = home.process()
        assert report.ok, report.as_dict()
        assert {r.partition for r in report.runs} == {"ava", "ava|s1", "ava|s2", "bob", "bob|s1", "bob|s2"}
        assert stale_partitions(home) == {}
