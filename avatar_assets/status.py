"""What `avatarops status` reports: per avatar, each asset's latest materialization and gate verdicts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import ValidationError

from resources.records import record_key

from avatar_assets import settings
from avatar_assets.contracts import QuarantineReason

CHECK_HISTORY_LIMIT = 5000


def latest_check_verdicts(instance: dg.DagsterInstance) -> dict[tuple[str, str], dict]:
    """Newest evaluation per (partition, asset/check)."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
        limit=CHECK_HISTORY_LIMIT,
        ascending=False,
    )
    verdicts: dict[tuple[str, str], dict] = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        key = (str(evaluation.partition), f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
        verdicts.setdefault(
            key,
            {
                "passed": evaluation.passed,
                "severity": evaluation.severity.value,
                "description": evaluation.description,
            },
        )
    return verdicts


def quarantine_entry(reason_file: Path) -> dict:
    """What a quarantine entry says, through the one `QuarantineReason` schema; an entry written by an older
    version (output requests had their own shape) or edited by hand is still listed, never a crash."""
    try:
        reason = QuarantineReason.model_validate_json(reason_file.read_text())
        return {"kind": reason.kind, "avatar_id": reason.avatar_id, "slug": reason.slug, "problems": reason.problems}
    except (ValidationError, OSError, ValueError):
        try:
            document = json.loads(reason_file.read_text())
        except (OSError, ValueError):
            document = {}
        document = document if isinstance(document, dict) else {}
        return {
            "kind": "output_request" if "request" in document else "upload",
            "avatar_id": str(document.get("avatar_id") or reason_file.parent.name),
            "slug": None,
            "problems": [str(p) for p in document.get("problems", [])] if isinstance(document.get("problems"), list)
            else [f"{reason_file} could not be read as a quarantine reason"],
        }


def collect_status(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict:
    graph = defs.resolve_asset_graph()
    verdicts = latest_check_verdicts(instance)
    avatars = {}
    for avatar_id in instance.get_dynamic_partitions("avatars"):
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
        gates = {name: verdict for (partition, name), verdict in verdicts.items() if partition == avatar_id}
        blocked = [f"{name}: {v['description']}" for name, v in gates.items() if not v["passed"] and v["severity"] == "ERROR"]
        avatars[avatar_id] = {
            "state": "blocked" if blocked else ("ready" if all(assets.values()) else "incomplete"),
            "assets": assets,
            "gates": gates,
            "blocked_by": blocked,
        }
    for avatar_id, entry in avatars.items():
        entry["outputs"] = output_status(instance, avatar_id)
    held = []
    held_root = settings.avatar_home() / "requests" / "held"
    for path in sorted(held_root.glob("*.json")) if held_root.is_dir() else []:
        held.append({"request": path.stem.replace("--", "/"), **json.loads(path.read_text())})
    quarantined = []
    root = settings.quarantine_dir()
    for reason_file in sorted(root.glob("*/reason.json")) if root.is_dir() else []:
        quarantined.append({"path": str(reason_file.parent), **quarantine_entry(reason_file)})
    return {"home": str(settings.avatar_home()), "avatars": avatars, "held": held, "quarantined": quarantined}


def output_status(instance: dg.DagsterInstance, avatar_id: str) -> dict:
    """Per output slug of the avatar: the furthest stage materialized, and whether a person must act."""
    from avatar_assets.approvals import VIDEO_STAGES
    from resources.records import read_record
    from resources.wiring import media_store

    store = media_store()
    cells = {}
    for slug in instance.get_dynamic_partitions("outputs"):
        partition = f"{avatar_id}|{slug}"
        done = [stage for stage in VIDEO_STAGES if store.read_text(record_key(stage, partition)) is not None]
        if not done:
            continue
        lip_sync = read_record(store, "lip_sync", partition) if "lip_sync" in done else None
        waiting = bool(lip_sync and lip_sync.awaiting_approval and "stitched_video" not in done)
        cells[slug] = {
            "stages": done,
            "state": "packaged" if "output_package" in done else ("waiting for approval of lip_sync" if waiting else "in progress"),
        }
    return cells


def format_status(report: dict) -> str:
    lines = [f"AVATAR_HOME {report['home']}"]
    if not report["avatars"]:
        lines.append("no avatars yet")
    for avatar_id, entry in sorted(report["avatars"].items()):
        lines.append(f"avatar {avatar_id}: {entry['state']}")
        for asset, when in entry["assets"].items():
            lines.append(f"  {asset:18} {when or 'not materialized'}")
        for name, verdict in sorted(entry["gates"].items()):
            mark = "pass" if verdict["passed"] else ("FAIL" if verdict["severity"] == "ERROR" else "warn")
            lines.append(f"  [{mark}] {name}: {verdict['description'] or ''}")
        for slug, cell in entry.get("outputs", {}).items():
            lines.append(f"  output {slug}: {cell['state']} (last stage {cell['stages'][-1]})")
    for item in report.get("held", []):
        lines.append(f"held request {item['request']}: {item['reason']}")
    for item in report["quarantined"]:
        what = item["avatar_id"]
        if item["kind"] == "output_request":
            what = f"request {item['avatar_id']}/{item['slug']}" if item["slug"] else f"request for {item['avatar_id']}"
        lines.append(f"quarantined {what} at {item['path']}:")
        lines.extend(f"  - {problem}" for problem in item["problems"])
    return "\n".join(lines)
