"""Loopback cluster: upload latency, throughput with 1 and 2 workers, a video load, warm-worker run cost.

Real clusters, as `make cluster` starts them (`scripts/cluster.py up --root <tmp>`, free ports, a RabbitMQ vhost of
their own, `down` afterwards even on error; scripts/loopback_cluster.py): Postgres, moto S3, a gRPC code server,
the daemon, the webserver and Celery workers consuming both queues, with a 5 s sensor interval.

- 1 worker: N distinct bundles uploaded at once (`avatarops upload`, the cluster's env file, the S3 inbox),
  identities per minute from the first upload to the last run's end.
- 2 workers: N uploads one after another, each when a worker slot is free (so the figure is the sensor and the
  launch, not a queue): latency from the upload command's return to the run's start (RUN_START, the run record's
  start_time in Postgres), p50/p95. Then N more bundles at once (identities per minute, the 2-vs-1 ratio, same
  bench run), then 2 one-sentence video requests per avatar of those (`avatarops request`, the S3 request inbox):
  every run completes, no run key launches twice, none is lost, the `gpu` pool (limit 1, both workers consume
  `gpu`) never holds two steps at once (step start/end events in Postgres), and both workers took work.
- Per-run fixed cost: a run of `identity_bundle` for an avatar whose identity is built (a content-key cache hit:
  trivial work), submitted to the run queue, wall time from the run's creation to its end (RUN_SUCCESS), on the
  warm Celery workers against a plain instance (own Postgres database, local home) with Dagster's
  DefaultRunLauncher (a subprocess per run) and its own daemon, alternating, same machine, same time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "cluster"
SENSOR_INTERVAL_S = 5
TARGET_LATENCY_P50_S = 10.0
GPU_POOL_STEPS = {"neutral_image", "character_sheet", "backgrounds", "speech", "lip_sync"}  # the stages declaring pool="gpu"
GPU_POOL_LIMIT = 1
FIXED_COST_ASSET = "identity_bundle"  # its inputs built: a content-key cache hit, the cheapest real run
SCRIPT_TEXT = "Hello from the cluster."
CLIENT_PARALLELISM = 4  # `avatarops` commands at once: a burst of clients, not 20 interpreters on 2 cores
TEARDOWN_S = 300  # kept free before the process's deadline: `cluster.py down` needs it
_deadline = [float("inf")]


def budget(seconds: float) -> float:
    """`seconds`, or less where the benchmark's deadline comes first: every wait ends in time for the clusters to
    be taken down (the parent kills this process at its timeout, and nothing would stop them then)."""
    left = _deadline[0] - time.monotonic()
    if left <= 0:
        raise TimeoutError("the cluster benchmark ran out of time (see bench/__main__.py CHILD_TIMEOUT_OVERRIDE_S)")
    return min(seconds, left)


def parameters(quick: bool) -> dict[str, Any]:
    avatars = int(os.environ.get("AVATAR_BENCH_CLUSTER_AVATARS") or (2 if quick else 20))
    return {
        "latency_uploads": avatars,
        "load_avatars": avatars,
        "requests_per_avatar": 2,
        "fixed_cost_repeats": 2 if quick else 7,
        "sensor_interval_s": SENSOR_INTERVAL_S,
        "workers": [1, 2],
        "worker_queues": "cpu,gpu (every worker)",
        "client_parallelism": CLIENT_PARALLELISM,
        "fixed_cost_asset": FIXED_COST_ASSET,
    }


# --------------------------------------------------------------------------- clients


def owned_names() -> tuple[str, str, str, str]:
    """(identity job, request sensor, partition tag, worker tag) from their owners; imported when a benchmark
    runs, so `python -m bench --list` stays light."""
    from avatar_assets import dagster_compat as compat
    from avatar_assets.cluster import WORKER_TAG
    from avatar_assets.jobs import identity_job
    from sensors.requests import REQUEST_SENSOR

    return identity_job.name, REQUEST_SENSOR, compat.PARTITION_NAME_TAG, WORKER_TAG


def caller_env() -> dict[str, str]:
    """What `cluster.py up` and the clients run with: no homes of the caller, no AWS settings, 5 s sensors."""
    env = {k: v for k, v in common.clean_env().items() if not k.startswith("AWS_")}
    return {**env, "AVATAR_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_S)}


def avatarops(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `avatarops ARGS`; (started, returned) wall-clock times. Raises on a non-zero exit."""
    started = time.time()
    out = subprocess.run([str(common.VENV_BIN / "avatarops"), *args], env=env, cwd=common.REPO_ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    common.check_ok(out, f"avatarops {' '.join(args[:3])}")
    return started, time.time()


def run_all(commands: list[list[str]], env: dict[str, str]) -> list[tuple[float, float]]:
    with ThreadPoolExecutor(CLIENT_PARALLELISM) as pool:
        return list(pool.map(lambda args: avatarops(args, env), commands))


def bundles(sample: Path, parent: Path, prefix: str, n: int) -> list[Path]:
    """n bundles whose photos differ in bytes and pixels: no content key is shared between avatars."""
    return common.bundle_variants(sample, parent, [f"{prefix}-{i:02d}" for i in range(n)])


# --------------------------------------------------------------------------- run records


def run_records(instance, **filters) -> list:
    import dagster as dg

    return list(instance.get_run_records(filters=dg.RunsFilter(**filters)))


def identity_runs(instance, avatars: list[str]) -> dict[str, Any]:
    """avatar -> the first (non-retry) identity run record of it."""
    identity_job, _, partition_tag, _ = owned_names()
    found: dict[str, Any] = {}
    for record in sorted(run_records(instance, job_name=identity_job), key=lambda r: r.create_timestamp):
        partition = record.dagster_run.tags.get(partition_tag)
        if partition in avatars and "dagster/parent_run_id" not in record.dagster_run.tags:
            found.setdefault(partition, record)
    return found


def in_flight(instance) -> int:
    import dagster as dg

    statuses = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]
    return len(run_records(instance, statuses=statuses))


