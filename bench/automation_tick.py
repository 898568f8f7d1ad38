"""Automation tick at scale: one avatar changes among 200 avatars x 50 slugs with 2 000 cells built.

The code location's definitions against an instance seeded with records only: both dynamic partition
sets registered (200 avatars, 50 slugs: a 10 000-cell grid), every identity asset of every avatar and
every video stage of 2 000 cells (10 slugs per avatar) materialized with
`report_runless_asset_event`, and every blocking check recorded as passed against the materialization
it checked (as real runs leave them). Seeding is timed too. Then `dg.evaluate_automation_conditions`
(what the automation sensor runs) is timed: a cold tick without cursor, warm ticks with nothing new
(the baseline), and the tick right after one avatar changes (a new neutral_image materialization that
passed its gates), whose requests must be exactly the rest of that avatar's identity chain, and the
settle tick after that chain is materialized, whose requests must be exactly its video cells' stages
(video stages wait for the identity to settle). Repeated for a few different avatars. SQLite (a temp dir) and, when reachable, PostgreSQL (a database created and
dropped here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "automation_tick"
TARGET_TICK_S = 5.0
PG = common.PG
BATCH = 500


def parameters(quick: bool) -> dict[str, Any]:
    return {
        "avatars": 20 if quick else 200,
        "slugs": 10 if quick else 50,
        "cells_per_avatar": 3 if quick else 10,
        "warm_ticks": 2 if quick else 3,
        "changes": 1 if quick else 3,
        "sqlite_dir": _sqlite_parent(),
        "event_batch_size": BATCH,
    }


def _sqlite_parent() -> str:
    """tmpfs when there is one: SQLite fsyncs every event (about 35 ms each on this VM's disk, which
    would make seeding 30 000 events take ~17 min); the tick itself reads, from the page cache either way."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


# --------------------------------------------------------------------------- instances


@contextlib.contextmanager
def sqlite_instance(parent: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    import dagster as dg

    root = Path(tempfile.mkdtemp(prefix="avatar-bench-tick-", dir=parent))
    (root / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(root))
    try:
        yield instance, {"storage": "sqlite", "dir": str(root)}, None
    finally:
        instance.dispose()
        shutil.rmtree(root, ignore_errors=True)


def postgres_reachable() -> str | None:
    """None when a server answers, else why not."""
    try:
        common.pg_connect("postgres").close()
        return None
    except Exception as error:  # noqa: BLE001 - any failure to connect means "no Postgres here"
        return f"{type(error).__name__}: {str(error).strip()[:200]}"


@contextlib.contextmanager
def postgres_instance() -> Iterator[tuple[Any, dict[str, Any]]]:
    import dagster as dg

    with common.postgres_database("avatar_bench") as name:
        root = Path(tempfile.mkdtemp(prefix="avatar-bench-tick-pg-"))
        (root / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + common.postgres_storage_yaml(name))
        opened: list[Any] = []

        def reopen():
            """A fresh instance on the same database, as the daemon opens it."""
            opened.append(dg.DagsterInstance.from_config(str(root)))
            return opened[-1]

        try:
            yield reopen(), {"storage": "postgres", "database": name, "host": f"{PG['host']}:{PG['port']}"}, reopen
        finally:
            for instance in opened:
                instance.dispose()
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- seeding


def _supports_batch(instance) -> bool:
    """Only storages that override store_event_batch write a batch in one statement (Postgres does;
    SQLite falls back to one write per event)."""
    from dagster._core.storage.event_log.base import EventLogStorage

    storage = instance.event_log_storage
    return type(storage).store_event_batch is not EventLogStorage.store_event_batch


def seed_materializations(instance, items: list[tuple[Any, str]]) -> dict[str, Any]:
    """Report a materialization for every (asset key, partition): `report_runless_asset_event`, or
    Dagster's own batch writer (`DAGSTER_EVENT_BATCH_SIZE`) where the storage has a real batch insert."""
    import dagster as dg
    from dagster._core.events import (
        DagsterEvent,
        DagsterEventBatchMetadata,
        DagsterEventType,
        StepMaterializationData,
    )
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    started = time.perf_counter()
    if _supports_batch(instance):
        method = f"instance.report_dagster_event with DAGSTER_EVENT_BATCH_SIZE={BATCH} (store_event_batch)"
        previous = os.environ.get("DAGSTER_EVENT_BATCH_SIZE")
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = str(BATCH)
        try:
            # One asset key per batch: the batch insert updates the asset's summary row from the batch's
            # last event only (Dagster batches the events of one step, which share a key).
            by_key: dict[Any, list[str]] = {}
            for key, partition in items:
                by_key.setdefault(key, []).append(partition)
            for key, partitions in by_key.items():
                for offset in range(0, len(partitions), BATCH):
                    chunk = partitions[offset:offset + BATCH]
                    batch_id = uuid.uuid4().hex
                    for index, partition in enumerate(chunk):
                        event = DagsterEvent(
                            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                            event_specific_data=StepMaterializationData(
                                dg.AssetMaterialization(asset_key=key, partition=partition)),
                            job_name=RUNLESS_JOB_NAME,
                        )
                        instance.report_dagster_event(
                            event, run_id=RUNLESS_RUN_ID,
                            batch_metadata=DagsterEventBatchMetadata(batch_id, index == len(chunk) - 1),
                        )
        finally:
            if previous is None:
                os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
            else:
                os.environ["DAGSTER_EVENT_BATCH_SIZE"] = previous
    else:
        method = "instance.report_runless_asset_event, one write per event (no batch insert in this storage)"
        for offset, (key, partition) in enumerate(items):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))
            if offset and offset % 5000 == 0:
                say(f"    {offset} materializations ({offset / (time.perf_counter() - started):.0f}/s)")
    seconds = time.perf_counter() - started
    return {"events": len(items), "seconds": seconds, "events_per_s": len(items) / seconds, "method": method}


