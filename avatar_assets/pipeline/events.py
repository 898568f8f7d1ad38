"""Lifecycle events through an outbox: written before delivery, delivered signed, never blocked, never lost.

Every event is a JSON document under `events/outbox/<event_id>.json` in the media store (local or S3).
An id starts with the wall clock in nanoseconds, so the outbox sorts by time, and that number is the
event's `sequence`, by which a receiver orders what it gets (see `LifecycleEvent`).

The deliverer POSTs each event to the webhook signed per Standard Webhooks (`webhook-id` = the event id,
`webhook-timestamp` = this attempt, `webhook-signature` = `v1,` + base64 HMAC-SHA256 of
"id.timestamp.body" keyed with the `whsec_` secret in AVATAR_WEBHOOK_SECRET); without a secret nothing
is sent. Redirects are not followed: a 3xx is a failed attempt, like a 4xx, a 5xx, a refused or reset
connection or a timeout. A failed event waits on its own schedule (exponential backoff, capped) while
later events go on; after `max_attempts` failures, or at once on 410 Gone, it becomes a dead letter
(`events/dead/<event_id>.json`) until `replay_dead_letters` queues it again.

What the deliverer has done is in the store too (`events/delivery.json`: a cursor over the outbox and
the events waiting for a retry), written after every attempt, so a killed deliverer resumes where it
stopped: delivery is at least once, and receivers de-duplicate by `webhook-id`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from avatar_assets.contracts import DeadLetter, EventType, LifecycleEvent
from resources.layout import (
    DEAD_LETTERS,
    DEDUPE_MARKERS,
    DELIVERY_STATE,
    ENDPOINT_DELIVERIES,
    OUTBOX,
    dead_letter_id,
    dead_letter_key,
    dedupe_marker_key,
    delivery_endpoint,
    endpoint_delivery,
    outbox_event_id,
    outbox_key,
)
from resources.media_store import MediaStore

URL_ENV = "AVATAR_WEBHOOK_URL"
SECRET_ENV = "AVATAR_WEBHOOK_SECRET"
MAX_ATTEMPTS_ENV = "AVATAR_WEBHOOK_MAX_ATTEMPTS"
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the standard's lower bound (192 bits)
DEFAULT_MAX_ATTEMPTS = 8
# 30 s doubling, capped at 1 h: the 8 default attempts span about an hour, so a receiver that is down for
# less than that gets everything without anyone replaying.
BASE_BACKOFF_S = 30.0
MAX_BACKOFF_S = 3600.0
TIMEOUT_S = 10.0

_clock = threading.Lock()
_last_ns = 0


def _next_ns() -> int:
    """The wall clock in ns, strictly increasing within this process (two ids never share a sequence)."""
    global _last_ns
    with _clock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


def new_event_id(dedupe_key: str | None = None) -> str:
    suffix = hashlib.sha256((dedupe_key or f"{time.time_ns()}-{id(object())}").encode()).hexdigest()[:12]
    return f"{_next_ns():020d}-{suffix}"


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
        marker = dedupe_marker_key(hashlib.sha256(dedupe_key.encode()).hexdigest())
        if store.read_text(marker) is not None:
            return None
    event = LifecycleEvent(
        event_id=new_event_id(dedupe_key),  # its sequence is the id's clock part
        type=type,
        at=datetime.now(UTC),
        avatar_id=avatar_id,
        output=output,
        asset=asset,
        run_id=run_id,
        detail=detail,
    )
    store.write_text(outbox_key(event.event_id), event.model_dump_json())
    if dedupe_key is not None:
        store.write_text(marker, event.event_id)
    return event


def pending_ids(store: MediaStore, after: str | None) -> list[str]:
    ids = sorted(outbox_event_id(key) for key in store.list_keys(OUTBOX))
    return [event_id for event_id in ids if after is None or event_id > after]


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


# --------------------------------------------------------------------------- configuration and signing


class WebhookConfigError(ValueError):
    """A webhook setting that is missing or malformed; the message names the variable and never its value."""


@dataclass(frozen=True)
class Signer:
    """Standard Webhooks signatures with one `whsec_<base64>` secret."""

    key: bytes

    @classmethod
    def from_secret(cls, secret: str | None) -> Signer:
        if not secret:
            raise WebhookConfigError(
                f"{SECRET_ENV} is not set: events are only delivered signed; set it to the receiver's "
                f"Standard Webhooks secret ({SECRET_PREFIX}<base64>)"
            )
        if not secret.startswith(SECRET_PREFIX):
            raise WebhookConfigError(f"{SECRET_ENV} must have the Standard Webhooks form {SECRET_PREFIX}<base64>")
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise WebhookConfigError(f"{SECRET_ENV}: the part after {SECRET_PREFIX} is not valid base64") from None
        if len(key) < MIN_SECRET_BYTES:
            raise WebhookConfigError(
                f"{SECRET_ENV} holds a {len(key)}-byte key; Standard Webhooks asks for at least {MIN_SECRET_BYTES}"
            )
        return cls(key)

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three standard headers for these exact body bytes at this attempt's time."""
        mac = hmac.new(self.key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{base64.b64encode(mac).decode()}",
        }


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to deliver, from the environment; the CLI and the sensor read it the same way."""

    url: str
    signer: Signer
    max_attempts: int

    @classmethod
    def from_env(cls, url: str | None) -> WebhookConfig:
        parts = urllib.parse.urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise WebhookConfigError(f"no http(s) webhook URL (--url or {URL_ENV})")
        raw = os.environ.get(MAX_ATTEMPTS_ENV, str(DEFAULT_MAX_ATTEMPTS))
        if not raw.strip().isdigit() or int(raw) < 1:
            raise WebhookConfigError(f"{MAX_ATTEMPTS_ENV} must be a whole number of attempts, at least 1")
        return cls(url, Signer.from_secret(os.environ.get(SECRET_ENV)), int(raw))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the receiver's answer, not a new address: following it would re-send the event as a GET
    without its body (or to a host the receiver does not control) and count that as delivered."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirects)


def _pinned_opener(address: str) -> urllib.request.OpenerDirector:
    """An opener that connects to `address` whatever the URL's host resolves to now, the host still naming the
    request (Host header, TLS server name and certificate check): the address checked is the address used."""

    class Pinned(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.create_connection((address, self.port), self.timeout)

    class PinnedTLS(http.client.HTTPSConnection):
        def connect(self):
            self.sock = self._context.wrap_socket(socket.create_connection((address, self.port), self.timeout),
                                                  server_hostname=self.host)

    class Handler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
        def http_open(self, req):
            return self.do_open(Pinned, req)

        def https_open(self, req):
            return self.do_open(PinnedTLS, req, context=ssl.create_default_context())

    return urllib.request.build_opener(_NoRedirects, Handler)


@dataclass(frozen=True)
class Attempt:
    status: int | None  # the HTTP status; None when no answer came (refused, reset, timed out)
    error: str | None  # None when delivered


def post(url: str, body: bytes, event_id: str, signer: Signer, *, at: float, timeout: float = TIMEOUT_S,
         address: str | None = None) -> Attempt:
    """One signed POST of exactly `body`, to `address` when given (see `_pinned_opener`); any answer but a 2xx
    is a failed attempt."""
    headers = {"Content-Type": "application/json", "X-Avatar-Event-Id": event_id,
               **signer.headers(event_id, int(at), body)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with (_pinned_opener(address) if address else _OPENER).open(request, timeout=timeout) as response:
            return Attempt(response.status, None)
    except urllib.error.HTTPError as answer:
        answer.close()
        note = " (redirect not followed)" if 300 <= answer.code < 400 else ""
        return Attempt(answer.code, f"HTTP {answer.code} {answer.reason}{note}")
    except urllib.error.URLError as error:  # no connection: refused, unknown host, connect timeout
        return Attempt(None, f"no answer: {error.reason}")
    except (OSError, http.client.HTTPException) as error:  # reset or timed out after connecting
        return Attempt(None, f"no answer: {type(error).__name__}: {error}")


# --------------------------------------------------------------------------- delivery state


class Retry(BaseModel):
    """One failed event's own schedule: it waits alone while later events are delivered."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(ge=0)  # 0: re-queued from the dead letters, due at once
    next_attempt_at: float
    last_error: str | None = None
    last_status: int | None = None


