"""Bearer tokens: each belongs to one tenant (a manifest's `creator_id`) and carries scopes; only a hash of
its secret is stored, so the database alone lets nobody in."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from avatar_assets.api.state import ApiToken, as_utc

SCOPES = ("avatars:write", "renders:write", "renders:read", "admin")
"""avatars:write: upload, regenerate, revoke (and read those avatars); renders:write: renders, approvals,
retry; renders:read: read avatars, renders and events; admin: the tenant's webhooks, quotas and tokens."""
DEFAULT_EXPIRY = "90d"
_PREFIX = "aat_"
_TOKEN = re.compile(r"^aat_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})$")
_DURATION = re.compile(r"^(\d{1,5})([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class TokenError(ValueError):
    """A token request that cannot be met (an unknown scope, a bad expiry, no such token)."""


class TokenInfo(BaseModel):
    """A token as `tokens list` shows it: never its secret."""

    token_id: str
    tenant: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > datetime.now(UTC)


def parse_scopes(text: str) -> list[str]:
    scopes = sorted({scope.strip() for scope in text.split(",") if scope.strip()})
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise TokenError(f"unknown scope(s) {', '.join(unknown) or '(none given)'}; scopes are {', '.join(SCOPES)}")
    return scopes


def parse_expiry(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise TokenError(f"--expires {text!r}: expected <n>d, <n>h or <n>m (e.g. 30d), n at least 1")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        token_id=row.token_id, tenant=row.tenant, scopes=row.scopes.split(","), created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at), revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
    )


def create_token(sessions: sessionmaker[Session], tenant: str, scopes: list[str], lifetime: timedelta) -> tuple[str, TokenInfo]:
    """A new token of `tenant`: the token itself (shown once) and what is kept of it."""
    if not 1 <= len(tenant) <= 128 or tenant != tenant.strip():
        raise TokenError(f"tenant {tenant!r}: expected a creator_id of 1 to 128 characters, no surrounding spaces")
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    row = ApiToken(token_id=token_id, tenant=tenant, scopes=",".join(sorted(scopes)), secret_sha256=_digest(secret),
                   created_at=now, expires_at=now + lifetime, revoked_at=None)
    with sessions.begin() as session:
        session.add(row)
    return f"{_PREFIX}{token_id}.{secret}", _info(row)


def list_tokens(sessions: sessionmaker[Session], tenant: str | None = None) -> list[TokenInfo]:
    query = sa.select(ApiToken).order_by(ApiToken.tenant, ApiToken.created_at)
    if tenant is not None:
        query = query.where(ApiToken.tenant == tenant)
    with sessions() as session:
        return [_info(row) for row in session.scalars(query)]


def revoke_token(sessions: sessionmaker[Session], token_id: str, tenant: str | None = None) -> TokenInfo:
    """Revoke a token; with `tenant`, only one of that tenant's (another tenant's is "no token")."""
    with sessions.begin() as session:
        row = session.get(ApiToken, token_id)
        if row is None or tenant not in (None, row.tenant):
            raise TokenError(f"no token {token_id!r} (see avatarops tokens list)")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
        return _info(row)


def authenticate(sessions: sessionmaker[Session], token: str) -> TokenInfo | None:
    """The token's record when it is well formed, known, unexpired and not revoked; None otherwise."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    with sessions() as session:
        row = session.get(ApiToken, match.group(1))
        if row is None or not hmac.compare_digest(row.secret_sha256, _digest(match.group(2))):
            return None
        info = _info(row)
    return info if info.active else None
