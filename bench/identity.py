"""Identity build: wall time by stage, and what Dagster costs over the same media functions in a loop.

Subject: `avatarops process` in a subprocess on a fresh AVATAR_HOME with N upload bundles in the
inbox (copies of the sample bundle with distinct avatar ids and re-encoded photos, so no content key
is shared), timed end to end. Baseline, same run: `python -m bench.identity_plain` on the same N
bundles (the media functions in a plain loop in one process, same PNG encodes), also timed end to end
from outside. Both pay interpreter start and their imports. A second baseline, the same loop with the
identity gates' measurements (`--with-gates`), says what Dagster adds to the same work; the issue's
ratio stays the first. Each repeat runs the subject between its two baselines, their order alternating.
The stage split comes from the Dagster event log of the subject's runs.

Measured at 5 avatars (targets: paired overhead ratio <= 1.25) and at 20 (<= 1.1: the fixed costs
amortised), each with the CPU ratio beside it; `AVATAR_BENCH_IDENTITY_LARGE=0` skips the 20. Also the
per-run fixed cost on the embedded default instance: a run of trivial assets in this process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "identity"
TARGET_OVERHEAD = 1.25  # at `avatars` (5), median of the paired repeats
TARGET_OVERHEAD_LARGE = 1.1  # at `avatars_large` (20)
IDENTITY_ASSETS = {"source_upload", "validated_inputs", "neutral_image", "character_sheet", "voice_profile",
                   "identity_bundle"}


def parameters(quick: bool) -> dict[str, Any]:
    return {
        "avatars": 2 if quick else 5,
        "avatars_large": int(os.environ.get("AVATAR_BENCH_IDENTITY_LARGE", 0 if quick else 20)),
        "trivial_runs": 3 if quick else 7,
        "repeats": 1 if quick else 3,
        "import_repeats": 1 if quick else 3,
        "upload_settle_s": 0,
        "photo_variants": "sample photo re-encoded as JPEG at quality 95, 94, ... (one per avatar; a quality the intake gate rejects is skipped)",
    }


def _dagster_pass(bundles: list[Path], root: Path) -> dict[str, Any]:
    import dagster as dg

    home = common.prepare_home(root)
    common.copy_into_inbox(bundles, home)
    env = common.home_env(home)
    wall, cpu, out = common.run_timed_cpu([str(common.VENV_BIN / "avatarops"), "process", "--json"], env)
    common.check_ok(out, "avatarops process")
    report = json.loads(out.stdout[out.stdout.index("{"):])
    if not report["ok"] or len(report["runs"]) != len(bundles):
        raise RuntimeError(f"identity build did not succeed for every avatar: {json.dumps(report)[:3000]}")
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        runs = [common.run_step_timings(instance, r["run_id"]) for r in report["runs"]]
    finally:
        instance.dispose()
    # The same command again with nothing to do: start-up, imports, instance, one round of sensors
    # and one automation evaluation - the fixed cost every `avatarops process` pays.
    noop_s, out = common.run_timed([str(common.VENV_BIN / "avatarops"), "process", "--json"], env)
    common.check_ok(out, "avatarops process (nothing to do)")
    return {"wall_s": wall, "cpu_s": cpu, "runs": runs, "noop_s": noop_s}


def _plain_pass(bundles: list[Path], out_json: Path, with_gates: bool = False) -> dict[str, Any]:
    env = common.home_env(out_json.parent / "plain-home")
    cmd = [sys.executable, "-m", "bench.identity_plain", "--json-out", str(out_json),
           *(["--with-gates"] if with_gates else []), *map(str, bundles)]
    wall, cpu, out = common.run_timed_cpu(cmd, env)
    common.check_ok(out, "bench.identity_plain")
    return {"wall_s": wall, "cpu_s": cpu, **json.loads(out_json.read_text())}


def _import_seconds(code: str, env: dict[str, str], repeats: int) -> float:
    return median([common.run_timed([sys.executable, "-c", code], env)[0] for _ in range(repeats)])


def _paired_passes(bundles: list[Path], work: Path, repeats: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Per repeat: the plain loop, `avatarops process` and the plain loop with the gates' measurements,
    the Dagster pass always between its two baselines, the order of the baselines alternating."""
    dagster_passes, plain_passes, gated_passes = [], [], []
    work.mkdir(parents=True, exist_ok=True)
    for rep in range(repeats):
        order = ["plain", "dagster", "gated"] if rep % 2 == 0 else ["gated", "dagster", "plain"]
        for which in order:
            say(f"repeat {rep + 1}/{repeats}: {which} identity build of {len(bundles)} avatars")
            if which == "dagster":
                dagster_passes.append(_dagster_pass(bundles, work / f"home-{rep}"))
                say(f"  avatarops process: {dagster_passes[-1]['wall_s']:.1f} s (CPU {dagster_passes[-1]['cpu_s']:.1f} s)")
            else:
                passes = plain_passes if which == "plain" else gated_passes
                passes.append(_plain_pass(bundles, work / f"{which}-{rep}.json", with_gates=which == "gated"))
                say(f"  {which} loop: {passes[-1]['wall_s']:.1f} s (CPU {passes[-1]['cpu_s']:.1f} s)")
    return dagster_passes, plain_passes, gated_passes


