"""Batched (ranged) runs of the model-backed identity images.

`neutral_image` and `character_sheet` carry `BackfillPolicy.multi_run(8)`: a backfill over many avatars
runs 8 avatars per run, the model loads once per run and generates for all of them in batches. dagster
1.13 records a partitioned check of a ranged run with partition=None, so the gates judge each partition
themselves (`avatar_assets/checks/gates.py`); these tests pin the dagster behaviour that makes this
necessary, and prove on real images and a real instance that every avatar of a ranged run gets its own
records, metadata, lifecycle events and gate verdicts, and that automation then trusts exactly the
avatars that passed.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from avatar_assets.checks.gates import partitioned_gate
from avatar_assets.ops.runner import backfill, batches
from tests.conftest import avatar_home, write_bundle

AVATARS = ["rng-a", "rng-b", "rng-c"]
PHOTOS = {"rng-a": "good", "rng-b": "mirrored", "rng-c": "grey"}
IMAGES = [dg.AssetKey("neutral_image"), dg.AssetKey("character_sheet")]
GATES = {"neutral_face_geometry", "neutral_identity_consistency", "sheet_identity_consistency"}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str | None], object]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    found = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        found[(evaluation.check_name, evaluation.partition)] = evaluation
    return found


def materializations(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], object]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {
        (r.event_log_entry.asset_materialization.asset_key.to_user_string(), r.event_log_entry.asset_materialization.partition):
            r.event_log_entry.asset_materialization
        for r in records
    }


def requested(result, defs) -> dict[str, list[str]]:
    found = {}
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        partitions = sorted(str(p) for p in result.get_requested_partitions(key))
        if partitions:
            found[key.to_user_string()] = partitions
    return found


# --------------------------------------------------------------------------- what dagster does, and the gate's answer


class _Discard(dg.ConfigurableIOManager):
    def handle_output(self, context, obj) -> None:
        pass

    def load_input(self, context):
        return {key: key for key in context.asset_partition_keys} if context.has_asset_partitions else None


def _toy_graph(gate_decorator):
    partitions = dg.DynamicPartitionsDefinition(name="toy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        @dg.asset(partitions_def=partitions, io_manager_key="discard", backfill_policy=dg.BackfillPolicy.multi_run(4))
        def image(context) -> dict:
            return {key: key for key in context.partition_keys}

        @dg.asset(partitions_def=partitions, io_manager_key="discard",
                  automation_condition=dg.AutomationCondition.all_deps_blocking_checks_passed())
        def downstream(image) -> None:
            return None

        gate = gate_decorator(image, partitions)
        return dg.Definitions(assets=[image, downstream], asset_checks=[gate], resources={"discard": _Discard()}), image, downstream


def _run_range(defs, instance, start: str, end: str) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey("image")])
    return job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("image")], raise_on_error=False,
        tags={RANGE_START: start, RANGE_END: end},
    )


def test_dagster_records_a_plain_check_of_a_ranged_run_without_partition(tmp_path: Path) -> None:
    """Why the gates judge ranged runs themselves. If this starts failing, dagster records partitioned
    checks of ranged runs per partition and `partitioned_gate`'s ranged path can go."""

    def plain(image, partitions):
        @dg.asset_check(asset=image, blocking=True, partitions_def=partitions)
        def gate(image) -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        return gate

    defs, _, downstream = _toy_graph(plain)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("toy", ["a", "b", "c"])
        ranged = _run_range(defs, instance, "a", "c")
        recorded = [e.event_specific_data.partition for e in ranged.all_events
                    if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]
        passed_for = dg.evaluate_automation_conditions(defs=defs, instance=instance).get_requested_partitions(downstream.key)
    assert recorded == [None]
    assert sorted(passed_for) == []  # no avatar of the range would ever pass its gate


