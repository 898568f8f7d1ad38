"""Ownership and intake races: an avatar id belongs to the creator who first claimed it.

A later bundle of that id from another creator is refused by `avatarops upload` (exit 2, the owner's bundle
in the inbox untouched) or quarantined by the upload sensor with the reason; of two creators uploading one
new id at the same moment exactly one wins; the owner's own re-upload replaces as before; `--creator` acts
only on avatars the creator owns. Also the other intake race: a photo that disappears after the sensor took
its bundle fails that run only. Real CLI processes, a real inbox, the real sensor.
"""

from __future__ import annotations

import json
import subprocess
import threading

from click.testing import CliRunner

from avatar_assets.cli import main
from avatar_assets.identity.ownership import owner
from tests.conftest import copy_sample, sha256_tree
from tests.servers import REPO_ROOT, VENV_BIN, clean_env


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def bundle_of(sample_bundle, parent, avatar_id: str, creator: str):
    bundle = copy_sample(sample_bundle, parent / creator, avatar_id)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["creator_id"] = creator
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_another_creators_upload_is_refused_and_the_owners_bundle_stays(home, sample_bundle, tmp_path):
    assert invoke("upload", str(bundle_of(sample_bundle, tmp_path, "ada", "studio-a"))).exit_code == 0
    owned = sha256_tree(home.inbox / "ada")
    taken = invoke("upload", str(bundle_of(sample_bundle, tmp_path, "ada", "studio-b")))
    assert taken.exit_code == 2
    assert "avatar id 'ada' belongs to creator 'studio-a'; creator 'studio-b' may not replace it" in taken.stderr
    assert sha256_tree(home.inbox / "ada") == owned  # neither archived nor replaced
    assert not (home.root / "archive").exists()
    assert owner(home.store, "ada").creator_id == "studio-a"
    again = invoke("upload", str(bundle_of(sample_bundle, tmp_path / "again", "ada", "studio-a")))
    assert again.exit_code == 0  # the owner's own re-upload replaces as before
    assert len(list((home.root / "archive" / "uploads").iterdir())) == 1


def test_two_creators_uploading_one_new_id_at_once_exactly_one_wins(home, sample_bundle, tmp_path):
    env = clean_env(AVATAR_HOME=home.root, DAGSTER_HOME=home.root / "dagster")
    bundles = {creator: bundle_of(sample_bundle, tmp_path, "new-one", creator) for creator in ("studio-a", "studio-b")}
    results, gate = {}, threading.Barrier(2)

    def upload(creator):
        gate.wait()
        results[creator] = subprocess.run([str(VENV_BIN / "avatarops"), "upload", str(bundles[creator])], cwd=REPO_ROOT,
                                          env=env, capture_output=True, text=True, timeout=120)

    threads = [threading.Thread(target=upload, args=(creator,)) for creator in bundles]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    codes = sorted(result.returncode for result in results.values())
    assert codes == [0, 2], {c: (r.returncode, r.stderr[-500:]) for c, r in results.items()}
    winner = next(c for c, r in results.items() if r.returncode == 0)
    loser = next(c for c, r in results.items() if r.returncode == 2)
    assert f"belongs to creator '{winner}'" in results[loser].stderr
    assert owner(home.store, "new-one").creator_id == winner
    assert json.loads((home.inbox / "new-one" / "manifest.json").read_text())["creator_id"] == winner


