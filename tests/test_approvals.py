"""Human approvals: durable decisions on one asset partition at one content hash, turned into runs by the
approval sensor (through `avatar_assets.ops.runner.process`, which evaluates every sensor like the daemon).

Every job type is driven through a real path: the CLI (`avatarops approve|reject`), or the UI job
`approval_decision` executed on the instance, then the sensors. Renders are real (160 px masters).
"""

from __future__ import annotations

import dagster as dg
import pytest

from avatar_assets.ops import approvals
from avatar_assets.pipeline import tombstones
from avatar_assets.video import gates
from avatar_assets.video.assets import VIDEO_STAGES
from resources import layout
from tests.regen_helpers import (
    NEUTRAL_CELL_DOWNSTREAM,
    avatarops,
    cell,
    definitions_with,
    enhancer_down,
    last_storage_id,
    materializations_after,
    restored_world,
    step_events,
    submit,
    submit_accepted,
)

pytestmark = pytest.mark.slow  # every test renders at least part of a video


def decide(home, **config) -> tuple[bool, str]:
    """The UI's launchpad: run the `approval_decision` job with this config; (success, failure message)."""
    job = home.defs.resolve_job_def("approval_decision")
    result = job.execute_in_process(
        instance=home.instance, run_config={"ops": {"record_approval": {"config": config}}}, raise_on_error=False
    )
    message = ""
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            message = error.message.strip()
            if error.cls_name and message.startswith(f"{error.cls_name}: ") or ".ApprovalError: " in message:
                message = message.split(": ", 1)[1]
    return result.success, message


def runs_of(report, origin: str):
    return [run for run in report.runs if run.origin == origin]


def selection(instance, run_id: str) -> list[str]:
    """Stages the run materialized, in pipeline order."""
    done = {
        record.event_log_entry.dagster_event.asset_key.to_user_string()
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    }
    return [stage for stage in VIDEO_STAGES if stage in done] + sorted(done - set(VIDEO_STAGES))


