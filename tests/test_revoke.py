"""Revoke: every blob and record derived from one avatar is deleted, its partitions and materializations are
gone, an auditable tombstone (hashes, who, when, why - no media) remains, and the avatar is refused from
then on. Other avatars - which share output slugs, hence content-addressed blobs such as backgrounds -
keep every blob their records reference, and their packages still validate.

The world is 3 avatars x 2 shared slugs rendered by the real sensors and runs; blobs and references are
listed from the media store itself (`regen_helpers.blob_keys` / `referenced_blob_keys`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import dagster as dg
import pytest

from avatar_assets.media.partial import writer_of
from avatar_assets.pipeline import tombstones
from avatar_assets.video.assets import VIDEO_STAGES
from resources import layout
from tests.conftest import copy_sample
from tests.regen_helpers import (
    AVATARS,
    SLUGS,
    avatarops,
    blob_keys,
    blobs_of_avatar,
    cell,
    orphan_blobs,
    referenced_blob_keys,
    restored_world,
    submit,
    world_env,
)
from tests.servers import REPO_ROOT, VENV_BIN, wait_until


def record_keys(store, avatar_id: str) -> list[str]:
    return sorted(store.list_keys(layout.avatar_records(avatar_id)))


def snapshot_others(home, revoked: str) -> dict:
    """What must survive: the other avatars' records (verbatim) and the blobs they reference."""
    from resources.records import parse_record

    store = home.store
    others = [a for a in AVATARS if a != revoked]
    return {
        "records": {key: parse_record(store.read_text(key)).content_hash() for a in others for key in record_keys(store, a)},
        "blobs": set().union(*(blobs_of_avatar(store, a) for a in others)),
    }


def assert_others_untouched(home, before: dict, revoked: str) -> None:
    from avatar_assets.checks.video import package_problems
    from resources.records import parse_record

    store = home.store
    after = {key: parse_record(store.read_text(key)).content_hash() for key in before["records"] if store.read_text(key)}
    assert after == before["records"], "another avatar's records changed"
    missing = {key for key in before["blobs"] if not store._exists(key)}
    assert not missing, f"blobs of other avatars were deleted: {sorted(missing)[:5]}"
    for avatar_id in AVATARS:
        if avatar_id == revoked:
            continue
        for slug in SLUGS:
            package = home.record("output_package", cell(avatar_id, slug))
            problems, _ = package_problems(store, package)
            assert problems == [], (avatar_id, slug, problems)
            assert (home.root / "packages" / avatar_id / slug / "rights_manifest.json").is_file()


def mentions(store, key: str, avatar_id: str) -> bool:
    """Whether a JSON blob names the avatar (a request, a rights manifest...)."""
    if not key.endswith(".json"):
        return False
    try:
        document = json.loads(store.read_text(key) or "null")
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(document, dict) and document.get("avatar_id") == avatar_id


