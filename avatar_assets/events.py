"""Lifecycle events through an outbox: written before delivery, delivered in order, replayable.

Every event is a JSON document under `events/outbox/<event_id>.json` in the media store (local or S3);
ids sort by time, so the outbox is the order. The deliverer POSTs each event to the webhook and moves
its cursor only after a 2xx answer, so a crash of the deliverer loses nothing (delivery is at least
once; receivers de-duplicate by `X-Avatar-Event-Id`). While the endpoint is down it backs off
exponentially up to `max_backoff_s` and resumes in order when it comes back.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from avatar_assets.contracts import EventType, LifecycleEvent
from resources.media_store import MediaStore

OUTBOX = "events/outbox/"
KEYS = "events/keys/"
STATE = "events/delivery.json"


def new_event_id(dedupe_key: str | None = None) -> str:
    suffix = hashlib.sha256((dedupe_key or f"{time.time_ns()}-{id(object())}").encode()).hexdigest()[:12]
    return f"{time.time_ns():020d}-{suffix}"


def emit(
    store: MediaStore,
    type: EventType,
    *,
    avatar_id: str,
    output: str | None = None,
    asset: str | None = None,
    run_id: str | None = None,
    dedupe_key: str | None = None,
    **detail: Any,
) -> LifecycleEvent | None:
    """Write one event to the outbox. With a dedupe key, the same key is written only once."""
    if dedupe_key is not None:
        marker = f"{KEYS}{hashlib.sha256(dedupe_key.encode()).hexdigest()}"
        if store.read_text(marker) is not None:
            return None
    event = LifecycleEvent(
        event_id=new_event_id(dedupe_key),
        type=type,
        at=datetime.now(UTC),
        avatar_id=avatar_id,
        output=output,
        asset=asset,
        run_id=run_id,
        detail=detail,
    )
    store.write_text(f"{OUTBOX}{event.event_id}.json", event.model_dump_json())
    if dedupe_key is not None:
        store.write_text(marker, event.event_id)
    return event


def pending_ids(store: MediaStore, after: str | None) -> list[str]:
    ids = sorted(key.removeprefix(OUTBOX).removesuffix(".json") for key in store.list_keys(OUTBOX))
    return [event_id for event_id in ids if after is None or event_id > after]


@dataclass
class DeliveryState:
    last_delivered: str | None = None
    failures: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None

    @classmethod
    def load(cls, store: MediaStore) -> DeliveryState:
        text = store.read_text(STATE)
        return cls(**json.loads(text)) if text else cls()

    def save(self, store: MediaStore) -> None:
        store.write_text(STATE, json.dumps(vars(self)))


def post(url: str, event_json: str, event_id: str, timeout: float = 10.0) -> None:
    request = urllib.request.Request(
        url,
        data=event_json.encode(),
        headers={"Content-Type": "application/json", "X-Avatar-Event-Id": event_id},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, "non-2xx answer", response.headers, None)


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int
    pending: int
    waiting_until: float | None
    error: str | None


def settled(event_ids: list[str], settle_s: float) -> list[str]:
    """The leading ids at least `settle_s` old. An id is taken (from the clock) before its file is written,
    so a writer in another process can still land an *earlier* id after a later one is visible; moving the
    cursor past it would lose it. Waiting out the write time keeps delivery in order and loses nothing."""
    horizon = (time.time() - settle_s) * 1e9
    ready = []
    for event_id in event_ids:
        if int(event_id.split("-", 1)[0]) > horizon:
            break
        ready.append(event_id)
    return ready


def deliver(
    store: MediaStore,
    url: str,
    *,
    base_backoff_s: float = 2.0,
    max_backoff_s: float = 300.0,
    limit: int = 1000,
    settle_s: float = 2.0,
    now=time.time,
) -> DeliveryReport:
    """Deliver pending events in order until one fails; then back off and leave the rest for later."""
    state = DeliveryState.load(store)
    pending = pending_ids(store, state.last_delivered)
    if state.failures and now() < state.next_attempt_at:
        return DeliveryReport(0, len(pending), state.next_attempt_at, state.last_error)
    delivered = 0
    for event_id in settled(pending, settle_s)[:limit]:
        text = store.read_text(f"{OUTBOX}{event_id}.json")
        try:
            post(url, text, event_id)
        except (OSError, urllib.error.URLError) as error:
            state.failures += 1
            state.next_attempt_at = now() + min(max_backoff_s, base_backoff_s * 2 ** (state.failures - 1))
            state.last_error = f"{event_id}: {error}"
            state.save(store)
            return DeliveryReport(delivered, len(pending) - delivered, state.next_attempt_at, state.last_error)
        state.last_delivered, state.failures, state.last_error = event_id, 0, None
        state.save(store)
        delivered += 1
    return DeliveryReport(delivered, len(pending) - delivered, None, None)


def replay(store: MediaStore, since_event_id: str | None) -> int:
    """Deliver again from `since_event_id` (inclusive), or everything when None."""
    ids = pending_ids(store, None)
    earlier = [event_id for event_id in ids if since_event_id is not None and event_id < since_event_id]
    state = DeliveryState(last_delivered=earlier[-1] if earlier else None)
    state.save(store)
    return len(ids) - len(earlier)
