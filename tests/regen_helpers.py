"""Helpers for the issue-4 tests: regeneration, staleness, approvals, retry, revoke and lifecycle events.

The expensive part of these tests is a rendered "world": three avatars (copies of the sample bundle under
different ids) with two video cells each, at a small master size. It is built once per test run by
the real sensors and runs (`avatar_assets.ops.runner.process`) and snapshotted; each test restores the
snapshot (records hold store-relative keys, so any path would do; test_relocatable_home proves it) and
gets its own Dagster instance on it.
Nothing is mocked: the instance is SQLite on disk, media are real files, the webhook is real HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg

from partitions import cell_key, split_cell
from resources import layout
from tests.conftest import Home, avatar_home, copy_sample

SHORT_SIDE = "160"
AVATARS = ("ava", "bob", "cal")
SLUGS = ("s1", "s2")
SCRIPT = "Hello there."
# What re-materializing neutral_image of one avatar must refresh: its own identity descendants and, in each
# of its cells, the stages that read neutral_image / character_sheet / identity_bundle and their descendants.
NEUTRAL_IDENTITY_DOWNSTREAM = ["character_sheet", "identity_bundle"]
NEUTRAL_CELL_DOWNSTREAM = ["scene_assets", "lip_sync", "stitched_video", "enhanced_video", "output_package"]
ENV = {"AVATAR_MASTER_SHORT_SIDE": SHORT_SIDE}

_WORLDS: dict[str, tuple[Path, Path]] = {}


def cell(avatar_id: str, slug: str) -> str:
    return str(cell_key(avatar_id, slug))


def expected_after_neutral_image(avatar_id: str, slugs=SLUGS) -> Counter:
    expected = Counter({(asset, avatar_id): 1 for asset in NEUTRAL_IDENTITY_DOWNSTREAM})
    for slug in slugs:
        expected.update({(asset, cell(avatar_id, slug)): 1 for asset in NEUTRAL_CELL_DOWNSTREAM})
    return expected


# --------------------------------------------------------------------------- what a change must refresh


def is_video(graph, key: dg.AssetKey) -> bool:
    return isinstance(graph.get(key).partitions_def, dg.MultiPartitionsDefinition)


def descendants(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    found, frontier = set(), [key]
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def expected_refresh(graph, key: dg.AssetKey, partition: str, slugs=SLUGS) -> Counter:
    """The regenerated partition and every existing partition below it: an identity asset's descendants
    at the same avatar and, for video stages, at each of that avatar's cells; a stage's at its cell."""
    avatar_id, _ = split_cell(partition)
    expected = Counter({(key.to_user_string(), partition): 1})
    for child in descendants(graph, key):
        if not is_video(graph, child):
            partitions = [avatar_id]
        else:
            partitions = [partition] if is_video(graph, key) else [cell(avatar_id, slug) for slug in slugs]
        expected.update({(child.to_user_string(), p): 1 for p in partitions})
    return expected


# --------------------------------------------------------------------------- the rendered world


def submit(home: Home, avatar_id: str, slug: str, script: str = SCRIPT, **fields):
    """Put `inbox/outputs/<avatar>/<slug>.json` in the home's store as `avatarops request` does (atomic)."""
    from avatar_assets.contracts import OutputRequest
    from avatar_assets.video.requests import write_request

    request = OutputRequest(avatar_id=avatar_id, slug=slug, script=script, **fields)
    write_request(home.store, request)
    return request


def submit_accepted(home: Home, avatar_id: str, slug: str, script: str = SCRIPT, **fields):
    """`submit`, then accept it as the request sensor does before it launches a run: for tests that launch
    `render_video` themselves (what the UI's launchpad does)."""
    from avatar_assets.video.requests import accept, read_request

    request = submit(home, avatar_id, slug, script, **fields)
    accept(home.store, *read_request(home.store, avatar_id, slug))
    return request


def _build_world(root: Path, sample_bundle: Path) -> None:
    with avatar_home(root, **ENV) as home:
        for avatar_id in AVATARS:
            copy_sample(sample_bundle, home.inbox, avatar_id)
        report = home.process()
        assert report.ok and sorted(r.partition for r in report.runs) == sorted(AVATARS), report.as_dict()
        for avatar_id in AVATARS:
            for slug in SLUGS:
                submit(home, avatar_id, slug)
        report = home.process()
        assert report.ok, report.as_dict()
        assert sorted(r.partition for r in report.runs) == sorted(cell(a, s) for a in AVATARS for s in SLUGS)