def wait_finished(instance, avatars: list[str], timeout: float, what: str) -> dict[str, Any]:
    """The avatars' identity runs, once every one of them has finished."""
    from scripts.loopback_cluster import wait_for

    def done():
        runs = identity_runs(instance, avatars)
        return runs if len(runs) == len(avatars) and all(r.dagster_run.is_finished for r in runs.values()) else None

    return wait_for(done, timeout=timeout, interval=1.0, what=what)


def failures(records: dict[str, Any]) -> list[str]:
    import dagster as dg

    return sorted(f"{p}: {r.dagster_run.status.value}" for p, r in records.items()
                  if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def run_timing(record) -> dict[str, float]:
    """Creation (queued) -> start (RUN_START) -> end (RUN_SUCCESS/FAILURE), seconds, from the run record."""
    created = record.create_timestamp.timestamp()
    return {"queued_to_start_s": record.start_time - created, "start_to_end_s": record.end_time - record.start_time,
            "queued_to_end_s": record.end_time - created}


# --------------------------------------------------------------------------- phases


def upload_latency(cluster, instance, uploads: list[Path], workers: int) -> dict[str, Any]:
    """Uploads one at a time, each once fewer than `workers` runs are in flight; return -> RUN_START per upload."""
    from scripts.loopback_cluster import wait_for

    env, samples = cluster.client_env(), []
    per_upload = 300 + 60 * workers
    for bundle in uploads:
        wait_for(lambda: in_flight(instance) < workers, timeout=budget(per_upload), interval=0.2, what="a free worker slot")
        started, returned = avatarops(["upload", str(bundle)], env)
        record = wait_for(lambda: ((r := identity_runs(instance, [bundle.name]).get(bundle.name))
                                   and r.start_time and r), timeout=budget(per_upload), interval=0.2,
                          what=f"the identity run of {bundle.name} to start")
        created = record.create_timestamp.timestamp()
        samples.append({"avatar": bundle.name, "upload_command_s": returned - started,
                        "return_to_queued_s": created - returned, "queued_to_start_s": record.start_time - created,
                        "return_to_start_s": record.start_time - returned})
        say(f"  {bundle.name}: run started {samples[-1]['return_to_start_s']:.1f} s after the upload returned "
            f"(queued after {samples[-1]['return_to_queued_s']:.1f} s)")
    finished = wait_finished(instance, [b.name for b in uploads], budget(per_upload * 2),
                             "the latency uploads' runs to finish")
    latencies = [s["return_to_start_s"] for s in samples]
    return {
        "samples": samples,
        "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95), "max_s": max(latencies),
        "return_to_queued_p50_s": percentile([s["return_to_queued_s"] for s in samples], 50),
        "queued_to_start_p50_s": percentile([s["queued_to_start_s"] for s in samples], 50),
        "upload_command_p50_s": percentile([s["upload_command_s"] for s in samples], 50),
        "failed": failures(finished),
    }


def identity_throughput(cluster, instance, uploads: list[Path], workers: int) -> dict[str, Any]:
    """All bundles uploaded at once (CLIENT_PARALLELISM commands at a time); identities per minute from the
    first upload's start to the last run's end."""
    avatars = [b.name for b in uploads]
    times = run_all([["upload", str(b)] for b in uploads], cluster.client_env())
    first_upload, last_return = min(t[0] for t in times), max(t[1] for t in times)
    finished = wait_finished(instance, avatars, budget(600 + 240 * len(avatars) / workers),
                             f"{len(avatars)} identity runs to finish")
    last_end = max(r.end_time for r in finished.values())
    first_start = min(r.start_time for r in finished.values())
    wall = last_end - first_upload
    timings = [run_timing(r) for r in finished.values()]
    return {
        "workers": workers,
        "identities": len(avatars),
        "uploads_s": last_return - first_upload,
        "wall_s": wall,
        "identities_per_min": len(avatars) / wall * 60,
        "identities_per_min_runs_only": len(avatars) / (last_end - first_start) * 60,
        "run_s_median": median([t["start_to_end_s"] for t in timings]),
        "queued_to_start_s_median": median([t["queued_to_start_s"] for t in timings]),
        "by_worker": by_worker(finished.values()),
        "failed": failures(finished),
        "runs": {p: r.dagster_run.run_id for p, r in finished.items()},
    }


def by_worker(records) -> dict[str, int]:
    worker_tag = owned_names()[3]
    counts: dict[str, int] = {}
    for record in records:
        worker = record.dagster_run.tags.get(worker_tag, "?").split("@")[0]
        counts[worker] = counts.get(worker, 0) + 1
    return dict(sorted(counts.items()))


def video_load(cluster, instance, avatars: list[str], per_avatar: int, workers: int, work: Path,
               identity_run_ids: list[str]) -> dict[str, Any]:
    """per_avatar one-sentence video requests per avatar through the S3 request inbox, then the load's properties
    from Postgres: all complete, one run per request, no run key twice, the gpu pool never over its limit, both
    workers took work."""
    import dagster as dg

    from scripts.loopback_cluster import duplicate_run_keys, most_overlapping, step_intervals, wait_for

    _, request_sensor, partition_tag, _ = owned_names()
    script_file = work / "script.txt"
    script_file.write_text(SCRIPT_TEXT)
    cells = [(avatar, f"hello-{k}") for avatar in avatars for k in range(1, per_avatar + 1)]
    wanted = {f"{a}|{s}" for a, s in cells}
    times = run_all([["request", a, s, "--script", str(script_file)] for a, s in cells], cluster.client_env())
    first_request = min(t[0] for t in times)

    def runs() -> list:
        return [r for r in run_records(instance, tags={"dagster/sensor_name": request_sensor})
                if r.dagster_run.tags.get(partition_tag) in wanted]

    def succeeded(records) -> set[str]:
        return {r.dagster_run.tags[partition_tag] for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS}

    def settled():
        records = runs()
        finished = {r.dagster_run.tags[partition_tag] for r in records} == wanted and all(
            r.dagster_run.is_finished for r in records)
        return records if finished else None

    videos = wait_for(settled, timeout=budget(900 + 240 * len(cells) / workers), interval=1.0,
                      what=f"{len(cells)} video runs to finish")
    if succeeded(videos) != wanted:  # a failed run may still be retried (run_retries): give the retry its time
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: succeeded(runs()) == wanted, timeout=budget(300), interval=2.0, what="retries")
        videos = runs()
    last_end = max(r.end_time for r in videos)
    per_cell: dict[str, int] = {}
    for record in videos:
        if "dagster/parent_run_id" not in record.dagster_run.tags:
            cell = record.dagster_run.tags[partition_tag]
            per_cell[cell] = per_cell.get(cell, 0) + 1
    failed = sorted(f"{r.dagster_run.tags[partition_tag]}: {r.dagster_run.status.value}" for r in videos
                    if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS)
    intervals = step_intervals(cluster, GPU_POOL_STEPS)
    identity_records = [instance.get_run_record_by_id(run_id) for run_id in identity_run_ids]
    workers_seen = by_worker([*identity_records, *videos])
    duplicates = duplicate_run_keys(cluster)
    properties = {
        "all_complete": succeeded(videos) == wanted,
        "no_run_key_twice": not duplicates,
        "one_run_per_request": all(per_cell.get(cell) == 1 for cell in wanted),
        "none_lost": set(per_cell) == wanted,
        "gpu_pool_never_over_limit": most_overlapping(intervals) <= GPU_POOL_LIMIT,
        "every_worker_took_work": len([w for w in workers_seen if w != "?"]) == workers,
    }
    return {
        "requests": len(cells),
        "wall_s": last_end - first_request,
        "videos_per_min": len(cells) / (last_end - first_request) * 60,
        "run_s_median": median([r.end_time - r.start_time for r in videos]),
        "gpu_pool_steps": len(intervals),
        "gpu_pool_most_at_once": most_overlapping(intervals),
        "runs_by_worker": workers_seen,
        "duplicate_run_keys": duplicates,
        "failed": failed,
        "retries": len([r for r in videos if "dagster/parent_run_id" in r.dagster_run.tags]),
        "properties": properties,
        "all_properties_hold": all(properties.values()),
    }


