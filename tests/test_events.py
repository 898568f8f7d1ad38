"""Lifecycle events: every stage writes accepted / started / progress / completed (failed: see test_retry)
into an outbox before anything is delivered; the webhook deliverer posts them signed (Standard Webhooks,
verified here with the `standardwebhooks` package), never lets a failing event block later ones, retries
each failing event on its own backoff, dead-letters it after N attempts (410 Gone at once), survives being
killed (at least once) and can replay, dead letters included.

The endpoint is a real HTTP server on 127.0.0.1 (http.server in a thread). "Down" is a stopped server
(connection refused) or one answering 500; it can also answer 301 or 410, hang past the client's timeout
or reset the connection. Backoff time is simulated with `events.deliver(now=...)`, never slept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import standardwebhooks

from avatar_assets.pipeline import events
from avatar_assets.video.assets import VIDEO_STAGES
from resources import layout
from tests.regen_helpers import (
    WEBHOOK_SECRET,
    Webhook,
    avatarops,
    cell,
    outbox_ids,
    restored_world,
    signer,
    webhook,
    world_env,
)
from tests.servers import REPO_ROOT, VENV_BIN, wait_until

RETRIES = [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0]  # the default schedule between 8 attempts


def emit_many(store, count: int, avatar_id: str = "ava") -> list[str]:
    ids = []
    for index in range(count):
        event = events.emit(store, "progress", avatar_id=avatar_id, output="s1", asset="stitched_video",
                            done=index, total=count)
        ids.append(event.event_id)
    return ids


def deliver(store, hook: Webhook, at: float | None = None, **options) -> events.DeliveryReport:
    """One delivery pass to `hook`, signed with the tests' secret, at a simulated time when given."""
    clock = (lambda: at) if at is not None else time.time
    return events.deliver(store, hook.url, signer(), settle_s=options.pop("settle_s", 0), now=clock, **options)


def assert_in_order_none_missing(received: list[str], outbox: list[str]) -> None:
    assert received == outbox, (len(received), len(outbox))
    assert received == sorted(received) and len(set(received)) == len(received)


def verified(post) -> dict:
    """The body of one POST after the standard's own verifier accepted its signature."""
    return standardwebhooks.Webhook(WEBHOOK_SECRET).verify(post.body, post.headers)


@pytest.mark.slow  # restores (or first builds) the rendered world
def test_every_stage_reports_its_lifecycle_and_all_of_it_is_delivered_in_order(tmp_path_factory, sample_bundle):
    with restored_world(tmp_path_factory, sample_bundle) as home:
        store = home.store
        outbox = outbox_ids(store)
        documents = [events.LifecycleEvent.model_validate_json(store.read_text(layout.outbox_key(i)))
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
        sequences = [e.sequence for e in documents]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)

        with webhook() as hook:
            report = deliver(store, hook)
            assert (report.delivered, report.pending, report.error) == (len(outbox), 0, None)
            assert_in_order_none_missing(hook.ids, outbox)
            assert [verified(post)["event_id"] for post in hook.posts] == outbox


def test_deliveries_are_signed_per_standard_webhooks_and_carry_a_sequence(home):
    """The standard's verifier accepts every delivery; the signed bytes are the bytes sent; an event written
    before `sequence` existed is delivered with it."""
    store = home.store
    legacy_id = events.new_event_id()
    legacy = {"event_id": legacy_id, "type": "accepted", "at": "2026-01-01T00:00:00Z", "avatar_id": "ava",
              "output": None, "asset": "source_upload", "run_id": None, "detail": {}}
    store.write_text(layout.outbox_key(legacy_id), json.dumps(legacy))  # the outbox as it was
    ids = [legacy_id, *emit_many(store, 3)]
    with webhook() as hook:
        assert deliver(store, hook).delivered == 4
    bodies = [verified(post) for post in hook.posts]
    assert [body["event_id"] for body in bodies] == ids
    for post, body in zip(hook.posts, bodies, strict=True):
        assert post.headers["webhook-id"] == post.headers["x-avatar-event-id"] == body["event_id"]
        assert abs(int(post.headers["webhook-timestamp"]) - time.time()) < 60
        assert post.headers["webhook-signature"].startswith("v1,")
    sequences = [body["sequence"] for body in bodies]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4
    assert bodies[0]["sequence"] == int(legacy_id.split("-")[0])
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(hook.posts[0].body, hook.posts[0].headers)
    tampered = hook.posts[1].body.replace(b'"progress"', b'"completed"')
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(WEBHOOK_SECRET).verify(tampered, hook.posts[1].headers)


