"""What `avatarops status` reports: per avatar, each asset's latest materialization and gate verdicts."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from avatar_assets import settings
from avatar_assets.dagster_compat import PARTITION_NAME_TAG, latest_check_verdicts
from avatar_assets.ops import render_cap
from avatar_assets.pipeline import quarantine, tombstones
from avatar_assets.video import requests
from partitions import cell_key
from resources.layout import TOMBSTONES, inbox_request, record_key, tombstone_avatar
from resources.media_store import MediaStore


def check_verdicts(graph, instance: dg.DagsterInstance, avatar_id: str) -> dict[str, dict]:
    """The newest verdict of each of the avatar's identity gates, by `asset:check`: read for this partition
    only, however many avatars and videos the instance has seen."""
    verdicts = {}
    for key, entry in latest_check_verdicts(instance, _identity_check_keys(graph), avatar_id).items():
        if entry is None:
            continue
        evaluation = entry.dagster_event.event_specific_data
        verdicts[f"{key.asset_key.to_user_string()}:{key.name}"] = {
            "passed": evaluation.passed,
            "severity": evaluation.severity.value,
            "description": evaluation.description,
            "numbers": measured_numbers(evaluation.metadata),
        }
    return verdicts


def _identity_check_keys(graph) -> list[dg.AssetCheckKey]:
    return sorted((key for key in graph.asset_check_keys
                   if getattr(graph.get(key.asset_key).partitions_def, "name", None) == "avatars"), key=str)


def measured_numbers(metadata: dict) -> dict[str, float]:
    """The numbers a gate measured (its int and float metadata), which explain its verdict."""
    numbers = {}
    for name, entry in (metadata or {}).items():
        value = getattr(entry, "value", entry)
        if isinstance(value, int | float) and not isinstance(value, bool):
            numbers[name] = value
    return numbers


RUN_STATES = ("queued", "running", "waiting_approval", "blocked", "failed", "crashed", "done")
"""Where a run or a render stands; `status` uses no other words."""
AVATAR_STATES = ("ready", "building", "revoking", "revoked")

_QUEUED = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING}
_RUNNING = {dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


def _step_keys(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[str]:
    return [record.event_log_entry.dagster_event.step_key for record in instance.get_records_for_run(run_id, of_type=kind).records]


def run_state(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict:
    """One run's state, the stage it stopped in and, when it stopped, why (the gate's or the error's words)."""
    from avatar_assets.cluster import WORKER_TAG
    from avatar_assets.ops.run_health import CRASHED_TAG
    from avatar_assets.ops.runner import check_failures, run_failure

    # `worker`: the Celery node that executed the run on a cluster (`avatar/worker`), None elsewhere.
    entry = {"run_id": run.run_id, "state": "done", "stage": None, "reason": None, "worker": run.tags.get(WORKER_TAG)}
    if run.status in _QUEUED:
        entry["state"] = "queued"
    elif run.status in _RUNNING:
        started = _step_keys(instance, run.run_id, dg.DagsterEventType.STEP_START)
        entry.update(state="running", stage=started[-1] if started else None)
    elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        gates = [failure for failure in check_failures(instance, run.run_id) if "(ERROR)" in failure]
        failed_step, error = run_failure(instance, run.run_id)
        if gates:
            entry.update(state="blocked", stage=gates[0].split("[", 1)[0], reason="; ".join(gates))
        elif failed_step is not None:
            entry.update(state="failed", stage=failed_step, reason=error)
        else:
            finished = set(_step_keys(instance, run.run_id, dg.DagsterEventType.STEP_SUCCESS))
            unfinished = [key for key in _step_keys(instance, run.run_id, dg.DagsterEventType.STEP_START) if key not in finished]
            crashed = CRASHED_TAG in run.tags or run.status == dg.DagsterRunStatus.FAILURE
            entry.update(
                state="crashed" if crashed else "failed",
                stage=unfinished[-1] if unfinished else None,
                reason="its process died" if crashed else "canceled",
            )
    return entry


def latest_run(instance: dg.DagsterInstance, partition: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(tags={PARTITION_NAME_TAG: partition}), limit=1)
    return runs[0] if runs else None