# --------------------------------------------------------------------------- fixed cost per run


@contextlib.contextmanager
def subprocess_launcher_instance(work: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """A plain instance: its own Postgres database, a local home, the QueuedRunCoordinator as on the cluster
    (dequeue every second), Dagster's DefaultRunLauncher and `dagster-daemon run` (code server from
    workspace.yaml). Yields (instance, the home's environment)."""
    import dagster as dg

    from scripts import cluster as script

    home = common.prepare_home(work)
    env = common.home_env(home, AVATAR_SENSOR_INTERVAL_SECONDS=str(SENSOR_INTERVAL_S))
    with common.postgres_database("avatar_bench_launcher") as db_name:
        (home / "dagster" / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n" + common.postgres_storage_yaml(db_name)
            + "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
            "  config:\n    dequeue_interval_seconds: 1\nsensors:\n  use_threads: true\n  num_workers: 2\n"
            "auto_materialize:\n  use_threads: true\n  num_workers: 2\n"
        )
        logs = work / "logs"
        logs.mkdir()
        daemon = script.spawn("daemon", [str(common.VENV_BIN / "dagster-daemon"), "run", "-w",
                                         str(common.REPO_ROOT / "workspace.yaml")], env, logs)
        instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        try:
            yield instance, env
        finally:
            instance.dispose()
            script.stop(daemon)


def identity_asset_names() -> list[str]:
    from avatar_assets.identity.assets import IDENTITY_ASSETS

    return [key.to_user_string() for asset in IDENTITY_ASSETS for key in asset.keys]


def failure_reason(instance, run_id: str) -> str:
    """The first step failure's message of a run (or its run failure's), for the report."""
    import dagster as dg

    for event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        records = instance.get_records_for_run(run_id, of_type=event_type, limit=1).records
        if records:
            entry = records[0].event_log_entry
            return f"{entry.step_key or 'run'}: {entry.dagster_event.message or entry.user_message}"[:500]
    return "no failure event"


def one_run(instance, env: dict[str, str], avatar: str, assets: list[str] | None = None) -> dict[str, float]:
    """Submit one run of `assets` (FIXED_COST_ASSET) for `avatar` and wait for its end; its timings."""
    import dagster as dg

    from scripts.loopback_cluster import env_vars, submit_asset_run, wait_for

    assets = assets or [FIXED_COST_ASSET]
    settings = {k: v for k, v in env.items() if k.startswith(("AVATAR_", "DAGSTER_", "AWS_"))}
    with env_vars(settings):
        run_id = submit_asset_run(instance, assets, avatar)
    record = wait_for(lambda: (r := instance.get_run_record_by_id(run_id)) and r.dagster_run.is_finished and r,
                      timeout=budget(300), interval=0.2, what=f"the {assets} run {run_id} to finish")
    if record.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"run {run_id} of {assets} for {avatar} ended {record.dagster_run.status.value}: "
                           f"{failure_reason(instance, run_id)}")
    return {**run_timing(record), "worker": record.dagster_run.tags.get(owned_names()[3], "")}


