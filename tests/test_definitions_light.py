"""Loading the code location stays light: every run launch (and step, with multiprocess) pays for it.

The import happens in a fresh interpreter so that nothing this test session already imported counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "diffusers", "transformers", "great_expectations", "resemblyzer", "librosa", "moviepy"]
AVOIDABLE = ["cv2", "pandas"]
OUR_PACKAGES = ("avatar_assets", "resources", "sensors", "partitions")

PROBE = textwrap.dedent(
    """
    import json, sys, time, warnings
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import avatar_assets.definitions
        defs = avatar_assets.definitions.defs
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds,
        "modules": sorted(sys.modules),
        "assets": len(list(defs.resolve_asset_graph().get_all_asset_keys())),
        "warnings": [
            {"file": w.filename, "line": w.lineno, "category": w.category.__name__, "message": str(w.message)}
            for w in caught
        ],
    }))
    """
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("light")
    env = {"PATH": "/usr/bin:/bin", "AVATAR_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def top_level(modules: list[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_definitions_import_no_heavy_library(probe):
    loaded = top_level(probe["modules"])
    assert probe["assets"] >= 6
    assert sorted(loaded & set(HEAVY)) == []


def test_definitions_import_no_cv2_or_pandas(probe):
    assert sorted(top_level(probe["modules"]) & set(AVOIDABLE)) == []


def test_definitions_import_emits_no_warning_from_our_code(probe):
    ours = [
        w for w in probe["warnings"]
        if Path(w["file"]).resolve().is_relative_to(ROOT)
        and not Path(w["file"]).resolve().is_relative_to(ROOT / ".venv")
    ]
    assert ours == [], "\n".join(f"{w['file']}:{w['line']}: {w['category']}: {w['message']}" for w in ours)
    ours_by_module = [w for w in probe["warnings"] if any(f"/{p}/" in w["file"] for p in OUR_PACKAGES)]
    assert ours_by_module == []


def test_definitions_import_time_is_reported(probe, capsys):
    """Reported, not asserted (a loaded machine would fail a timed assertion at random): `python -m bench --only
    kernels` measures it against `import dagster`; what keeps it light is the module test above."""
    with capsys.disabled():
        print(f"\nimport avatar_assets.definitions: {probe['seconds']:.2f} s, {len(probe['modules'])} modules")
