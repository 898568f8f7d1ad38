"""Private by default: nothing under AVATAR_HOME or DAGSTER_HOME is open to group or others.

Faces, voices and consent records sit in the inbox, the archive, quarantine, the media store and the
instance's run history (inline base64 thumbnails), so every folder must end 0700 and every file 0600
whatever the umask, also when the operator made the homes with `mkdir` (0755) and dropped bundles
with 0644 files. The end-to-end test drives the real `avatarops` script under `umask 022`; the others
cover the moves that keep a dropped file's mode while a daemon runs (no CLI walk beforehand).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import copy_sample, manifest_for, write_bundle

AVATAROPS = Path(sys.executable).parent / "avatarops"
LOG = logging.getLogger(__name__)


def assert_private(*roots: Path) -> None:
    """No folder or file under `roots` (roots included) has a group or other permission bit."""
    loose = [
        f"{oct(path.lstat().st_mode & 0o777)} {path}"
        for root in roots
        for path in [root, *root.rglob("*")]
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    ]
    assert not loose, "open to group or others:\n" + "\n".join(loose)


def open_up(root: Path) -> Path:
    """What `mkdir` and `cp` under umask 022 leave: folders 0755, files 0644."""
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return root


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def avatarops(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The installed script started from a shell whose umask lets group and others read."""
    return subprocess.run(
        ["bash", "-c", 'umask 022; exec "$0" "$@"', str(AVATAROPS), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )


def test_homes_made_0755_stay_private_through_upload_process_and_quarantine(sample_bundle, tmp_path):
    avatar_home, dagster_home = tmp_path / "avatar_home", tmp_path / "dagster_home"  # DAGSTER_HOME outside
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    avatar_home.mkdir()
    open_up(avatar_home)
    open_up(dagster_home)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_", "DAGSTER_", "AWS_"))},
        "AVATAR_HOME": str(avatar_home),
        "DAGSTER_HOME": str(dagster_home),
        "AVATAR_UPLOAD_SETTLE_SECONDS": "0",
    }
    bundle = open_up(copy_sample(sample_bundle, tmp_path / "mine", "ada-01"))

    uploaded = avatarops("upload", str(bundle), env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    first = avatarops("process", "--json", env=env)
    assert first.returncode == 0, first.stderr[-4000:]
    assert json.loads(first.stdout)["runs"][0]["success"] is True

    # A foreign bundle claiming ada-01, hand-dropped with the dropper's modes (quarantined: folder != id),
    # and the owner's re-upload, which archives the bundle it replaces.
    foreign = manifest_for("ada-01", ["photos/a.jpg"], None) | {"creator_id": "other-studio"}
    photo = (sample_bundle / "photos" / "portrait.jpg").read_bytes()
    open_up(write_bundle(avatar_home / "inbox" / "avatars", "intruder", {"photos/a.jpg": photo}, manifest=foreign))
    assert avatarops("upload", str(bundle), env=env).returncode == 0
    time.sleep(0.01)
    second = avatarops("process", "--json", env=env)
    assert second.returncode == 1, second.stderr[-4000:]  # 1: it quarantined a bundle

    assert list((avatar_home / "quarantine").glob("intruder-*/bundle/photos/a.jpg"))
    assert list((avatar_home / "archive" / "uploads").glob("ada-01-*/manifest.json"))
    assert list((dagster_home / "history" / "runs").glob("*.db"))  # the run history with face thumbnails
    assert_private(avatar_home, dagster_home)


def test_moves_of_hand_dropped_files_make_them_private(home, sample_photo):
    """The sensors' own moves, as under a daemon: the dropped modes do not survive them."""
    from sensors.requests import evaluate_requests
    from sensors.uploads import evaluate_uploads

    with umask(0o022):
        good = open_up(write_bundle(home.inbox, "ada-01", {"photos/a.jpg": sample_photo}))
        open_up(write_bundle(home.inbox, "bad-02", {"photos/a.jpg": sample_photo}, manifest=manifest_for("x", [], None)))
        request = home.root / "inbox" / "outputs" / "ada-01" / "broken.json"
        request.parent.mkdir(parents=True)
        request.write_text("{not json")
        open_up(home.root / "inbox")
        evaluate_uploads(None, store=home.store, settle_seconds=0, log=LOG)
        evaluate_requests(home.instance, home.store, LOG)

    quarantined = sorted(home.quarantine.iterdir())
    assert [p.name.rsplit("-", 1)[0] for p in quarantined] == ["bad-02", "output-ada-01-broken"]
    assert_private(good, *quarantined)


def test_a_quarantine_copied_across_file_systems_is_private(tmp_path, monkeypatch, sample_photo):
    """copytree with copy2 (the fallback when rename fails) copies the source's mode bits."""
    from avatar_assets.identity import intake

    def cross_device(source, target):
        raise OSError(18, "Invalid cross-device link")

    with umask(0o022):
        bundle = open_up(write_bundle(tmp_path / "inbox", "ada-01", {"photos/a.jpg": sample_photo}))
        monkeypatch.setattr(intake.os, "rename", cross_device)
        target = intake.quarantine(bundle, ["a reason"], tmp_path / "quarantine")
    assert not bundle.exists() and (target / "bundle" / "photos" / "a.jpg").is_file()
    assert_private(target)