def collect_status(defs: dg.Definitions, instance: dg.DagsterInstance, store: MediaStore) -> dict:
    from avatar_assets.ops.run_health import reap

    reap(instance)
    graph = defs.resolve_asset_graph()
    avatars = {
        avatar_id: avatar_status(graph, instance, store, avatar_id)
        for avatar_id in instance.get_dynamic_partitions("avatars")
    }
    for key in store.list_keys(TOMBSTONES):
        stone = tombstones.tombstone(store, tombstone_avatar(key))
        if stone is not None and stone.avatar_id not in avatars:
            avatars[stone.avatar_id] = {"state": stone.status, "identity": None, "assets": {}, "gates": {},
                                        "blocked_by": [], "outputs": {}}
    held = requests.held_requests(store)
    listed = [*quarantine.entries(), *quarantine.stored_entries(store)]
    quarantined = [{"path": str(folder), **entry} for folder, entry in listed]
    return {"home": str(settings.avatar_home()), "avatars": avatars, "held": held, "quarantined": quarantined}


def avatar_status(graph, instance: dg.DagsterInstance, store: MediaStore, avatar_id: str) -> dict:
    """One avatar's entry of the report."""
    assets = {}
    for key in graph.toposorted_asset_keys:
        # Only avatar-partitioned assets (video cells are multi-partitioned and have no `name`).
        if getattr(graph.get(key).partitions_def, "name", None) != "avatars":
            continue
        events = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[avatar_id]), limit=1
        ).records
        assets[key.to_user_string()] = (
            datetime.fromtimestamp(events[0].timestamp, UTC).isoformat(timespec="seconds") if events else None
        )
    gates = check_verdicts(graph, instance, avatar_id)
    blocked = [f"{name}: {v['description']}" for name, v in gates.items() if not v["passed"] and v["severity"] == "ERROR"]
    run = latest_run(instance, avatar_id)
    stone = tombstones.tombstone(store, avatar_id)
    return {
        "state": stone.status if stone else ("ready" if all(assets.values()) and not blocked else "building"),
        "identity": run_state(instance, run) if run else None,
        "assets": assets,
        "gates": gates,
        "blocked_by": blocked,
        "outputs": output_status(instance, store, avatar_id),
    }


def output_status(instance: dg.DagsterInstance, store: MediaStore, avatar_id: str) -> dict:
    """Per output slug of the avatar: the stages materialized and the state of its newest run."""
    from avatar_assets.video.assets import VIDEO_STAGES
    from resources.records import read_record

    cells = {}
    for slug in instance.get_dynamic_partitions("outputs"):
        partition = cell_key(avatar_id, slug)
        done = [stage for stage in VIDEO_STAGES if store.read_text(record_key(stage, partition)) is not None]
        run = latest_run(instance, partition)
        if not done and run is None:
            continue
        entry = {"stages": done, **(run_state(instance, run) if run else
                                    {"run_id": None, "state": "done", "stage": None, "reason": None})}
        lip_sync = read_record(store, "lip_sync", partition) if "lip_sync" in done else None
        if entry["state"] not in ("queued", "running") and lip_sync and lip_sync.awaiting_approval and "stitched_video" not in done:
            entry.update(state="waiting_approval", stage="lip_sync", reason="a person must approve or reject lip_sync")
        cells[slug] = entry
    return cells


def format_status(report: dict) -> str:
    lines = [f"AVATAR_HOME {report['home']}"]
    if not report["avatars"]:
        lines.append("no avatars yet")
    for avatar_id, entry in sorted(report["avatars"].items()):
        identity = entry.get("identity")
        note = ""
        if identity and identity["state"] != "done":
            note = f" (identity run {_describe(identity)})"
        elif identity and identity.get("worker"):
            note = f" (identity run on {identity['worker']})"
        lines.append(f"avatar {avatar_id}: {entry['state']}{note}")
        for asset, when in entry["assets"].items():
            lines.append(f"  {asset:18} {when or 'not materialized'}")
        for name, verdict in sorted(entry["gates"].items()):
            mark = "pass" if verdict["passed"] else ("FAIL" if verdict["severity"] == "ERROR" else "warn")
            lines.append(f"  [{mark}] {name}: {verdict['description'] or ''}")
        for slug, cell in entry.get("outputs", {}).items():
            lines.append(f"  output {slug}: {_describe(cell)}")
    for item in report.get("held", []):
        lines.append(f"held request {item['request']}: {item['reason']}")
    for item in report["quarantined"]:
        what = item["avatar_id"]
        if item["kind"] == "output_request":
            what = f"request {item['avatar_id']}/{item['slug']}" if item["slug"] else f"request for {item['avatar_id']}"
        lines.append(f"quarantined {what} at {item['path']}:")
        lines.extend(f"  - {problem}" for problem in item["problems"])
    return "\n".join(lines)