def latest_materializations(instance, key) -> dict[str, Any]:
    """partition -> latest materialization record of `key` (paged through the event log)."""
    import dagster as dg

    latest: dict[str, Any] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=10_000, cursor=cursor,
                                                 ascending=True)
        for record in result.records:
            latest[record.partition_key] = record
        if not result.has_more:
            return latest
        cursor = result.cursor


def check_evaluation(check_key, partition: str, record):
    """A passed blocking check that targets exactly `record` (the partition's latest materialization):
    partitioned check state counts a check as current only when it names that storage id."""
    import dagster as dg
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    return dg.AssetCheckEvaluation(
        asset_key=check_key.asset_key, check_name=check_key.name, passed=True, partition=partition, blocking=True,
        severity=dg.AssetCheckSeverity.ERROR,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp),
    )


def seed_checks(instance, check_keys) -> dict[str, Any]:
    started = time.perf_counter()
    evaluations = []
    for check_key in check_keys:
        for partition, record in latest_materializations(instance, check_key.asset_key).items():
            evaluations.append(check_evaluation(check_key, partition, record))
    for evaluation in evaluations:
        instance.report_runless_asset_event(evaluation)
    seconds = time.perf_counter() - started
    return {"events": len(evaluations), "seconds": seconds, "events_per_s": len(evaluations) / seconds,
            "method": "instance.report_runless_asset_event(AssetCheckEvaluation), one per event"}


def report_change(instance, avatar: str, check_keys, asset: str = "neutral_image") -> None:
    """asset[avatar] materialized again and its blocking checks passed on it, as a real run leaves it.
    The check evaluations carry a run id: a second run-less evaluation of the same check and partition
    violates the unique index of asset_check_executions (asset_key, check_name, run_id, partition)."""
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType

    key = dg.AssetKey(asset)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=avatar))
    record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[avatar]),
                                             limit=1).records[0]
    run_id = str(uuid.uuid4())
    for check_key in check_keys:
        if check_key.asset_key == key:
            instance.report_dagster_event(
                DagsterEvent(event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
                             event_specific_data=check_evaluation(check_key, avatar, record), job_name="__bench__"),
                run_id=run_id,
            )


