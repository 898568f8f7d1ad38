"""Video end to end: a ~20 s multi_scene video with three native 1080-class renditions (9:16 1080x1920, 1:1
1080x1080, 16:9 1920x1080) on the CPU defaults, by stage, against the pipeline before native renditions.

Through `runner.process` (what `avatarops process` does) on a fresh AVATAR_HOME, in this process:
first the sample avatar's identity (reported separately), then one multi_scene request like the
demo's (three backgrounds, three platform renditions). Stage times come from the Dagster event log.
The real-time factor is seconds of video per second of wall time for the render (the video stages and
their gates, as `avatarops process` runs them).

Baseline, same run: the code of `BASELINE_COMMIT` (a 720-pixel 9:16 master, renditions transcoded from it,
the 1:1 and 16:9 pillarboxed) is exported with `git archive` and its own `bench video_e2e` runs in a
subprocess on the same request, right after this one; the ratio of the two real-time factors is the
comparison. `--quick` (the smoke test) renders small and skips the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.common import ratio, say

NAME = "video_e2e"
BASELINE_COMMIT = "f7e8276"  # main before native renditions (issue 14)
REPO_ROOT = Path(__file__).resolve().parents[1]
VIDEO_ASSETS = ["script", "storyboard", "speech", "backgrounds", "scene_assets", "lip_sync", "stitched_video",
                "enhanced_video", "output_package"]
IDENTITY_ASSETS = {"source_upload", "validated_inputs", "neutral_image", "character_sheet", "voice_profile",
                   "identity_bundle"}
# The demo script without its last sentence: about 20 s of speech at the default rate.
SCRIPT = (
    "Hi! I'm the demo avatar, built from one public domain photo and a synthetic voice. "
    "Everything you see was made step by step, as Dagster assets with quality gates. [pause 400ms] "
    "First my identity, then this video: a script, a storyboard, speech, backgrounds and lip sync."
)
QUICK_SCRIPT = "Hi! I'm the demo avatar. [pause 300ms] This is a quick benchmark video."


def parameters(quick: bool) -> dict[str, Any]:
    return {
        "route": "multi_scene",
        "master_short_side": 240 if quick else 1080,
        "fps": 25,
        "script": QUICK_SCRIPT if quick else SCRIPT,
        "background_prompts": ["soft studio backdrop", "city at dusk", "calm ocean sunset"],
        "platforms": ["tiktok", "instagram_feed", "youtube"],
        "executor": "in_process (the code location's default)",
    }


def _stages(instance, outcomes) -> tuple[dict[str, float], float]:
    steps: dict[str, float] = {}
    run_s = 0.0
    for outcome in outcomes:
        timing = common.run_step_timings(instance, outcome.run_id)
        run_s += timing["run_s"]
        for step, seconds in timing["steps"].items():
            steps[step] = steps.get(step, 0.0) + seconds
    return steps, run_s


def baseline(quick: bool) -> dict[str, Any]:
    """`bench video_e2e` of `BASELINE_COMMIT`'s code in a subprocess: its figures, or why there are none."""
    if quick:
        return {"status": "skipped", "reason": "--quick (smoke run)"}
    with tempfile.TemporaryDirectory(prefix="avatar-bench-baseline-", dir=common.scratch_root()) as tmp:
        tree, results = Path(tmp) / "tree", Path(tmp) / "results"
        archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", BASELINE_COMMIT],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            return {"status": "unavailable", "reason": archive.stderr.decode(errors="replace")[-500:]}
        tree.mkdir()
        archive_path = Path(tmp) / "baseline.tar"
        archive_path.write_bytes(archive.stdout)
        with tarfile.open(archive_path) as tar:
            tar.extractall(tree, filter="data")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_", "DAGSTER_"))}
        env.update(PYTHONPATH=str(tree), AVATAR_BENCH_RESULTS=str(results), AVATAR_BENCH_TMP=tmp, PYTHONUNBUFFERED="1")
        say(f"baseline: {BASELINE_COMMIT} in a subprocess")
        load_before = os.getloadavg()
        out = subprocess.run([sys.executable, "-m", "bench", "--only", NAME], cwd=tree, env=env, capture_output=True,
                             text=True, timeout=2000, check=False)
        result_file = results / f"{NAME}.json"
        if out.returncode != 0 or not result_file.exists():
            return {"status": "failed", "reason": (out.stdout + out.stderr)[-1500:]}
        result = json.loads(result_file.read_text())
        return {"status": "ok", "commit": BASELINE_COMMIT, "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "parameters": result["parameters"], "figures": result["figures"]}


def run(opts) -> dict[str, Any]:
    params = parameters(opts.quick)
    load_before = os.getloadavg()
    with common.workdir(NAME, keep=opts.keep) as work:
        home = work / "home"
        common.activate_home(home, AVATAR_MASTER_SHORT_SIDE=str(params["master_short_side"]), AVATAR_FPS=str(params["fps"]))
        import dagster as dg

        from avatar_assets.contracts import OutputRequest
        from avatar_assets.ops.runner import process
        from avatar_assets.video.requests import write_request
        from partitions import cell_key
        from resources.records import read_record
        from resources.wiring import store_of

        say("building the sample bundle")
        sample = common.sample_bundle(work / "sample" / "bench-e2e")
        bundles = common.bundle_variants(sample, work / "bundles", ["bench-e2e"])
        definitions_s, defs = common.timed(common.load_definitions)
        instance = dg.DagsterInstance.get()
        try:
            common.copy_into_inbox(bundles, home)
            say("identity")
            identity_s, identity = common.timed(lambda: process(defs, instance, echo=lambda _: None))
            if not identity.ok or not identity.runs:
                raise RuntimeError(f"identity build failed: {identity.as_dict()}")
            identity_steps, identity_run_s = _stages(instance, identity.runs)
            say(f"identity: {identity_s:.1f} s; rendering the video")
            with store_of(defs) as store:
                write_request(store, OutputRequest(
                    avatar_id="bench-e2e", slug="bench-video", route=params["route"], script=params["script"],
                    background_prompts=params["background_prompts"], platforms=params["platforms"],
                ))
            video_s, video = common.timed(lambda: process(defs, instance, echo=lambda _: None))
            if not video.ok or not video.runs:
                raise RuntimeError(f"video render failed: {video.as_dict()}")
            video_steps, video_run_s = _stages(instance, video.runs)
            with store_of(defs) as store:
                cell = cell_key("bench-e2e", "bench-video")
                speech = read_record(store, "speech", cell)
                package = read_record(store, "output_package", cell)
                stitched = read_record(store, "stitched_video", cell)
            duration = speech.duration_s
            say(f"video: {video_s:.1f} s for {duration:.1f} s of video")
        finally:
            instance.dispose()

    load_after = os.getloadavg()
    base = baseline(opts.quick)
    asset_steps = {k: v for k, v in video_steps.items() if k in VIDEO_ASSETS}
    check_steps = {k: v for k, v in video_steps.items() if k not in VIDEO_ASSETS}
    figures = {
        "video_duration_s": duration,
        "master_size": list(stitched.expected_size),
        "renditions": [f"{r.aspect_ratio} {r.width}x{r.height}" for r in package.renditions],
        "video_process_s": video_s,
        "video_runs": [f"{r.job} [{r.partition}] ({r.origin})" for r in video.runs],
        "video_run_s": video_run_s,
        "realtime_factor": ratio(duration, video_s),
        "video_stages_s": {k: asset_steps[k] for k in VIDEO_ASSETS if k in asset_steps},
        "video_check_steps_s": check_steps,
        "video_assets_sum_s": sum(asset_steps.values()),
        "video_checks_sum_s": sum(check_steps.values()),
        "video_outside_steps_s": video_s - sum(video_steps.values()),
        "identity_process_s": identity_s,
        "identity_run_s": identity_run_s,
        "identity_stages_s": {k: v for k, v in identity_steps.items() if k in IDENTITY_ASSETS},
        "identity_check_steps_s": {k: v for k, v in identity_steps.items() if k not in IDENTITY_ASSETS},
        "definitions_load_s": definitions_s,
        "end_to_end_s": identity_s + video_s,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    targets = {}
    if base["status"] == "ok":
        base_rtf = base["figures"]["realtime_factor"]
        figures["baseline_realtime_factor"] = base_rtf
        figures["baseline_video_process_s"] = base["figures"]["video_process_s"]
        figures["baseline_video_stages_s"] = base["figures"]["video_stages_s"]
        figures["speedup_vs_baseline"] = ratio(figures["realtime_factor"], base_rtf)
        targets["realtime_factor_no_worse_than_baseline"] = {
            "value": figures["realtime_factor"], "op": ">=", "limit": base_rtf, "met": figures["realtime_factor"] >= base_rtf}
    if not opts.quick:
        targets["realtime_factor_required"] = {"value": figures["realtime_factor"], "op": ">=", "limit": 0.67,
                                               "met": figures["realtime_factor"] >= 0.67}
        targets["realtime_factor_goal"] = {"value": figures["realtime_factor"], "op": ">=", "limit": 1.0,
                                           "met": figures["realtime_factor"] >= 1.0}
    described = (f"{BASELINE_COMMIT} (720-pixel master, renditions transcoded and pillarboxed) in a subprocess, same run"
                 if base["status"] == "ok" else f"none: {base['status']} ({base.get('reason', '')[:300]})")
    return {"parameters": params, "figures": figures, "targets": targets, "baseline": described, "baseline_run": base}


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    lines = [
        (f"{f['video_duration_s']:.1f} s {p['route']} video, master {f['master_size'][0]}x{f['master_size'][1]} "
        f"@ {p['fps']} fps, renditions {', '.join(f['renditions'])}"),
        (f"identity {f['identity_process_s']:.1f} s (run {f['identity_run_s']:.1f} s); video {f['video_process_s']:.1f} s "
        f"(runs {f['video_run_s']:.1f} s) -> real-time factor **{f['realtime_factor']:.2f}x** "
        f"(end to end {f['end_to_end_s']:.1f} s)"),
        (f"video: asset steps {f['video_assets_sum_s']:.1f} s, QA checks {f['video_checks_sum_s']:.1f} s, "
        f"outside steps (sensors, automation, run setup) {f['video_outside_steps_s']:.1f} s"),
        "video stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in f["video_stages_s"].items()),
        "video checks (s): " + ", ".join(f"{k} {v:.2f}" for k, v in f["video_check_steps_s"].items()),
        f"load average (1, 5, 15 min) before {f['load_average_before']}, after {f['load_average_after']}",
        "identity stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in f["identity_stages_s"].items()),
    ]
    base = result.get("baseline_run", {})
    if base.get("status") == "ok":
        b = base["figures"]
        lines.append(
            f"baseline {base['commit']} (master {b['master_size'][0]}x{b['master_size'][1]}, renditions transcoded): "
            f"video {b['video_process_s']:.1f} s -> real-time factor {b['realtime_factor']:.2f}x; "
            f"native renditions are **{f['speedup_vs_baseline']:.2f}x** its speed")
        lines.append("baseline stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in b["video_stages_s"].items()))
    else:
        lines.append(f"baseline: {base.get('status')} ({base.get('reason', '')[:200]})")
    return lines
