"""Shared pieces of the benchmarks: machine facts, timing, result files, throwaway homes, bundles and
the Dagster event-log step timings.

Nothing here imports dagster or the media stack at module load, so `python -m bench --help` and the
summary writer stay instant; the benchmarks import what they measure inside their `run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
# AVATAR_BENCH_RESULTS redirects result files (the smoke test writes to a temp dir, not over a real run).
RESULTS_DIR = Path(os.environ.get("AVATAR_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
VENV_BIN = Path(sys.executable).parent

# Variables that pick homes, storage or behaviour: a benchmark never inherits them (the Makefile
# exports AVATAR_HOME/DAGSTER_HOME of the developer's own home, which a benchmark must not touch).
_SCRUBBED = ("AVATAR_", "DAGSTER_")


def _is_setting(name: str) -> bool:
    return name.startswith(_SCRUBBED) and not name.startswith("AVATAR_BENCH_")


# --------------------------------------------------------------------------- facts and numbers


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare two result files: cores, load, versions, commit."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_1m_5m_15m": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dagster": pkg("dagster"),
        "numpy": pkg("numpy"),
        "opencv": pkg("opencv-python-headless"),
        "moviepy": pkg("moviepy"),
        "torch": pkg("torch"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    with contextlib.suppress(Exception):
        import imageio_ffmpeg

        facts["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    return facts


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _git(*args: str) -> str | None:
    """Read-only git queries (rev-parse, status); None outside a checkout."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                             check=False)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rounded(value: Any, digits: int = 3) -> Any:
    """Round floats (recursively) so result files stay readable."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.seconds`."""

    def __enter__(self) -> Self:
        self.started = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished, waited-for children (ffmpeg,
    subprocesses). Other tenants of a shared machine stretch wall time far more than CPU time."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, value) of `fn()`."""
    cpu, started = cpu_seconds(), time.perf_counter()
    value = fn()
    return time.perf_counter() - started, cpu_seconds() - cpu, value