def test_video_asset_approval_resumes_the_render_stopped_after_lip_sync(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, store = home.instance, home.store
        submit(home, "ava", "gated", route="approval_gated")
        first = home.process()
        assert first.ok, first.as_dict()
        [render] = runs_of(first, "output_request_sensor")
        assert selection(instance, render.run_id) == VIDEO_STAGES[: VIDEO_STAGES.index("lip_sync") + 1]
        lip = home.record("lip_sync", cell("ava", "gated"))
        assert lip.awaiting_approval and home.record("stitched_video", cell("ava", "gated")) is None

        # stitched_video refuses to run while lip_sync is not approved (someone presses Materialize anyway).
        job = home.defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey("stitched_video")])
        forced = job.execute_in_process(
            instance=instance, partition_key=cell("ava", "gated"), asset_selection=[dg.AssetKey("stitched_video")],
            raise_on_error=False,
        )
        assert not forced.success
        assert step_events(instance, forced.run_id, "STEP_UP_FOR_RETRY") == []  # a human gate is not retried
        failures = [e.step_failure_data for e in forced.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        assert len(failures) == 1 and "waiting for approval of lip_sync" in failures[0].user_failure_data.description
        assert home.record("stitched_video", cell("ava", "gated")) is None

        # A reviewer who looked at another version is refused; then the approval is recorded once.
        stale = avatarops(home, "approve", "lip_sync", "--avatar", "ava", "--output", "gated", "--by", "rita",
                          "--hash", "0" * 64)
        assert stale.returncode == 2 and "changed since it was reviewed" in stale.stderr, stale.stderr
        ok = avatarops(home, "approve", "lip_sync", "--avatar", "ava", "--output", "gated", "--by", "rita",
                       "--hash", lip.content_hash(), "--note", "looks right")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        twice = avatarops(home, "approve", "lip_sync", "--avatar", "ava", "--output", "gated", "--by", "sam")
        assert twice.returncode == 2 and "already approved by rita" in twice.stderr, twice.stderr

        [decision] = gates.decisions(store, "ava", "gated", "lip_sync")
        assert (decision.decision, decision.by, decision.job_type, decision.note) == (
            "approve", "rita", "video_asset_approval", "looks right")
        assert decision.content_hash == lip.content_hash() and decision.at is not None
        assert (decision.avatar_id, decision.output, decision.asset) == ("ava", "gated", "lip_sync")

        resumed = home.process()
        assert resumed.ok, resumed.as_dict()
        [run] = runs_of(resumed, "approval_sensor")
        assert selection(instance, run.run_id) == ["stitched_video", "enhanced_video", "output_package"]
        tags = instance.get_run_by_id(run.run_id).tags
        assert (tags["approval_id"], tags["approved_by"]) == (decision.approval_id, "rita")
        assert home.record("output_package", cell("ava", "gated")) is not None
        assert approvals.queued(store) == []  # drained: a later pass launches nothing again
        assert home.process().runs == []


def test_script_storyboard_and_background_gates_with_a_rejection(tmp_path_factory, sample_bundle):
    """One request behind three gates, decided in the UI job: approve, refuse a bad decision, reject with a
    note (new seed), approve what was regenerated, and the render runs to the end."""
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, store, key = home.instance, home.store, cell("bob", "three")
        submit(home, "bob", "three", approvals_required=["script_approval", "storyboard_approval", "background_approval"])
        report = home.process()
        assert report.ok and [selection(instance, r.run_id) for r in report.runs] == [["script"]], report.as_dict()

        assert decide(home, job_type="script_approval", asset="script", avatar_id="bob", output="three",
                      by="rita") == (True, "")
        report = home.process()
        [run] = runs_of(report, "approval_sensor")
        assert report.ok and selection(instance, run.run_id) == ["storyboard"]

        refused = decide(home, job_type="storyboard_approval", asset="storyboard", avatar_id="bob", output="three",
                         decision="reject", by="rita", note="  ")
        assert refused == (False, "a rejection needs a note saying what to change")
        wrong_asset = decide(home, job_type="storyboard_approval", asset="script", avatar_id="bob", output="three",
                             by="rita")
        assert wrong_asset == (False, "storyboard_approval decides on storyboard, not script")
        assert decide(home, job_type="storyboard_approval", asset="storyboard", avatar_id="bob", output="three",
                      by="rita") == (True, "")
        report = home.process()
        [run] = runs_of(report, "approval_sensor")
        assert report.ok and selection(instance, run.run_id) == ["speech", "backgrounds"]

        rejected_bg = home.record("backgrounds", key)
        assert rejected_bg.seeds == [0]
        assert decide(home, job_type="background_approval", asset="backgrounds", avatar_id="bob", output="three",
                      decision="reject", by="rita", note="too plain, try another") == (True, "")
        [rejection] = [d for d in gates.decisions(store, "bob", "three", "backgrounds") if d.decision == "reject"]
        report = home.process()
        [run] = runs_of(report, "approval_sensor")
        assert report.ok and selection(instance, run.run_id) == ["backgrounds"]
        seed = approvals.reseed(rejection)
        assert instance.get_run_by_id(run.run_id).tags["avatar/seed"] == str(seed)
        regenerated = home.record("backgrounds", key)
        assert regenerated.seeds == [seed] and regenerated.images[0].sha256 != rejected_bg.images[0].sha256
        assert home.record("scene_assets", key) is None  # nothing past the gate ran

        stale = decide(home, job_type="background_approval", asset="backgrounds", avatar_id="bob", output="three",
                       by="rita", content_hash=rejected_bg.content_hash())
        assert not stale[0] and "changed since it was reviewed" in stale[1]
        assert decide(home, job_type="background_approval", asset="backgrounds", avatar_id="bob", output="three",
                      by="rita", content_hash=regenerated.content_hash()) == (True, "")
        report = home.process()
        [run] = runs_of(report, "approval_sensor")
        assert report.ok and selection(instance, run.run_id) == NEUTRAL_CELL_DOWNSTREAM
        package = home.record("output_package", key)
        from avatar_assets.contracts import RightsManifest

        manifest = RightsManifest.model_validate_json(store.read(package.rights_manifest))
        [bg_stage] = [s for s in manifest.stages if s.asset == "backgrounds"]
        assert bg_stage.record_sha256 == regenerated.content_hash()
        assert [d.decision for d in gates.decisions(store, "bob", "three", "backgrounds")] == ["reject", "approve"]


def test_full_output_generation_holds_the_request_until_approved(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, held = home.instance, layout.held_request_key("cal", "whole")
        submit(home, "cal", "whole", approvals_required=["full_output_generation", "script_approval"])
        report = home.process()
        assert report.runs == [] and "waiting for approval: full_output_generation" in home.store.read_text(held)

        reject_bare = avatarops(home, "reject", "script", "--avatar", "cal", "--output", "whole",
                                "--job-type", "full_output_generation", "--note", " ")
        assert reject_bare.returncode == 2 and "needs a note" in reject_bare.stderr
        assert decide(home, job_type="full_output_generation", asset="script", avatar_id="cal", output="whole",
                      by="producer") == (True, "")
        report = home.process()
        assert report.ok, report.as_dict()
        [run] = runs_of(report, "output_request_sensor")
        assert selection(instance, run.run_id) == ["script"]  # then the script gate stops it
        assert home.store.read_text(held) is None
        assert runs_of(report, "approval_sensor") == []


def test_background_regeneration_refreshes_only_that_cell(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, key = home.instance, cell("cal", "s2")
        old = home.record("backgrounds", key)
        start = last_storage_id(instance)
        done = avatarops(home, "approve", "backgrounds", "--avatar", "cal", "--output", "s2",
                         "--job-type", "background_regeneration", "--by", "art-director")
        assert done.returncode == 0, done.stdout + done.stderr
        report = home.process()
        assert report.ok, report.as_dict()
        [regen] = runs_of(report, "approval_sensor")
        assert selection(instance, regen.run_id) == ["backgrounds"]
        assert {r.partition for r in runs_of(report, "automation")} == {key}
        assert materializations_after(instance, start) == {(a, key): 1 for a in ["backgrounds", *NEUTRAL_CELL_DOWNSTREAM]}
        new = home.record("backgrounds", key)
        assert new.seeds != old.seeds and new.images[0].sha256 != old.images[0].sha256
        assert instance.get_run_by_id(regen.run_id).tags["avatar/seed"] == str(new.seeds[0])


def test_retry_from_stage_approval_resumes_a_failed_render(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, key = home.instance, cell("ava", "retry")
        submit_accepted(home, "ava", "retry")
        instance.add_dynamic_partitions("outputs", ["retry"])
        failed = definitions_with(home, enhancer=enhancer_down()).resolve_job_def("render_video").execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False
        )
        assert not failed.success
        assert home.record("enhanced_video", key) is None

        assert decide(home, job_type="retry_from_stage", asset="enhanced_video", avatar_id="ava", output="retry",
                      by="ops", run_id=failed.run_id) == (True, "")
        again = decide(home, job_type="retry_from_stage", asset="enhanced_video", avatar_id="ava", output="retry",
                       by="ops", run_id=failed.run_id)
        assert not again[0] and "already approved" in again[1]
        report = home.process()
        assert report.ok, report.as_dict()
        [run] = runs_of(report, "approval_sensor")
        assert selection(instance, run.run_id) == ["enhanced_video", "output_package"]
        started = step_events(instance, run.run_id, "STEP_START")
        assert not {"script", "storyboard", "speech", "backgrounds", "scene_assets", "lip_sync", "stitched_video"} & set(started)
        assert home.record("output_package", key) is not None
        done = decide(home, job_type="retry_from_stage", asset="enhanced_video", avatar_id="ava", output="retry",
                      by="ops", run_id=run.run_id)
        assert done == (False, f"run {run.run_id} is success; only a failed run is retried")
        other = decide(home, job_type="retry_from_stage", asset="enhanced_video", avatar_id="bob", output="retry",
                       by="ops", run_id=failed.run_id)
        assert other == (False, f"run {failed.run_id} is not a run of bob")


def test_approve_after_revoke_is_refused(tmp_path_factory, sample_bundle):
    """Revoked from the UI's launchpad (`revoke_avatar` job), then every decision on it is refused."""

    with restored_world(tmp_path_factory, sample_bundle) as home:
        job = home.defs.resolve_job_def("revoke_avatar")
        result = job.execute_in_process(
            instance=home.instance,
            run_config={"ops": {"revoke_avatar_op": {"config": {"avatar_id": "cal", "by": "legal",
                                                                "reason": "consent withdrawn"}}}},
        )
        assert result.success
        stone = tombstones.tombstone(home.store, "cal")
        assert (stone.status, stone.by, stone.reason) == ("revoked", "legal", "consent withdrawn")
        assert "cal" not in home.instance.get_dynamic_partitions("avatars")
        assert home.instance.get_run_by_id(result.run_id) is not None  # the revocation's own run is kept
        refused = decide(home, job_type="video_asset_approval", asset="lip_sync", avatar_id="cal", output="s1", by="rita")
        assert refused == (False, "avatar cal was revoked; nothing of it can be approved")
        cli = avatarops(home, "approve", "lip_sync", "--avatar", "cal", "--output", "s1")
        assert cli.returncode == 2 and "was revoked" in cli.stderr
        assert approvals.queued(home.store) == []
