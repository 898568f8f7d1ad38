"""The asset graph is the contract: keys, deps (and their partition mappings), partitions, checks and
their blocking flag, automation conditions, backfill policies, pools, groups and code versions are compared with a committed
snapshot, so any change to the graph shows up in review.

Regenerate after an intended change:  UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_graph_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def describe_partitions(partitions_def) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return f"dynamic:{partitions_def.name}"
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        dimensions = ",".join(
            f"{d.name}={describe_partitions(d.partitions_def)}" for d in partitions_def.partitions_defs
        )
        return f"multi({dimensions})"
    return type(partitions_def).__name__


def describe_mapping(mapping) -> str:
    name = type(mapping).__name__
    dimension = getattr(mapping, "partition_dimension_name", None)
    return f"{name}({dimension})" if dimension else name


def describe_condition(condition) -> str | None:
    if condition is None:
        return None
    return condition.get_label() or type(condition).__name__


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "code_version": node.code_version,
            "partitions": describe_partitions(node.partitions_def),
            "automation_condition": describe_condition(node.automation_condition),
            "backfill_policy": str(node.backfill_policy) if node.backfill_policy else None,
            "pools": sorted(node.pools or []),
            "deps": {
                parent.to_user_string(): describe_mapping(graph.get_partition_mapping(key, parent))
                for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string())
            },
            "checks": sorted(check.name for check in node.check_keys),
        }
    checks = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(check_key)
        checks[f"{check_key.asset_key.to_user_string()}:{check_key.name}"] = {
            "blocking": spec.blocking,
            "partitions": describe_partitions(spec.partitions_def),
        }
    repository = defs.get_repository_def()
    return {
        "assets": assets,
        "checks": checks,
        "jobs": sorted(job.name for job in repository.get_all_jobs() if not job.name.startswith("__")),
        "sensors": sorted(sensor.name for sensor in repository.sensor_defs),
    }


def test_asset_graph_matches_snapshot():
    from avatar_assets.definitions import defs

    current = graph_snapshot(defs)
    text = json.dumps(current, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing: write it with UPDATE_SNAPSHOTS=1 and commit it"
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the asset graph changed; if intended, regenerate with "
        "UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_graph_snapshot.py and review the diff"
    )


def test_identity_part_of_the_graph_is_as_designed():
    """Independent of the snapshot file: the identity contract from DESIGN.md."""
    from avatar_assets.definitions import defs

    snapshot = graph_snapshot(defs)
    assets = snapshot["assets"]
    expected_deps = {
        "source_upload": [],
        "validated_inputs": ["source_upload"],
        "neutral_image": ["source_upload", "validated_inputs"],
        "character_sheet": ["neutral_image"],
        "voice_profile": ["source_upload"],
        "identity_bundle": ["character_sheet", "neutral_image", "source_upload", "validated_inputs", "voice_profile"],
    }
    for name, deps in expected_deps.items():
        node = assets[name]
        assert sorted(node["deps"]) == deps, name
        assert set(node["deps"].values()) <= {"IdentityPartitionMapping"}, name
        assert node["partitions"] == "dynamic:avatars" and node["group"] == "identity"
        assert node["code_version"] is not None
        expected_condition = None if name == "source_upload" else "refresh existing, never invent"
        assert node["automation_condition"] == expected_condition, name
    for check in [
        "validated_inputs:usable_photo_and_consent",
        "neutral_image:neutral_face_geometry",
        "voice_profile:voice_sample_quality",
    ]:
        assert snapshot["checks"][check] == {"blocking": True, "partitions": "dynamic:avatars"}
    assert "build_identity" in snapshot["jobs"]
    assert "avatar_upload_sensor" in snapshot["sensors"]


def test_snapshot_is_stable_across_loads():
    from avatar_assets.definitions import build_definitions, defs
    from resources.wiring import build_resources

    first = graph_snapshot(defs)
    second = graph_snapshot(build_definitions(build_resources()))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
