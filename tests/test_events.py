"""Lifecycle events: every stage writes accepted / started / progress / completed (failed: see test_retry)
into an outbox before anything is delivered; the webhook deliverer posts them in order, backs off while
the endpoint is down, survives being killed (at least once, order kept) and can replay.

The endpoint is a real HTTP server on 127.0.0.1 (http.server in a thread). "Down" is a stopped server
(connection refused) or one answering 500; "an hour" is simulated with `events.deliver(now=...)`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from avatar_assets import events
from tests.regen_helpers import (
    VIDEO_STAGES,
    Webhook,
    avatarops,
    cell,
    outbox_ids,
    restored_world,
    webhook,
    world_env,
)
from tests.servers import REPO_ROOT, VENV_BIN, wait_until


def emit_many(store, count: int, avatar_id: str = "ava") -> list[str]:
    ids = []
    for index in range(count):
        event = events.emit(store, "progress", avatar_id=avatar_id, output="s1", asset="stitched_video",
                            done=index, total=count)
        ids.append(event.event_id)
    return ids


def assert_in_order_none_missing(received: list[str], outbox: list[str]) -> None:
    assert received == outbox, (len(received), len(outbox))
    assert received == sorted(received) and len(set(received)) == len(received)


@pytest.mark.slow  # restores (or first builds) the rendered world
def test_every_stage_reports_its_lifecycle_and_all_of_it_is_delivered_in_order(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        store = home.store
        outbox = outbox_ids(store)
        documents = [events.LifecycleEvent.model_validate_json(store.read_text(f"{events.OUTBOX}{i}.json"))
                     for i in outbox]
        mine = [e for e in documents if (e.avatar_id, e.output) == ("ava", "s1")]
        assert [(e.type, e.asset) for e in mine if e.type == "accepted"] == [("accepted", "script")]
        for stage in VIDEO_STAGES:
            kinds = [e.type for e in mine if e.asset == stage and e.type in ("started", "completed", "failed")]
            assert kinds == ["started", "completed"], (stage, kinds)
        assert {e.asset for e in mine if e.type == "progress"} >= {"stitched_video", "enhanced_video"}
        completed = {e.asset: e for e in mine if e.type == "completed"}
        assert completed["lip_sync"].detail["data_version"] == home.record("lip_sync", cell("ava", "s1")).content_hash()
        identity = [(e.type, e.asset) for e in documents if e.avatar_id == "bob" and e.output is None]
        assert identity[0] == ("accepted", "source_upload") and ("completed", "identity_bundle") in identity

        with webhook() as hook:
            report = events.deliver(store, hook.url, settle_s=0)
            assert (report.delivered, report.pending, report.error) == (len(outbox), 0, None)
            assert_in_order_none_missing(hook.ids, outbox)
            assert [body["event_id"] for _, body in hook.received] == outbox


def test_endpoint_down_for_an_hour_loses_nothing_and_delivers_in_order_after(home):
    store = home.store
    first = emit_many(store, 5)
    hook = Webhook().start()
    try:
        hook.mode = "error"  # up, but answering 500
        t0 = 1_000_000.0
        report = events.deliver(store, hook.url, settle_s=0, now=lambda: t0)
        assert (report.delivered, report.pending) == (0, 5) and "500" in report.error
        state = events.DeliveryState.load(store)
        assert (state.last_delivered, state.failures, state.next_attempt_at) == (None, 1, t0 + 2.0)
        assert state.last_error.startswith(first[0])
        assert hook.attempts == 1 and hook.received == []

        # Backing off: no request before next_attempt_at.
        report = events.deliver(store, hook.url, settle_s=0, now=lambda: t0 + 1.5)
        assert (report.delivered, report.waiting_until) == (0, t0 + 2.0) and hook.attempts == 1

        hook.stop()  # now down: connection refused
        later = emit_many(store, 3)  # work goes on while the endpoint is down
        attempts, backoffs, t = 1, [], t0
        while t < t0 + 3600:
            t += 5
            before = events.DeliveryState.load(store)
            report = events.deliver(store, hook.url, settle_s=0, now=lambda t=t: t)
            after = events.DeliveryState.load(store)
            if after.failures != before.failures:
                attempts += 1
                backoffs.append(after.next_attempt_at - t)
                assert "Connection refused" in after.last_error or "refused" in after.last_error.lower()
            assert report.delivered == 0 and after.last_delivered is None
        # 2, 4, 8 ... 256 s, then capped at 300 s: every attempt is recorded, none delivered, nothing lost.
        assert backoffs[:8] == [4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0]
        assert set(backoffs[8:]) == {300.0}
        assert 15 <= attempts <= 20, attempts
        assert outbox_ids(store) == first + later

        hook.mode = "ok"
        hook.start()  # the same port, back up
        state = events.DeliveryState.load(store)
        report = events.deliver(store, hook.url, settle_s=0, now=lambda: state.next_attempt_at)
        assert (report.delivered, report.pending, report.error) == (8, 0, None)
        assert_in_order_none_missing(hook.ids, first + later)
        assert events.DeliveryState.load(store).failures == 0
    finally:
        hook.stop()


def test_an_event_written_late_with_an_earlier_id_is_not_skipped(home):
    """Another process took its id first but its write lands after a later event: nothing is lost."""
    store = home.store
    early = events.new_event_id()  # a writer in another process has its id; its file is not written yet
    later = events.emit(store, "started", avatar_id="ava", asset="script")
    with webhook() as hook:
        assert events.deliver(store, hook.url).delivered == 0  # `later` is too new to be settled
        document = events.LifecycleEvent(event_id=early, type="started", at=later.at, avatar_id="bob")
        store.write_text(f"{events.OUTBOX}{early}.json", document.model_dump_json())
        time.sleep(0.6)
        report = events.deliver(store, hook.url, settle_s=0.5)
        assert report.delivered == 2
        assert hook.ids == [early, later.event_id]


def test_a_deliverer_killed_mid_way_resumes_in_order_at_least_once_and_replays(home, tmp_path):
    store = home.store
    outbox = emit_many(store, 40)
    with webhook() as hook:
        hook.delay_s = 0.05
        env = world_env(home, AVATAR_WEBHOOK_URL=hook.url)
        with open(tmp_path / "deliverer.log", "wb") as log:
            deliverer = subprocess.Popen([str(VENV_BIN / "avatarops"), "events", "deliver", "--follow"],
                                         cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: len(hook.ids) >= 10, timeout=120, interval=0.05, what="ten deliveries")
                os.kill(deliverer.pid, signal.SIGKILL)  # a crash: no cleanup, no state saved past this point
                deliverer.wait(timeout=30)
            finally:
                if deliverer.poll() is None:
                    deliverer.kill()
                    deliverer.wait(timeout=30)
        time.sleep(0.2)  # a request in flight at the kill may still be answered and recorded
        crashed_at = len(hook.ids)
        assert 10 <= crashed_at < len(outbox)
        state = events.DeliveryState.load(store)
        assert state.last_delivered in outbox[:crashed_at]

        hook.delay_s = 0.0
        resumed = avatarops(home, "events", "deliver", AVATAR_WEBHOOK_URL=hook.url)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        received = hook.ids
        # At least once: every event arrived; a duplicate can only be the one that was in flight.
        assert set(received) == set(outbox)
        assert len(received) - len(outbox) <= 1
        first_seen = list(dict.fromkeys(received))
        assert first_seen == outbox  # order preserved
        before, after = received[:crashed_at], received[crashed_at:]
        assert before == sorted(before) and after == sorted(after)
        assert after[0] == outbox[outbox.index(state.last_delivered) + 1]

        listing = avatarops(home, "events", "list", "--limit", "3")
        assert listing.returncode == 0 and listing.stdout.count("delivered") == 3

        replay = avatarops(home, "events", "replay", "--since", outbox[30])
        assert replay.returncode == 0 and "10 event(s) will be delivered again" in replay.stdout
        count = len(hook.ids)
        report = events.deliver(store, hook.url, settle_s=0)
        assert report.delivered == 10 and hook.ids[count:] == outbox[30:]
