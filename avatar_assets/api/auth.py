"""Who is calling: the bearer token's tenant and scopes. No, bad, expired or revoked token: 401; a token
without the operation's scope: 403; another tenant's resource: 404 (`owned_by`), never a hint that it exists."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from avatar_assets.api import tokens
from avatar_assets.api.problems import ApiProblem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="avatarops"'}


@dataclass(frozen=True)
class Caller:
    tenant: str
    scopes: frozenset[str]
    token_id: str


def require(*any_of: str):
    """A FastAPI dependency: the caller, whose token must hold one of `any_of`."""

    async def caller(request: Request) -> Caller:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        info = None
        if scheme.lower() == "bearer" and token.strip():
            info = await run_in_threadpool(tokens.authenticate, request.app.state.api.sessions, token.strip())
        if info is None:
            raise ApiProblem("unauthorized", "send Authorization: Bearer <token> with a valid, unexpired, unrevoked "
                                             "token (avatarops tokens create)", headers=_CHALLENGE)
        if not set(any_of) & set(info.scopes):
            raise ApiProblem("insufficient-scope", f"this operation needs a token with scope {' or '.join(any_of)}; "
                                                   f"this one has {', '.join(info.scopes)}")
        return Caller(tenant=info.tenant, scopes=frozenset(info.scopes), token_id=info.token_id)

    return caller