def world_snapshot(tmp_path_factory, sample_bundle: Path) -> tuple[Path, Path]:
    """(root, snapshot): the snapshot is built once per test run and shared by the xdist workers (the
    first to ask builds it under a file lock, the others wait: building it costs minutes of CPU); each
    worker restores it into its own root."""
    if "world" not in _WORLDS:
        basetemp = tmp_path_factory.getbasetemp()
        shared = (basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp) / "regen-world"
        shared.mkdir(exist_ok=True)
        snapshot, built = shared / "snapshot", shared / "built"
        with open(shared / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not built.exists():
                shutil.rmtree(shared / "home", ignore_errors=True)
                shutil.rmtree(snapshot, ignore_errors=True)
                started = time.monotonic()
                _build_world(shared / "home", sample_bundle)
                shutil.copytree(shared / "home", snapshot, symlinks=True)
                built.touch()
                print(f"[regen world built in {time.monotonic() - started:.1f} s]")
        _WORLDS["world"] = (basetemp / "regen-world-home", snapshot)
    return _WORLDS["world"]


@contextlib.contextmanager
def restored_world(tmp_path_factory, sample_bundle: Path, **env: str) -> Iterator[Home]:
    """A fresh copy of the rendered world (3 avatars x 2 cells), with its own instance and definitions."""
    root, snapshot = world_snapshot(tmp_path_factory, sample_bundle)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(snapshot, root, symlinks=True)
    with avatar_home(root, **{**ENV, **env}) as home:
        yield home


def world_env(home: Home, **extra: str) -> dict[str, str]:
    """The environment a CLI or daemon subprocess needs to work on `home`."""
    from tests.servers import clean_env

    return clean_env(
        AVATAR_HOME=home.root,
        DAGSTER_HOME=home.root / "dagster",
        AVATAR_UPLOAD_SETTLE_SECONDS="0",
        **ENV,
        **extra,
    )


def avatarops(home: Home, *args: str, timeout: float = 300, **extra_env: str):
    from tests.servers import avatarops as run

    return run(*args, env=world_env(home, **extra_env), timeout=timeout)


def definitions_with(home: Home, **resources) -> dg.Definitions:
    """The home's definitions with some resources replaced (a provider that fails, say)."""
    from avatar_assets.definitions import build_definitions

    return build_definitions({**home.defs.resources, **resources})


def service_down(provider: type, method: str, service: str):
    """`provider` whose service is down: `method` fails without retries. Its `outage` field is part of the
    content key, so nothing it should have made is served from the cache instead."""

    def fail(self, *args, **kwargs):
        raise dg.Failure(f"{service} service is down", allow_retries=False)

    down = type(f"{provider.__name__}Down", (provider,), {"__annotations__": {"outage": bool}, "outage": True, method: fail})
    return down()


def enhancer_down():
    """An enhancer whose service is down: enhanced_video fails without retries."""
    from resources.providers import Enhancer

    return service_down(Enhancer, "info", "enhancement")


# --------------------------------------------------------------------------- the instance's history


FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
"""Run statuses after which a run changes no more (what the daemon tests wait for)."""


AUTOMATION_SENSOR = "avatar_automation"


def finished_ticks(instance: dg.DagsterInstance) -> int:
    """How many ticks of the automation sensor have finished on `instance` (the daemon tests' clock)."""
    from dagster._core.scheduler.instigation import TickStatus

    states = [s for s in instance.all_instigator_state() if s.name == AUTOMATION_SENSOR]
    if not states:
        return 0
    ticks = instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id)
    return sum(1 for tick in ticks if tick.status != TickStatus.STARTED)


def last_storage_id(instance: dg.DagsterInstance) -> int:
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=1, ascending=False
    )
    return records[0].storage_id if records else 0


def materialization_records(instance: dg.DagsterInstance, storage_id: int) -> list[tuple[tuple[str, str], object]]:
    """((asset, partition), event record) of every materialization recorded after `storage_id`, in order."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION, after_cursor=storage_id),
        limit=100_000,
    )
    return [((entry.event_log_entry.dagster_event.asset_key.to_user_string(),
              str(entry.event_log_entry.dagster_event.partition)), entry) for entry in records]


def materializations_after(instance: dg.DagsterInstance, storage_id: int) -> Counter:
    """(asset, partition) -> materializations recorded after `storage_id`."""
    return Counter(cell for cell, _ in materialization_records(instance, storage_id))


def step_events(instance: dg.DagsterInstance, run_id: str, kind: str) -> list[str]:
    """Step keys of the run's events of one type (STEP_START, STEP_UP_FOR_RETRY, ...), in order."""
    return [
        entry.dagster_event.step_key
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None and entry.dagster_event.event_type_value == kind
    ]


