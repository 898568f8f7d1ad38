"""Retry: a provider that fails transiently is retried by the assets' RetryPolicy with exponential backoff
(the run succeeds, no finished step runs again), and a failed run is resumed from its failed stage with
`avatarops retry RUN_ID` (Dagster re-execution from failure), reusing every finished stage.

Providers are real resources subclassed to fail; the definitions are a copy of the code location's with
that one resource replaced, executed on the real instance.
"""

from __future__ import annotations

import dagster as dg
import pytest

from resources.layout import outbox_key
from tests.regen_helpers import avatarops, cell, definitions_with, enhancer_down, restored_world, step_events, submit_accepted

pytestmark = pytest.mark.slow  # renders a cell

CALLS = {"synthesize": 0}


def event_times(instance, run_id: str, kind: str, step: str) -> list[float]:
    return [
        entry.timestamp for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None and entry.dagster_event.event_type_value == kind and entry.step_key == step
    ]


def test_transient_tts_failure_is_retried_with_exponential_backoff(tmp_path_factory, sample_bundle):
    from avatar_assets.pipeline import events
    from resources.providers import SpeechSynthesizer

    class FlakySpeech(SpeechSynthesizer):
        """The speech service answers its third call; the first two fail like a dropped connection."""

        def synthesize(self, ssml, **kwargs):
            CALLS["synthesize"] += 1
            if CALLS["synthesize"] <= 2:
                raise ConnectionError(f"speech service unavailable (call {CALLS['synthesize']})")
            return super().synthesize(ssml, **kwargs)

    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, key = home.instance, cell("ava", "flaky")
        submit_accepted(home, "ava", "flaky", script="A sentence nobody has synthesised yet.")  # no content-cache hit for speech
        instance.add_dynamic_partitions("outputs", ["flaky"])
        CALLS["synthesize"] = 0
        result = definitions_with(home, tts=FlakySpeech()).resolve_job_def("render_video").execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False
        )
        assert result.success
        assert CALLS["synthesize"] == 3
        assert step_events(instance, result.run_id, "STEP_UP_FOR_RETRY") == ["speech", "speech"]
        assert step_events(instance, result.run_id, "STEP_RESTARTED") == ["speech", "speech"]
        started = step_events(instance, result.run_id, "STEP_START")
        assert len(started) == len(set(started)), started  # no other step ran twice
        # The stages' RetryPolicy backs off exponentially: (2**n - 1) x delay, i.e. 1 s then 3 s at delay=1.
        from avatar_assets.pipeline.lifecycle import PROVIDER_RETRIES

        assert PROVIDER_RETRIES.backoff == dg.Backoff.EXPONENTIAL and PROVIDER_RETRIES.max_retries >= 2
        expected = [PROVIDER_RETRIES.calculate_delay(attempt) for attempt in (1, 2)]
        failures = event_times(instance, result.run_id, "STEP_UP_FOR_RETRY", "speech")
        restarts = event_times(instance, result.run_id, "STEP_RESTARTED", "speech")
        waits = [restart - failure for failure, restart in zip(failures, restarts)]
        assert expected[1] > expected[0] > 0
        assert waits[0] >= expected[0] and waits[1] >= expected[1], (waits, expected)
        assert home.record("speech", key).provider.provider == "espeak-ng"
        assert home.record("output_package", key) is not None

        # Each attempt reported itself in the outbox: two failures with their retry number, then completed.
        store = home.store
        speech_events = [
            events.LifecycleEvent.model_validate_json(store.read_text(outbox_key(event_id)))
            for event_id in events.pending_ids(store, None)
        ]
        mine = [(e.type, e.detail.get("retry_number")) for e in speech_events
                if e.run_id == result.run_id and e.asset == "speech"]
        assert mine == [("started", 0), ("failed", 0), ("started", 1), ("failed", 1), ("started", 2), ("completed", None)]


def test_avatarops_retry_resumes_a_failed_run_from_its_failed_stage(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        instance, key = home.instance, cell("bob", "resume")
        submit_accepted(home, "bob", "resume")
        instance.add_dynamic_partitions("outputs", ["resume"])
        failed = definitions_with(home, enhancer=enhancer_down()).resolve_job_def("render_video").execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False
        )
        assert not failed.success
        finished = set(step_events(instance, failed.run_id, "STEP_SUCCESS"))
        assert {"script", "storyboard", "speech", "backgrounds", "scene_assets", "lip_sync", "stitched_video"} <= finished
        assert step_events(instance, failed.run_id, "STEP_FAILURE") == ["enhanced_video"]

        not_failed = avatarops(home, "retry", instance.get_runs(limit=50)[-1].run_id)
        assert not_failed.returncode == 2 and "only failed runs are retried" in not_failed.stderr, not_failed.stderr
        done = avatarops(home, "retry", failed.run_id)
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]

        [retry] = instance.get_runs(dg.RunsFilter(tags={"avatarops/retry_of": failed.run_id}))
        assert retry.status == dg.DagsterRunStatus.SUCCESS and retry.parent_run_id == failed.run_id
        started = step_events(instance, retry.run_id, "STEP_START")
        assert set(started) == {"enhanced_video", "enhanced_video_enhanced_video_plays", "output_package",
                                "output_package_package_complete"}, started
        materialized = {
            r.event_log_entry.dagster_event.asset_key.to_user_string()
            for r in instance.get_records_for_run(retry.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        }
        assert materialized == {"enhanced_video", "output_package"}
        assert home.record("output_package", key).slug == "resume"
