"""RFC 9457 problem details: every error the API answers is one of `PROBLEMS`, under a stable `type` URI, so
a client branches on `type` and shows `detail` to a person."""

from __future__ import annotations

from pydantic import BaseModel, Field
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:avatarops:problem:"

PROBLEMS: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "A valid bearer token is required"),
    "insufficient-scope": (403, "The token lacks the scope this operation needs"),
    "creator-mismatch": (403, "The manifest's creator_id is not the token's tenant"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed"),
    "avatar-id-taken": (409, "The avatar id belongs to another tenant"),
    "idempotency-key-in-flight": (409, "A request with this Idempotency-Key is still being answered"),
    "nothing-to-retry": (409, "The render has no failed run to retry"),
    "avatar-revoked": (410, "The avatar was revoked"),
    "payload-too-large": (413, "The request body or one of its parts is too large"),
    "unsupported-media-type": (415, "The request's Content-Type is not one this operation takes"),
    "invalid-request": (422, "The request is not valid"),
    "invalid-manifest": (422, "The manifest is not valid"),
    "invalid-bundle": (422, "The upload bundle is not valid"),
    "invalid-render-request": (422, "The render request is not valid"),
    "invalid-webhook": (422, "The webhook endpoint cannot be registered"),
    "invalid-approval": (422, "The decision cannot be recorded"),
    "invalid-regeneration": (422, "The regeneration names no asset partition of the avatar"),
    "invalid-token-request": (422, "The token cannot be created"),
    "idempotency-key-reused": (422, "The Idempotency-Key was used for a different request"),
    "quota-exceeded": (429, "The tenant's quota for this action is used up for now; see Retry-After"),
    "internal-error": (500, "The server failed to answer; nothing was changed unless the resource says so"),
}


class Problem(BaseModel):
    """`application/problem+json` (RFC 9457), with `errors` listing every problem found, not just the first."""

    type: str = Field(examples=[f"{TYPE_PREFIX}invalid-manifest"])
    title: str
    status: int
    detail: str
    errors: list[str] = Field(default_factory=list)


class ApiProblem(Exception):
    """Raised anywhere below a route; the app answers it as its problem document."""

    def __init__(self, name: str, detail: str, errors: list[str] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, title = PROBLEMS[name]
        self.problem = Problem(type=TYPE_PREFIX + name, title=title, status=self.status, detail=detail, errors=errors or [])
        self.headers = headers or {}

    def response(self) -> Response:
        return Response(self.problem.model_dump_json(), status_code=self.status, media_type=PROBLEM_MEDIA_TYPE,
                        headers=self.headers)


def declared(*statuses: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` entry of an operation's error statuses, each a problem document."""
    names = {status: [name for name, (code, _) in PROBLEMS.items() if code == status] for status in statuses}
    return {
        status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}},
                 "description": "Problem: " + ", ".join(f"`{TYPE_PREFIX}{name}`" for name in names[status])}
        for status in statuses
    }