def test_an_outbox_and_delivery_state_written_before_per_event_retries_still_load(home):
    """The single cursor of the old deliverer becomes the new cursor; old events gain their sequence."""
    store = home.store
    done, waiting = emit_many(store, 2)
    old_state = {"last_delivered": done, "failures": 3, "next_attempt_at": 0.0, "last_error": f"{waiting}: 500"}
    store.write_text(layout.DELIVERY_STATE, json.dumps(old_state))
    state = events.DeliveryState.load(store)
    assert (state.cursor, state.retrying) == (done, {})
    with webhook() as hook:
        assert deliver(store, hook).delivered == 1 and hook.ids == [waiting]


def test_a_500_never_blocks_later_events_retries_on_its_own_backoff_then_dead_letters(home):
    """The failing event keeps its webhook-id on every attempt and in the replay; each attempt has its own
    timestamp and signature; later events are delivered meanwhile; after 8 attempts it is a dead letter,
    listed and replayed through the CLI."""
    store = home.store
    first = emit_many(store, 4)
    failing = first[1]
    with webhook() as hook:
        hook.modes[failing] = "error"
        t0 = time.time()
        report = deliver(store, hook, at=t0)
        assert (report.delivered, report.failed, report.pending, report.dead) == (3, 1, 1, 0)
        assert hook.ids == [first[0], *first[2:]] and "500" in report.error
        assert report.waiting_until == t0 + 30

        later = emit_many(store, 2)  # delivered while `failing` waits for its retry
        assert deliver(store, hook, at=t0 + 10).delivered == 2
        assert hook.ids[-2:] == later and len(hook.posts_of(failing)) == 1

        assert deliver(store, hook, at=t0 + 30).failed == 1  # its own schedule, nothing else to do
        one, two = hook.posts_of(failing)
        assert verified(one)["event_id"] == verified(two)["event_id"] == failing  # both within 5 minutes
        assert one.headers["webhook-id"] == two.headers["webhook-id"] == failing
        assert int(two.headers["webhook-timestamp"]) - int(one.headers["webhook-timestamp"]) == 30
        assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
        assert one.body == two.body

        t, gaps = t0 + 30, []
        for _ in range(6):
            state = events.DeliveryState.load(store)
            retry = state.retrying[failing]
            gaps.append(retry.next_attempt_at - t)
            assert deliver(store, hook, at=retry.next_attempt_at - 1).failed == 0  # not yet due
            t = retry.next_attempt_at
            deliver(store, hook, at=t)
        assert [30.0, *gaps] == RETRIES[:7]
        assert len(hook.posts_of(failing)) == 8
        state = events.DeliveryState.load(store)
        assert state.retrying == {} and state.status_of(failing, events.dead_letter_ids(store)) == "dead"
        [letter] = events.dead_letters(store)
        assert (letter.event_id, letter.attempts, letter.last_status, letter.type) == (failing, 8, 500, "progress")
        assert deliver(store, hook, at=t + 10_000).failed == 0  # a dead letter is not attempted again
        assert set(outbox_ids(store)) == set(first + later)  # nothing lost: the event is still in the outbox

        listed = avatarops(home, "events", "dead-letters")
        assert listed.returncode == 0, listed.stderr
        assert failing in listed.stdout and "attempts=8" in listed.stdout and "HTTP 500" in listed.stdout
        listing = avatarops(home, "events", "list")
        assert f"{failing} dead" in listing.stdout and listing.stdout.count("delivered") == 5

        hook.modes.clear()
        replay = avatarops(home, "events", "replay", "--dead-letters")
        assert replay.returncode == 0 and "1 dead letter(s) queued again" in replay.stdout, replay.stderr
        assert events.dead_letters(store) == []
        resumed = avatarops(home, "events", "deliver", AVATAR_WEBHOOK_URL=hook.url,
                            AVATAR_WEBHOOK_SECRET=WEBHOOK_SECRET)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert hook.ids[-1] == failing
        replayed = hook.posts_of(failing)[-1]
        assert replayed.headers["webhook-id"] == failing and verified(replayed)["event_id"] == failing
        assert "dead" not in avatarops(home, "events", "list").stdout


