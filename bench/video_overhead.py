"""Video overhead: a 2-output build through `runner.process` against the video stages' media functions in a loop.

Subject: on a fresh AVATAR_HOME whose sample avatar was built first (untimed), two output requests
(multi_scene, different scripts) are written and `runner.process` (what `avatarops process` does) is timed
in this process, definitions already loaded: sensors, runs, gates, automation. Baseline, same run:
`python -m bench.video_plain` on the same requests, resolved to the same sizes and settings, its stage
loop timed from inside (its imports and identity preparation excluded, as the subject's are). Repeats
alternate the order; the target-free figure is the median of the paired ratios, CPU ratio beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "video_overhead"
AVATAR = "bench-video"
SCRIPTS = [
    "Hi! I'm the demo avatar. [pause 300ms] This video was made from one photo and a voice sample.",
    "Welcome back. Today we look at lip sync, captions and backgrounds. [pause 300ms] Thanks for watching!",
]
PROMPTS = ["soft studio backdrop", "city at dusk", "calm ocean sunset"]


def parameters(quick: bool) -> dict[str, Any]:
    return {
        "outputs": 2,
        "route": "multi_scene",
        "master_short_side": 240 if quick else 360,
        "fps": 25,
        "platforms": ["tiktok"],
        "repeats": 1 if quick else 3,
    }


def _requests(params: dict[str, Any]):
    from avatar_assets.contracts import OutputRequest

    return [
        OutputRequest(avatar_id=AVATAR, slug=f"clip-{i}", route=params["route"], script=SCRIPTS[i % len(SCRIPTS)],
                      background_prompts=PROMPTS, platforms=params["platforms"])
        for i in range(params["outputs"])
    ]


def _plain_config(params: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """The requests resolved the way the video assets resolve them, so the plain loop imports no Dagster."""
    from partitions import cell_key
    from resources.providers import Enhancer, VideoSettings

    video = VideoSettings(master_short_side=params["master_short_side"], fps=params["fps"])
    enhancer = Enhancer()
    outputs = []
    for request in _requests(params):
        aspects = request.renditions()
        look = request.captions.model_dump(exclude={"preset"})
        outputs.append({
            "cell": str(cell_key(request.avatar_id, request.slug)), "route": request.route, "script": request.script,
            "background_prompts": list(request.background_prompts), "seed": request.seed,
            "rate_wpm": request.voice.rate_wpm, "caption_look": look,
            "renditions": [{"aspect": a, "width": video.master_size(a)[0], "height": video.master_size(a)[1]}
                           for a in aspects],
        })
    return {
        "bundle": str(bundle),
        "render": {"fps": video.fps, "crf": video.crf, "preset": video.preset, "x264_params": video.x264_params,
                   "transition_s": video.transition_s, "target_lufs": enhancer.target_lufs,
                   "sharpen": enhancer.sharpen, "saturation": enhancer.saturation},
        "outputs": outputs,
    }


def _dagster_pass(params: dict[str, Any], bundles: list[Path], home: Path) -> dict[str, Any]:
    import dagster as dg

    from avatar_assets.ops.runner import process
    from avatar_assets.video.requests import write_request
    from resources.wiring import store_of

    common.activate_home(home, AVATAR_MASTER_SHORT_SIDE=str(params["master_short_side"]), AVATAR_FPS=str(params["fps"]))
    defs = common.load_definitions()
    instance = dg.DagsterInstance.get()
    try:
        common.copy_into_inbox(bundles, home)
        identity = process(defs, instance, echo=lambda _: None)
        if not identity.ok:
            raise RuntimeError(f"identity build failed: {identity.as_dict()}")
        with store_of(defs) as store:
            for request in _requests(params):
                write_request(store, request)
        wall, cpu, report = common.timed_cpu(lambda: process(defs, instance, echo=lambda _: None))
        if not report.ok or not report.runs:
            raise RuntimeError(f"video build failed: {json.dumps(report.as_dict())[:3000]}")
        steps: dict[str, float] = {}
        for outcome in report.runs:
            for step, seconds in common.run_step_timings(instance, outcome.run_id)["steps"].items():
                steps[step] = steps.get(step, 0.0) + seconds
    finally:
        instance.dispose()
    return {"wall_s": wall, "cpu_s": cpu, "runs": len(report.runs), "steps": steps}


def _plain_pass(config: Path, out_json: Path) -> dict[str, Any]:
    env = common.home_env(out_json.parent / "plain-home")
    cmd = [sys.executable, "-m", "bench.video_plain", "--config", str(config), "--json-out", str(out_json)]
    _, _, out = common.run_timed_cpu(cmd, env)
    common.check_ok(out, "bench.video_plain")
    result = json.loads(out_json.read_text())
    return {"wall_s": result["compute_s"], "cpu_s": result.get("compute_cpu_s"), **result}


def run(opts) -> dict[str, Any]:
    params = parameters(opts.quick)
    with common.workdir(NAME, keep=opts.keep) as work:
        common.activate_home(work / "setup-home")
        sample = common.sample_bundle(work / "sample" / AVATAR)
        bundles = common.bundle_variants(sample, work / "bundles", [AVATAR])
        config = work / "plain-config.json"
        config.write_text(json.dumps(_plain_config(params, bundles[0])))
        dagster_passes, plain_passes = [], []
        for rep in range(params["repeats"]):
            for which in (["plain", "dagster"] if rep % 2 == 0 else ["dagster", "plain"]):
                say(f"repeat {rep + 1}/{params['repeats']}: {which} video build of {params['outputs']} outputs")
                if which == "dagster":
                    dagster_passes.append(_dagster_pass(params, bundles, work / f"home-{rep}"))
                else:
                    plain_passes.append(_plain_pass(config, work / f"plain-{rep}.json"))
                say(f"  {which}: {(dagster_passes if which == 'dagster' else plain_passes)[-1]['wall_s']:.1f} s")
    paired = [ratio(d["wall_s"], p["wall_s"]) for d, p in zip(dagster_passes, plain_passes)]
    paired_cpu = [ratio(d["cpu_s"], p["cpu_s"]) for d, p in zip(dagster_passes, plain_passes) if p["cpu_s"]]
    plain_stages: dict[str, list[float]] = {}
    for p in plain_passes:
        for output in p["outputs"]:
            for stage, seconds in output["stages"].items():
                plain_stages.setdefault(stage, []).append(seconds)
    dagster_steps = {step: median([d["steps"].get(step, 0.0) for d in dagster_passes]) for step in dagster_passes[0]["steps"]}
    figures = {
        "paired_overhead_ratios": paired,
        "paired_overhead_ratio_median": median(paired),
        "paired_cpu_ratios": paired_cpu,
        "cpu_overhead_ratio": median(paired_cpu) if paired_cpu else None,
        "runner_process_walls_s": [d["wall_s"] for d in dagster_passes],
        "plain_loop_walls_s": [p["wall_s"] for p in plain_passes],
        "video_runs": dagster_passes[0]["runs"],
        "dagster_steps_s": dagster_steps,
        "plain_stages_s": {stage: sum(v) / len(plain_passes) for stage, v in plain_stages.items()},
        "video_seconds": [o["duration_s"] for o in plain_passes[0]["outputs"]],
    }
    return {"parameters": params, "figures": figures, "targets": {},
            "baseline": "the video stages' media functions in a plain loop (python -m bench.video_plain), same requests "
                        "resolved to the same sizes, same run; both exclude start-up and the identity build"}


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    cpu = f["cpu_overhead_ratio"]
    return [
        (f"{p['outputs']} outputs ({p['route']}, master short side {p['master_short_side']}, "
         f"{', '.join(f'{s:.1f}' for s in f['video_seconds'])} s of video): `runner.process` "
         + ", ".join(f"{w:.1f}" for w in f["runner_process_walls_s"]) + " s vs plain loop "
         + ", ".join(f"{w:.1f}" for w in f["plain_loop_walls_s"]) + " s"),
        (f"video overhead ratio **{f['paired_overhead_ratio_median']:.2f}** (median of paired repeats "
         f"{', '.join(f'{r:.2f}' for r in f['paired_overhead_ratios'])}); CPU ratio "
         + (f"{cpu:.2f}" if cpu is not None else "n/a")),
        "Dagster steps (s, both outputs): " + ", ".join(f"{k} {v:.2f}" for k, v in f["dagster_steps_s"].items()),
        "plain stages (s, both outputs): " + ", ".join(f"{k} {v:.2f}" for k, v in f["plain_stages_s"].items()),
    ]