class DeliveryState(BaseModel):
    """What the deliverer has done, kept in the store (`events/delivery.json`) so that any deliverer,
    including one started after another was killed, goes on from there.

    Every outbox event up to `cursor` has had its first attempt: it is delivered, waiting in `retrying`,
    or a dead letter. Later events have not been tried yet.
    """

    model_config = ConfigDict(extra="forbid")

    cursor: str | None = None
    retrying: dict[str, Retry] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_single_cursor(cls, data: Any) -> Any:
        """The state before per-event retries: a cursor that a failing event blocked; it goes on from there."""
        if isinstance(data, dict) and "last_delivered" in data:
            return {"cursor": data["last_delivered"]}
        return data

    @classmethod
    def load(cls, store: MediaStore, key: str = DELIVERY_STATE) -> DeliveryState:
        text = store.read_text(key)
        return cls.model_validate_json(text) if text else cls()

    def save(self, store: MediaStore, key: str = DELIVERY_STATE) -> None:
        store.write_text(key, self.model_dump_json())

    def status_of(self, event_id: str, dead: set[str]) -> Literal["delivered", "pending", "dead"]:
        if event_id in dead:
            return "dead"
        if event_id in self.retrying or self.cursor is None or event_id > self.cursor:
            return "pending"
        return "delivered"