def _paired(dagster_passes: list[dict], baseline_passes: list[dict], field: str) -> list[float]:
    return [ratio(d[field], p[field]) for d, p in zip(dagster_passes, baseline_passes)]


def _large_figures(dagster_passes: list[dict], plain_passes: list[dict], gated_passes: list[dict], n: int) -> dict[str, Any]:
    paired = _paired(dagster_passes, plain_passes, "wall_s")
    paired_cpu = _paired(dagster_passes, plain_passes, "cpu_s")
    return {
        "avatars": n,
        "paired_overhead_ratios": paired,
        "paired_overhead_ratio_median": median(paired),
        "paired_cpu_ratios": paired_cpu,
        "cpu_overhead_ratio": median(paired_cpu),
        "with_gates_paired_ratio_median": median(_paired(dagster_passes, gated_passes, "wall_s")),
        "with_gates_paired_cpu_ratio_median": median(_paired(dagster_passes, gated_passes, "cpu_s")),
        "all_dagster_walls_s": [p["wall_s"] for p in dagster_passes],
        "all_plain_walls_s": [p["wall_s"] for p in plain_passes],
        "per_avatar_dagster_s": median([p["wall_s"] for p in dagster_passes]) / n,
        "per_avatar_plain_s": median([p["wall_s"] for p in plain_passes]) / n,
        "event_log_records_per_run": median([r["events"] for p in dagster_passes for r in p["runs"]]),
    }


def _trivial_run_cost(root: Path, runs: int) -> dict[str, Any]:
    """A run of three trivial, partitioned assets with one blocking check, in this process, on the embedded
    default instance (SQLite under a fresh DAGSTER_HOME): what Dagster costs per run before any work."""
    import warnings

    import dagster as dg

    home = common.prepare_home(root)
    parts = dg.StaticPartitionsDefinition([f"p{i}" for i in range(runs)])

    @dg.asset(partitions_def=parts)
    def first():
        return 1

    @dg.asset(partitions_def=parts)
    def second(first):
        return first + 1

    @dg.asset(partitions_def=parts)
    def third(second):
        return second + 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        @dg.asset_check(asset=third, blocking=True, partitions_def=parts)
        def third_is_three(third):
            return dg.AssetCheckResult(passed=third == 3)

    job = dg.Definitions(assets=[first, second, third], asset_checks=[third_is_three]).resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        walls = []
        for i in range(runs):
            wall, result = common.timed(lambda i=i: job.execute_in_process(
                instance=instance, partition_key=f"p{i}",
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}}))
            if not result.success:
                raise RuntimeError("the trivial run failed")
            walls.append(wall)
        events = len(instance.get_records_for_run(result.run_id).records)
    finally:
        instance.dispose()
    return {"run_s_median": median(walls[1:] or walls), "first_run_s": walls[0], "runs": runs,
            "steps": 4, "event_log_records_per_run": events}