def fixed_cost(cluster, cluster_instance, cluster_avatar: str, sample: Path, work: Path, repeats: int) -> dict[str, Any]:
    """The same run on the warm workers and with the subprocess launcher, alternating (ABBA)."""
    with subprocess_launcher_instance(work / "plain") as (plain, plain_env):
        say("  the subprocess-launcher instance builds its identity (its daemon's upload sensor)")
        [bundle] = bundles(sample, work / "plain-bundle", "plain", 1)
        avatarops(["upload", str(bundle)], plain_env)
        built = wait_finished(plain, [bundle.name], budget(600), "the plain instance's identity run")
        if failures(built):
            # Other tenants of this machine's Postgres may cut connections mid-run; one more try, as a retry would.
            say(f"  its identity run failed ({failure_reason(plain, built[bundle.name].dagster_run.run_id)}); again")
            one_run(plain, plain_env, bundle.name, identity_asset_names())
        subjects = {
            "celery_warm": lambda: one_run(cluster_instance, cluster.env, cluster_avatar),
            "subprocess": lambda: one_run(plain, plain_env, bundle.name),
        }
        timings: dict[str, list[dict[str, float]]] = {name: [] for name in subjects}
        for index in range(repeats):
            order = list(subjects) if index % 2 == 0 else list(reversed(subjects))
            for name in order:
                timings[name].append(subjects[name]())
            say(f"  repeat {index + 1}: " + ", ".join(
                f"{name} {timings[name][-1]['queued_to_end_s']:.2f} s" for name in subjects))
    summary = {
        name: {key: median([t[key] for t in values]) for key in ("queued_to_end_s", "queued_to_start_s", "start_to_end_s")}
        for name, values in timings.items()
    }
    return {
        "repeats": repeats,
        "medians": summary,
        "samples": timings,
        "warm_vs_subprocess_ratio": ratio(summary["celery_warm"]["queued_to_end_s"],
                                          summary["subprocess"]["queued_to_end_s"]),
    }


