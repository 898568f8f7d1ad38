"""The job API's own state: tokens, idempotency keys, quotas and webhook endpoints, in `AVATAR_API_DATABASE_URL` (default SQLite under
`AVATAR_HOME/api/`; Postgres in a schema of its own, so it never meets Dagster's tables or Alembic history).

Every command that touches it calls `open_state()`, which creates or upgrades the schema with Alembic under a
lock (an flock beside a SQLite file, a Postgres advisory lock), so two commands starting together both work.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from avatar_assets import settings

DATABASE_URL_ENV = "AVATAR_API_DATABASE_URL"
SCHEMA_ENV = "AVATAR_API_DATABASE_SCHEMA"
DEFAULT_SCHEMA = "avatar_api"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK_ID = 0x617661746172  # "avatar": the Postgres advisory lock the schema upgrade holds


class Base(DeclarativeBase):
    pass


class ApiToken(Base):
    """A bearer token: `token_id` is public (it names the token in `tokens list`), only the secret's hash is kept."""

    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.String(128), index=True)
    scopes: Mapped[str] = mapped_column(sa.String(256))  # comma-separated, sorted
    secret_sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)


class IdempotentRequest(Base):
    """The first request a tenant sent with an Idempotency-Key, and (once answered) the answer it got."""

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)  # None while in flight
    media_type: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    body: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)


class QuotaBucket(Base):
    """A tenant's token bucket for one action class: `tokens` as of `updated_at` (epoch seconds)."""

    __tablename__ = "quota_buckets"

    tenant: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[float] = mapped_column(sa.Float)


class QuotaLimit(Base):
    """A tenant's own limit for one action class (without one, the default of `quotas.DEFAULT_LIMITS`)."""

    __tablename__ = "quota_limits"

    tenant: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    burst: Mapped[int] = mapped_column(sa.Integer)
    per_hour: Mapped[float] = mapped_column(sa.Float)


class WebhookEndpoint(Base):
    """A tenant's webhook receiver. The secret signs deliveries, so it is kept (the database is owner-only)."""

    __tablename__ = "webhook_endpoints"

    endpoint_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.String(128), index=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    event_types: Mapped[str] = mapped_column(sa.String(256))  # comma-separated; empty: every type
    secret: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every moment stored here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def database_url() -> str:
    configured = os.environ.get(DATABASE_URL_ENV, "").strip()
    return configured or f"sqlite:///{settings.api_home() / 'state.db'}"


def create_state_engine(url: str | None = None) -> sa.Engine:
    url = url or database_url()
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise settings.ConfigurationError(f"{DATABASE_URL_ENV}={url!r}: expected a SQLAlchemy database URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            folder = Path(parsed.database).parent
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)  # token hashes and tenants' request bodies: owner-only, like the rest of the home
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        schema = postgres_schema()
        engine = sa.create_engine(url, pool_pre_ping=True)
        sa.event.listen(engine, "connect", lambda connection, _record: _postgres_search_path(connection, schema))
        return engine
    raise settings.ConfigurationError(f"{DATABASE_URL_ENV}={url!r}: expected sqlite:///… or postgresql://…")


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def postgres_schema() -> str:
    """The Postgres schema holding the API's tables and its own Alembic history, apart from Dagster's."""
    schema = os.environ.get(SCHEMA_ENV, "").strip() or DEFAULT_SCHEMA
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise settings.ConfigurationError(f"{SCHEMA_ENV}={schema!r}: expected a lower-case SQL identifier")
    return schema


def _postgres_search_path(connection, schema: str) -> None:
    cursor = connection.cursor()
    cursor.execute(f'SET search_path TO "{schema}"')
    cursor.close()
    connection.commit()


def migrate(engine: sa.Engine) -> None:
    """Create or upgrade the schema to the newest migration; concurrent callers wait for each other."""
    from alembic import command
    from alembic.config import Config

    with _migration_lock(engine) as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


@contextlib.contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{postgres_schema()}"'))
            connection.commit()  # a session-level lock: it outlives the transaction, until unlocked
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                connection.commit()
        return
    database = engine.url.database
    lock_path = Path(f"{database}.migrate.lock") if database and database != ":memory:" else None
    with contextlib.ExitStack() as stack:
        if lock_path is not None:
            handle = stack.enter_context(open(lock_path, "a"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        connection = stack.enter_context(engine.connect())
        yield connection


def open_state(url: str | None = None) -> sessionmaker[Session]:
    """A session factory on the API's database, its schema brought up to date first."""
    engine = create_state_engine(url)
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
