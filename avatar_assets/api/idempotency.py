"""Idempotency-Key on POSTs: per tenant, the first request with a key is answered and its answer stored; the same
key with the same parsed request gets that answer again, byte for byte (nothing new launched); with a different
request, 422. While the first is still being answered the others wait for it, then 409.

The database's primary key (tenant, key) decides who is first, so this holds across threads, processes and
hosts sharing the state database. Keys are kept `RETENTION` (at least the 24 h clients are promised).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from avatar_assets.api.problems import ApiProblem
from avatar_assets.api.state import IdempotentRequest, as_utc

HEADER = "Idempotency-Key"
RETENTION = timedelta(hours=48)
WAIT_FOR_FIRST_S = 30.0
ABANDONED_AFTER = timedelta(minutes=15)  # an answer still missing then comes from a server that died mid-request
MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    media_type: str
    body: bytes

    def response(self) -> Response:
        return Response(self.body, status_code=self.status_code, media_type=self.media_type,
                        headers={"Idempotent-Replayed": "true"})


async def answer_once(
    sessions: sessionmaker[Session], tenant: str, key: str | None, request_sha256: str,
    produce: Callable[[], Awaitable[Response]],
) -> Response:
    """`produce()`'s answer, or the one stored for (tenant, key); a 429, a 5xx or a crash is not kept (the key
    frees, so the client sends it again later)."""
    if key is None:
        return await produce()
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ApiProblem("invalid-request", f"{HEADER} must be 1 to {MAX_KEY_CHARS} characters")
    stored = await run_in_threadpool(_claim, sessions, tenant, key, request_sha256)
    if stored is not None:
        return stored.response()
    try:
        try:
            response = await produce()
        except ApiProblem as problem:
            response = problem.response()
    except BaseException:
        await run_in_threadpool(_release, sessions, tenant, key)
        raise
    if response.status_code >= 500 or response.status_code == 429:
        await run_in_threadpool(_release, sessions, tenant, key)
    else:
        await run_in_threadpool(_store, sessions, tenant, key, response)
    return response


def _claim(sessions: sessionmaker[Session], tenant: str, key: str, request_sha256: str) -> StoredAnswer | None:
    """None when this request is the first with the key (and now holds it); else the stored answer."""
    deadline = time.monotonic() + WAIT_FOR_FIRST_S
    while True:
        now = datetime.now(UTC)
        try:
            with sessions.begin() as session:
                session.execute(sa.delete(IdempotentRequest).where(IdempotentRequest.created_at < now - RETENTION))
                session.add(IdempotentRequest(tenant=tenant, key=key, request_sha256=request_sha256, created_at=now))
            return None
        except IntegrityError:
            pass
        with sessions() as session:
            first = session.get(IdempotentRequest, (tenant, key))
            if first is None:  # released meanwhile: try to be first again
                continue
            if first.request_sha256 != request_sha256:
                raise ApiProblem("idempotency-key-reused", f"{HEADER} {key!r} was used for a different request; "
                                                           "use a new key for a new request")
            if first.status_code is not None:
                return StoredAnswer(first.status_code, first.media_type or "application/json", first.body or b"")
            if now - as_utc(first.created_at) > ABANDONED_AFTER:
                session.delete(first)
                session.commit()
                continue
        if time.monotonic() > deadline:
            raise ApiProblem("idempotency-key-in-flight", f"the first request with {HEADER} {key!r} is still being "
                                                          "answered; send it again later", headers={"Retry-After": "5"})
        time.sleep(0.05)


def _store(sessions: sessionmaker[Session], tenant: str, key: str, response: Response) -> None:
    with sessions.begin() as session:
        row = session.get(IdempotentRequest, (tenant, key))
        row.status_code, row.media_type, row.body = response.status_code, response.media_type, bytes(response.body)


def _release(sessions: sessionmaker[Session], tenant: str, key: str) -> None:
    with sessions.begin() as session:
        session.execute(sa.delete(IdempotentRequest).where(
            IdempotentRequest.tenant == tenant, IdempotentRequest.key == key))