def dead_letters(store: MediaStore, folder: str = DEAD_LETTERS) -> list[DeadLetter]:
    letters = (store.read_text(key) for key in sorted(store.list_keys(folder)))
    return [DeadLetter.model_validate_json(text) for text in letters if text is not None]


def dead_letter_ids(store: MediaStore, dead_letters: str = DEAD_LETTERS) -> set[str]:
    return {dead_letter_id(key, dead_letters) for key in store.list_keys(dead_letters)}


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int
    failed: int  # failed attempts in this pass
    dead: int  # events that became dead letters in this pass
    pending: int  # events not tried yet or waiting for a retry
    waiting_until: float | None  # the earliest retry
    error: str | None  # the last failure of this pass, "<event id>: <why>"

    def summary(self) -> str:
        text = f"delivered {self.delivered}, failed {self.failed}, dead-lettered {self.dead}, pending {self.pending}"
        return text + (f" ({self.error})" if self.error else "")


def deliver(
    store: MediaStore,
    url: str,
    signer: Signer,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    base_backoff_s: float = BASE_BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
    limit: int = 1000,
    settle_s: float = 2.0,
    timeout_s: float = TIMEOUT_S,
    budget_s: float | None = None,
    now=time.time,
    state_key: str = DELIVERY_STATE,
    dead_letters: str = DEAD_LETTERS,
    wanted: Callable[[LifecycleEvent], bool] | None = None,
    pin: Callable[[str], str] | None = None,
) -> DeliveryReport:
    """One pass over every due event in sequence order: the retries whose time has come and the settled
    events not tried yet. A failure schedules that event alone; the pass goes on with the next.

    `now` is the clock for the schedule and for `webhook-timestamp` (tests inject it); `budget_s` stops
    the pass between attempts (a sensor tick must end), leaving the rest due for the next pass. A receiver
    of its own (a tenant's endpoint) keeps its own `state_key` and `dead_letters` and gets only the events
    it `wanted`; the others are passed over as if delivered. `pin` resolves and checks the URL's host before each
    attempt and returns the address to connect to, or raises ValueError saying why not (a failed attempt).
    """
    state = DeliveryState.load(store, state_key)
    dead = dead_letter_ids(store, dead_letters)
    for event_id in dead & state.retrying.keys():  # a deliverer killed between the letter and its state
        del state.retrying[event_id]
    fresh = [event_id for event_id in pending_ids(store, state.cursor) if event_id not in dead]
    clock = now()
    retries = [event_id for event_id, retry in state.retrying.items() if retry.next_attempt_at <= clock]
    due = sorted({*retries, *settled(fresh, settle_s)})[:limit]
    started = time.monotonic()
    delivered = failed = buried = 0
    error = None
    for event_id in due:
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        previous = state.retrying.pop(event_id, None)
        attempts = (previous.attempts if previous else 0) + 1
        text = store.read_text(outbox_key(event_id))
        if text is not None and (wanted is None or _wanted(wanted, text)):  # None: forgotten (revoke) since the listing
            attempted_at = now()
            event, outcome = _attempt(url, signer, event_id, text, attempted_at, timeout_s, pin)
            if outcome.error is None:
                delivered += 1
            else:
                failed += 1
                error = f"{event_id}: {outcome.error}"
                if event is None or outcome.status == 410 or attempts >= max_attempts:
                    _bury(store, event_id, event, attempts, outcome, dead_letters)
                    buried += 1
                else:
                    delay = min(max_backoff_s, base_backoff_s * 2 ** (attempts - 1))
                    state.retrying[event_id] = Retry(attempts=attempts, next_attempt_at=attempted_at + delay,
                                                     last_error=outcome.error, last_status=outcome.status)
        if state.cursor is None or event_id > state.cursor:
            state.cursor = event_id
        state.save(store, state_key)
    untried = [event_id for event_id in fresh if event_id > (state.cursor or "")]
    waiting_until = min((retry.next_attempt_at for retry in state.retrying.values()), default=None)
    return DeliveryReport(delivered, failed, buried, len(untried) + len(state.retrying), waiting_until, error)