def _describe(entry: dict) -> str:
    words = entry["state"] + (f" at {entry['stage']}" if entry.get("stage") else "")
    words += f" on {entry['worker']}" if entry.get("worker") else ""
    return words + (f": {entry['reason']}" if entry.get("reason") else "")


def render_status(instance: dg.DagsterInstance, store: MediaStore, avatar_id: str, slug: str, sha256: str) -> dict:
    """Where the render of one accepted request stands: its newest run's state and stage, the share of video
    stages its runs finished, an ETA from their mean stage time, and its package once made.

    `accepted` means the request waits in the inbox for the request sensor; `held` that the sensor holds it
    (the note says why), `queued` that it waits under its tenant's render cap; the other states are
    `run_state`'s, plus `waiting_approval` when a segment ended at a gate.
    """
    from avatar_assets.video.assets import VIDEO_STAGES
    from resources.records import read_record

    partition = cell_key(avatar_id, slug)
    runs = render_runs(instance, partition, sha256)
    entry = {"run_id": None, "state": "accepted", "stage": None, "reason": None, "progress_percent": 0.0,
             "eta_seconds": None, "package": None}
    if not runs:
        held = next((note for note in requests.held_requests(store) if note["request"] == inbox_request(avatar_id, slug)), None)
        if held is not None:
            reason = held.get("reason") or ""
            entry.update(state="queued" if reason.startswith(render_cap.REASON) else "held", reason=reason)
        return entry
    entry.update({key: value for key, value in run_state(instance, runs[0]).items() if key != "worker"})
    finished: dict[str, float] = {}
    for run in runs:
        finished.update(_finished_steps(instance, run.run_id))
    done = [stage for stage in VIDEO_STAGES if stage in finished]
    entry["progress_percent"] = round(100.0 * len(done) / len(VIDEO_STAGES), 1)
    if entry["state"] in ("queued", "running") and finished:
        entry["eta_seconds"] = round(sum(finished.values()) / len(finished) * (len(VIDEO_STAGES) - len(done)), 1)
    if "output_package" in done:
        entry["package"] = read_record(store, "output_package", partition)
    elif entry["state"] == "done":
        entry.update(state="waiting_approval", stage=done[-1] if done else None,
                     reason="a person must approve or reject the stage before the render goes on")
    return entry


def render_runs(instance: dg.DagsterInstance, partition: str, sha256: str) -> list[dg.DagsterRun]:
    """The cell's runs that render request `sha256`, newest first: from the first run the request sensor launched
    for it on, the later segments, retries and refreshes too (they render the cell's current request), up to the
    first run of a newer request."""
    runs = instance.get_runs(dg.RunsFilter(tags={PARTITION_NAME_TAG: partition}))
    ours = [index for index, run in enumerate(runs) if run.tags.get(requests.REQUEST_TAG) == sha256]
    if not ours:
        return []
    newer = [index for index in range(ours[-1]) if runs[index].tags.get(requests.REQUEST_TAG) not in (None, sha256)]
    return runs[max(newer) + 1 if newer else 0: ours[-1] + 1]


def _finished_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds each step of the run took, for the steps that succeeded."""
    started = {record.event_log_entry.dagster_event.step_key: record.event_log_entry.timestamp
               for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records}
    return {
        record.event_log_entry.dagster_event.step_key:
            record.event_log_entry.timestamp - started.get(record.event_log_entry.dagster_event.step_key, record.event_log_entry.timestamp)
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
    }