def test_gate_judges_each_partition_of_a_ranged_run_and_automation_trusts_only_the_passed(tmp_path: Path) -> None:
    seen: list[str] = []

    def ours(image, partitions):
        @partitioned_gate(image, "fails for c", partitions)
        def gate(image: str) -> dg.AssetCheckResult:
            seen.append(image)
            return dg.AssetCheckResult(passed=image != "c", description=f"judged {image}", metadata={"which": image})

        return gate

    defs, image, downstream = _toy_graph(ours)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("toy", ["a", "b", "c", "d"])
        ranged = _run_range(defs, instance, "a", "d")
        found = evaluations(instance, ranged.run_id)
        passed_for = dg.evaluate_automation_conditions(defs=defs, instance=instance).get_requested_partitions(downstream.key)
        latest = {
            key: instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=image.key, asset_partitions=[key]), limit=1).records[0]
            for key in "abcd"
        }
    assert seen == ["a", "b", "c", "d"]  # each partition judged on its own input
    assert {p: e.passed for (_, p), e in found.items()} == {"a": True, "b": True, "c": False, "d": True}
    assert found[("gate", "c")].description == "judged c" and found[("gate", "b")].metadata["which"].value == "b"
    for key in "abcd":  # each verdict is about that partition's materialization
        assert found[("gate", key)].target_materialization_data.storage_id == latest[key].storage_id
    assert not ranged.success  # a failed ERROR gate still stops the run
    assert sorted(passed_for) == ["a", "b", "d"]


def test_batches_are_consecutive_and_capped() -> None:
    ordered = ["a", "b", "c", "d", "e", "f", "g"]
    assert batches(ordered, {"a", "b", "c", "d", "e"}, 4) == [["a", "b", "c", "d"], ["e"]]
    assert batches(ordered, {"a", "b", "d", "e", "g"}, 8) == [["a", "b"], ["d", "e"], ["g"]]
    assert batches(ordered, {"c", "a"}, 1) == [["a"], ["c"]]
    assert batches(ordered, set(), 8) == []


# --------------------------------------------------------------------------- the real identity assets, classical


@pytest.fixture(scope="module")
def world(tmp_path_factory, photos, sample_voice):
    """Three avatars with different photos, identity built one avatar per run by the real sensors."""
    root = tmp_path_factory.mktemp("ranged-home")
    with avatar_home(root) as home:
        for avatar_id, photo in PHOTOS.items():
            write_bundle(home.inbox, avatar_id, {"photos/front.jpg": photos[photo]}, sample_voice)
        report = home.process()
        assert report.ok, report.as_dict()
        yield home


@pytest.mark.slow  # builds three identities (~20 s)
def test_backfill_runs_the_images_of_three_avatars_in_one_run_and_judges_each(world) -> None:
    home = world
    before = {a: home.record("character_sheet", a).content_hash() for a in AVATARS}
    outcomes = backfill(home.defs, home.instance, IMAGES, AVATARS, tags={"avatar/seed": "7"}, echo=lambda _: None)
    assert [(o.partition, o.success, o.failed_checks) for o in outcomes] == [("rng-a...rng-c", True, [])]
    run_id = outcomes[0].run_id
    run = home.instance.get_run_by_id(run_id)
    assert (run.tags[RANGE_START], run.tags[RANGE_END]) == ("rng-a", "rng-c")

    # One materialization per avatar and asset, each with its own metadata.
    materialized = materializations(home.instance, run_id)
    assert sorted(materialized) == sorted((k.to_user_string(), a) for k in IMAGES for a in AVATARS)
    photos_named = {a: materialized[("neutral_image", a)].metadata["source_photo"].value for a in AVATARS}
    assert photos_named == {a: "photos/front.jpg" for a in AVATARS}
    previews = {materialized[("character_sheet", a)].metadata["preview"].value for a in AVATARS}
    assert len(previews) == 3  # three different sheets, not one copied
    assert {materialized[("neutral_image", a)].metadata["batch_partitions"].value for a in AVATARS} == {3}

    # Records per avatar: their own id and pixels; the new seed reached every sheet.
    neutrals = {a: home.record("neutral_image", a) for a in AVATARS}
    sheets = {a: home.record("character_sheet", a) for a in AVATARS}
    assert [neutrals[a].avatar_id for a in AVATARS] == AVATARS == [sheets[a].avatar_id for a in AVATARS]
    assert len({neutrals[a].image.sha256 for a in AVATARS}) == 3
    assert all(sheets[a].content_hash() != before[a] for a in AVATARS)
    assert {json.loads(home.store.read(sheets[a].geometry))["seed"] for a in AVATARS} == {7}

    # Every gate judged every avatar: no verdict without a partition.
    found = evaluations(home.instance, run_id)
    assert set(found) == {(gate, a) for gate in GATES for a in AVATARS}
    assert all(e.passed for e in found.values())

    # Lifecycle events per avatar, each 'completed' with that avatar's own record hash.
    from avatar_assets.contracts import LifecycleEvent
    from avatar_assets.pipeline.events import pending_ids
    from resources.layout import outbox_key

    outbox = [LifecycleEvent.model_validate_json(home.store.read_text(outbox_key(i))) for i in pending_ids(home.store, None)]
    completed = [e for e in outbox if e.run_id == run_id and e.type == "completed"]
    assert Counter((e.asset, e.avatar_id) for e in completed) == Counter((k.to_user_string(), a) for k in IMAGES for a in AVATARS)
    assert {e.avatar_id: e.detail["data_version"] for e in completed if e.asset == "character_sheet"} == {
        a: sheets[a].content_hash() for a in AVATARS
    }

    # Automation trusts the per-avatar verdicts: each avatar's bundle is refreshed, nothing else.
    from tests.test_regeneration import automation_cursor

    evaluation = dg.evaluate_automation_conditions(defs=home.defs, instance=home.instance, cursor=automation_cursor())
    assert requested(evaluation, home.defs) == {"identity_bundle": AVATARS}