def run_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message or "" for entry in instance.all_logs(run_id)]


def materialize_only(home: Home, asset: str, partition: str, tags: dict[str, str] | None = None):
    """Execute just this asset partition (what the UI's 'Materialize' does); automation is not run."""
    job = home.defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey(asset)])
    result = job.execute_in_process(
        instance=home.instance, partition_key=partition, asset_selection=[dg.AssetKey(asset)],
        tags=tags or {}, raise_on_error=False,
    )
    assert result.success, f"{asset}[{partition}] failed"
    return result


# --------------------------------------------------------------------------- blobs and references


def blob_keys(store) -> set[str]:
    """Every content-addressed blob in the media store."""
    return set(store.list_keys(layout.MEDIA))


def referenced_blob_keys(store, prefixes=(layout.RECORDS, layout.CACHE)) -> dict[str, set[str]]:
    """Blob key -> the record / cache documents that reference it (every MediaRef inside them)."""
    from avatar_assets.pipeline.caching import media_refs
    from resources.records import parse_record

    refs: dict[str, set[str]] = {}
    for prefix in prefixes:
        for key in store.list_keys(prefix):
            if not key.endswith(".json"):
                continue
            record = parse_record(store.read_text(key) or "")
            for ref in media_refs(record):
                refs.setdefault(ref.key, set()).add(key)
    return refs


def orphan_blobs(store) -> set[str]:
    """Blobs that no remaining record or cache entry references."""
    return blob_keys(store) - set(referenced_blob_keys(store))


def blobs_of_avatar(store, avatar_id: str) -> set[str]:
    """Blob keys that the avatar's records (identity and every cell) reference."""
    refs = referenced_blob_keys(store, prefixes=(layout.avatar_records(avatar_id),))
    return set(refs)


# --------------------------------------------------------------------------- staleness


def stale_partitions(home: Home, graph=None) -> dict[tuple[str, str], list[str]]:
    """(asset, partition) -> stale causes, over every materialized partition of every asset."""
    from dagster._core.definitions.data_version import (
        CachingStaleStatusResolver,
        StaleStatus,
    )
    from dagster._core.loader import LoadingContextForTest

    graph = graph or home.defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(home.instance, graph, LoadingContextForTest(home.instance))
    stale = {}
    avatars = home.instance.get_dynamic_partitions("avatars")
    outputs = home.instance.get_dynamic_partitions("outputs")
    for key in graph.get_all_asset_keys():
        partitions_def = graph.get(key).partitions_def
        if isinstance(partitions_def, dg.MultiPartitionsDefinition):
            partitions = [cell_key(a, o) for a in avatars for o in outputs]
        else:
            partitions = list(avatars)
        for partition in partitions:
            status = resolver.get_status(key, partition)
            if status == StaleStatus.STALE:
                stale[(key.to_user_string(), str(partition))] = [
                    f"{cause.dependency.asset_key.to_user_string() if cause.dependency else ''}: {cause.reason}"
                    for cause in resolver.get_stale_causes(key, partition)
                ]
    return stale


# --------------------------------------------------------------------------- a real webhook receiver


WEBHOOK_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
"""The Standard Webhooks secret the tests deliver with (a fixed 32-byte key)."""


def signer():
    from avatar_assets.pipeline import events

    return events.Signer.from_secret(WEBHOOK_SECRET)


@dataclass(frozen=True)
class Post:
    """One POST as the receiver saw it: its headers (names lower-cased: HTTP names are case-insensitive),
    the exact body bytes, and how it was answered."""

    headers: dict[str, str]
    body: bytes
    answer: str

    @property
    def event_id(self) -> str:
        return self.headers["x-avatar-event-id"]