@contextlib.contextmanager
def memoized_dynamic_partitions(instance) -> Iterator[dict[str, int]]:
    """What-if: `instance.get_dynamic_partitions` answered from memory within one tick. Each
    evaluation calls it hundreds of times while serialising the cursor (not through the tick's
    caching queryer)."""
    original = instance.get_dynamic_partitions
    cache: dict[str, Any] = {}
    calls = {"calls": 0}

    def cached(partitions_def_name: str):
        calls["calls"] += 1
        if partitions_def_name not in cache:
            cache[partitions_def_name] = original(partitions_def_name)
        return cache[partitions_def_name]

    instance.get_dynamic_partitions = cached
    try:
        yield calls
    finally:
        del instance.get_dynamic_partitions


# --------------------------------------------------------------------------- the benchmark


def _requested(result, keys) -> set[tuple[str, str]]:
    return {(key.to_user_string(), str(p)) for key in keys for p in result.get_requested_partitions(key)}


def analyze(instance) -> None:
    """Postgres ANALYZE on the instance's database (planner statistics, as autovacuum keeps them)."""
    import sqlalchemy as db

    with instance.event_log_storage._engine.connect() as conn:  # the storage's own engine: same database
        conn.execute(db.text("ANALYZE"))


def bench_backend(instance, defs, params: dict[str, Any], reopen=None) -> dict[str, Any]:
    """Seed, then tick. With `reopen` (Postgres), the ticks run on a fresh instance after ANALYZE."""
    import dagster as dg

    from partitions import cell_key, split_cell

    graph = defs.resolve_asset_graph()
    keys = list(graph.toposorted_asset_keys)
    multi = {k for k in keys if isinstance(graph.get(k).partitions_def, dg.MultiPartitionsDefinition)}
    identity_keys = [k for k in keys if k not in multi]
    video_keys = [k for k in keys if k in multi]
    check_keys = sorted(graph.asset_check_keys, key=lambda c: (c.asset_key.to_user_string(), c.name))
    avatars = [f"avatar-{i:03d}" for i in range(params["avatars"])]
    slugs = [f"campaign-{j:02d}" for j in range(params["slugs"])]
    per = params["cells_per_avatar"]
    cells = {a: [slugs[(i * 7 + k * (len(slugs) // per)) % len(slugs)] for k in range(per)] for i, a in enumerate(avatars)}

    partitions_s, _ = common.timed(lambda: (instance.add_dynamic_partitions("avatars", avatars),
                                            instance.add_dynamic_partitions("outputs", slugs)))
    # Upstream before downstream, asset by asset (as runs would leave them, and batchable by key).
    items = [(k, a) for k in identity_keys for a in avatars]
    items += [(k, cell_key(a, s)) for k in video_keys for a in avatars for s in cells[a]]
    say(f"  seeding {len(items)} materializations")
    mats = seed_materializations(instance, items)
    say(f"  {mats['seconds']:.1f} s ({mats['events_per_s']:.0f}/s); seeding blocking-check evaluations")
    checks = seed_checks(instance, check_keys)
    say(f"  {checks['seconds']:.1f} s ({checks['events_per_s']:.0f}/s)")
    analyze_s = None
    if reopen is not None:
        instance = reopen()
        # A bulk load into a fresh database leaves the planner without statistics (autovacuum has not
        # analysed yet): the check-state query then takes ~0.6 s per check instead of ~10 ms. A database
        # in service is analysed, so the ticks are measured after ANALYZE.
        analyze_s, _ = common.timed(lambda: analyze(instance))
        say(f"  ANALYZE {analyze_s:.2f} s")

    def tick(cursor):
        started = time.perf_counter()
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return time.perf_counter() - started, result

    cold_s, result = tick(None)
    cold_requested = _requested(result, keys)
    say(f"  cold tick {cold_s:.2f} s, {len(cold_requested)} requested")
    cursor = result.cursor
    warm = []
    for _ in range(params["warm_ticks"]):
        seconds, result = tick(cursor)
        cursor = result.cursor
        warm.append({"seconds": seconds, "requested": len(_requested(result, keys))})
    say("  warm ticks " + ", ".join(f"{w['seconds']:.2f}" for w in warm) + " s")

    downstream, frontier = set(), [dg.AssetKey("neutral_image")]
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child not in downstream:
                downstream.add(child)
                frontier.append(child)
    # Measured changes first; then the what-if (not the product as configured): the same change tick with
    # get_dynamic_partitions memoized.
    variants = ["measured"] * params["changes"] + ["memoized"]
    step = max(1, len(avatars) // (len(variants) + 1))
    changes, what_ifs = [], {}
    identity_downstream = [k for k in identity_keys if k in downstream]
    for n, variant in enumerate(variants):
        avatar = avatars[(n + 1) * step]
        # A change is refreshed over two ticks: the change tick asks for the rest of the avatar's identity
        # chain; once that is materialized, the settle tick asks for its video cells (they wait for the
        # identity to settle, so each stage runs once).
        expected = {(k.to_user_string(), avatar) for k in identity_downstream}
        expected_cells = {(k.to_user_string(), str(cell_key(avatar, s))) for k in downstream if k in multi for s in cells[avatar]}
        report_change(instance, avatar, check_keys)
        extra: dict[str, Any] = {}
        if variant == "memoized":
            with memoized_dynamic_partitions(instance) as memo:
                seconds, result = tick(cursor)
                warm_s, warm_result = tick(result.cursor)
            extra["get_dynamic_partitions_calls_per_tick"] = memo["calls"] / 2
        else:
            seconds, result = tick(cursor)
        got = _requested(result, keys)
        if variant == "measured":
            for asset in identity_downstream:
                report_change(instance, avatar, check_keys, asset.to_user_string())
            settle_s, settled = tick(result.cursor)
            got_cells = _requested(settled, keys)
            extra.update(settle_tick_s=settle_s, settle_requested=len(got_cells), settle_expected=len(expected_cells),
                         settle_exact=got_cells == expected_cells)
            result = settled
        cursor = (warm_result if variant != "measured" else result).cursor
        entry = {
            "avatar": avatar,
            "seconds": seconds,
            "requested": len(got),
            "expected": len(expected),
            "exact": got == expected and extra.get("settle_exact", True),
            "missing": sorted(f"{a}[{p}]" for a, p in expected - got)[:20],
            "unexpected": sorted(f"{a}[{p}]" for a, p in got - expected)[:20],
            "other_avatars_requested": sorted({split_cell(p)[0] for _, p in got} - {avatar})[:20],
            **extra,
        }
        label = {"measured": "", "memoized": " (what-if: dynamic partitions memoized)"}[variant]
        settle = (f"; settle tick {extra['settle_tick_s']:.2f} s, requested {extra['settle_requested']} "
                  f"(expected {extra['settle_expected']})" if "settle_tick_s" in extra else "")
        say(f"  change of {avatar}{label}: tick {seconds:.2f} s, requested {len(got)} (expected {len(expected)}){settle}, "
            f"exact={entry['exact']}")
        if variant == "measured":
            changes.append(entry)
        else:
            what_ifs[variant] = {**entry, "warm_tick_s": warm_s, "warm_tick_requested": len(_requested(warm_result, keys))}
            say(f"  what-if warm tick {warm_s:.2f} s")
    return {
        "grid_cells": len(avatars) * len(slugs),
        "materialized_cells": sum(len(v) for v in cells.values()),
        "register_partitions_s": partitions_s,
        "seed_materializations": mats,
        "seed_checks": checks,
        "analyze_s": analyze_s,
        "cold_tick_s": cold_s,
        "cold_tick_requested": len(cold_requested),
        "warm_ticks": warm,
        "warm_tick_median_s": median([w["seconds"] for w in warm]),
        "change_ticks": changes,
        "change_tick_median_s": median([c["seconds"] for c in changes]),
        "change_tick_max_s": max(c["seconds"] for c in changes),
        "change_vs_warm_ratio": ratio(median([c["seconds"] for c in changes]), median([w["seconds"] for w in warm])),
        "all_changes_exact": all(c["exact"] for c in changes),
        "what_if": what_ifs,
        "example_request": sorted(f"{a}[{p}]" for a, p in expected | expected_cells)[:60],
    }


def run(opts) -> dict[str, Any]:
    params = parameters(opts.quick)
    notes = [
        (f"SQLite instance under {params['sqlite_dir']}: SQLite fsyncs every event write (~35 ms per event on this "
        "VM's disk), which would make seeding take ~17 min; the ticks read from the page cache either way."),
        ("Check evaluations are seeded with target_materialization_data naming the checked materialization: "
        "partitioned check state counts a check as passed only when it targets the latest storage id."),
        ("The change's check evaluations carry a run id: a second run-less evaluation of the same check and "
        "partition violates the unique index on asset_check_executions (asset_key, check_name, run_id, partition)."),
        ("Postgres uses the deployed storage (resources/pooled_postgres.py: pooled connections); ticks run on a "
        "fresh instance, as the daemon's, after ANALYZE (without planner statistics the check-state query of a "
        "freshly bulk-loaded database takes ~0.6 s per check, ~5 s per tick). what_if entries are not the "
        "product as configured."),
    ]
    backends: dict[str, Any] = {}
    with common.workdir(NAME, keep=opts.keep) as work:
        common.activate_home(work / "home")
        defs = common.load_definitions()
        say(f"SQLite instance under {params['sqlite_dir']}")
        with sqlite_instance(params["sqlite_dir"]) as (instance, info, reopen):
            backends["sqlite"] = {**info, **bench_backend(instance, defs, params, reopen)}
        why_not = "skipped (--no-postgres)" if opts.no_postgres else postgres_reachable()
        if why_not is None:
            say(f"PostgreSQL instance on {PG['host']}:{PG['port']}")
            with postgres_instance() as (instance, info, reopen):
                backends["postgres"] = {**info, **bench_backend(instance, defs, params, reopen)}
        else:
            notes.append(f"PostgreSQL not measured: {why_not}")
            say(notes[-1])
    exact = all(b["all_changes_exact"] for b in backends.values())
    targets = {
        f"change_tick_s_{name}": {"op": "<=", "limit": TARGET_TICK_S, "value": b["change_tick_max_s"],
                                  "met": b["change_tick_max_s"] <= TARGET_TICK_S}
        for name, b in backends.items()
    }
    targets["requests_exactly_downstream"] = {"op": "==", "limit": True, "value": exact, "met": exact}
    return {
        "parameters": params,
        "figures": {"backends": backends},
        "targets": targets,
        "baseline": "warm tick with nothing changed, same instance, same run",
        "notes": notes,
    }


def summary(result: dict[str, Any]) -> list[str]:
    p = result["parameters"]
    lines = [f"{p['avatars']} avatars x {p['slugs']} slugs, {p['cells_per_avatar']} cells per avatar materialized"]
    for name, b in result["figures"]["backends"].items():
        m, c = b["seed_materializations"], b["seed_checks"]
        changes = b["change_ticks"]
        lines += [
            (f"{name}: seeding {m['events']} materializations {m['seconds']:.1f} s ({m['events_per_s']:.0f}/s), "
            f"{c['events']} check evaluations {c['seconds']:.1f} s ({c['events_per_s']:.0f}/s)"),
            (f"  cold tick {b['cold_tick_s']:.2f} s ({b['cold_tick_requested']} requested); warm tick median "
            f"{b['warm_tick_median_s']:.2f} s; tick after a change median {b['change_tick_median_s']:.2f} s, "
            f"max {b['change_tick_max_s']:.2f} s (target <= {TARGET_TICK_S}) -> {b['change_vs_warm_ratio']:.2f}x warm"),
            "  requests per change: " + "; ".join(
                f"{c['avatar']} {c['requested']}/{c['expected']} {'exact' if c['exact'] else 'NOT exact'}" for c in changes),
        ]
        w = b.get("what_if", {}).get("memoized")
        if w:
            lines.append(
                f"  what-if, get_dynamic_partitions memoized per tick ({w['get_dynamic_partitions_calls_per_tick']:.0f} "
                f"calls/tick otherwise hit storage): change tick {w['seconds']:.2f} s, warm tick {w['warm_tick_s']:.2f} s "
                f"({'exact' if w['exact'] else 'NOT exact'})")
    return lines