def test_a_redirect_is_not_followed_counts_as_a_failure_and_the_event_is_not_lost(home):
    store = home.store
    moved, after = emit_many(store, 2)
    with webhook() as hook:
        hook.modes[moved] = "redirect"
        t0 = time.time()
        report = deliver(store, hook, at=t0)
        assert (report.delivered, report.failed) == (1, 1) and hook.ids == [after]
        assert "301" in report.error and "not followed" in report.error
        assert hook.requests == [("POST", "/hook"), ("POST", "/hook")]  # no GET to /moved
        retry = events.DeliveryState.load(store).retrying[moved]
        assert (retry.attempts, retry.last_status) == (1, 301)

        hook.modes.clear()
        assert deliver(store, hook, at=retry.next_attempt_at).delivered == 1
        assert hook.ids == [after, moved] and events.dead_letters(store) == []


def test_410_gone_dead_letters_at_once(home):
    store = home.store
    gone, after = emit_many(store, 2)
    with webhook() as hook:
        hook.modes[gone] = "gone"
        report = deliver(store, hook, at=time.time())
        assert (report.delivered, report.failed, report.dead, report.pending) == (1, 1, 1, 0)
        [letter] = events.dead_letters(store)
        assert (letter.event_id, letter.attempts, letter.last_status) == (gone, 1, 410)
        assert deliver(store, hook, at=time.time() + 86_400).failed == 0 and len(hook.posts_of(gone)) == 1


def test_a_receiver_that_times_out_or_resets_the_connection_blocks_nothing(home):
    store = home.store
    hangs, resets, fine = emit_many(store, 3)
    with webhook() as hook:
        hook.modes.update({hangs: "hang", resets: "reset"})
        t0 = time.time()
        started = time.monotonic()
        report = deliver(store, hook, at=t0, timeout_s=0.5)
        assert time.monotonic() - started < hook.hang_s
        assert (report.delivered, report.failed, report.pending) == (1, 2, 2) and hook.ids == [fine]
        state = events.DeliveryState.load(store)
        assert "timed out" in state.retrying[hangs].last_error
        assert "reset" in state.retrying[resets].last_error.lower()  # RST: ConnectionResetError or RemoteDisconnected
        assert state.retrying[hangs].last_status is None and state.retrying[resets].last_status is None

        hook.modes.clear()
        assert deliver(store, hook, at=t0 + 30).delivered == 2
        assert hook.ids == [fine, hangs, resets]


def test_a_pass_stops_starting_attempts_when_its_budget_is_spent(home):
    """The sensor's pass must end within a tick: after the budget, the rest waits for the next pass."""
    store = home.store
    slow, *rest = emit_many(store, 3)
    with webhook() as hook:
        hook.modes[slow] = "hang"
        report = deliver(store, hook, at=time.time(), timeout_s=0.3, budget_s=0.1)
        assert (report.delivered, report.failed, report.pending) == (0, 1, 3) and hook.attempts == 1
        assert deliver(store, hook).delivered == 2 and hook.ids == rest


def test_an_unreadable_outbox_document_is_dead_lettered_and_blocks_nothing(home):
    store = home.store
    broken = events.new_event_id()
    store.write_text(layout.outbox_key(broken), "{not json")
    after = emit_many(store, 1)
    with webhook() as hook:
        report = deliver(store, hook)
        assert (report.delivered, report.dead) == (1, 1) and hook.ids == after
    [letter] = events.dead_letters(store)
    assert (letter.event_id, letter.type, letter.attempts) == (broken, None, 1)
    assert "unreadable" in letter.last_error