def run(opts) -> dict[str, Any]:
    params = parameters(opts.quick)
    n, repeats = params["avatars"], params["repeats"]
    with common.workdir(NAME, keep=opts.keep) as work:
        common.activate_home(work / "setup-home")
        say("building the sample bundle and its variants")
        sample = common.sample_bundle(work / "sample" / "astronaut")
        bundles = common.bundle_variants(sample, work / "bundles", [f"bench-id-{i}" for i in range(n)])

        say("timing imports")
        env = common.home_env(common.prepare_home(work / "import-home"))
        python_start_s = _import_seconds("pass", env, params["import_repeats"])
        import_defs_s = _import_seconds("import avatar_assets.definitions", env, params["import_repeats"])
        import_dagster_s = _import_seconds("import dagster", env, params["import_repeats"])

        say("timing a run of trivial assets on the embedded default instance")
        trivial = _trivial_run_cost(work / "trivial-home", params["trivial_runs"])

        dagster_passes, plain_passes, gated_passes = _paired_passes(bundles, work / "small", repeats)
        large = None
        if params["avatars_large"]:
            more = common.bundle_variants(sample, work / "bundles-large",
                                          [f"bench-id-{i}" for i in range(params["avatars_large"])])
            large = _large_figures(*_paired_passes(more, work / "large", repeats), params["avatars_large"])

    dagster_wall = median([p["wall_s"] for p in dagster_passes])
    plain_wall = median([p["wall_s"] for p in plain_passes])
    overhead = ratio(dagster_wall, plain_wall)
    # Each repeat's passes ran back to back: their ratios cancel slow drifts in the machine's load.
    paired = _paired(dagster_passes, plain_passes, "wall_s")
    paired_cpu = _paired(dagster_passes, plain_passes, "cpu_s")
    paired_gated = _paired(dagster_passes, gated_passes, "wall_s")
    paired_gated_cpu = _paired(dagster_passes, gated_passes, "cpu_s")
    cpu_overhead = ratio(median([p["cpu_s"] for p in dagster_passes]), median([p["cpu_s"] for p in plain_passes]))

    # Where the subject's time went, from its event logs (median over repeats).
    def breakdown(p: dict[str, Any]) -> dict[str, float]:
        asset_s = check_s = run_s = 0.0
        for r in p["runs"]:
            assets, checks = common.split_steps(r["steps"], IDENTITY_ASSETS)
            asset_s += sum(assets.values())
            check_s += sum(checks.values())
            run_s += r["run_s"]
        return {
            "asset_steps_s": asset_s,
            "check_steps_s": check_s,
            "in_runs_outside_steps_s": run_s - asset_s - check_s,
            "outside_runs_s": p["wall_s"] - run_s,  # interpreter, imports, instance, sensors, automation
        }

    parts = [breakdown(p) for p in dagster_passes]
    dagster_breakdown = {k: median([b[k] for b in parts]) for k in parts[0]}

    first_run = dagster_passes[0]["runs"][0]
    warm_runs = [r for p in dagster_passes for r in p["runs"][1:]]
    steps = list(first_run["steps"])  # in the order they finished
    per_stage = {
        step: {
            "cold_s": first_run["steps"][step],
            "warm_median_s": median([r["steps"][step] for r in warm_runs if step in r["steps"]]) if warm_runs else None,
            "kind": "asset" if step in IDENTITY_ASSETS else "check",
        }
        for step in steps
    }
    plain_first = plain_passes[0]["bundles"][0]["stages"]
    plain_warm = [b["stages"] for p in plain_passes for b in p["bundles"][1:]]
    plain_stages = {
        stage: {
            "cold_s": plain_first[stage],
            "warm_median_s": median([s[stage] for s in plain_warm]) if plain_warm else None,
        }
        for stage in plain_first
    }
    figures = {
        "avatarops_process_wall_s": dagster_wall,
        "plain_loop_wall_s": plain_wall,
        "overhead_ratio": overhead,
        "paired_overhead_ratios": paired,
        "paired_overhead_ratio_median": median(paired),
        "cpu_overhead_ratio": cpu_overhead,
        "paired_cpu_ratios": paired_cpu,
        "paired_cpu_ratio_median": median(paired_cpu),
        # Against the plain loop that also makes the gates' measurements: what Dagster adds to the same work.
        "with_gates_paired_ratios": paired_gated,
        "with_gates_paired_ratio_median": median(paired_gated),
        "with_gates_paired_cpu_ratios": paired_gated_cpu,
        "with_gates_paired_cpu_ratio_median": median(paired_gated_cpu),
        "with_gates_loop_wall_s": median([p["wall_s"] for p in gated_passes]),
        "with_gates_loop_cpu_s": median([p["cpu_s"] for p in gated_passes]),
        "identity_gates_plain_s": median([sum(b["stages"]["identity_gates"] for b in p["bundles"]) for p in gated_passes]),
        "avatarops_process_cpu_s": median([p["cpu_s"] for p in dagster_passes]),
        "plain_loop_cpu_s": median([p["cpu_s"] for p in plain_passes]),
        "per_avatar_dagster_s": dagster_wall / n,
        "per_avatar_plain_s": plain_wall / n,
        "all_dagster_walls_s": [p["wall_s"] for p in dagster_passes],
        "all_plain_walls_s": [p["wall_s"] for p in plain_passes],
        "identity_run_cold_s": first_run["run_s"],
        "event_log_records_per_run": median([r["events"] for p in dagster_passes for r in p["runs"]]),
        "identity_run_warm_median_s": median([r["run_s"] for r in warm_runs]) if warm_runs else None,
        "stages_dagster": per_stage,
        "stages_plain": plain_stages,
        "dagster_breakdown_s": dagster_breakdown,
        "plain_breakdown_s": {
            "imports_s": median([p["import_s"] for p in plain_passes]),
            "compute_s": median([p["compute_s"] for p in plain_passes]),
            "interpreter_and_rest_s": median([p["wall_s"] - p["import_s"] - p["compute_s"] for p in plain_passes]),
        },
        "noop_process_s": median([p["noop_s"] for p in dagster_passes]),
        "python_startup_s": python_start_s,
        "import_dagster_s": import_dagster_s,
        "import_definitions_s": import_defs_s,
        "import_definitions_share_of_process": ratio(import_defs_s, dagster_wall),
        "overhead_ratio_without_definitions_import": ratio(dagster_wall - import_defs_s, plain_wall - python_start_s),
        "trivial_run": trivial,
        "large": large,
    }
    targets = {"paired_overhead_ratio_median": {"op": "<=", "limit": TARGET_OVERHEAD, "value": median(paired),
                                                "met": median(paired) <= TARGET_OVERHEAD}}
    if large is not None:
        value = large["paired_overhead_ratio_median"]
        targets["large_paired_overhead_ratio_median"] = {"op": "<=", "limit": TARGET_OVERHEAD_LARGE, "value": value,
                                                         "met": value <= TARGET_OVERHEAD_LARGE}
    return {
        "parameters": params,
        "figures": figures,
        "targets": targets,
        "baseline": "the same media functions in a plain loop in one process (python -m bench.identity_plain), "
                    "same bundles, same run, timed end to end from outside like the subject",
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    b = f["dagster_breakdown_s"]
    lines = [
        f"{p['avatars']} avatars, {p['repeats']} repeat(s), medians:",
        (f"`avatarops process` {f['avatarops_process_wall_s']:.1f} s vs plain loop {f['plain_loop_wall_s']:.1f} s "
        f"-> paired overhead ratio **{f['paired_overhead_ratio_median']:.2f}** (target <= {TARGET_OVERHEAD}; per "
        f"repeat {', '.join(f'{r:.2f}' for r in f['paired_overhead_ratios'])}; ratio of medians "
        f"{f['overhead_ratio']:.2f})"),
        (f"CPU time (whole process tree): {f['avatarops_process_cpu_s']:.1f} s vs {f['plain_loop_cpu_s']:.1f} s -> "
        f"CPU overhead ratio {f['paired_cpu_ratio_median']:.2f} paired (per repeat "
        f"{', '.join(f'{r:.2f}' for r in f['paired_cpu_ratios'])}; less sensitive to other tenants of the machine)"),
        (f"against the plain loop that also makes the identity gates' measurements ({f['identity_gates_plain_s']:.1f} s "
        f"of them; {f['with_gates_loop_wall_s']:.1f} s wall, {f['with_gates_loop_cpu_s']:.1f} s CPU): paired ratio "
        f"**{f['with_gates_paired_ratio_median']:.2f}** (per repeat "
        f"{', '.join(f'{r:.2f}' for r in f['with_gates_paired_ratios'])}), CPU "
        f"{f['with_gates_paired_cpu_ratio_median']:.2f}: what Dagster adds to the same work"),
        "walls: avatarops " + ", ".join(f"{w:.1f}" for w in f["all_dagster_walls_s"]) + " s; plain "
        + ", ".join(f"{w:.1f}" for w in f["all_plain_walls_s"]) + " s",
        (f"per avatar: {f['per_avatar_dagster_s']:.1f} s with Dagster, {f['per_avatar_plain_s']:.1f} s plain; "
        f"one identity run {f['identity_run_cold_s']:.1f} s cold, "
        f"{(f['identity_run_warm_median_s'] or float('nan')):.1f} s warm"),
        (f"subject's time: asset steps {b['asset_steps_s']:.1f} s, QA check steps {b['check_steps_s']:.1f} s, "
        f"run machinery between steps {b['in_runs_outside_steps_s']:.1f} s, outside runs (start-up, imports, "
        f"sensors, automation) {b['outside_runs_s']:.1f} s; {f['event_log_records_per_run']:.0f} event-log records per run"),
        (f"`avatarops process` with nothing to do: {f['noop_process_s']:.1f} s (start-up, imports, one sensor "
        f"round and one automation tick)"),
        (f"imports: python start {f['python_startup_s']:.2f} s, `import dagster` {f['import_dagster_s']:.2f} s, "
        f"`import avatar_assets.definitions` {f['import_definitions_s']:.2f} s "
        f"({100 * f['import_definitions_share_of_process']:.0f} % of the process); ratio without it "
        f"{f['overhead_ratio_without_definitions_import']:.2f}"),
        (f"a run of 3 trivial assets + 1 blocking check in process on the embedded SQLite default: "
        f"{f['trivial_run']['run_s_median']:.2f} s (median of {f['trivial_run']['runs'] - 1} warm, first "
        f"{f['trivial_run']['first_run_s']:.2f} s), {f['trivial_run']['event_log_records_per_run']} event-log records"),
    ]
    large = f.get("large")
    if large:
        lines.append(
            f"{large['avatars']} avatars: paired overhead ratio **{large['paired_overhead_ratio_median']:.2f}** "
            f"(target <= {TARGET_OVERHEAD_LARGE}; per repeat {', '.join(f'{r:.2f}' for r in large['paired_overhead_ratios'])}), "
            f"CPU ratio {large['cpu_overhead_ratio']:.2f}; with the gates' measurements in the loop "
            f"{large['with_gates_paired_ratio_median']:.2f} (CPU {large['with_gates_paired_cpu_ratio_median']:.2f}); walls avatarops "
            + ", ".join(f"{w:.1f}" for w in large["all_dagster_walls_s"]) + " s, plain "
            + ", ".join(f"{w:.1f}" for w in large["all_plain_walls_s"]) + f" s; per avatar "
            f"{large['per_avatar_dagster_s']:.2f} s vs {large['per_avatar_plain_s']:.2f} s")
    lines.append("stage (Dagster step, cold / warm median) vs plain loop (cold / warm median), seconds:")
    plain = f["stages_plain"]
    for step, s in f["stages_dagster"].items():
        warm = s["warm_median_s"]
        line = f"  {step:48} {s['cold_s']:6.2f} / {warm if warm is not None else float('nan'):6.2f}"
        if step in plain:
            pw = plain[step]["warm_median_s"]
            line += f"   plain {plain[step]['cold_s']:6.2f} / {pw if pw is not None else float('nan'):6.2f}"
        lines.append(line)
    return lines
