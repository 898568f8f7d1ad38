"""The benchmark package runs: `python -m bench --quick --only video_assembly` in a subprocess writes a
result file with sane figures and a summary. Performance itself is measured by `make bench`, never
asserted here. Results go to a temp dir (AVATAR_BENCH_RESULTS), not over a real run's files.

The `cluster` benchmark is not run here: even with --quick it brings up two loopback clusters and builds six
identities and four videos on them (about 13 min on this machine), and tests/test_cluster.py already runs that
topology under load; `python -m bench --quick --only cluster` is its smoke run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def bench_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_", "DAGSTER_"))}
    env.update(AVATAR_BENCH_RESULTS=str(tmp_path / "results"), AVATAR_BENCH_TMP=str(tmp_path), PYTHONUNBUFFERED="1")
    return env


def run_quick(name: str, tmp_path: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m bench --quick --only NAME`, which must exit 0, and the result file it wrote."""
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", name], cwd=REPO_ROOT,
                         env=bench_env(tmp_path), capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out, json.loads((tmp_path / "results" / f"{name}.json").read_text())


def test_unknown_benchmark_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench", "--only", "nope"], cwd=REPO_ROOT, env=bench_env(tmp_path),
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "unknown benchmark" in out.stderr and "video_assembly" in out.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_video_assembly_writes_sane_results(tmp_path):
    out, result = run_quick("video_assembly", tmp_path, timeout=170)
    assert result["status"] == "ok" and result["quick"] is True
    machine = result["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"] and machine["dagster"]
    params, figures = result["parameters"], result["figures"]
    assert params["size"] == [1280, 720] and params["fps"] == 25
    assert figures["frames"] == round(params["duration_s"] * params["fps"])
    for writer in ("raw_pipe", "encode_renditions", "encode_renditions_bare"):
        assert figures["fps"][writer] > 0 and figures["realtime_factor"][writer] > 0
        assert figures["outputs"][writer]["frames"] == figures["frames"]
        assert figures["outputs"][writer]["has_audio"]
    assert figures["stitch_vs_raw_ratio"] > 0
    target = result["targets"]["stitch_vs_raw_ratio"]
    assert target["limit"] == 0.7 and target["met"] == (target["value"] >= 0.7)

    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "## video_assembly" in summary and "stitch_vs_raw_ratio" in summary
    assert "encode_renditions" in out.stdout  # the summary is printed too
    assert not list((REPO_ROOT / "bench" / "results").glob("*.part"))
    assert not list(tmp_path.glob("avatar-bench-*")), "temporary homes are removed"


def test_quick_tts_writes_real_time_factors(tmp_path):
    _, result = run_quick("tts", tmp_path, timeout=120)
    assert result["status"] == "ok"
    figures = result["figures"]
    assert set(figures["rtf"]) == {"onnx", "espeak-ng"} and all(v > 0 for v in figures["rtf"].values())
    assert all(s > 1 for s in figures["speech_s"].values())
    assert not list(tmp_path.glob("avatar-bench-*")), "temporary homes are removed"


def test_quick_kernels_time_each_kernel_against_its_baseline(tmp_path):
    _, result = run_quick("kernels", tmp_path, timeout=300)
    assert result["status"] == "ok"
    medians = result["figures"]["median_s"]
    assert set(medians) == {"portrait", "grabcut_full", "voice", "tts", "definitions", "dagster"}
    assert all(v > 0 for v in medians.values())
    assert set(result["targets"]) == {"portrait_vs_full_grabcut", "voice_rtf", "tts_rtf"}
