"""`avatarops tokens`: a token is printed once and only its hash is kept; scopes and expiries are checked; the
API's state database is created by whichever command comes first, also when two start together (SQLite and
Postgres), and its files are owner-only."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.servers import VENV_BIN, avatarops, clean_env

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def create(env, tenant="acme", scopes="avatars:write,renders:read", *extra: str) -> str:
    done = avatarops("tokens", "create", "--tenant", tenant, "--scopes", scopes, *extra, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_token_is_shown_once_and_only_its_hash_is_kept(tmp_path):
    env = clean_env(AVATAR_HOME=tmp_path / "home")
    token = create(env, "acme", "renders:read,avatars:write", "--expires", "30d")
    token_id, secret = token.removeprefix("aat_").split(".")
    database = tmp_path / "home" / "api" / "state.db"
    stored = b"".join(path.read_bytes() for path in database.parent.glob("state.db*"))
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored

    listed = avatarops("tokens", "list", env=env)
    assert listed.returncode == 0 and secret not in listed.stdout
    assert f"{token_id} acme avatars:write,renders:read" in listed.stdout and "active" in listed.stdout

    revoked = avatarops("tokens", "revoke", token_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in avatarops("tokens", "list", "--tenant", "acme", env=env).stdout
    assert avatarops("tokens", "revoke", "nope", env=env).returncode == 2


@pytest.mark.parametrize("args, says", [
    (["--scopes", "avatars:write,root"], "unknown scope(s) root"),
    (["--scopes", "admin", "--expires", "30y"], "--expires '30y'"),
    (["--scopes", "admin", "--expires", "0d"], "n at least 1"),
])
def test_bad_token_requests_exit_2_naming_the_problem(tmp_path, args, says):
    done = avatarops("tokens", "create", "--tenant", "acme", *args, env=clean_env(AVATAR_HOME=tmp_path / "home"))
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr


def test_the_state_database_is_owner_only(tmp_path):
    home = tmp_path / "home"
    create(clean_env(AVATAR_HOME=home))
    folder = home / "api"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def start_two(env) -> list[subprocess.CompletedProcess]:
    args = [str(VENV_BIN / "avatarops"), "tokens", "create", "--tenant", "acme", "--scopes", "admin"]
    both = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=180), *p.communicate()) for p in both]


def test_two_commands_create_the_sqlite_schema_together(tmp_path):
    env = clean_env(AVATAR_HOME=tmp_path / "home")
    for done in start_two(env):
        assert done.returncode == 0, done.stderr
    assert len(avatarops("tokens", "list", env=env).stdout.strip().splitlines()) == 2


def test_two_commands_create_the_postgres_schema_together(tmp_path):
    schema = f"api_{uuid.uuid4().hex[:10]}"
    env = clean_env(AVATAR_HOME=tmp_path / "home", AVATAR_API_DATABASE_URL=POSTGRES_URL,
                    AVATAR_API_DATABASE_SCHEMA=schema)
    engine = sa.create_engine(POSTGRES_URL)
    try:
        for done in start_two(env):
            assert done.returncode == 0, done.stderr
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names(schema=schema))
            assert {"api_tokens", "idempotency_keys", "alembic_version"} <= tables
            assert connection.execute(sa.text(f'SELECT count(*) FROM "{schema}".api_tokens')).scalar() == 2
            # Dagster's own Alembic history (public.alembic_version, when a Dagster instance shares the database)
            # is never touched: the API's lives in its schema.
        assert not (tmp_path / "home" / "api").exists()
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def test_a_bad_database_url_is_named(tmp_path):
    env = clean_env(AVATAR_HOME=tmp_path / "home", AVATAR_API_DATABASE_URL="mysql://nowhere/db")
    done = avatarops("tokens", "list", env=env)
    assert done.returncode == 2 and "AVATAR_API_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr


def test_state_path_is_under_the_home(tmp_path, monkeypatch):
    from avatar_assets.api.state import database_url

    monkeypatch.setenv("AVATAR_HOME", str(tmp_path))
    monkeypatch.delenv("AVATAR_API_DATABASE_URL", raising=False)
    assert database_url() == f"sqlite:///{Path(tmp_path).resolve() / 'api' / 'state.db'}"
