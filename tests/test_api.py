"""The job API over real HTTP: `avatarops serve` on loopback (a subprocess, like the daemon tests start
theirs), an httpx client, tokens made by `avatarops tokens create`. Auth (401/403/404), problem details,
uploads through the same path as `avatarops upload`, bad input refused with nothing written, idempotency
keys under concurrency, revoke, and the published OpenAPI schema."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import sha256_tree
from tests.servers import avatarops, avatarops_serve, build_sample, clean_env

PROBLEM = "urn:avatarops:problem:"
ALL_SCOPES = "avatars:write,renders:write,renders:read"
REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class Api:
    """The running server, its home, and a token per role."""

    def __init__(self, base_url: str, home: Path, env: dict, sample: Path):
        self.base_url, self.home, self.env, self.sample = base_url, home, env, sample
        self.tokens = {
            "acme": token(env, "acme", ALL_SCOPES),
            "acme-reader": token(env, "acme", "renders:read"),
            "globex": token(env, "globex", ALL_SCOPES),
            "acme-admin": token(env, "acme", "admin"),
            "globex-admin": token(env, "globex", "admin"),
            "acme-all": token(env, "acme", ALL_SCOPES + ",admin"),
        }

    def client(self, who: str | None = "acme") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def bundle_files(self, avatar_id: str, creator: str = "acme") -> tuple[dict, list[tuple[str, bytes]]]:
        manifest = json.loads((self.sample / "manifest.json").read_text())
        manifest.update(avatar_id=avatar_id, creator_id=creator)
        files = [(path, (self.sample / path).read_bytes()) for path in [*manifest["photos"], manifest["voice_sample"]]]
        return manifest, files

    def inbox(self, avatar_id: str) -> Path:
        return self.home / "inbox" / "avatars" / avatar_id


def token(env, tenant: str, scopes: str) -> str:
    done = avatarops("tokens", "create", "--tenant", tenant, "--scopes", scopes, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def multipart(manifest: dict | bytes | None, files: list[tuple[str, bytes]]) -> dict:
    parts = [] if manifest is None else [("manifest", (None, manifest if isinstance(manifest, bytes)
                                                       else json.dumps(manifest).encode(), "application/json"))]
    parts += [("files", (name, data, "application/octet-stream")) for name, data in files]
    return {"files": parts}


def upload(client: httpx.Client, manifest, files, **headers) -> httpx.Response:
    return client.post("/v1/avatars", headers=headers, **multipart(manifest, files))


def assert_problem(response: httpx.Response, status: int, name: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == PROBLEM + name and body["status"] == status and body["detail"], body
    return body


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request, tmp_path_factory) -> Api:
    """The server with its state in SQLite under the home, then in Postgres (a schema of its own, dropped after)."""
    import sqlalchemy as sa

    root = tmp_path_factory.mktemp("job-api")
    state = {}
    if request.param == "postgres":
        state = {"AVATAR_API_DATABASE_URL": POSTGRES_URL, "AVATAR_API_DATABASE_SCHEMA": f"api_{uuid.uuid4().hex[:10]}"}
    env = clean_env(AVATAR_HOME=root / "home", AVATAR_WEBHOOK_ALLOW_PRIVATE="1", **state)  # receivers on loopback
    sample = build_sample(root / "sample" / "astronaut")
    try:
        with avatarops_serve(env=env, log_path=root / "serve.log") as server:
            yield Api(server.base_url, root / "home", env, sample)
    finally:
        if state:
            engine = sa.create_engine(POSTGRES_URL)
            with engine.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{state["AVATAR_API_DATABASE_SCHEMA"]}" CASCADE'))
            engine.dispose()


# --------------------------------------------------------------------------- auth


def test_no_bad_or_revoked_token_is_401_and_a_missing_scope_403(api):
    with api.client(None) as anonymous:
        assert_problem(anonymous.get("/v1/avatars/x"), 401, "unauthorized")
        assert anonymous.get("/v1/avatars/x").headers["www-authenticate"].startswith("Bearer")
        assert_problem(anonymous.get("/v1/avatars/x", headers={"Authorization": "Bearer aat_0.nope"}), 401, "unauthorized")
        assert_problem(anonymous.get("/v1/avatars/x", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    doomed = token(api.env, "acme", ALL_SCOPES)
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {doomed}"}) as client:
        assert_problem(client.get("/v1/avatars/nobody-here"), 404, "not-found")
        assert avatarops("tokens", "revoke", doomed.removeprefix("aat_").split(".")[0], env=api.env).returncode == 0
        assert_problem(client.get("/v1/avatars/nobody-here"), 401, "unauthorized")
    manifest, files = api.bundle_files("reader-try")
    with api.client("acme-reader") as reader:
        assert_problem(upload(reader, manifest, files), 403, "insufficient-scope")
    assert not api.inbox("reader-try").exists()


def test_an_expired_token_is_401(api):
    from avatar_assets.api.state import open_state
    from avatar_assets.api.tokens import create_token

    with pytest.MonkeyPatch.context() as patch:
        for name in ("AVATAR_API_DATABASE_URL", "AVATAR_API_DATABASE_SCHEMA"):
            patch.setenv(name, api.env[name]) if name in api.env else patch.delenv(name, raising=False)
        sessions = open_state(api.env.get("AVATAR_API_DATABASE_URL") or f"sqlite:///{api.home / 'api' / 'state.db'}")
        expired, _ = create_token(sessions, "acme", ["renders:read"], timedelta(seconds=-1))
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {expired}"}) as client:
        assert_problem(client.get("/v1/avatars/x"), 401, "unauthorized")


# --------------------------------------------------------------------------- uploads


def test_an_upload_lands_in_the_inbox_and_is_accepted_before_any_run(api):
    manifest, files = api.bundle_files("acme-ada")
    with api.client() as client:
        response = upload(client, manifest, files)
        assert response.status_code == 202, response.text
        assert response.json() == {"avatar_id": "acme-ada", "status_url": "/v1/avatars/acme-ada"}
        state = client.get("/v1/avatars/acme-ada")
    assert state.status_code == 200 and state.json()["state"] == "accepted"
    sent = {name: hashlib.sha256(data).hexdigest() for name, data in files}
    landed = sha256_tree(api.inbox("acme-ada"))
    assert {k: v for k, v in landed.items() if k != "manifest.json"} == sent
    assert json.loads((api.inbox("acme-ada") / "manifest.json").read_text()) == manifest
    assert list((api.home / "api" / "uploads").iterdir()) == []  # the staging folder is gone


def test_tenants_are_isolated(api):
    manifest, files = api.bundle_files("acme-iso")
    with api.client() as acme, api.client("globex") as globex:
        assert upload(acme, manifest, files).status_code == 202
        assert_problem(globex.get("/v1/avatars/acme-iso"), 404, "not-found")
        assert_problem(globex.delete("/v1/avatars/acme-iso"), 404, "not-found")
        render = {"slug": "promo", "script": "Hello there. This is a short test video."}
        assert_problem(globex.post("/v1/avatars/acme-iso/renders", json=render), 404, "not-found")
        accepted = acme.post("/v1/avatars/acme-iso/renders", json=render)
        assert accepted.status_code == 202, accepted.text
        assert_problem(globex.get(f"/v1/renders/{accepted.json()['render_id']}"), 404, "not-found")
        # Taking the id: 409 (which says the id exists, as the README notes); a manifest for another creator: 403.
        theirs, their_files = api.bundle_files("acme-iso", creator="globex")
        before = sha256_tree(api.inbox("acme-iso"))
        assert_problem(upload(globex, theirs, their_files), 409, "avatar-id-taken")
        assert_problem(upload(globex, manifest, files), 403, "creator-mismatch")
        assert sha256_tree(api.inbox("acme-iso")) == before


def raw_multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"b0und4ry") -> tuple[bytes, str]:
    """A multipart body written by hand (headers, data) to send what httpx would never write."""
    body = b"".join(b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n" for headers, data in parts)
    return body + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


def file_part(name: bytes, data: bytes = b"x") -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="files"; filename="' + name + b'"', data


@pytest.mark.parametrize("case, status, name, says", [
    ("dotdot", 422, "invalid-request", "path traversal"),
    ("absolute", 422, "invalid-request", "absolute"),
    ("nul", 422, "invalid-request", "NUL"),
    ("unknown_part", 422, "invalid-request", "unknown part 'extra'"),
    ("missing_file", 422, "invalid-bundle", "was not sent"),
    ("unnamed_file", 422, "invalid-bundle", "does not name it"),
    ("bad_json", 422, "invalid-manifest", "not valid JSON"),
    ("unknown_field", 422, "invalid-manifest", "colour"),
    ("no_manifest", 422, "invalid-request", "no 'manifest' part"),
    ("json_body", 415, "unsupported-media-type", "multipart/form-data"),
    ("big_manifest", 413, "payload-too-large", "the manifest is over its limit"),
    ("twice", 422, "invalid-request", "sent twice"),
])
def test_bad_uploads_are_refused_with_nothing_written(api, case, status, name, says):
    avatar_id = f"bad-{case.replace('_', '-')}"
    manifest, files = api.bundle_files(avatar_id)
    good = json.dumps(manifest).encode()
    manifest_part = (b'Content-Disposition: form-data; name="manifest"', good)
    parts = {
        "dotdot": [manifest_part, file_part(b"../photos/portrait.jpg")],
        "absolute": [manifest_part, file_part(b"/etc/passwd")],
        "nul": [manifest_part, file_part(b"photos/portrait.jpg\x00.png")],
        "unknown_part": [manifest_part, (b'Content-Disposition: form-data; name="extra"', b"1")],
        "missing_file": [manifest_part, *[file_part(n.encode(), d) for n, d in files[:1]]],
        "unnamed_file": [manifest_part, *[file_part(n.encode(), d) for n, d in files], file_part(b"photos/more.jpg")],
        "bad_json": [(manifest_part[0], b"{not json"), *[file_part(n.encode(), d) for n, d in files]],
        "unknown_field": [(manifest_part[0], json.dumps({**manifest, "colour": "red"}).encode()),
                          *[file_part(n.encode(), d) for n, d in files]],
        "no_manifest": [file_part(n.encode(), d) for n, d in files],
        "big_manifest": [(manifest_part[0], good + b" " * 70_000)],
        "twice": [manifest_part, *[file_part(n.encode(), d) for n, d in files], file_part(files[0][0].encode())],
    }
    with api.client() as client:
        if case == "json_body":
            response = client.post("/v1/avatars", json=manifest)
        else:
            body, content_type = raw_multipart(parts[case])
            response = client.post("/v1/avatars", content=body, headers={"Content-Type": content_type})
        problem = assert_problem(response, status, name)
        assert says in problem["detail"], problem
        assert not api.inbox(avatar_id).exists()
        assert_problem(client.get(f"/v1/avatars/{avatar_id}"), 404, "not-found")


def test_an_oversize_body_is_refused_before_it_is_sent(api):
    """413 answers the headers alone: the server never waits for the gigabyte the Content-Length announces."""
    host, port = api.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(
            b"POST /v1/avatars HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + api.tokens["acme"].encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = b""
        while b"payload-too-large" not in answer and (chunk := sock.recv(65536)):  # headers and body may come apart
            answer += chunk
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413") and PROBLEM + "payload-too-large" in answer


# --------------------------------------------------------------------------- idempotency


def test_an_idempotency_key_replays_the_first_answer_byte_for_byte(api):
    manifest, files = api.bundle_files("acme-idem")
    with api.client() as client:
        first = upload(client, manifest, files, **{"Idempotency-Key": "k-1"})
        again = upload(client, manifest, files, **{"Idempotency-Key": "k-1"})  # a new multipart boundary
        assert first.status_code == again.status_code == 202
        assert first.content == again.content and again.headers["idempotent-replayed"] == "true"
        other, _ = api.bundle_files("acme-idem-2")
        assert_problem(upload(client, other, files, **{"Idempotency-Key": "k-1"}), 422, "idempotency-key-reused")
        # A refused request's answer is kept too; keys are per tenant.
        mismatch = upload(client, {**manifest, "creator_id": "x"}, files, **{"Idempotency-Key": "k-2"})
        assert upload(client, {**manifest, "creator_id": "x"}, files, **{"Idempotency-Key": "k-2"}).content == mismatch.content
    theirs, their_files = api.bundle_files("globex-idem", creator="globex")
    with api.client("globex") as globex:
        assert upload(globex, theirs, their_files, **{"Idempotency-Key": "k-1"}).status_code == 202
    assert not api.inbox("acme-idem-2").exists()


def test_twenty_concurrent_identical_posts_create_one_avatar(api):
    manifest, files = api.bundle_files("acme-burst")
    key = uuid.uuid4().hex

    def post(_):
        with api.client() as client:
            return upload(client, manifest, files, **{"Idempotency-Key": key})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers if a.status_code != 202]
    assert len({a.content for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    archived = api.home / "archive" / "uploads"
    assert not list(archived.glob("acme-burst-*")) if archived.exists() else True  # written once, never replaced


# --------------------------------------------------------------------------- renders and revoke


def test_a_render_request_is_accepted_and_pollable(api):
    manifest, files = api.bundle_files("acme-render")
    with api.client() as client:
        assert upload(client, manifest, files).status_code == 202
        assert_problem(client.post("/v1/avatars/acme-render/renders", content=b"slug=x",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
                       "unsupported-media-type")
        assert_problem(client.post("/v1/avatars/acme-render/renders", json={"slug": "promo", "script": " "}), 422,
                       "invalid-render-request")
        accepted = client.post("/v1/avatars/acme-render/renders", json={"slug": "promo", "script": "Hello there. Welcome."})
        assert accepted.status_code == 202, accepted.text
        render = client.get(accepted.json()["status_url"])
        assert render.status_code == 200, render.text
        assert render.json() | {"render_id": None} == {
            "render_id": None, "avatar_id": "acme-render", "slug": "promo", "route": "single_scene", "state": "accepted",
            "stage": None, "run_id": None, "progress_percent": 0.0, "eta_seconds": None, "error": None, "package": None,
        }
        assert (api.home / "inbox" / "outputs" / "acme-render" / "promo.json").is_file()
        assert_problem(client.get("/v1/renders/rnd_nonsense"), 404, "not-found")
        assert_problem(client.get("/v1/avatars/acme-render/nothing-here"), 404, "not-found")


def test_revoke_answers_410_to_the_owner_and_404_to_others(api):
    manifest, files = api.bundle_files("acme-gone")
    with api.client() as client, api.client("globex") as globex:
        assert upload(client, manifest, files).status_code == 202
        revoked = client.delete("/v1/avatars/acme-gone")
        assert revoked.status_code == 202, revoked.text
        assert revoked.json()["state"] == "revoked"
        assert_problem(client.get("/v1/avatars/acme-gone"), 410, "avatar-revoked")
        assert_problem(globex.get("/v1/avatars/acme-gone"), 404, "not-found")
        assert_problem(upload(client, manifest, files), 410, "avatar-revoked")
    assert not api.inbox("acme-gone").exists()
    with api.client("acme-reader") as reader, api.client("globex") as globex:
        mine = reader.get("/v1/events").json()["events"]
        assert {"type": "revoked", "avatar_id": "acme-gone"} in [{k: e[k] for k in ("type", "avatar_id")} for e in mine]
        assert all(e["avatar_id"] != "acme-gone" for e in globex.get("/v1/events").json()["events"])
        last = mine[-1]["event_id"]
        assert reader.get("/v1/events", params={"after": last}).json() == {"events": [], "next_after": None}


def test_approvals_and_retry_are_refused_until_there_is_something_to_decide(api):
    manifest, files = api.bundle_files("acme-wait")
    with api.client() as client, api.client("globex") as globex:
        assert upload(client, manifest, files).status_code == 202
        render_id = client.post("/v1/avatars/acme-wait/renders", json={"slug": "promo", "script": "Hello. Welcome."}
                                ).json()["render_id"]
        decision = {"job_type": "video_asset_approval", "decision": "approve"}
        assert_problem(globex.post(f"/v1/renders/{render_id}/approvals", json=decision), 404, "not-found")
        assert_problem(client.post(f"/v1/renders/{render_id}/approvals", json=decision), 422, "invalid-approval")
        assert_problem(client.post(f"/v1/renders/{render_id}/approvals", json={**decision, "job_type": "bless"}), 422,
                       "invalid-request")
        assert_problem(client.post(f"/v1/renders/{render_id}/approvals", content=b"\xff{",
                                   headers={"Content-Type": "application/json"}), 422, "invalid-request")
        assert_problem(client.post(f"/v1/renders/{render_id}/retry"), 409, "nothing-to-retry")


def test_regenerate_is_refused_until_it_names_an_asset_partition_of_one_s_own_avatar(api):
    manifest, files = api.bundle_files("acme-regen")
    with api.client() as client, api.client("globex") as globex, api.client("acme-reader") as reader:
        assert upload(client, manifest, files).status_code == 202
        url = "/v1/avatars/acme-regen/regenerate"
        assert_problem(globex.post(url, json={"asset": "neutral_image"}), 404, "not-found")
        assert_problem(reader.post(url, json={"asset": "neutral_image"}), 403, "insufficient-scope")
        says = assert_problem(client.post(url, json={"asset": "neutral_image"}), 422, "invalid-regeneration")
        assert says["detail"] == "avatar acme-regen does not exist"  # uploaded, not yet taken by the sensor
        assert_problem(client.post(url, json={"asset": "neutral_image", "colour": "red"}), 422, "invalid-request")
        assert_problem(client.post(url, json={"asset": "neutral_image", "seed": -1}), 422, "invalid-request")
    assert not list((api.home / "approvals").glob("regenerations/*"))


def test_an_admin_token_reads_its_quotas_and_manages_its_own_tenant_s_tokens(api):
    with api.client("acme-admin") as admin, api.client() as writer, api.client("globex-admin") as other:
        assert_problem(writer.get("/v1/quotas"), 403, "insufficient-scope")
        quota = admin.get("/v1/quotas").json()
        assert quota["tenant"] == "acme" and quota["render_cap"] == 8 and quota["renders_in_flight"] == 0
        assert set(quota["actions"]) == {"upload", "render", "regenerate"}
        assert quota["actions"]["render"]["burst"] == 60 and quota["actions"]["render"]["per_hour"] == 600

        assert_problem(admin.post("/v1/tokens", json={"scopes": ["renders:read", "root"]}), 422, "invalid-token-request")
        assert_problem(admin.post("/v1/tokens", json={"scopes": ["renders:read"], "expires": "forever"}), 422,
                       "invalid-token-request")
        created = admin.post("/v1/tokens", json={"scopes": ["renders:read"], "expires": "1h"})
        assert created.status_code == 201, created.text
        new = created.json()
        reader = httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {new['token']}"}, timeout=60)
        with reader:
            assert reader.get("/v1/events").status_code == 200
            listed = admin.get("/v1/tokens").json()
            assert {t["tenant"] for t in listed} == {"acme"} and new["token_id"] in {t["token_id"] for t in listed}
            assert all("token" not in t and "secret_sha256" not in t for t in listed)
            assert new["token_id"] not in {t["token_id"] for t in other.get("/v1/tokens").json()}
            assert_problem(other.delete(f"/v1/tokens/{new['token_id']}"), 404, "not-found")
            assert reader.get("/v1/events").status_code == 200
            assert admin.delete(f"/v1/tokens/{new['token_id']}").status_code == 204
            assert_problem(reader.get("/v1/events"), 401, "unauthorized")
        says = assert_problem(admin.post("/v1/tokens", json={"scopes": ["renders:read"]},
                                         headers={"Idempotency-Key": "t1"}), 422, "invalid-request")
        assert "only a hash is stored" in says["detail"]


def test_registering_a_webhook_twice_with_one_idempotency_key_registers_it_once(api):
    hook = {"url": "http://127.0.0.1:9/once", "event_types": ["completed"]}
    with api.client("globex-admin") as admin:
        first = admin.post("/v1/webhooks", json=hook, headers={"Idempotency-Key": "hook-1"})
        again = admin.post("/v1/webhooks", json=hook, headers={"Idempotency-Key": "hook-1"})
        assert first.status_code == again.status_code == 201 and first.content == again.content
        assert [e["url"] for e in admin.get("/v1/webhooks").json()].count(hook["url"]) == 1
        assert_problem(admin.post("/v1/webhooks", json={**hook, "event_types": []}, headers={"Idempotency-Key": "hook-1"}),
                       422, "idempotency-key-reused")
        admin.delete(f"/v1/webhooks/{first.json()['endpoint_id']}")


# --------------------------------------------------------------------------- the schema


def test_the_published_schema_is_current_and_served(api):
    from avatar_assets.api.app import openapi_document

    published = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert published == openapi_document(), "regenerate: python -m avatar_assets.api.app > docs/openapi.json"
    with api.client(None) as client:
        assert client.get("/v1/openapi.json").json() == client.get("/openapi.json").json() == published
    statuses = {(path, method): set(operation["responses"]) for path, item in published["paths"].items()
                for method, operation in item.items()}
    assert statuses[("/v1/avatars", "post")] >= {"202", "401", "403", "409", "410", "413", "415", "422"}
    for (path, method), codes in statuses.items():
        assert {"401", "403"} <= codes, (path, method)
        for code in (code for code in codes if int(code) >= 400):
            content = published["paths"][path][method]["responses"][code]["content"]
            assert list(content) == ["application/problem+json"], (path, method, code)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(api):
    """`st run` (schemathesis 4) against the served schema: generated and mutated requests on every operation.
    Its token is of a tenant of its own: following the schema's links it lists its tenant's tokens and revokes them."""
    import subprocess

    from tests.servers import VENV_BIN

    fuzzer = token(api.env, "fuzzer", ALL_SCOPES + ",admin")
    done = subprocess.run(
        [str(VENV_BIN / "st"), "run", f"{api.base_url}/v1/openapi.json", "-H", f"Authorization: Bearer {fuzzer}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         "--max-examples", "10", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=api.home.parent, env=api.env,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


# --------------------------------------------------------------------------- the whole flow


@pytest.mark.slow
def test_upload_identity_render_package_through_the_api(tmp_path):
    """upload → (process) → identity ready with its gates → render → (process) → waiting for approval at lip_sync
    → approved through the API → (process) → done, 100 %, package files; the events name every stage."""
    from urllib.parse import unquote, urlparse

    env = clean_env(AVATAR_HOME=tmp_path / "home", AVATAR_UPLOAD_SETTLE_SECONDS="0")
    sample = build_sample(tmp_path / "sample" / "astronaut")
    with avatarops_serve(env=env, log_path=tmp_path / "serve.log") as server:
        api = Api(server.base_url, tmp_path / "home", env, sample)
        manifest, files = api.bundle_files("flow-ada")
        with api.client() as client:
            assert upload(client, manifest, files).status_code == 202
            assert client.get("/v1/avatars/flow-ada").json()["state"] == "accepted"
            assert avatarops("process", env=env, timeout=600).returncode == 0
            avatar = client.get("/v1/avatars/flow-ada").json()
            assert avatar["state"] == "ready", avatar
            assert avatar["identity_run"]["state"] == "done" and all(avatar["stages"].values())
            assert avatar["gates"] and all(gate["passed"] for gate in avatar["gates"].values())
            assert any(gate["numbers"] for gate in avatar["gates"].values())
            assert [image["name"] for image in avatar["images"]] == ["neutral_image", "character_sheet"]

            accepted = client.post("/v1/avatars/flow-ada/renders", json={
                "slug": "hello", "route": "approval_gated", "script": "Hello there. This video came through the job API."})
            assert accepted.status_code == 202, accepted.text
            status_url = accepted.json()["status_url"]
            assert client.get(status_url).json()["state"] == "accepted"
            assert avatarops("process", env=env, timeout=600).returncode == 0
            waiting = client.get(status_url).json()
            assert (waiting["state"], waiting["stage"]) == ("waiting_approval", "lip_sync"), waiting
            assert 0 < waiting["progress_percent"] < 100
            decided = client.post(f"/v1/renders/{accepted.json()['render_id']}/approvals",
                                  json={"job_type": "video_asset_approval", "decision": "approve", "by": "reviewer"})
            assert decided.status_code == 202, decided.text
            assert avatarops("process", env=env, timeout=600).returncode == 0
            render = client.get(status_url).json()
            seen = {(e["type"], e["asset"]) for e in client.get("/v1/events", params={"limit": 500}).json()["events"]}
            assert ("completed", "output_package") in seen, seen

            regenerated = client.post("/v1/avatars/flow-ada/regenerate", json={"asset": "output_package", "output": "hello",
                                                                            "seed": 7})
            assert regenerated.status_code == 202, regenerated.text
            assert_problem(client.post("/v1/avatars/flow-ada/regenerate", json={"asset": "backgrounds"}), 422,
                           "invalid-regeneration")  # a video stage needs its output
            assert avatarops("process", env=env, timeout=600).returncode == 0
            runs = regeneration_runs(tmp_path / "home", regenerated.json()["regeneration_id"])
            assert [(run.status.value, run.tags["avatar/seed"]) for run in runs] == [("SUCCESS", "7")]

            render = client.get(status_url).json()  # the package is served over HTTP: the files, by the same token
            served = {}
            for item in [*render["package"], *avatar["images"]]:
                answer = client.get(item["url"])
                assert answer.status_code == 200, (item, answer.text)
                served[item["name"]] = (hashlib.sha256(answer.content).hexdigest(), answer.headers["content-type"].split(";")[0])
            video_url = next(item["url"] for item in render["package"] if item["name"] == "9x16.mp4")
            ranged = client.get(video_url, headers={"Range": "bytes=0-99"})
            served_range = (ranged.status_code, len(ranged.content))
            assert_problem(client.get(video_url.rsplit("/", 1)[0] + "/nothing.mp4"), 404, "not-found")
            with api.client("globex") as globex:
                assert_problem(globex.get(video_url), 404, "not-found")
    assert render["state"] == "done" and render["progress_percent"] == 100.0 and render["error"] is None, render
    names = {item["name"] for item in render["package"]}
    assert {"9x16.mp4", "poster", "captions.srt", "captions.vtt", "captions.ass", "rights_manifest.json"} <= names
    for item in render["package"]:
        path = Path(unquote(urlparse(item["uri"]).path))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"], item
    assert served == {item["name"]: (item["sha256"], item["media_type"]) for item in [*render["package"], *avatar["images"]]}
    assert served_range == (206, 100)


def regeneration_runs(home: Path, regeneration_id: str) -> list:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        return instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": f"regenerate:{regeneration_id}"}))


def test_a_tenant_over_its_quota_gets_429_with_retry_after(api):
    """Tenant `acme-small` may upload twice at once, once an hour after: the third is 429, nothing written;
    an idempotent replay of an accepted upload spends nothing; other tenants keep their own buckets."""
    small = token(api.env, "acme-small", ALL_SCOPES)
    assert avatarops("quotas", "set", "--tenant", "acme-small", "--action", "upload", "--burst", "2", "--per-hour",
                     "1", env=api.env).returncode == 0
    assert avatarops("quotas", "set", "--tenant", "acme-small", "--action", "upload", "--burst", "0", "--per-hour",
                     "1", env=api.env).returncode == 2
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {small}"}, timeout=60) as client:
        for index in range(2):
            manifest, files = api.bundle_files(f"small-{index}", creator="acme-small")
            assert upload(client, manifest, files, **{"Idempotency-Key": f"q{index}"}).status_code == 202
        manifest, files = api.bundle_files("small-0", creator="acme-small")
        assert upload(client, manifest, files, **{"Idempotency-Key": "q0"}).status_code == 202  # a replay is free
        manifest, files = api.bundle_files("small-2", creator="acme-small")
        refused = upload(client, manifest, files, **{"Idempotency-Key": "q2"})
        assert_problem(refused, 429, "quota-exceeded")
        assert 3000 < int(refused.headers["retry-after"]) <= 3600
        assert not api.inbox("small-2").exists()
        assert_problem(upload(client, manifest, files, **{"Idempotency-Key": "q2"}), 429, "quota-exceeded")  # not kept
    listed = avatarops("quotas", "list", "--tenant", "acme-small", env=api.env).stdout
    assert "acme-small upload: 2 at once, 1 per hour (own)" in listed


# --------------------------------------------------------------------------- webhooks


class Receiver:
    """A webhook receiver on loopback that records what it gets; `delay` and `status` make it slow or failing."""

    def __init__(self, delay: float = 0.0, status: int = 204):
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                time.sleep(delay)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]


def test_each_tenant_gets_its_own_events_signed_and_a_failing_receiver_delays_no_one_else(api):
    from standardwebhooks import Webhook

    good, bad = Receiver(), Receiver(delay=3.0, status=500)
    with api.client("acme-admin") as acme_admin, api.client("globex-admin") as globex_admin, \
            api.client() as acme, api.client("globex") as globex:
        assert_problem(acme.post("/v1/webhooks", json={"url": good.url}), 403, "insufficient-scope")
        created = acme_admin.post("/v1/webhooks", json={"url": good.url, "event_types": ["revoked"]})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        assert globex_admin.post("/v1/webhooks", json={"url": bad.url}).status_code == 201
        listed = acme_admin.get("/v1/webhooks").json()
        assert [e["url"] for e in listed] == [good.url] and "secret" not in listed[0]
        assert_problem(globex_admin.delete(f"/v1/webhooks/{listed[0]['endpoint_id']}"), 404, "not-found")
        for client, tenant in ((globex, "globex"), (acme, "acme")):
            manifest, files = api.bundle_files(f"{tenant}-hook", creator=tenant)
            assert upload(client, manifest, files).status_code == 202
            assert client.delete(f"/v1/avatars/{tenant}-hook").status_code == 202
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e["avatar_id"] == "acme-hook" for e in good.events()):
            time.sleep(0.5)
        assert any(e["avatar_id"] == "acme-hook" for e in good.events()), good.events()
        assert all(e["avatar_id"].startswith("acme") and e["type"] == "revoked" for e in good.events())
        for headers, body in good.received:
            Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})
        assert any(e["avatar_id"] == "globex-hook" for e in bad.events()) or len(bad.received) >= 1
        assert all(not e["avatar_id"].startswith("acme") for e in bad.events())
        assert acme_admin.delete(f"/v1/webhooks/{listed[0]['endpoint_id']}").status_code == 204
    good.server.shutdown()
    bad.server.shutdown()


@pytest.mark.parametrize("url, says", [
    ("http://example.com/hook", "expected https"),
    ("https://127.0.0.1/hook", "non-public"),
    ("https://localhost/hook", "non-public"),
    ("https://10.1.2.3/hook", "non-public"),
])
def test_webhook_urls_must_be_https_and_public(monkeypatch, url, says):
    from avatar_assets.api.problems import ApiProblem
    from avatar_assets.api.webhooks import check_url

    monkeypatch.delenv("AVATAR_WEBHOOK_ALLOW_PRIVATE", raising=False)
    with pytest.raises(ApiProblem) as refused:
        check_url(url)
    assert refused.value.problem.type == PROBLEM + "invalid-webhook" and says in refused.value.problem.detail


def test_every_delivery_connects_to_the_address_it_checked_and_refuses_a_private_one(home, monkeypatch):
    """DNS rebinding: a host public at registration may resolve into the internal network later. Each delivery
    resolves and checks again (a loopback receiver is refused before anything is sent, the reason kept in the
    retry state), and connects to the address it checked: a host name that resolves nowhere still reaches the
    pinned address, with its own name in the Host header."""
    from avatar_assets.api.webhooks import public_address
    from avatar_assets.pipeline import events
    from tests.regen_helpers import webhook

    monkeypatch.delenv("AVATAR_WEBHOOK_ALLOW_PRIVATE", raising=False)
    event = events.emit(home.store, "accepted", avatar_id="ava", asset="source_upload", dedupe_key="ava:pin")
    signer = events.Signer.from_secret("whsec_" + "A" * 40)
    with webhook() as hook:
        report = events.deliver(home.store, hook.url, signer, settle_s=0, pin=public_address)
        assert (report.delivered, report.failed, hook.attempts) == (0, 1, 0)
        retry = events.DeliveryState.load(home.store).retrying[event.event_id]
        assert "resolves to a non-public address (127.0.0.1)" in retry.last_error

        unresolvable = hook.url.replace("127.0.0.1", "receiver.invalid")
        sent = events.post(unresolvable, b"{}", event.event_id, signer, at=time.time(), address="127.0.0.1")
        assert sent.error is None and hook.attempts == 1
        assert hook.posts[0].headers["host"] == f"receiver.invalid:{hook.port}"


def test_uploads_still_arriving_survive_the_scratch_reaper(home):
    """`status` and `process` remove every scratch folder no active run owns; an upload's staging is not one."""
    from avatar_assets import settings
    from avatar_assets.ops.run_health import reap

    staging = settings.api_home() / "uploads" / "arriving"
    staging.mkdir(parents=True)
    reap(home.instance)
    assert staging.is_dir()