def say(message: str) -> None:
    """Progress lines go to stdout, unbuffered, prefixed with the time since the process started."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


_T0 = time.perf_counter()


# --------------------------------------------------------------------------- result files


def result_path(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = result_path(name)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(rounded(payload, 4), indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = result_path(name)
    return json.loads(path.read_text()) if path.is_file() else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- homes and environments


def scratch_root() -> Path:
    """Where benchmark homes live: $AVATAR_BENCH_TMP, else the system temp dir (a real disk)."""
    return Path(os.environ.get("AVATAR_BENCH_TMP") or tempfile.gettempdir())


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=f"avatar-bench-{prefix}-", dir=scratch_root()))
    try:
        yield root
    finally:
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def prepare_home(root: Path) -> Path:
    """An AVATAR_HOME with its DAGSTER_HOME (telemetry off), as `avatarops` would create it."""
    from avatar_assets.ops.instance_config import ensure_config

    ensure_config(root / "dagster")
    return root


def clean_env(**extra: str | os.PathLike[str]) -> dict[str, str]:
    """os.environ without AVATAR_*/DAGSTER_*, quiet run logs, this checkout and venv first, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not _is_setting(k)}
    env.update(AVATAR_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", GX_ANALYTICS_ENABLED="false")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def home_env(root: Path, **extra: str | os.PathLike[str]) -> dict[str, str]:
    """clean_env plus the home and no upload settling."""
    return clean_env(AVATAR_HOME=str(root), DAGSTER_HOME=str(root / "dagster"), AVATAR_UPLOAD_SETTLE_SECONDS="0",
                     **extra)


def activate_home(root: Path, **extra: str) -> None:
    """Point this process at `root` and its settings (then `load_definitions` builds on them)."""
    prepare_home(root)
    for key in [k for k in os.environ if _is_setting(k)]:
        del os.environ[key]
    os.environ.update({k: v for k, v in home_env(root, **extra).items() if _is_setting(k)})
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def load_definitions():
    """The code location on the settings `activate_home` gave this process (the provider, the render size),
    as a process started with them loads it."""
    import warnings

    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    warnings.simplefilter("ignore", BetaWarning)
    warnings.simplefilter("ignore", PreviewWarning)
    from avatar_assets.definitions import build_definitions
    from resources.wiring import build_resources

    return build_definitions(build_resources())


def run_timed(cmd: Sequence[str], env: dict[str, str], *, timeout: float = 1800, cwd: Path = REPO_ROOT
              ) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command to completion; wall seconds and the completed process (output captured)."""
    wall, _, out = run_timed_cpu(cmd, env, timeout=timeout, cwd=cwd)
    return wall, out


def run_timed_cpu(cmd: Sequence[str], env: dict[str, str], *, timeout: float = 1800, cwd: Path = REPO_ROOT
                  ) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Like run_timed, plus the CPU seconds of the command and everything it waited for."""
    return timed_cpu(lambda: subprocess.run(list(cmd), env=env, cwd=cwd, capture_output=True, text=True,
                                            timeout=timeout, check=False))


def check_ok(out: subprocess.CompletedProcess[str], what: str) -> None:
    if out.returncode != 0:
        raise RuntimeError(f"{what} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


# --------------------------------------------------------------------------- PostgreSQL

PG = {
    "host": os.environ.get("AVATAR_BENCH_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("AVATAR_BENCH_PG_PORT", "5432")),
    "user": os.environ.get("AVATAR_BENCH_PG_USER", "postgres"),
    "password": os.environ.get("AVATAR_BENCH_PG_PASSWORD", ""),
}


def pg_connect(dbname: str):
    import psycopg2

    return psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A database of its own on the benchmark's PostgreSQL (`<prefix>_<random>`), dropped afterwards."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(statement: str) -> None:
    """One statement on its own connection: a connection held through a long benchmark may have been closed."""
    admin = pg_connect("postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(statement)
    finally:
        admin.close()


def postgres_storage_yaml(db_name: str) -> str:
    """The storage block deploy/dagster*.yaml configure (dagster-postgres with pooled connections) on `db_name`."""
    return (
        "storage:\n  custom:\n    module: resources.pooled_postgres\n"
        "    class: PooledPostgresStorage\n    config:\n      postgres_db:\n"
        f"        hostname: {PG['host']}\n        port: {PG['port']}\n        db_name: {db_name}\n"
        f"        username: {PG['user']}\n        password: \"{PG['password']}\"\n"
        "        scheme: postgresql+psycopg2\n"
    )


# --------------------------------------------------------------------------- bundles


def sample_bundle(target: Path) -> Path:
    """The demo's sample bundle (astronaut photo, espeak voice, consent), built once per benchmark."""
    from avatar_assets.ops.demo import build_sample_bundle

    return build_sample_bundle(target)


def bundle_variants(sample: Path, parent: Path, avatar_ids: Sequence[str]) -> list[Path]:
    """Copies of the sample bundle under new avatar ids whose photo bytes (and decoded pixels) differ:
    each is re-encoded as JPEG at its own quality (95, 94, ...), so content-keyed caching cannot share work.
    Every one of them passes the intake gate (`tests/media/test_faces.py`: quality 84's JPEG artefact, a
    false second face, no longer counts as a person)."""
    from io import BytesIO

    from PIL import Image

    bundles = []
    for offset, avatar_id in enumerate(avatar_ids):
        target = parent / avatar_id
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(sample, target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["avatar_id"] = avatar_id
        (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
        photo = target / manifest["photos"][0]
        with Image.open(photo) as image:
            image.load()
            original = image.convert("RGB")
        buffer = BytesIO()
        original.save(buffer, format="JPEG", quality=95 - offset)
        photo.write_bytes(buffer.getvalue())
        bundles.append(target)
    return bundles


def copy_into_inbox(bundles: Sequence[Path], home: Path) -> None:
    """What `avatarops upload` leaves behind: each bundle under <inbox>/avatars/<avatar_id>/."""
    inbox = home / "inbox" / "avatars"
    inbox.mkdir(parents=True, exist_ok=True)
    for bundle in bundles:
        shutil.copytree(bundle, inbox / bundle.name)


# --------------------------------------------------------------------------- event-log timings


def run_step_timings(instance, run_id: str) -> dict[str, Any]:
    """Wall seconds per step of one run (STEP_START -> STEP_SUCCESS/FAILURE/SKIPPED) and of the run
    itself (first event -> last event), from the instance's event log."""
    import dagster as dg

    records = instance.get_records_for_run(run_id, limit=100_000).records
    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    ends = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED}
    run_start = run_end = None
    for record in records:
        entry = record.event_log_entry
        event_type = entry.dagster_event_type
        if event_type is None:
            continue
        if event_type == dg.DagsterEventType.RUN_START:
            run_start = entry.timestamp
        if event_type in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
            run_end = entry.timestamp
        if event_type == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif event_type in ends and entry.step_key in starts:
            steps[entry.step_key] = steps.get(entry.step_key, 0.0) + entry.timestamp - starts.pop(entry.step_key)
    first = records[0].event_log_entry.timestamp if records else 0.0
    last = records[-1].event_log_entry.timestamp if records else 0.0
    return {
        "run_id": run_id,
        "events_span_s": last - first,
        "run_s": (run_end - run_start) if run_start is not None and run_end is not None else last - first,
        "events": len(records),
        "steps": steps,
    }


def split_steps(steps: dict[str, float], asset_names: set[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(asset steps, check steps): a step whose key is an asset name is the asset; the rest are checks."""
    assets = {k: v for k, v in steps.items() if k in asset_names}
    checks = {k: v for k, v in steps.items() if k not in asset_names}
    return assets, checks


def runs_of(instance, job_name: str | None = None) -> list:
    """Runs of the instance, oldest first."""
    import dagster as dg

    runs = instance.get_runs(dg.RunsFilter(job_name=job_name) if job_name else None)
    return sorted(runs, key=lambda run: instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp())


def materializations_after(instance, storage_id: int) -> list[tuple[str, str]]:
    """(asset, partition) of every materialization stored after `storage_id`, in order."""
    import dagster as dg

    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION, after_cursor=storage_id),
        limit=10_000,
        ascending=True,
    )
    return [
        (r.event_log_entry.dagster_event.asset_key.to_user_string(), str(r.event_log_entry.dagster_event.partition))
        for r in records
    ]


def latest_storage_id(instance) -> int:
    import dagster as dg

    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=1, ascending=False
    )
    return records[0].storage_id if records else 0