def test_a_hand_dropped_foreign_bundle_is_quarantined_with_the_reason(home, sample_bundle, tmp_path):
    from sensors.uploads import evaluate_uploads

    assert invoke("upload", str(bundle_of(sample_bundle, tmp_path, "ada", "studio-a"))).exit_code == 0
    result = evaluate_uploads(None, store=home.store, settle_seconds=0, log=_Log())
    assert [request.partition_key for request in result.run_requests] == ["ada"]
    # Another creator writes straight into the inbox folder (no `avatarops upload` to refuse it).
    foreign = bundle_of(sample_bundle, tmp_path / "drop", "ada", "studio-b")
    (home.inbox / "ada" / "manifest.json").write_text((foreign / "manifest.json").read_text())
    result = evaluate_uploads(result.cursor, store=home.store, settle_seconds=0, log=_Log())
    assert result.run_requests == []
    [entry] = list(home.quarantine.iterdir())
    reason = json.loads((entry / "reason.json").read_text())
    assert reason["avatar_id"] == "ada" and "belongs to creator 'studio-a'" in reason["problems"][0]
    assert owner(home.store, "ada").creator_id == "studio-a"


def test_creator_flag_acts_only_on_the_creators_own_avatars(home, sample_bundle, tmp_path):
    assert invoke("upload", str(bundle_of(sample_bundle, tmp_path, "ada", "studio-a"))).exit_code == 0
    home.instance.add_dynamic_partitions("avatars", ["ada"])
    script = tmp_path / "script.txt"
    script.write_text("Hello there.")
    rule = "creator 'studio-b' may not {} avatar 'ada': it belongs to creator 'studio-a'"
    for args, action in [
        (["request", "ada", "s1", "--script", str(script)], "request videos of"),
        (["regenerate", "neutral_image", "--avatar", "ada"], "regenerate"),
        (["revoke", "ada", "--reason", "mine now"], "revoke"),
        (["approve", "lip_sync", "--avatar", "ada", "--output", "s1"], "approve"),
        (["reject", "lip_sync", "--avatar", "ada", "--output", "s1", "--note", "no"], "reject"),
    ]:
        refused = invoke(*args, "--creator", "studio-b")
        assert refused.exit_code == 2 and rule.format(action) in refused.stderr, (args, refused.output)
    assert not (home.root / "inbox" / "outputs").exists()
    accepted = invoke("request", "ada", "s1", "--script", str(script), "--creator", "studio-a")
    assert accepted.exit_code == 0, accepted.output
    assert (home.root / "inbox" / "outputs" / "ada" / "s1.json").is_file()


class _Log:
    def warning(self, message):
        pass

    error = info = warning


def test_a_photo_that_disappears_between_the_sensors_look_and_the_run_fails_that_run_only(home, sample_bundle, tmp_path):
    """The sensor accepted two bundles; one loses its photo before its run: that run fails naming the file,
    the other avatar is built, and the next pass quarantines the damaged bundle instead of crashing."""
    import dagster as dg

    from avatar_assets.ops.runner import execute
    from sensors.uploads import evaluate_uploads

    for avatar_id in ("kept", "lost"):
        assert invoke("upload", str(bundle_of(sample_bundle, tmp_path / avatar_id, avatar_id, "studio-a"))).exit_code == 0
    result = evaluate_uploads(None, store=home.store, settle_seconds=0, log=_Log())
    home.instance.add_dynamic_partitions("avatars", ["kept", "lost"])
    photo = json.loads((home.inbox / "lost" / "manifest.json").read_text())["photos"][0]
    (home.inbox / "lost" / photo).unlink()
    outcomes = {
        request.partition_key: execute(home.defs, home.instance, job_name="build_identity", asset_keys=None,
                                       partition_key=request.partition_key, tags=dict(request.tags), origin="test")
        for request in result.run_requests
    }
    assert outcomes["kept"].success and not outcomes["lost"].success
    assert outcomes["lost"].error.startswith("source_upload: ") and f"{photo}: listed in the manifest but missing" in outcomes["lost"].error
    assert home.instance.get_latest_materialization_event(dg.AssetKey("identity_bundle")).dagster_event.partition == "kept"
    # The next pass finds the damaged bundle in the inbox and quarantines it with the reason.
    report = home.process()
    [quarantined] = report.quarantined
    assert any(f"{photo}: listed in the manifest but missing" in problem for problem in quarantined["problems"])
