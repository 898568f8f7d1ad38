"""Webhooks per tenant: each endpoint gets the tenant's lifecycle events from the one outbox, signed (Standard
Webhooks) with its own secret, retried on its own backoff and dead-lettered under its own keys
(`layout.endpoint_delivery`) by `events.deliver`, the deliverer of the platform-wide webhook.

`avatarops serve` delivers: one thread per endpoint, so a slow or failing receiver only ever delays itself.
Endpoint URLs must be https and resolve to public addresses, so the API cannot be made to probe the internal
network; `AVATAR_WEBHOOK_ALLOW_PRIVATE=1` allows http and private addresses (loopback receivers in tests).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import secrets
import socket
import threading
import urllib.parse
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from avatar_assets.api.problems import ApiProblem
from avatar_assets.api.state import WebhookEndpoint
from avatar_assets.contracts import EventType, LifecycleEvent
from avatar_assets.identity import ownership
from avatar_assets.pipeline import events
from resources.layout import endpoint_delivery
from resources.media_store import MediaStore

ALLOW_PRIVATE_ENV = "AVATAR_WEBHOOK_ALLOW_PRIVATE"
POLL_S = 1.0
log = logging.getLogger("avatarops.api.webhooks")


class EndpointRequest(BaseModel):
    url: str = Field(max_length=2048)
    event_types: list[EventType] = Field(default_factory=list, description="none: every event type")


class Endpoint(BaseModel):
    endpoint_id: str
    url: str
    event_types: list[EventType]
    created_at: datetime


class EndpointCreated(Endpoint):
    secret: str = Field(description="the Standard Webhooks secret (whsec_…), shown only now")


def _endpoint(row: WebhookEndpoint) -> Endpoint:
    return Endpoint(endpoint_id=row.endpoint_id, url=row.url, event_types=[t for t in row.event_types.split(",") if t],
                    created_at=row.created_at)


def allow_private() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "") == "1"


def check_url(url: str) -> None:
    """Refuse (422) a URL that is not https, or whose host resolves to a non-public address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in (("http", "https") if allow_private() else ("https",)) or not parts.hostname:
        raise ApiProblem("invalid-webhook", f"webhook URL {url!r}: expected https://<public host>/…")
    if not allow_private():
        try:
            public_address(url)
        except ValueError as error:
            raise ApiProblem("invalid-webhook", str(error)) from None


def public_address(url: str) -> str:
    """The address to deliver to: the host resolved now, every address it has public, else ValueError. Asked
    again before each delivery and connected to as checked, so a DNS answer changed since registration (DNS
    rebinding) cannot point a delivery into the internal network."""
    parts = urllib.parse.urlsplit(url)
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443,
                                                                       type=socket.SOCK_STREAM)})
    except (socket.gaierror, UnicodeError):
        raise ValueError(f"webhook host {parts.hostname!r} does not resolve") from None
    private = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global]
    if private:
        raise ValueError(f"webhook host {parts.hostname!r} resolves to a non-public address ({', '.join(private)}); "
                         "endpoints must be public")
    return addresses[0]


def register(sessions: sessionmaker[Session], tenant: str, request: EndpointRequest) -> EndpointCreated:
    check_url(request.url)
    secret = events.SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    row = WebhookEndpoint(endpoint_id=secrets.token_hex(6), tenant=tenant, url=request.url,
                          event_types=",".join(request.event_types), secret=secret, created_at=datetime.now(UTC))
    with sessions.begin() as session:
        session.add(row)
    return EndpointCreated(**_endpoint(row).model_dump(), secret=secret)


def endpoints_of(sessions: sessionmaker[Session], tenant: str) -> list[Endpoint]:
    with sessions() as session:
        rows = session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.tenant == tenant)
                               .order_by(WebhookEndpoint.created_at))
        return [_endpoint(row) for row in rows]


def remove(sessions: sessionmaker[Session], tenant: str, endpoint_id: str) -> None:
    with sessions.begin() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None or row.tenant != tenant:
            raise ApiProblem("not-found", f"no webhook endpoint {endpoint_id!r}")
        session.delete(row)


class Deliverers:
    """One delivery thread per registered endpoint, started and stopped as endpoints come and go."""

    def __init__(self, sessions: sessionmaker[Session], store: MediaStore):
        self.sessions, self.store = sessions, store
        self._stop = threading.Event()
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._watcher = threading.Thread(target=self._watch, name="webhook-endpoints", daemon=True)

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        for _, stop in self._threads.values():
            stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                with self.sessions() as session:
                    current = {row.endpoint_id: (row.tenant, row.url, row.event_types, row.secret)
                               for row in session.scalars(sa.select(WebhookEndpoint))}
            except sa.exc.SQLAlchemyError as error:
                log.warning(f"webhook endpoints cannot be read: {error}")
                continue
            for endpoint_id in set(self._threads) - set(current):
                self._threads.pop(endpoint_id)[1].set()
            for endpoint_id, settings in current.items():
                if endpoint_id not in self._threads:
                    stop = threading.Event()
                    thread = threading.Thread(target=self._deliver, args=(endpoint_id, *settings, stop),
                                              name=f"webhook-{endpoint_id}", daemon=True)
                    self._threads[endpoint_id] = (thread, stop)
                    thread.start()

    def _deliver(self, endpoint_id: str, tenant: str, url: str, event_types: str, secret: str,
                 stop: threading.Event) -> None:
        signer = events.Signer.from_secret(secret)
        types = {t for t in event_types.split(",") if t}
        state_key, dead_letters = endpoint_delivery(endpoint_id)
        owners: dict[str, bool] = {}

        def wanted(event: LifecycleEvent) -> bool:
            if types and event.type not in types:
                return False
            if event.avatar_id not in owners:
                holder = ownership.owner(self.store, event.avatar_id)
                owners[event.avatar_id] = holder is not None and holder.creator_id == tenant
            return owners[event.avatar_id]

        while not stop.wait(POLL_S):
            try:
                events.deliver(self.store, url, signer, state_key=state_key, dead_letters=dead_letters,
                               wanted=wanted, budget_s=30.0, pin=None if allow_private() else public_address)
            except Exception as error:  # noqa: BLE001 - a store hiccup: the next pass goes on from the saved state
                log.warning(f"webhook endpoint {endpoint_id}: {error}")