def test_endpoint_down_for_an_hour_loses_nothing_and_delivers_in_order_after(home):
    """Down (500, then connection refused) for an hour: every event retries on its own schedule, none is
    delivered, none is lost or dead yet (8 attempts span about an hour), and all arrive in order after."""
    store = home.store
    first = emit_many(store, 5)
    hook = Webhook().start()
    try:
        hook.mode = "error"  # up, but answering 500
        t0 = 1_000_000.0
        report = deliver(store, hook, at=t0)
        assert (report.delivered, report.failed, report.pending) == (0, 5, 5) and "500" in report.error
        state = events.DeliveryState.load(store)
        assert state.cursor == first[-1] and sorted(state.retrying) == first
        assert {(r.attempts, r.next_attempt_at, r.last_status) for r in state.retrying.values()} == {(1, t0 + 30, 500)}
        assert hook.attempts == 5 and hook.received == []

        # Backing off: no request before next_attempt_at.
        report = deliver(store, hook, at=t0 + 15)
        assert (report.failed, report.waiting_until) == (0, t0 + 30) and hook.attempts == 5

        hook.stop()  # now down: connection refused
        later = emit_many(store, 3)  # work goes on while the endpoint is down
        gaps: dict[str, list[float]] = {}
        t = t0
        while t < t0 + 3600:
            t += 5
            before = events.DeliveryState.load(store)
            report = deliver(store, hook, at=t)
            after = events.DeliveryState.load(store)
            for event_id, retry in after.retrying.items():
                if event_id not in before.retrying or retry.attempts != before.retrying[event_id].attempts:
                    gaps.setdefault(event_id, []).append(retry.next_attempt_at - t)
                    assert "refused" in retry.last_error.lower()
            assert report.delivered == 0 and report.dead == 0
        for event_id in first:
            assert gaps[event_id] == RETRIES[1:]  # attempts 2..7 in the hour; the 8th would be at 63.5 min
        for event_id in later:
            assert gaps[event_id] == RETRIES  # attempts 1..7
        state = events.DeliveryState.load(store)
        assert {retry.attempts for retry in state.retrying.values()} == {7} and len(state.retrying) == 8
        assert events.dead_letters(store) == [] and outbox_ids(store) == first + later

        hook.mode = "ok"
        hook.start()  # the same port, back up
        last_due = max(retry.next_attempt_at for retry in state.retrying.values())
        report = deliver(store, hook, at=last_due)
        assert (report.delivered, report.pending, report.error) == (8, 0, None)
        assert_in_order_none_missing(hook.ids, first + later)
        assert events.DeliveryState.load(store).retrying == {}
    finally:
        hook.stop()


def test_an_event_written_late_with_an_earlier_id_is_not_skipped(home):
    """Another process took its id first but its write lands after a later event: nothing is lost."""
    store = home.store
    early = events.new_event_id()  # a writer in another process has its id; its file is not written yet
    later = events.emit(store, "started", avatar_id="ava", asset="script")
    with webhook() as hook:
        assert events.deliver(store, hook.url, signer()).delivered == 0  # `later` is too new to be settled
        document = events.LifecycleEvent(event_id=early, type="started", at=later.at, avatar_id="bob")
        store.write_text(layout.outbox_key(early), document.model_dump_json())
        time.sleep(0.6)
        report = events.deliver(store, hook.url, signer(), settle_s=0.5)
        assert report.delivered == 2
        assert hook.ids == [early, later.event_id]


def test_deliver_refuses_to_send_unsigned_and_names_the_variable(home):
    store = home.store
    emit_many(store, 1)
    with webhook() as hook:
        unset = avatarops(home, "events", "deliver", "--url", hook.url)
        assert unset.returncode == 2 and "AVATAR_WEBHOOK_SECRET" in unset.stderr, unset.stderr
        for bad in ("not-a-secret", "whsec_***not base64***", "whsec_" + "QUJD"):  # no prefix, not base64, 3 bytes
            malformed = avatarops(home, "events", "deliver", "--url", hook.url, AVATAR_WEBHOOK_SECRET=bad)
            assert malformed.returncode == 2 and "AVATAR_WEBHOOK_SECRET" in malformed.stderr, malformed.stderr
            assert bad not in malformed.stderr  # a secret is never echoed
            assert "Traceback" not in malformed.stderr
        attempts = avatarops(home, "events", "deliver", "--url", hook.url, AVATAR_WEBHOOK_SECRET=WEBHOOK_SECRET,
                             AVATAR_WEBHOOK_MAX_ATTEMPTS="zero")
        assert attempts.returncode == 2 and "AVATAR_WEBHOOK_MAX_ATTEMPTS" in attempts.stderr
        assert hook.attempts == 0  # nothing went out unsigned
        replay = avatarops(home, "events", "replay", "--dead-letters", "--since", "x")
        assert replay.returncode == 2