class Webhook:
    """An HTTP endpoint on 127.0.0.1 that records every request in arrival order.

    `mode` is how every POST is answered, `modes` overrides it per event id: "ok" answers 204, "error"
    500, "redirect" 301 to another path, "gone" 410, "hang" answers nothing for `hang_s`, "reset" reads
    the request and resets the connection. `received` holds the (event id, body) of the POSTs answered
    204, `posts` every POST, `requests` every (method, path) including any GET a redirect would cause.
    `delay_s` slows every answer; `stop()` closes the port (connection refused), `start()` reopens it.
    """

    def __init__(self, port: int = 0):
        self.received: list[tuple[str, dict]] = []
        self.posts: list[Post] = []
        self.requests: list[tuple[str, str]] = []
        self.attempts = 0
        self.mode = "ok"
        self.modes: dict[str, str] = {}
        self.delay_s = 0.0
        self.hang_s = 2.0
        self.lock = threading.Lock()
        self.port = port
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def ids(self) -> list[str]:
        with self.lock:
            return [event_id for event_id, _ in self.received]

    def posts_of(self, event_id: str) -> list[Post]:
        with self.lock:
            return [post for post in self.posts if post.event_id == event_id]

    def _handler(self):
        hook = self
        statuses = {"ok": 204, "error": 500, "redirect": 301, "gone": 410}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with hook.lock:
                    hook.requests.append(("GET", self.path))
                self.send_response(200)
                self.end_headers()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event_id = self.headers.get("X-Avatar-Event-Id", "")
                with hook.lock:
                    hook.attempts += 1
                    hook.requests.append(("POST", self.path))
                    mode, delay = hook.modes.get(event_id, hook.mode), hook.delay_s
                    hook.posts.append(Post({k.lower(): v for k, v in self.headers.items()}, body, mode))
                if delay:
                    time.sleep(delay)
                if mode == "hang":
                    time.sleep(hook.hang_s)
                    self.close_connection = True
                    return
                if mode == "reset":  # RST instead of an answer
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if mode == "ok":
                    with hook.lock:
                        hook.received.append((event_id, json.loads(body)))
                self.send_response(statuses[mode])
                if mode == "redirect":
                    self.send_header("Location", "/moved")
                self.end_headers()

            def finish(self):
                with contextlib.suppress(OSError):  # the client gave up, or "reset" closed the socket
                    super().finish()

            def log_message(self, *args):
                pass

        return Handler

    def start(self) -> Webhook:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=10)
            self.server = None


@contextlib.contextmanager
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    try:
        yield hook
    finally:
        hook.stop()


def outbox_ids(store) -> list[str]:
    from avatar_assets.pipeline import events

    return events.pending_ids(store, None)


def explain_materializations(instance: dg.DagsterInstance, storage_id: int, cells: list[tuple[str, str]]) -> str:
    """For a failed exactness assertion: which runs made each (asset, partition) after `storage_id`, and which
    automation evaluations held that partition true, node by node (what a flaky double needs to be traced)."""
    import datetime

    from dagster._core.definitions.partitions.context import partition_loading_context

    with partition_loading_context(datetime.datetime.now(datetime.timezone.utc), instance):
        return _explain(instance, storage_id, cells)


def _explain(instance: dg.DagsterInstance, storage_id: int, cells: list[tuple[str, str]]) -> str:
    lines = []
    records = materialization_records(instance, storage_id)
    for asset, partition in cells:
        lines.append(f"== {asset} {partition}")
        for made, entry in records:
            if made == (asset, partition):
                run = instance.get_run_by_id(entry.event_log_entry.run_id)
                lines.append(f"  materialized {entry.event_log_entry.timestamp:.2f} storage {entry.storage_id} by run "
                             f"{run.run_id[:8]} selection {sorted(k.to_user_string() for k in run.asset_selection or ())}"
                             f" tags { {k: v for k, v in run.tags.items() if 'evaluation' in k or 'sensor' in k} }")
        for record in reversed(instance.schedule_storage.get_auto_materialize_asset_evaluations(
                dg.AssetKey(asset), limit=30)):
            with_runs = record.get_evaluation_with_run_ids()
            held = list(_true_nodes(with_runs.evaluation, partition, depth=2))
            if held:
                lines.append(f"  evaluation {record.evaluation_id} at {record.timestamp:.2f} runs "
                             f"{sorted(r[:8] for r in with_runs.run_ids)}")
                lines.extend(held)
    return "\n".join(lines)


def _true_nodes(node, partition: str, depth: int):
    """The condition tree's nodes that held `partition` true, indented by depth (a false node's true
    children are listed too: under a NOT they are what blocked)."""
    value = node.true_subset.value
    if value if isinstance(value, bool) else partition in set(value.get_partition_keys()):
        snapshot = node.condition_snapshot
        yield "  " * depth + (snapshot.label or snapshot.name or snapshot.description)[:70]
    for child in node.child_evaluations:
        yield from _true_nodes(child, partition, depth + 1)