def assert_nothing_left_of(home, avatar_id: str, ava_only_blobs: set[str]) -> None:
    store, instance = home.store, home.instance
    assert record_keys(store, avatar_id) == []
    assert list(store.list_keys(layout.avatar_packages(avatar_id))) == []
    assert list(store.list_keys(layout.avatar_approvals(avatar_id))) == []
    assert list(store.list_keys(layout.avatar_requests(avatar_id))) == []  # the request snapshots
    assert not [p for p in (home.root / "packages" / avatar_id).rglob("*") if p.is_file()]
    assert not (home.root / "inbox" / "avatars" / avatar_id).exists()
    assert not (home.root / "inbox" / "outputs" / avatar_id).exists()
    for key in store.list_keys(layout.CACHE):
        assert json.loads(store.read_text(key))["record"].get("avatar_id") != avatar_id, key
    still_there = {key for key in ava_only_blobs if store._exists(key)}
    assert not still_there, f"{len(still_there)} blobs of {avatar_id} survived: {sorted(still_there)[:5]}"
    # Nothing unreferenced is left that names the avatar (requests, manifests of earlier packages...).
    leaked = {key for key in orphan_blobs(store) if mentions(store, key, avatar_id)}
    assert not leaked, f"unreferenced blobs that name {avatar_id}: {sorted(leaked)}"

    # Its outbox events and dead letters are gone; one `revoked` event naming only the id tells receivers.
    from avatar_assets.pipeline import events

    left = [events.LifecycleEvent.model_validate_json(store.read_text(key)) for key in store.list_keys(layout.OUTBOX)]
    assert [(e.type, e.output, e.asset, e.detail) for e in left if e.avatar_id == avatar_id] == [("revoked", None, None, {})]
    assert not [letter for letter in events.dead_letters(store) if letter.avatar_id == avatar_id]

    # Dagster forgot it: partition key, materializations (their metadata holds thumbnails), runs.
    assert avatar_id not in instance.get_dynamic_partitions("avatars")
    graph = home.defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        multi = isinstance(graph.get(key).partitions_def, dg.MultiPartitionsDefinition)
        partitions = [cell(avatar_id, slug) for slug in instance.get_dynamic_partitions("outputs")] if multi else [avatar_id]
        assert not instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1
        ).records, key
        latest = instance.get_latest_materialization_event(key)
        assert latest is None or not str(latest.dagster_event.partition).startswith((f"{avatar_id}|", avatar_id)), key
    for run in instance.get_runs():
        assert not run.tags.get("dagster/partition", "").startswith(avatar_id), run.run_id
        assert run.tags.get("avatar") != avatar_id, run.run_id


def only_blobs_of(home, avatar_id: str) -> set[str]:
    """Blobs that the avatar's records or cache entries reference and no other avatar's record does."""
    store = home.store
    mine = blobs_of_avatar(store, avatar_id)
    theirs = set().union(*(blobs_of_avatar(store, a) for a in AVATARS if a != avatar_id))
    return mine - theirs


@pytest.mark.slow  # restores (or first builds) the rendered world
def test_revoke_deletes_the_avatar_and_keeps_the_others_intact(tmp_path_factory, sample_bundle):
    from avatar_assets.ops import approvals, revoke

    with restored_world(tmp_path_factory, sample_bundle) as home:
        store, instance = home.store, home.instance
        before = snapshot_others(home, "ava")
        ava_only = only_blobs_of(home, "ava")
        shared = blobs_of_avatar(store, "ava") - ava_only
        bg = home.record("backgrounds", cell("ava", "s1")).images[0]
        assert bg.sha256 == home.record("backgrounds", cell("bob", "s1")).images[0].sha256  # shared by the slug
        assert bg.key in shared and ava_only
        blobs_before = blob_keys(store)

        done = avatarops(home, "revoke", "ava", "--reason", "consent withdrawn by the subject", "--by", "legal")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("revoked ava: ")

        stone = tombstones.tombstone(store, "ava")
        assert (stone.status, stone.by, stone.reason) == ("revoked", "legal", "consent withdrawn by the subject")
        assert abs(stone.revoked_at.timestamp() - time.time()) < 600
        assert {bg.sha256} <= set(stone.kept_shared_blobs)
        assert {layout.blob_sha256(key) for key in ava_only} <= set(stone.deleted_blobs)
        assert sorted(stone.outputs) == sorted(SLUGS)
        assert all(key.startswith((layout.avatar_records("ava"), layout.CACHE, *layout.erased_with("ava")))
                   for key in stone.deleted_records)
        raw = store.read_text(layout.tombstone_key("ava"))
        assert "file://" not in raw and layout.MEDIA not in raw  # hashes only: no media, no way back to it

        assert_nothing_left_of(home, "ava", ava_only)
        assert_others_untouched(home, before, "ava")
        assert blob_keys(store) <= blobs_before

        # Refused from now on: requests, uploads, approvals, and a second revoke is a no-op.
        submit(home, "ava", "again")
        copy_sample(sample_bundle, home.inbox, "ava")
        report = home.process()
        assert report.runs == []
        assert "revoked" in json.loads(store.read_text(layout.held_request_key("ava", "again")))["reason"]
        [quarantined] = [p for p in (home.root / "quarantine").iterdir() if p.name.startswith("ava")]
        assert "was revoked" in (quarantined / "reason.json").read_text()
        with pytest.raises(approvals.ApprovalError, match="was revoked"):
            approvals.record_decision(store, instance, job_type="video_asset_approval", asset="lip_sync",
                                      avatar_id="ava", output="s1", decision="approve", by="rita")
        assert revoke.revoke(instance, store, "ava", by="x", reason="again") == stone