# --------------------------------------------------------------------------- the benchmark


def record(figures: dict[str, Any], phase: str, value: dict[str, Any]) -> None:
    """A phase's figures, with the 1-minute load average when it ended (other tenants share the cores)."""
    figures[phase] = {**value, "load_average_1m_at_end": os.getloadavg()[0]}


def measure(opts, params: dict[str, Any], figures: dict[str, Any]) -> None:
    """Every phase, each writing its figures into `figures` as it finishes (a failure keeps what was measured)."""
    from scripts.loopback_cluster import loopback_cluster

    n = params["load_avatars"]
    with common.workdir(NAME, keep=opts.keep) as work:
        common.activate_home(work / "setup-home")
        say("building the sample bundle and its variants")
        sample = common.sample_bundle(work / "sample" / "astronaut")
        env = caller_env()

        say("cluster with 1 worker (cpu+gpu)")
        with loopback_cluster(work / "one-worker", env=env, workers=1) as one:
            figures["up_s_1_worker"] = one.up_seconds
            instance = one.instance()
            try:
                say(f"  {n} bundles at once")
                record(figures, "throughput_1_worker", identity_throughput(
                    one, instance, bundles(sample, work / "bundles-1", "one", n), 1))
            finally:
                instance.dispose()
        say(f"  {figures['throughput_1_worker']['identities_per_min']:.2f} identities/min")

        say("cluster with 2 workers (both cpu+gpu)")
        with loopback_cluster(work / "two-workers", env=env, workers=2) as two:
            figures["up_s_2_workers"] = two.up_seconds
            instance = two.instance()
            try:
                say(f"  {params['latency_uploads']} uploads, one at a time when a worker slot is free")
                latency_bundles = bundles(sample, work / "bundles-latency", "lat", params["latency_uploads"])
                record(figures, "latency", upload_latency(two, instance, latency_bundles, 2))
                say(f"  latency p50 {figures['latency']['p50_s']:.1f} s, p95 {figures['latency']['p95_s']:.1f} s")
                say(f"  {n} bundles at once")
                load = bundles(sample, work / "bundles-2", "two", n)
                record(figures, "throughput_2_workers", identity_throughput(two, instance, load, 2))
                say(f"  {figures['throughput_2_workers']['identities_per_min']:.2f} identities/min")
                say(f"  {n * params['requests_per_avatar']} video requests")
                record(figures, "video_load", video_load(
                    two, instance, [b.name for b in load], params["requests_per_avatar"], 2, work,
                    list(figures["throughput_2_workers"]["runs"].values())))
                say(f"  videos: {figures['video_load']['properties']}")
                say(f"  per-run fixed cost, {params['fixed_cost_repeats']} repeats, alternating")
                record(figures, "fixed_cost", fixed_cost(two, instance, latency_bundles[0].name, sample, work,
                                                         params["fixed_cost_repeats"]))
            finally:
                instance.dispose()


