"""`avatarops upload / process / status`: exit codes, messages and what lands in the inbox."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from avatar_assets.cli import EXIT_BAD_INPUT, main
from tests.conftest import copy_sample, env_without_homes, manifest_for, sha256_tree, write_bundle

AVATAROPS = Path(sys.executable).parent / "avatarops"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def inbox_files(home) -> list[str]:
    root = home.root / "inbox"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_copies_the_bundle_into_the_inbox(home, sample_bundle, tmp_path):
    source = copy_sample(sample_bundle, tmp_path / "mine", "ada-01")
    before = sha256_tree(source)
    result = invoke("upload", str(source))
    assert result.exit_code == 0, result.output
    destination = home.inbox / "ada-01"
    assert result.stdout.strip() == f"uploaded to {destination}"
    # The manifest and the files it lists, byte for byte; nothing else; the user's folder untouched.
    copied = sha256_tree(destination)
    assert copied == {k: v for k, v in before.items() if k != "consent.txt"}
    assert sha256_tree(source) == before
    assert inbox_files(home) == sorted(f"avatars/ada-01/{k}" for k in copied)  # no staging left behind
    assert not any((home.root / "inbox" / ".incoming").iterdir())


def test_reupload_archives_the_previous_bundle(home, sample_bundle, photos, tmp_path):
    source = copy_sample(sample_bundle, tmp_path / "mine", "ada-01")
    assert invoke("upload", str(source)).exit_code == 0
    first = sha256_tree(home.inbox / "ada-01")
    (source / "photos" / "portrait.jpg").write_bytes(photos["mirrored"])
    assert invoke("upload", str(source)).exit_code == 0
    assert sha256_tree(home.inbox / "ada-01")["photos/portrait.jpg"] == sha256_tree(source)["photos/portrait.jpg"]
    [archived] = list((home.root / "archive" / "uploads").iterdir())
    assert archived.name.startswith("ada-01-")
    assert sha256_tree(archived) == first  # nothing a user sent is deleted


@pytest.mark.parametrize(
    "breakage, words",
    [
        ("traversal", "photos.0: path '../../etc/passwd' leaves the bundle (path traversal)"),
        ("missing-file", "photos/portrait.jpg: listed in the manifest but missing from the bundle"),
        ("bad-id", "avatar_id: String should match pattern"),
        ("unknown-field", "nickname: unknown field (not part of the upload contract)"),
        ("no-manifest", "manifest.json not found"),
        ("deep-nesting", "manifest.json nests too deeply to be a manifest"),
        ("huge-manifest", "over the 64 KB limit"),
        ("json-null", "manifest.json must hold a JSON object"),
        ("not-utf8", "manifest.json is not UTF-8 text"),
    ],
)
def test_bad_upload_exits_2_and_writes_nothing(home, sample_bundle, tmp_path, breakage, words):
    source = copy_sample(sample_bundle, tmp_path / "mine", "ada-01")
    manifest = json.loads((source / "manifest.json").read_text())
    if breakage == "traversal":
        manifest["photos"] = ["../../etc/passwd"]
    elif breakage == "missing-file":
        (source / "photos" / "portrait.jpg").unlink()
    elif breakage == "bad-id":
        manifest["avatar_id"] = "Ada/01"
    elif breakage == "unknown-field":
        manifest["nickname"] = "ada"
    (source / "manifest.json").write_text(json.dumps(manifest))
    if breakage == "no-manifest":
        (source / "manifest.json").unlink()
    raw = {"deep-nesting": b"[" * 30_000 + b"]" * 30_000, "huge-manifest": json.dumps(manifest).encode() + b" " * 20_000_000,
           "json-null": b"null", "not-utf8": b"\xff\xfe{}"}
    if breakage in raw:
        (source / "manifest.json").write_bytes(raw[breakage])
    before = sha256_tree(source)

    result = invoke("upload", str(source))
    assert result.exit_code == EXIT_BAD_INPUT == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: bad upload bundle:")
    assert words in result.stderr and "Traceback" not in result.stderr
    assert inbox_files(home) == []
    assert not (home.inbox / "ada-01").exists()
    assert sha256_tree(source) == before


def test_upload_of_a_missing_folder_is_a_usage_error(home, tmp_path):
    result = invoke("upload", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert inbox_files(home) == []


def test_installed_entry_point_upload(home, sample_photo, tmp_path):
    """The real `avatarops` script, in a subprocess, with AVATAR_HOME from the environment."""
    env = {**env_without_homes(), "AVATAR_HOME": str(home.root)}
    good = write_bundle(tmp_path / "mine", "ada-01", {"photos/a.jpg": sample_photo})
    bad = write_bundle(
        tmp_path / "mine", "bob-02", {"photos/a.jpg": sample_photo},
        manifest=manifest_for("bob-02", ["/etc/passwd"], None),
    )
    refused = subprocess.run([AVATAROPS, "upload", bad], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "photos.0: path '/etc/passwd' is absolute" in refused.stderr
    assert inbox_files(home) == []
    accepted = subprocess.run([AVATAROPS, "upload", good], env=env, capture_output=True, text=True, timeout=60)
    assert accepted.returncode == 0, accepted.stderr
    assert inbox_files(home) == ["avatars/ada-01/manifest.json", "avatars/ada-01/photos/a.jpg"]


def test_process_with_nothing_to_do(home):
    result = invoke("process")
    assert result.exit_code == 0
    assert result.stdout.strip() == "nothing to do"
    as_json = invoke("process", "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {"ok": True, "runs": [], "skipped": [], "quarantined": [], "crashed": []}


def test_process_and_status_report_runs_gates_and_quarantine(home, sample_bundle, photos, tmp_path):
    # A good avatar: exit 0 with its run listed.
    assert invoke("upload", str(copy_sample(sample_bundle, tmp_path / "mine", "ada-01"))).exit_code == 0
    time.sleep(0.01)
    first = invoke("process", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["ok"] is True
    [run] = report["runs"]
    assert (run["job"], run["partition"], run["origin"], run["success"]) == (
        "build_identity", "ada-01", "avatar_upload_sensor", True
    )
    assert run["failed_checks"] == [] and run["error"] is None and len(run["run_id"]) == 36

    # A photo without a face, and a bundle that only the sensor can judge (avatar id != folder).
    no_face = write_bundle(tmp_path / "mine", "bob-02", {"photos/a.png": photos["no_face"]})
    assert invoke("upload", str(no_face)).exit_code == 0
    write_bundle(home.inbox, "carol-03", {"photos/a.png": photos["good"]}, manifest=manifest_for("dave-04", ["photos/a.png"], None))
    time.sleep(0.01)
    second = invoke("process", "--json")
    assert second.exit_code == 1
    report = json.loads(second.stdout)
    assert report["ok"] is False
    [run] = report["runs"]
    assert run["partition"] == "bob-02" and run["success"] is False
    assert run["failed_checks"] == [
        "validated_inputs[bob-02] usable_photo_and_consent (ERROR): "
        "no photo with exactly one usable face; photos/a.png: no face found"
    ]
    [quarantined_now] = report["quarantined"]
    assert quarantined_now["problems"] == ["avatar_id 'dave-04' does not match the bundle folder name 'carol-03'"]

    status = invoke("status", "--json")
    assert status.exit_code == 0
    document = json.loads(status.stdout)
    assert document["home"] == str(home.root)
    assert document["avatars"]["ada-01"]["state"] == "ready"
    assert document["avatars"]["bob-02"]["state"] == "building"
    assert document["avatars"]["bob-02"]["identity"]["state"] == "blocked"
    assert document["avatars"]["bob-02"]["identity"]["stage"] == "validated_inputs"
    from avatar_assets.ops.status import AVATAR_STATES, RUN_STATES

    for entry in document["avatars"].values():  # one list of words each, nothing else
        assert entry["state"] in AVATAR_STATES and entry["identity"]["state"] in RUN_STATES
    assert document["avatars"]["bob-02"]["blocked_by"] == [
        "validated_inputs:usable_photo_and_consent: no photo with exactly one usable face; photos/a.png: no face found"
    ]
    assert document["avatars"]["bob-02"]["assets"]["neutral_image"] is None
    [quarantined] = document["quarantined"]
    assert quarantined["avatar_id"] == "carol-03"
    assert quarantined["problems"] == ["avatar_id 'dave-04' does not match the bundle folder name 'carol-03'"]

    text = invoke("status")
    assert "avatar ada-01: ready" in text.stdout
    assert "avatar bob-02: building (identity run blocked at validated_inputs: " in text.stdout
    assert "[FAIL] validated_inputs:usable_photo_and_consent: no photo with exactly one usable face" in text.stdout
    assert "quarantined carol-03 at" in text.stdout

    # Nothing new: exit 0 again, even though bob-02 stays blocked (process reports runs, not history).
    third = invoke("process")
    assert third.exit_code == 0 and third.stdout.strip() == "nothing to do"


def test_status_names_the_worker_that_ran_each_run(home):
    """On a cluster each run carries `avatar/worker` (written by the Celery worker that executed it); `status`
    shows it for the identity run and for each output's run, in the JSON and in the text."""
    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from avatar_assets.cluster import WORKER_TAG
    from avatar_assets.dagster_compat import PARTITION_NAME_TAG
    from partitions import cell_key

    home.instance.add_dynamic_partitions("avatars", ["ada-01"])
    home.instance.add_dynamic_partitions("outputs", ["hello"])
    for partition, worker in (("ada-01", "gpu1@box"), (cell_key("ada-01", "hello"), "cpu2@box")):
        create_run_for_test(home.instance, job_name="any", status=dg.DagsterRunStatus.SUCCESS,
                            tags={PARTITION_NAME_TAG: partition, WORKER_TAG: worker})
    create_run_for_test(home.instance, job_name="any", status=dg.DagsterRunStatus.SUCCESS,
                        tags={PARTITION_NAME_TAG: "elsewhere"})

    document = json.loads(invoke("status", "--json").stdout)
    avatar = document["avatars"]["ada-01"]
    assert avatar["identity"]["worker"] == "gpu1@box"
    assert avatar["outputs"]["hello"]["worker"] == "cpu2@box"
    text = invoke("status").stdout
    assert "avatar ada-01: building (identity run on gpu1@box)" in text
    assert "  output hello: done on cpu2@box" in text
