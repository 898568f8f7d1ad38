"""`dg` (dagster-dg-cli) sees the repository root as one Dagster project, the one `make dev` serves.

`make test` runs `dg check defs` here, so the first command a Dagster newcomer types keeps working, and
checks that `dg dev` serves the code location under workspace.yaml's name and module: sensor state and
run history in the shared instance are kept per location name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from avatar_assets.ops import instance_config
from tests.conftest import env_without_homes

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"


def test_dg_check_defs_passes_from_the_repository_root(tmp_path):
    """No flags, no network; homes in tmp_path with telemetry off, so nothing is written elsewhere."""
    avatar_home = tmp_path / "home"
    dagster_home = avatar_home / "dagster"
    instance_config.ensure_config(dagster_home)
    env = {**env_without_homes(), "AVATAR_HOME": str(avatar_home), "DAGSTER_HOME": str(dagster_home)}
    result = subprocess.run([DG, "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully." in result.stdout


def test_dg_serves_the_code_location_of_workspace_yaml():
    from dagster_dg_core.context import DgContext

    project = DgContext.for_project_environment(ROOT, {})
    (entry,) = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert project.root_path == ROOT
    assert project.code_location_name == entry["python_module"]["location_name"]
    assert project.code_location_target_module_name == entry["python_module"]["module_name"]
