"""`python -m bench`: run the benchmarks, each in its own process, and write the summary.

    python -m bench                      # everything (what `make bench` runs)
    python -m bench --quick              # smaller N everywhere (the smoke test uses this)
    python -m bench --only identity      # one benchmark (repeat --only, or NAME,NAME)
    python -m bench --gpu --model PATH   # diffusers benchmark on CUDA with a local model

Each benchmark writes bench/results/<name>.json (machine facts, parameters, figures, targets);
this process prints a human-readable summary and writes it to bench/results/summary.md. Targets are
reported, not enforced: the exit status is non-zero only when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import common

BENCHMARKS: dict[str, str] = {
    "identity": "bench.identity",
    "face_animation": "bench.face_animation",
    "wav2lip": "bench.wav2lip",
    "tts": "bench.tts",
    "kernels": "bench.kernels",
    "video_assembly": "bench.video_assembly",
    "video_e2e": "bench.video_e2e",
    "video_overhead": "bench.video_overhead",
    "regeneration": "bench.regeneration",
    "automation_tick": "bench.automation_tick",
    "diffusers": "bench.diffusers_run",
    "cluster": "bench.cluster",
    "api": "bench.api",
}
CHILD_TIMEOUT_S = {"quick": 900, "full": 2400}
# The cluster benchmark brings up two loopback clusters and pushes N identities through each, then 2N videos.
CHILD_TIMEOUT_OVERRIDE_S = {"cluster": {"quick": 1500, "full": 5400}}


def child_timeout(name: str, quick: bool) -> int:
    """Seconds a benchmark's process may take before it is killed (it gets the deadline as `opts.deadline`, so
    one that starts servers can stop them first)."""
    return CHILD_TIMEOUT_OVERRIDE_S.get(name, CHILD_TIMEOUT_S)["quick" if quick else "full"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N and fewer repeats (smoke test)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only these benchmarks (repeatable or comma-separated): {', '.join(BENCHMARKS)}")
    parser.add_argument("--gpu", action="store_true", help="diffusers benchmark on device='cuda'")
    parser.add_argument("--model", type=Path, default=None,
                        help="a real local diffusers model folder for the diffusers benchmark (default: tiny model)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes (paths are printed)")
    parser.add_argument("--no-postgres", action="store_true", help="automation_tick: SQLite only")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.selected = names or list(BENCHMARKS)
    return args


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.quick:
        flags.append("--quick")
    if args.gpu:
        flags.append("--gpu")
    if args.model is not None:
        flags += ["--model", str(args.model)]
    if args.keep:
        flags.append("--keep")
    if args.no_postgres:
        flags.append("--no-postgres")
    return flags


def run_child(name: str, args: argparse.Namespace) -> int:
    """Inside the child process: run one benchmark and write its result file."""
    module = importlib.import_module(BENCHMARKS[name])
    started_at, started = common.now_iso(), time.perf_counter()
    args.deadline = time.monotonic() + child_timeout(name, args.quick)
    payload: dict[str, Any] = {
        "benchmark": name,
        "title": (module.__doc__ or name).strip().splitlines()[0],
        "quick": args.quick,
        "started_at": started_at,
        "machine": common.machine_facts(),
    }
    status = 0
    try:
        result = module.run(args)
        payload.update(result)
        payload.setdefault("status", "ok")
        status = 0 if payload["status"] == "ok" else 1  # an error the benchmark caught itself, with partial figures
        payload["summary"] = module.summary(result) if payload["status"] == "ok" else result.get("summary", [])
    except Exception as error:  # noqa: BLE001 - a crashed benchmark is reported; the others still run
        traceback.print_exc()
        payload.update(status="error", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(),
                       summary=[f"ERROR {type(error).__name__}: {str(error)[:500]}"])
        status = 1
    payload["duration_s"] = time.perf_counter() - started
    payload["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = common.write_result(name, payload)
    common.say(f"{name}: wrote {path} ({payload['status']}, {payload['duration_s']:.0f} s)")
    return status


def verdicts(result: dict[str, Any]) -> list[str]:
    out = []
    for key, target in (result.get("targets") or {}).items():
        value = target.get("value")
        shown = f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        out.append(f"{key} {shown} (target {target['op']} {target['limit']}): {'met' if target.get('met') else 'MISSED'}")
    return out


def write_summary(names: list[str], args: argparse.Namespace, wall_s: float, crashed: list[str]) -> str:
    lines = [
        "# Benchmark summary",
        "",
        (f"`python -m bench{' --quick' if args.quick else ''}"
        f"{''.join(' --only ' + n for n in names) if names != list(BENCHMARKS) else ''}` "
        f"finished {common.now_iso()} in {wall_s / 60:.1f} min."),
    ]
    facts = None
    for name in names:
        result = common.read_result(name)
        lines += ["", f"## {name}", ""]
        if result is None:
            lines.append("no result file (the benchmark process died before writing one)")
            continue
        facts = facts or result.get("machine")
        lines.append(f"_{result.get('title', '')}_ ({result.get('status')}, {result.get('duration_s', 0):.0f} s)")
        lines.append("")
        lines += [f"- {v}" for v in verdicts(result)]
        if result.get("baseline"):
            lines.append(f"- baseline: {result['baseline']}")
        lines.append("")
        lines += ["```", *result.get("summary", []), "```"]
        for note in result.get("notes", []):
            lines.append(f"- note: {note}")
    if facts:
        lines += [
            "",
            "## Machine",
            "",
            (f"{facts.get('cpu_count')} CPUs ({facts.get('cpu_model')}), {facts.get('memory_gib')} GiB, "
            f"Python {facts.get('python')}, dagster {facts.get('dagster')}, load average at start "
            f"{facts.get('load_average_1m_5m_15m')}, commit {str(facts.get('git_commit'))[:12]}"
            f"{' (dirty)' if facts.get('git_dirty') else ''}."),
        ]
    if crashed:
        lines += ["", f"**Crashed:** {', '.join(crashed)} (see their result files for the traceback)."]
    text = "\n".join(lines) + "\n"
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (common.RESULTS_DIR / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, module in BENCHMARKS.items():
            doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
            print(f"{name:16} {doc}")
        return 0
    if args.child:
        return run_child(args.child, args)

    started = time.perf_counter()
    crashed = []
    for name in args.selected:
        timeout = child_timeout(name, args.quick)
        print(f"\n=== {name} ===", flush=True)
        common.result_path(name).unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench", "--child", name, *child_flags(args)]
        try:
            rc = subprocess.run(cmd, cwd=common.REPO_ROOT, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            print(f"{name}: timed out after {timeout} s", flush=True)
        if rc != 0:
            crashed.append(name)
            if common.read_result(name) is None:
                common.write_result(name, {"benchmark": name, "status": "error", "error": f"exit status {rc}",
                                           "summary": [f"ERROR: benchmark process exited {rc}"]})
    text = write_summary(args.selected, args, time.perf_counter() - started, crashed)
    print("\n" + text, flush=True)
    print(f"summary written to {common.RESULTS_DIR / 'summary.md'}", flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
