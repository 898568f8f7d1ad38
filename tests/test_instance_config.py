"""The local instance's dagster.yaml: `avatarops` and `make dev` write the same defaults; `make dev`
also brings an existing file up to date, `avatarops` never edits one."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from avatar_assets.cli import ensure_instance_home
from avatar_assets.ops import instance_config
from tests.conftest import env_without_homes

QUIET = {"telemetry": {"enabled": False}, "nux": {"enabled": False}}


def make_dev_step(avatar_home) -> None:
    """What `make dev` runs before the webserver: its environment, its umask, its command."""
    env = {**env_without_homes(), "AVATAR_HOME": str(avatar_home), "DAGSTER_HOME": str(avatar_home / "dagster")}
    subprocess.run(
        f"umask 077 && {sys.executable} -m avatar_assets.ops.instance_config",
        shell=True, env=env, check=True, timeout=60,
    )


def test_make_dev_creates_a_private_instance_home_with_the_defaults(tmp_path):
    make_dev_step(tmp_path / "home")
    config = tmp_path / "home" / "dagster" / "dagster.yaml"
    assert yaml.safe_load(config.read_text()) == QUIET
    assert oct(config.stat().st_mode & 0o777) == oct(0o600)
    assert oct(config.parent.stat().st_mode & 0o777) == oct(0o700)


def test_make_dev_adds_missing_defaults_to_an_existing_home_and_keeps_the_rest(tmp_path):
    config = tmp_path / "home" / "dagster" / "dagster.yaml"
    config.parent.mkdir(parents=True)
    mine = "# my instance\ntelemetry:\n  enabled: true\nrun_retries:\n  enabled: true"  # no final newline
    config.write_text(mine)
    make_dev_step(tmp_path / "home")
    text = config.read_text()
    assert text.startswith(mine + "\n")
    assert yaml.safe_load(text) == {**QUIET, "telemetry": {"enabled": True}, "run_retries": {"enabled": True}}
    make_dev_step(tmp_path / "home")
    assert config.read_text() == text, "a second start changes nothing"


def test_avatarops_writes_the_same_defaults_and_never_edits_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_HOME", str(tmp_path / "new"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = ensure_instance_home()
    assert home == tmp_path / "new" / "dagster" and os.environ["DAGSTER_HOME"] == str(home)
    assert yaml.safe_load((home / "dagster.yaml").read_text()) == QUIET

    production = tmp_path / "prod" / "dagster.yaml"
    production.parent.mkdir()
    production.write_text("telemetry:\n  enabled: false\n")
    assert instance_config.ensure_config(production.parent) == production
    assert production.read_text() == "telemetry:\n  enabled: false\n"