def test_the_delivery_sensor_says_why_it_sends_nothing_without_a_secret(home, monkeypatch):
    import dagster as dg

    from sensors.events import build_delivery_sensor

    settled_id = f"{time.time_ns() - 10**10:020d}-settled"  # 10 s old: past the sensor's settle time
    event = events.LifecycleEvent(event_id=settled_id, type="started", at=time.time(), avatar_id="ava")
    home.store.write_text(layout.outbox_key(settled_id), event.model_dump_json())
    with webhook() as hook:
        monkeypatch.setenv("AVATAR_WEBHOOK_URL", hook.url)
        monkeypatch.delenv("AVATAR_WEBHOOK_SECRET", raising=False)
        sensor = build_delivery_sensor()
        result = sensor(dg.build_sensor_context(resources={"store": home.store}))
        assert isinstance(result, dg.SkipReason) and "AVATAR_WEBHOOK_SECRET" in result.skip_message
        assert hook.attempts == 0

        monkeypatch.setenv("AVATAR_WEBHOOK_SECRET", WEBHOOK_SECRET)
        monkeypatch.setenv("AVATAR_WEBHOOK_MAX_ATTEMPTS", "1")
        hook.mode = "error"
        result = sensor(dg.build_sensor_context(resources={"store": home.store}))
        assert "dead-lettered 1" in result.skip_message  # one attempt allowed: dead at the first 500
        assert verified(hook.posts[0])


def test_forget_avatar_deletes_its_events_retry_state_and_dead_letters(home):
    """The platform's receiver and a tenant endpoint's (its own state and dead letters) both forget the avatar."""
    store = home.store
    ava = [events.emit(store, "accepted", avatar_id="ava", asset="source_upload", dedupe_key="ava:1").event_id,
           *emit_many(store, 2, "ava")]
    bob = emit_many(store, 2, "bob")
    endpoint_state, endpoint_dead = layout.endpoint_delivery("ep1")
    with webhook() as hook:
        hook.modes.update({ava[1]: "gone", ava[2]: "error", bob[0]: "error"})
        deliver(store, hook, at=time.time())
        deliver(store, hook, at=time.time(), state_key=endpoint_state, dead_letters=endpoint_dead)
    for folder in (layout.DEAD_LETTERS, endpoint_dead):
        assert [letter.event_id for letter in events.dead_letters(store, folder)] == [ava[1]]

    assert events.forget_avatar(store, "ava") == 3
    assert outbox_ids(store) == bob
    for state_key, folder in ((layout.DELIVERY_STATE, layout.DEAD_LETTERS), (endpoint_state, endpoint_dead)):
        assert events.dead_letters(store, folder) == []
        assert list(events.DeliveryState.load(store, state_key).retrying) == [bob[0]]
    assert list(store.list_keys(layout.DEDUPE_MARKERS)) == []
    assert events.forget_avatar(store, "ava") == 0


def test_a_deliverer_killed_mid_way_resumes_in_order_at_least_once_and_replays(home, tmp_path):
    store = home.store
    outbox = emit_many(store, 40)
    with webhook() as hook:
        hook.delay_s = 0.05
        env = world_env(home, AVATAR_WEBHOOK_URL=hook.url, AVATAR_WEBHOOK_SECRET=WEBHOOK_SECRET)
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
        assert state.cursor in outbox[:crashed_at] and state.retrying == {}

        hook.delay_s = 0.0
        resumed = avatarops(home, "events", "deliver", AVATAR_WEBHOOK_URL=hook.url,
                            AVATAR_WEBHOOK_SECRET=WEBHOOK_SECRET)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        received = hook.ids
        # At least once: every event arrived; a duplicate can only be the one that was in flight.
        assert set(received) == set(outbox)
        assert len(received) - len(outbox) <= 1
        first_seen = list(dict.fromkeys(received))
        assert first_seen == outbox  # order preserved
        before, after = received[:crashed_at], received[crashed_at:]
        assert before == sorted(before) and after == sorted(after)
        assert after[0] == outbox[outbox.index(state.cursor) + 1]

        listing = avatarops(home, "events", "list", "--limit", "3")
        assert listing.returncode == 0 and listing.stdout.count("delivered") == 3

        replay = avatarops(home, "events", "replay", "--since", outbox[30])
        assert replay.returncode == 0 and "10 event(s) will be delivered again" in replay.stdout
        count = len(hook.ids)
        report = deliver(store, hook)
        assert report.delivered == 10 and hook.ids[count:] == outbox[30:]
        assert {post.headers["webhook-id"] for post in hook.posts[-10:]} == set(outbox[30:])