@pytest.mark.slow  # renders while revoking
def test_revoke_during_a_running_render_leaves_no_orphans(tmp_path_factory, sample_bundle, tmp_path):
    from avatar_assets.ops import revoke

    with restored_world(tmp_path_factory, sample_bundle) as home:
        store, instance = home.store, home.instance
        before = snapshot_others(home, "cal")
        cal_only = only_blobs_of(home, "cal")
        blobs_before = blob_keys(store)
        submit(home, "cal", "live", script="A render that is revoked while it runs.")
        with open(tmp_path / "process.log", "wb") as log:
            worker = subprocess.Popen([str(VENV_BIN / "avatarops"), "process"], cwd=REPO_ROOT, env=world_env(home),
                                      stdout=log, stderr=subprocess.STDOUT)
        try:
            def render_started():
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": cell("cal", "live")}))
                return runs and any(
                    e.dagster_event and e.dagster_event.event_type_value == "STEP_START" and e.step_key == "lip_sync"
                    for e in instance.all_logs(runs[0].run_id)
                )

            wait_until(render_started, timeout=240, interval=0.2, what="the render to reach lip_sync")
            stone = revoke.revoke(instance, store, "cal", by="legal", reason="takedown", wait_s=240)
            worker.wait(timeout=240)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)
        assert stone.status == "revoked" and "live" in stone.outputs
        # The render stopped: revoke's SIGTERM interrupted the run (Dagster fails it as interrupted and `process`
        # goes on to exit 1) or killed the process, or its next record write was refused by the tombstone.
        # That revoke signals the process is asserted deterministically in test_crash_recovery.py.
        log_text = (tmp_path / "process.log").read_text()
        assert worker.returncode in (-signal.SIGTERM, -signal.SIGKILL) or (
            worker.returncode == 1 and ("ExecutionInterrupted" in log_text or "was revoked" in log_text)), log_text[-3000:]
        assert not [p for p in home.root.rglob("*") if (writer_of(p) or (None, None))[1] == worker.pid]

        assert_nothing_left_of(home, "cal", cal_only)
        assert_others_untouched(home, before, "cal")
        # No orphan files: whatever the interrupted render wrote is gone unless another avatar references it.
        referenced = set(referenced_blob_keys(store))
        written_during = blob_keys(store) - blobs_before
        assert written_during <= referenced, sorted(written_during - referenced)
        assert orphan_blobs(store) <= blobs_before
        scratch = home.root / "tmp"
        assert not scratch.exists() or not list(scratch.iterdir())
        assert [stage for stage in VIDEO_STAGES if home.record(stage, cell("cal", "live"))] == []


def test_revoke_refuses_an_unknown_avatar_or_a_missing_reason(home):
    done = avatarops(home, "revoke", "nobody", "--reason", "test")
    assert done.returncode == 2 and "avatar nobody does not exist" in done.stderr
    from avatar_assets.ops import revoke

    home.instance.add_dynamic_partitions("avatars", ["somebody"])
    with pytest.raises(revoke.RevokeError, match="needs a reason"):
        revoke.revoke(home.instance, home.store, "somebody", by="x", reason="  ")
    assert tombstones.tombstone(home.store, "somebody") is None
