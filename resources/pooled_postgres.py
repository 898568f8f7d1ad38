"""dagster-postgres storage that keeps its connections pooled in every process, not only the webserver.

Outside dagster-webserver, dagster-postgres opens and closes a connection for every query (`NullPool`).
The daemon's automation tick over 200 avatars x 50 outputs makes thousands of queries: 7.7 s per tick
that way, 0.95 s pooled (`bench/automation_tick.py`). `optimize_for_webserver` is dagster-postgres's
own pooled mode (one kept connection per storage, overflow for the daemon's threads); this class turns
it on when the instance loads, without a statement timeout (a daemon query over a large backfill may
legitimately run long). Configured in `deploy/dagster*.yaml` as `storage: custom:` with the same
`postgres_db` block as `storage: postgres:`.

A kept connection can die under the pool (Postgres restarted or failed over, `pg_terminate_backend`, an
idle timeout in a proxy); the next query on it would fail, in a run worker losing the event it wrote. So
the pool pings each connection as it hands it out (SQLAlchemy's `pool_pre_ping`) and replaces a dead one.
Dagster 1.13 does not expose that knob (dagster issue #33879, which names subclassing the storage as the
way; PR #33961 turns it on by default for the webserver), so this class sets it on the pools it makes.
`tests/test_cluster.py::test_postgres_dropping_every_connection_mid_run_is_survived` keeps it.
"""

from __future__ import annotations

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

POOL_RECYCLE_S = 3600
MAX_OVERFLOW = 20


class PooledPostgresStorage(DagsterPostgresStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledPostgresStorage:  # ty: ignore[invalid-method-override]
        storage = cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.optimize_for_webserver(statement_timeout=0, pool_recycle=POOL_RECYCLE_S, max_overflow=MAX_OVERFLOW)
            part._engine.pool._pre_ping = True  # create_engine(pool_pre_ping=True), on the engine Dagster made
        return storage