def _attempt(url, signer, event_id, text, at, timeout_s, pin) -> tuple[LifecycleEvent | None, Attempt]:
    """POST one outbox document as its canonical JSON (events written before `sequence` gain it)."""
    try:
        event = LifecycleEvent.model_validate_json(text)
    except ValidationError as error:
        return None, Attempt(None, f"unreadable outbox document: {error.errors()[0]['msg']}")
    try:
        address = pin(url) if pin else None
    except ValueError as refused:
        return event, Attempt(None, f"not sent: {refused}")
    return event, post(url, event.model_dump_json().encode(), event_id, signer, at=at, timeout=timeout_s,
                       address=address)


def _wanted(wanted: Callable[[LifecycleEvent], bool], text: str) -> bool:
    try:
        return wanted(LifecycleEvent.model_validate_json(text))
    except ValidationError:
        return True  # attempted, and dead-lettered as unreadable, as for every receiver


def _bury(store: MediaStore, event_id: str, event: LifecycleEvent | None, attempts: int, outcome: Attempt,
          dead_letters: str = DEAD_LETTERS) -> None:
    fields = event.model_dump(include={"sequence", "type", "avatar_id", "output", "asset"}) if event else {}
    letter = DeadLetter(event_id=event_id, attempts=attempts, last_status=outcome.status,
                        last_error=outcome.error or "", dead_at=datetime.now(UTC), **fields)
    store.write_text(dead_letter_key(event_id, dead_letters), letter.model_dump_json())


# --------------------------------------------------------------------------- replay and forget


def replay(store: MediaStore, since_event_id: str | None) -> int:
    """Deliver again from `since_event_id` (inclusive), or everything when None. Dead letters stay dead
    (`replay_dead_letters` is for them); returns how many events will be delivered again."""
    ids = pending_ids(store, None)
    earlier = [event_id for event_id in ids if since_event_id is not None and event_id < since_event_id]
    state = DeliveryState.load(store)
    cursor = earlier[-1] if earlier else None
    retrying = {i: retry for i, retry in state.retrying.items() if cursor is not None and i <= cursor}
    DeliveryState(cursor=cursor, retrying=retrying).save(store)
    dead = dead_letter_ids(store)
    return len([event_id for event_id in ids[len(earlier):] if event_id not in dead])


def replay_dead_letters(store: MediaStore) -> int:
    """Queue every dead letter again with a fresh count of attempts, due at once.

    The state is saved before the letters are removed: a replay killed in between leaves them dead (a
    dead letter wins over a queued retry), and running it again finishes it."""
    ids = sorted(dead_letter_ids(store))
    state = DeliveryState.load(store)
    for event_id in ids:
        state.retrying[event_id] = Retry(attempts=0, next_attempt_at=0.0)
    state.save(store)
    for event_id in ids:
        store.delete_key(dead_letter_key(event_id))
    return len(ids)


def forget_avatar(store: MediaStore, avatar_id: str) -> int:
    """Delete every outbox event of the avatar, with its retry states and dead letters (the platform's and each
    tenant endpoint's) and its dedupe marker (what revoke erases). Outbox documents go last, so a forget
    killed half-way finds them again when rerun. Returns how many events were forgotten."""
    endpoints = sorted({delivery_endpoint(key) for key in store.list_keys(ENDPOINT_DELIVERIES)})
    deliveries = [(DELIVERY_STATE, DEAD_LETTERS), *(endpoint_delivery(endpoint) for endpoint in endpoints)]
    ids = {letter.event_id for _, folder in deliveries for letter in dead_letters(store, folder)
           if letter.avatar_id == avatar_id}
    for key in list(store.list_keys(OUTBOX)):
        text = store.read_text(key)
        try:
            event = LifecycleEvent.model_validate_json(text) if text is not None else None
        except ValidationError:
            continue
        if event is not None and event.avatar_id == avatar_id:
            ids.add(event.event_id)
    for key in list(store.list_keys(DEDUPE_MARKERS)):
        if store.read_text(key) in ids:
            store.delete_key(key)
    for state_key, folder in deliveries:
        state = DeliveryState.load(store, state_key)
        if ids & state.retrying.keys():
            state.retrying = {i: retry for i, retry in state.retrying.items() if i not in ids}
            state.save(store, state_key)
        for event_id in ids:
            store.delete_key(dead_letter_key(event_id, folder))
    for event_id in ids:
        store.delete_key(outbox_key(event_id))
    return len(ids)