@pytest.mark.slow
def test_backfill_cli_batches_a_selection_and_rejects_bad_input(world) -> None:
    from tests.regen_helpers import avatarops

    done = avatarops(world, "backfill", "neutral_image", "--avatar", "rng-a", "--avatar", "rng-c")
    assert done.returncode == 0, done.stdout + done.stderr
    # rng-b lies between them in the partition order, so a ranged run would include it: two runs.
    assert done.stdout.count("ok [rng-a] run") == 1 and done.stdout.count("ok [rng-c] run") == 1, done.stdout

    for args, message in [
        (["neutral_image"], "give --avatar (one or more) or --all"),
        (["neutral_image", "--avatar", "nobody"], "no such avatar: nobody"),
        (["lip_sync", "--all"], "lip_sync is not an identity asset"),
        (["neutral_image", "source_upload", "--all"], "different backfill policies"),
    ]:
        failed = avatarops(world, "backfill", *args)
        assert failed.returncode == 2 and message in failed.stderr, (args, failed.stderr)


@pytest.mark.slow
def test_revoking_one_avatar_of_a_batch_removes_only_its_events_from_the_shared_run(world) -> None:
    from avatar_assets.ops import revoke as revocation

    home = world
    (ranged,) = [run for run in home.instance.get_runs() if RANGE_START in run.tags]
    kept = [a for a in AVATARS if a != "rng-b"]
    revocation.revoke(home.instance, home.store, "rng-b", by="test", reason="consent withdrawn", wait_s=5)

    assert home.instance.get_run_by_id(ranged.run_id) is not None  # the other avatars' history stays
    assert {p for _, p in materializations(home.instance, ranged.run_id)} == set(kept)
    assert {p for _, p in evaluations(home.instance, ranged.run_id)} == set(kept)
    for run in home.instance.get_runs():  # nothing of rng-b anywhere
        assert not any(p == "rng-b" for _, p in materializations(home.instance, run.run_id)), run.run_id
        assert not any(p == "rng-b" for _, p in evaluations(home.instance, run.run_id)), run.run_id
    for avatar_id in kept:
        latest = home.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("neutral_image"), asset_partitions=[avatar_id]), limit=1
        ).records
        assert latest, avatar_id


def test_a_range_of_one_is_that_partitions_run() -> None:
    from partitions import run_partition

    assert run_partition({"dagster/partition": "ava"}) == "ava"
    assert run_partition({RANGE_START: "ava", RANGE_END: "ava"}) == "ava"  # automation, multi_run asset
    assert run_partition({RANGE_START: "ava", RANGE_END: "cal"}) is None  # a batch is nobody's own run
    assert run_partition({}) is None