def run(opts) -> dict[str, Any]:
    params = parameters(opts.quick)
    _deadline[0] = getattr(opts, "deadline", float("inf")) - TEARDOWN_S
    figures: dict[str, Any] = {}
    try:
        measure(opts, params, figures)
    except Exception as error:  # noqa: BLE001 - the phases measured so far are still reported
        import traceback

        traceback.print_exc()
        return {"status": "error", "error": f"{type(error).__name__}: {error}", "parameters": params,
                "figures": figures, "traceback": traceback.format_exc(),
                "summary": [f"ERROR {type(error).__name__}: {str(error)[:500]}",
                            f"measured before it: {', '.join(figures) or 'nothing'}"]}
    one_rate = figures["throughput_1_worker"]["identities_per_min"]
    figures["throughput_2_vs_1_ratio"] = ratio(figures["throughput_2_workers"]["identities_per_min"], one_rate)
    latency, load = figures["latency"], figures["video_load"]
    identities_ok = not (figures["throughput_1_worker"]["failed"] or figures["throughput_2_workers"]["failed"]
                         or latency["failed"])
    targets = {
        "upload_to_run_start_p50_s": {"op": "<=", "limit": TARGET_LATENCY_P50_S, "value": latency["p50_s"],
                                      "met": latency["p50_s"] <= TARGET_LATENCY_P50_S},
        "video_load_properties_hold": {"op": "==", "limit": True, "value": load["all_properties_hold"],
                                       "met": load["all_properties_hold"]},
        "every_identity_run_succeeded": {"op": "==", "limit": True, "value": identities_ok, "met": identities_ok},
    }
    cores = os.cpu_count()
    return {
        "parameters": params,
        "figures": figures,
        "targets": targets,
        "baseline": ("throughput: the same load on 1 worker (2-vs-1 ratio); per-run cost: the same run with the "
                     "DefaultRunLauncher (a subprocess per run) on a plain Postgres instance, alternating; same run"),
        "notes": [
            (f"Everything runs on this machine's {cores} cores: Postgres, RabbitMQ, Redis, moto, the code server, "
             "the daemon, the webserver, the workers and the clients; other tenants' load is in the machine facts. "
             "A second worker can only add what the cores have left."),
            "Workers recycle their pool child every 20 tasks (--max-tasks-per-child 20), as `make cluster` starts them.",
            ("The subprocess baseline keeps media and records on the local disk, the cluster on moto S3 over "
             "loopback; both instances are on Postgres with a queued run coordinator dequeuing every second."),
        ],
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    lat, one, two, load, cost = (f["latency"], f["throughput_1_worker"], f["throughput_2_workers"], f["video_load"],
                                 f["fixed_cost"])
    warm, sub = cost["medians"]["celery_warm"], cost["medians"]["subprocess"]
    return [
        (f"upload -> run start ({p['latency_uploads']} uploads, {p['sensor_interval_s']} s sensor, a free slot each): "
         f"p50 {lat['p50_s']:.1f} s, p95 {lat['p95_s']:.1f} s, max {lat['max_s']:.1f} s (return -> queued p50 "
         f"{lat['return_to_queued_p50_s']:.1f} s, queued -> start p50 {lat['queued_to_start_p50_s']:.1f} s)"),
        (f"{one['identities']} identities at once: 1 worker {one['identities_per_min']:.2f}/min "
         f"({one['wall_s']:.0f} s), 2 workers {two['identities_per_min']:.2f}/min ({two['wall_s']:.0f} s) -> "
         f"{f['throughput_2_vs_1_ratio']:.2f}x; run median {one['run_s_median']:.1f} s vs {two['run_s_median']:.1f} s; "
         f"2-worker runs by worker {two['by_worker']}"),
        (f"{load['requests']} video requests: {load['videos_per_min']:.2f}/min ({load['wall_s']:.0f} s), run median "
         f"{load['run_s_median']:.1f} s, identity and video runs by worker {load['runs_by_worker']}, gpu pool at most "
         f"{load['gpu_pool_most_at_once']} at once over {load['gpu_pool_steps']} steps, "
         + ", ".join(f"{k}={v}" for k, v in load["properties"].items())),
        (f"per-run fixed cost ({p['fixed_cost_asset']}, {cost['repeats']} repeats, queued -> RUN_SUCCESS median): "
         f"warm Celery worker {warm['queued_to_end_s']:.2f} s (queued -> start {warm['queued_to_start_s']:.2f} s), "
         f"subprocess launcher {sub['queued_to_end_s']:.2f} s (queued -> start {sub['queued_to_start_s']:.2f} s) "
         f"-> {cost['warm_vs_subprocess_ratio']:.2f}x"),
    ]
