"""Postgres mode: the production instance config validates, and a headless identity run of the sample
avatar stores its runs, events, checks and partitions in PostgreSQL (a fresh database per test run).

The server is 127.0.0.1:5432 by default (AVATAR_TEST_PG_HOST / _PORT / _USER / _PASSWORD override).
Without a reachable server the Postgres tests skip, unless AVATAR_REQUIRE_POSTGRES=1 makes that a failure.
"""

import os
import shutil
import uuid

import dagster as dg
import pytest

from tests.servers import (
    IDENTITY_ASSETS,
    IDENTITY_CHECKS,
    REPO_ROOT,
    build_sample,
    clean_env,
    upload_and_process,
)

DEPLOY = REPO_ROOT / "deploy"

PG = {
    "host": os.environ.get("AVATAR_TEST_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("AVATAR_TEST_PG_PORT", "5432")),
    "user": os.environ.get("AVATAR_TEST_PG_USER", "postgres"),
    "password": os.environ.get("AVATAR_TEST_PG_PASSWORD", ""),
}


def _connect(dbname: str):
    import psycopg2

    return psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)


@pytest.fixture(scope="module")
def pg_database():
    """A database of its own (`avatar_test_<random>`), dropped afterwards even if the test failed."""
    import psycopg2

    try:
        admin = _connect("postgres")
    except psycopg2.OperationalError as error:
        message = f"no PostgreSQL at {PG['host']}:{PG['port']} as {PG['user']}: {error}".strip()
        if os.environ.get("AVATAR_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    admin.autocommit = True
    name = f"avatar_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def pg_env(db_name: str) -> dict[str, str]:
    """The variables deploy/dagster*.yaml read."""
    return {
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_DB": db_name,
        "DAGSTER_PG_USERNAME": PG["user"],
        "DAGSTER_PG_PASSWORD": PG["password"],
    }


def test_deploy_configs_validate(monkeypatch):
    """deploy/dagster.yaml is a valid 1.13 instance config: storage, ECS launcher, queue, pools, retries."""
    import yaml
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresRunStorage

    for key, value in {
        **pg_env("dagster"),
        "DAGSTER_COMPUTE_LOG_BUCKET": "logs",
        "AWS_REGION": "eu-west-1",
        "DAGSTER_ECS_RUN_TASK_DEFINITION": "avatar-run-gpu:3",
        "DAGSTER_ECS_CLUSTER": "avatar",
    }.items():
        monkeypatch.setenv(key, value)

    config, _ = dagster_instance_config(str(DEPLOY), "dagster.yaml")
    for section, expected in [
        ("run_launcher", EcsRunLauncher),
        ("compute_logs", S3ComputeLogManager),
        ("run_coordinator", dg.QueuedRunCoordinator),
    ]:
        entry = config[section]
        assert entry["class"] == expected.__name__
        result = process_config(resolve_to_config_type(expected.config_type()), entry.get("config") or {})
        assert result.success, f"{section}: {result.errors}"
    custom = config["storage"]["custom"]
    assert (custom["module"], custom["class"]) == ("resources.pooled_postgres", "PooledPostgresStorage")
    storage = process_config(resolve_to_config_type(PostgresRunStorage.config_type()), custom["config"])
    assert storage.success, storage.errors
    assert storage.value["postgres_db"]["port"] == 5432
    assert storage.value["postgres_db"]["scheme"] == "postgresql+psycopg2", "pinned to the driver dagster-postgres ships"
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1
    assert config["concurrency"]["pools"]["granularity"] == "op"
    assert config["concurrency"]["runs"]["tag_concurrency_limits"]

    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert raw["storage"]["custom"]["config"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}, "no inline secret"
    assert "K8sRunLauncher" in (DEPLOY / "dagster.yaml").read_text(), "the Kubernetes alternative is documented inline"

    local, _ = dagster_instance_config(str(DEPLOY), "dagster.local-postgres.yaml")
    assert "run_launcher" not in local, "the local Postgres config keeps the default run launcher"
    assert local["storage"] == config["storage"] | {"custom": {**custom, "config": local["storage"]["custom"]["config"]}}


def test_identity_run_is_stored_in_postgres(pg_database, tmp_path, monkeypatch):
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    shutil.copyfile(DEPLOY / "dagster.local-postgres.yaml", dagster_home / "dagster.yaml")
    avatar_home = tmp_path / "avatar-home"
    env = clean_env(
        AVATAR_HOME=avatar_home,
        DAGSTER_HOME=dagster_home,
        AVATAR_UPLOAD_SETTLE_SECONDS="0",
        **pg_env(pg_database),
    )
    bundle = build_sample(tmp_path / "bundle" / "astronaut")

    report = upload_and_process(bundle, env=env)

    assert report["ok"], report
    [run] = [r for r in report["runs"] if r["job"] == "build_identity"]
    assert run["partition"] == "astronaut" and run["success"]

    # Nothing was written to SQLite: all instance state is in Postgres.
    assert sorted(p.name for p in [*dagster_home.rglob("*.db"), *avatar_home.rglob("*.db")]) == []

    for key, value in pg_env(pg_database).items():
        monkeypatch.setenv(key, value)
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        # resources/pooled_postgres.py: pooled connections outside the webserver too.
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            assert type(storage._engine.pool).__name__ == "QueuePool", type(storage).__name__
        assert instance.get_ref().storage_data.class_name == "PooledPostgresStorage"  # run workers load the same

        stored = instance.get_run_by_id(run["run_id"])
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
        assert stored.job_name == "build_identity" and stored.tags["dagster/partition"] == "astronaut"
        assert stored.tags["avatar"] == "astronaut" and stored.tags["dagster/sensor_name"] == "avatar_upload_sensor"
        assert instance.get_dynamic_partitions("avatars") == ["astronaut"]

        for asset in IDENTITY_ASSETS:
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None, f"{asset} has no materialization in Postgres"
            assert event.run_id == run["run_id"] and event.dagster_event.partition == "astronaut"
        evaluations = [
            record.event_log_entry.dagster_event.event_specific_data
            for record in instance.get_records_for_run(
                run["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
        ]
        assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == IDENTITY_CHECKS
        assert all(e.passed for e in evaluations), [(e.check_name, e.description) for e in evaluations if not e.passed]
    finally:
        instance.dispose()

    # And the rows are really there, read straight from the database.
    connection = _connect(pg_database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT run_id, status FROM runs")
            assert (run["run_id"], "SUCCESS") in cursor.fetchall()
            cursor.execute(
                "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
            keys = {row[0] for row in cursor.fetchall()}
            assert keys == {dg.AssetKey(a).to_string() for a in IDENTITY_ASSETS}
            cursor.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'avatars'")
            assert cursor.fetchall() == [("astronaut",)]
    finally:
        connection.close()


def test_dagster_docs_postgres_block_as_written(pg_database, tmp_path):
    """The `storage: postgres: postgres_db:` block from Dagster's docs, no scheme. SQLAlchemy 2.1 reads the
    plain postgresql:// URL as psycopg 3, on which dagster-postgres's `NOTIFY run_events, :id` is a syntax
    error (psycopg 3 binds parameters on the server); SQLAlchemy 2.0 (pinned) reads it as psycopg2."""
    import yaml

    dagster_home = tmp_path / "docs-home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump({
        "storage": {"postgres": {"postgres_db": {
            "hostname": PG["host"],
            "username": PG["user"],
            "password": PG["password"],
            "db_name": pg_database,
            "port": PG["port"],
        }}},
    }))

    @dg.asset
    def written() -> int:
        return 1

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        import sqlalchemy

        driver = instance.run_storage._engine.dialect.driver
        assert driver == "psycopg2", f"SQLAlchemy {sqlalchemy.__version__} reads postgresql:// as {driver}; the lock pins 2.0"
        result = dg.materialize([written], instance=instance)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(dg.AssetKey("written")) is not None
    finally:
        instance.dispose()
