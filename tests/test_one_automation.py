"""One automation, whoever drives it: regenerating any asset refreshes exactly its downstream closure.

For every asset of the graph (each identity asset and each video stage), in one shared rendered world,
`avatarops regenerate` re-materializes one partition and the materializations that follow must be exactly
the closure of existing partitions below it, computed from the asset graph (not a hand list): no asset
twice for one change, nothing of another avatar or cell, and every `output_package` newer than the
`enhanced_video` it packages. The daemon path (regenerate handing its run to the daemon's queue) is
`test_regeneration_daemon.py`; `process` beside a live daemon is refused there too.
"""

from __future__ import annotations

import re

import dagster as dg
import pytest
from click.testing import CliRunner

from avatar_assets.dagster_compat import PARTITION_NAME_TAG
from tests.regen_helpers import (
    AVATARS,
    SLUGS,
    cell,
    definitions_with,
    expected_refresh,
    is_video,
    last_storage_id,
    materialize_only,
    materializations_after,
    restored_world,
    service_down,
    step_events,
    submit,
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


def test_a_render_that_fails_is_left_to_retry_and_not_relaunched_by_automation(tmp_path_factory, sample_bundle):
    """A changed request re-renders an existing cell and fails at speech (the speech service is down). Its
    script and storyboard were updated by that same run, which named speech as well, so automation sees no
    change of its own to refresh: the cell stays failed until `avatarops retry`. (A whole-job run that named
    no assets was relaunched here; mid-render, a tick whose reads straddled a materialization launched a
    second render the same way.)"""
    from avatar_assets.ops.runner import process
    from resources.providers import SpeechSynthesizer

    with restored_world(tmp_path_factory, sample_bundle) as home:
        start = last_storage_id(home.instance)
        submit(home, "ava", "s1", script="A changed script that the speech service never reads.")
        speech_down = definitions_with(home, tts=service_down(SpeechSynthesizer, "synthesize", "speech"))
        report = process(speech_down, home.instance, echo=lambda _: None)
        [render] = report.runs
        assert render.partition == cell("ava", "s1") and not render.success, report.as_dict()
        assert step_events(home.instance, render.run_id, "STEP_FAILURE") == ["speech"]
        materialized = materializations_after(home.instance, start)
        assert {"script", "storyboard"} <= {asset for asset, _ in materialized} and ("speech", cell("ava", "s1")) \
            not in materialized and set(materialized.values()) == {1}, materialized
        run = home.instance.get_run_by_id(render.run_id)
        assert run.asset_selection and dg.AssetKey("speech") in run.asset_selection


def test_an_identity_change_whose_gates_pass_a_tick_later_reaches_each_cell_once(tmp_path_factory, sample_bundle):
    """A daemon tick can fall between an identity step and its blocking gates: here neutral_image is seen
    updated on one tick and its gates pass before the next. The tick that then refreshes character_sheet must
    leave the cells alone until character_sheet is through; it requested them beside it, and under a loaded CI
    the daemon rendered those cells twice (once before character_sheet landed, once after)."""
    from avatar_assets.ops.runner import CliState, ProcessReport, process, run_automation

    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, defs = home.instance, home.defs
        neutral = dg.AssetKey("neutral_image")
        start = last_storage_id(instance)
        job = defs.resolve_implicit_job_def_def_for_assets([neutral])
        gates = dg.AssetSelection.checks_for_assets(neutral).resolve_checks(defs.resolve_asset_graph())

        def execute(assets, checks):  # the partition as a tag: a run of checks alone selects no partitioned asset
            run = job.get_subset(asset_selection=assets, asset_check_selection=checks)
            assert run.execute_in_process(instance=instance, tags={PARTITION_NAME_TAG: "ava"}).success

        state, said = CliState.of_home(), []
        execute({neutral}, set())
        assert run_automation(defs, instance, state, ProcessReport(), said.append) == 0, said  # its gates have not run
        execute(set(), gates)
        run_automation(defs, instance, state, ProcessReport(), said.append)
        [refresh] = said
        refreshed = re.fullmatch(r"automation: refreshing (.+) for ava", refresh)
        assert refreshed and sorted(refreshed[1].split(", ")) == ["character_sheet", "identity_bundle"], said
        assert process(defs, instance, echo=lambda _: None).ok
        materialized = materializations_after(instance, start)
        assert materialized == expected_refresh(home.defs.resolve_asset_graph(), neutral, "ava"), materialized


def test_an_identity_refresh_that_fails_holds_its_cells_until_it_is_retried(tmp_path_factory, sample_bundle):
    """character_sheet's refresh fails (the image service is down): the avatar's cells are held tick after
    tick, instead of being rendered from the new neutral image beside the old sheet (the refresh stays owed,
    and the sheet's gate, planned in the failed run, never passed). Once `avatarops retry` completes the
    identity, each cell is refreshed once."""
    from avatar_assets.cli import main
    from avatar_assets.ops.runner import CliState, ProcessReport, process, run_automation
    from resources.providers import ImageGenerator

    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, neutral = home.instance, dg.AssetKey("neutral_image")
        start = last_storage_id(instance)
        broken = definitions_with(home, images=service_down(ImageGenerator, "character_sheets", "image"))
        state = CliState.of_home()
        materialize_only(home, "neutral_image", "ava")
        report, said = ProcessReport(), []
        assert run_automation(broken, instance, state, report, said.append) == 1, said
        [failed] = report.runs
        assert failed.partition == "ava" and not failed.success, report.as_dict()
        for _ in range(2):
            assert run_automation(broken, instance, state, ProcessReport(), said.append) == 0, said
        retried = CliRunner().invoke(main, ["retry", failed.run_id], catch_exceptions=False)
        assert retried.exit_code == 0, retried.output
        assert process(home.defs, instance, echo=lambda _: None).ok
        materialized = materializations_after(instance, start)
        assert materialized == expected_refresh(home.defs.resolve_asset_graph(), neutral, "ava"), materialized
