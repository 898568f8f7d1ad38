"""Diffusers: image generation through `bench/diffusers_bench.py`, tiny offline model or a real one.

Runs `bench.diffusers_bench.bench_diffusers(model_path, device)` and `bench.diffusers_backfill`: by
default on CPU with the tiny random-weight Stable Diffusion pipeline that `tests/media/tiny_sd.build_tiny_sd`
saves to a temp dir (offline, seconds); `--model PATH` points it at a real local model folder and
`--gpu` passes device="cuda".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench import common
from bench.common import say

NAME = "diffusers"


def _skipped(message: str, **parameters: Any) -> dict[str, Any]:
    print(message, flush=True)
    return {"status": "skipped", "parameters": parameters, "figures": {}, "targets": {}, "notes": [message],
            "summary": [message]}


def run(opts) -> dict[str, Any]:
    device = "cuda" if opts.gpu else "cpu"
    params: dict[str, Any] = {"device": device, "model": str(opts.model) if opts.model else "tiny random-weight SD (tests/media/tiny_sd)"}
    if opts.gpu:
        import torch

        if not torch.cuda.is_available():
            return _skipped(f"--gpu given but torch {torch.__version__} sees no CUDA device", **params)
    from bench.diffusers_backfill import bench_backfill
    from bench.diffusers_bench import bench_diffusers
    with common.workdir(NAME, keep=opts.keep) as work:
        if opts.model is not None:
            model_path, build_s = Path(opts.model).expanduser().resolve(), 0.0
            if not model_path.is_dir():
                raise FileNotFoundError(f"--model {model_path}: no such folder")
        else:
            # In a child process, so that bench_diffusers still measures torch/diffusers imports itself.
            model_path = work / "tiny-sd"
            say("building the tiny Stable Diffusion pipeline")
            code = "import sys; from tests.media.tiny_sd import build_tiny_sd; build_tiny_sd(sys.argv[1])"
            build_s, out = common.run_timed([sys.executable, "-c", code, str(model_path)],
                                            common.home_env(work / "home"), timeout=600)
            common.check_ok(out, "build_tiny_sd")
        say(f"bench_diffusers({model_path}, {device!r})")
        call_s, result = common.timed(lambda: bench_diffusers(str(model_path), device))
        say("a backfill of neutral_image through real runs (bench/diffusers_backfill.py)")
        runs = bench_backfill(str(model_path), device, work, avatars=10 if not opts.quick else 4,
                              side=result["side"], steps=result["steps"])
    figures = dict(result)
    figures.setdefault("call_s", call_s)
    figures.setdefault("model_build_s", build_s)
    figures["backfill"] = runs
    batching = figures["text2img"]["batching_speedup"]
    saving = runs["per_avatar_saving"]
    targets = {
        # The GPU target; on CPU the figure is recorded against it all the same.
        "batch8_vs_batch1_ratio": {"op": ">=", "limit": 1.4, "value": batching, "met": batching >= 1.4,
                                   "device": device},
        "backfill_per_avatar_saving": {"op": ">=", "limit": 0.40, "value": saving, "met": saving >= 0.40},
    }
    return {"parameters": params, "figures": figures, "targets": targets,
            "baseline": "batch 1 (text2img); one single-avatar run with its own model load per avatar (backfill)"}


def summary(result: dict[str, Any]) -> list[str]:
    p, f = result["parameters"], result["figures"]
    lines = [(f"model: {p['model']} on {p['device']}; bench_diffusers took {f.get('call_s', float('nan')):.1f} s "
             f"(model build {f.get('model_build_s', 0.0):.1f} s)")]
    shown = {"call_s", "model_build_s"}
    if {"load_s", "text2img", "avatars"} <= f.keys():  # the fields bench/diffusers_bench.py returns today
        t, a = f["text2img"], f["avatars"]
        lines += [
            (f"{f.get('model_id')} {f.get('dtype')} at {f.get('side')} px, {f.get('steps')} steps, {f.get('threads')} "
            f"threads: import {f.get('import_s')} s, first load {f['load_s']} s, repeat load {f.get('load_repeat_s')} s"),
            "text2img: " + ", ".join(f"{k} {v}" for k, v in t.items()),
            "avatars: " + ", ".join(f"{k} {v}" for k, v in a.items()),
        ]
        if "backfill" in f:
            lines.append("backfill through real runs: " + ", ".join(f"{k} {v}" for k, v in f["backfill"].items()))
        shown |= {"backfill", "model_id", "dtype", "side", "steps", "threads", "import_s", "load_s", "load_repeat_s", "text2img",
                  "avatars"}
    lines += [f"{key}: {value}" for key, value in f.items() if key not in shown]
    return lines
