"""Exact regeneration, in process: re-materializing one asset partition refreshes exactly the existing
downstream partitions of that avatar (of that cell, for a video stage) through the shared automation
condition, and unchanged inputs are served from the content cache.

The world is 3 avatars x 2 outputs rendered by the real sensors and runs (`regen_helpers`); automation
is evaluated with `dg.evaluate_automation_conditions` on the real instance, and the refresh runs are
executed by `avatar_assets.ops.runner.process` (what `avatarops process` and `avatarops regenerate` do).
The daemon's remote-asset-graph path is proven in `test_regeneration_daemon.py`.
"""

from __future__ import annotations

from collections import Counter

import dagster as dg
import pytest

from tests.regen_helpers import (
    AVATARS,
    NEUTRAL_CELL_DOWNSTREAM,
    SLUGS,
    avatarops,
    cell,
    expected_after_neutral_image,
    last_storage_id,
    materializations_after,
    materialize_only,
    restored_world,
    run_messages,
)


def automation_cursor():
    from avatar_assets.ops.runner import CliState

    return CliState.of_home().automation_cursor


def requested(result, defs) -> set[tuple[str, str]]:
    return {
        (key.to_user_string(), str(partition))
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        for partition in result.get_requested_partitions(key)
    }


def cache_hits(instance, run_id: str) -> set[str]:
    """Assets whose run logged a content-cache hit ("cache hit for <asset> ...")."""
    return {
        message.split("cache hit for ", 1)[1].split(" ", 1)[0]
        for message in run_messages(instance, run_id)
        if "cache hit for " in message
    }


@pytest.mark.slow  # renders; the first world user builds the 3x2 world (~1 min)
def test_regenerating_neutral_image_refreshes_exactly_that_avatars_existing_downstream(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, defs = home.instance, home.defs
        # A slug that exists for the platform but has no cell of `ava`: automation must never invent ava|s3.
        instance.add_dynamic_partitions("outputs", ["s3"])
        before_hash = {a: home.record("neutral_image", a).content_hash() for a in AVATARS}
        before_package = home.record("output_package", cell("ava", "s1")).content_hash()
        start = last_storage_id(instance)

        regenerated = materialize_only(home, "neutral_image", "ava")
        assert "neutral_image" in cache_hits(instance, regenerated.run_id)  # same photo, same provider: reused
        assert materializations_after(instance, start) == {("neutral_image", "ava"): 1}

        # One evaluation of the shared condition asks for the rest of the avatar's identity chain; its video
        # cells wait until the identity has settled (a stage must not read a character sheet about to change).
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation_cursor())
        expected = expected_after_neutral_image("ava")
        assert requested(evaluation, defs) == {("character_sheet", "ava"), ("identity_bundle", "ava")}
        assert sum(expected.values()) == 2 + 2 * len(NEUTRAL_CELL_DOWNSTREAM)

        # Executing what automation asks for (and evaluating again until quiet) materializes exactly that.
        report = home.process()
        assert report.ok, report.as_dict()
        assert sorted((r.origin, r.partition) for r in report.runs) == [
            ("automation", "ava"), ("automation", cell("ava", "s1")), ("automation", cell("ava", "s2")),
        ]
        assert materializations_after(instance, start) == expected + Counter({("neutral_image", "ava"): 1})
        assert not any(partition.startswith(("bob", "cal")) for _, partition in materializations_after(instance, start))
        assert not instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("script"), asset_partitions=[cell("ava", "s3")]), limit=1
        ).records

        # Inputs did not change, so nothing was recomputed: every cached stage logged a cache hit.
        hits = set().union(*(cache_hits(instance, r.run_id) for r in report.runs))
        assert {"character_sheet", "scene_assets", "lip_sync", "stitched_video", "enhanced_video"} <= hits
        assert {a: home.record("neutral_image", a).content_hash() for a in AVATARS} == before_hash
        assert home.record("scene_assets", cell("ava", "s1")).avatar_id == "ava"
        # The package is rebuilt (it is not cached) and still belongs to ava/s1.
        package = home.record("output_package", cell("ava", "s1"))
        assert (package.avatar_id, package.slug) == ("ava", "s1")
        assert package.content_hash() != before_package  # a new rights manifest (created_at) in a new package

        # Quiet afterwards: another pass launches nothing.
        assert home.process().runs == []


@pytest.mark.slow  # renders; the first world user builds the 3x2 world (~1 min)
def test_regenerate_a_video_stage_with_a_new_seed_refreshes_only_that_cell(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance = home.instance
        old = home.record("backgrounds", cell("bob", "s2"))
        sibling = home.record("backgrounds", cell("bob", "s1"))
        old_scenes = home.record("scene_assets", cell("bob", "s2")).content_hash()
        start = last_storage_id(instance)

        done = avatarops(home, "regenerate", "backgrounds", "--avatar", "bob", "--output", "s2", "--seed", "7")
        assert done.returncode == 0, done.stdout + done.stderr

        expected = {("backgrounds", cell("bob", "s2")): 1} | {
            (asset, cell("bob", "s2")): 1 for asset in NEUTRAL_CELL_DOWNSTREAM
        }
        assert materializations_after(instance, start) == expected
        new = home.record("backgrounds", cell("bob", "s2"))
        assert new.seeds == [7] and old.seeds == [0]
        assert new.images[0].sha256 != old.images[0].sha256
        assert home.record("scene_assets", cell("bob", "s2")).content_hash() != old_scenes
        assert home.record("backgrounds", cell("bob", "s1")) == sibling
        regen_run = next(
            r for r in instance.get_runs(dg.RunsFilter(tags={"avatarops/regenerate": "backgrounds"}))
        )
        assert regen_run.tags["avatar/seed"] == "7" and regen_run.tags["dagster/partition"] == cell("bob", "s2")


@pytest.mark.slow  # renders; the first world user builds the 3x2 world (~1 min)
def test_regenerating_an_upstream_change_never_runs_other_avatars_or_upstream(tmp_path_factory, sample_bundle):
    """character_sheet of cal with a new seed: identity_bundle[cal] and cal's cells below scene_assets only."""
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance = home.instance
        old = home.record("character_sheet", "cal").content_hash()
        start = last_storage_id(instance)
        materialize_only(home, "character_sheet", "cal", tags={"avatar/seed": "11"})
        assert home.record("character_sheet", "cal").content_hash() != old
        report = home.process()
        assert report.ok, report.as_dict()
        expected = {("character_sheet", "cal"): 1, ("identity_bundle", "cal"): 1}
        for slug in SLUGS:
            expected |= {(asset, cell("cal", slug)): 1 for asset in NEUTRAL_CELL_DOWNSTREAM}
        assert materializations_after(instance, start) == expected


def test_regenerate_for_an_avatar_that_does_not_exist_exits_2(home):
    done = avatarops(home, "regenerate", "neutral_image", "--avatar", "nobody")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "avatar nobody does not exist" in done.stderr
    assert last_storage_id(home.instance) == 0 and not list(home.instance.get_runs())
    unknown = avatarops(home, "regenerate", "no_such_asset", "--avatar", "nobody")
    assert unknown.returncode == 2 and "no asset no_such_asset" in unknown.stderr
