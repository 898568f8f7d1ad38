"""Quotas on expensive actions: a token bucket per tenant and action class. A bucket holds up to `burst`
tokens and refills `per_hour`; an action takes one token or is answered 429 with the seconds until one is
back (Retry-After). The take is one conditional UPDATE, so concurrent requests (threads, processes, hosts on
one Postgres) never spend a token twice."""

from __future__ import annotations

import math
import time
from typing import Literal, get_args

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from avatar_assets.api.problems import ApiProblem
from avatar_assets.api.state import QuotaBucket, QuotaLimit

Action = Literal["upload", "render", "regenerate"]
ACTIONS: tuple[str, ...] = get_args(Action)


class Limit(BaseModel):
    burst: int = Field(ge=1, le=1_000_000)
    per_hour: float = Field(gt=0, le=1_000_000)


DEFAULT_LIMITS: dict[str, Limit] = {
    "upload": Limit(burst=30, per_hour=120),
    "render": Limit(burst=60, per_hour=600),
    "regenerate": Limit(burst=30, per_hour=120),
}
"""Generous enough for a demo and a test suite; `avatarops quotas set` gives a tenant its own."""


def limit_of(sessions: sessionmaker[Session], tenant: str, action: str) -> Limit:
    with sessions() as session:
        own = session.get(QuotaLimit, (tenant, action))
    return Limit(burst=own.burst, per_hour=own.per_hour) if own else DEFAULT_LIMITS[action]


def set_limit(sessions: sessionmaker[Session], tenant: str, action: str, limit: Limit) -> None:
    with sessions.begin() as session:
        session.merge(QuotaLimit(tenant=tenant, action=action, burst=limit.burst, per_hour=limit.per_hour))
        # The bucket starts again full under the new limit.
        session.execute(sa.delete(QuotaBucket).where(QuotaBucket.tenant == tenant, QuotaBucket.action == action))


def available(sessions: sessionmaker[Session], tenant: str, action: str) -> float:
    """Tokens in the tenant's `action` bucket now (a full bucket before its first action)."""
    limit = limit_of(sessions, tenant, action)
    with sessions() as session:
        bucket = session.get(QuotaBucket, (tenant, action))
    if bucket is None:
        return float(limit.burst)
    return min(float(limit.burst), bucket.tokens + (time.time() - bucket.updated_at) * limit.per_hour / 3600.0)


def take(sessions: sessionmaker[Session], tenant: str, action: str) -> None:
    """Spend one token of the tenant's `action` bucket, or raise 429 saying when the next one is there."""
    limit = limit_of(sessions, tenant, action)
    rate = limit.per_hour / 3600.0
    while True:
        now = time.time()
        refilled = QuotaBucket.tokens + (now - QuotaBucket.updated_at) * rate
        available = sa.case((refilled > limit.burst, float(limit.burst)), else_=refilled)
        with sessions.begin() as session:
            taken = session.execute(
                sa.update(QuotaBucket)
                .where(QuotaBucket.tenant == tenant, QuotaBucket.action == action, available >= 1.0)
                .values(tokens=available - 1.0, updated_at=now)
            ).rowcount
            if taken:
                return
            bucket = session.get(QuotaBucket, (tenant, action))
        if bucket is None:
            try:
                with sessions.begin() as session:
                    session.add(QuotaBucket(tenant=tenant, action=action, tokens=limit.burst - 1.0, updated_at=now))
                return
            except IntegrityError:  # another request made it first: take from it
                continue
        tokens = min(limit.burst, bucket.tokens + (now - bucket.updated_at) * rate)
        wait = max(1, math.ceil((1.0 - tokens) / rate))
        raise ApiProblem("quota-exceeded", f"tenant {tenant!r} used its {action} quota ({limit.burst} at once, "
                                           f"{limit.per_hour:g} per hour); the next is available in {wait} s",
                         headers={"Retry-After": str(wait)})
