"""Regeneration: re-materialize one avatar's neutral_image, let automation refresh exactly its lineage.

Setup: a fresh AVATAR_HOME with 3 avatars x 2 outputs materialized (small render size, short scripts).
Subject: `execute` neutral_image for one avatar (what `avatarops regenerate` does), then
`runner.process` until automation has refreshed everything downstream; the materializations that
follow are counted and compared with that avatar's lineage (its character_sheet and identity_bundle,
and the downstream stages of its 2 cells), nothing of the other avatars. Measured twice: as the
product does it (content keys reuse unchanged results, so only Dagster work is left) and with the
content cache emptied first (every stage really recomputes). Baseline, same process (warm): a full
build of the same 3 x 2 on a second fresh home.
"""

from __future__ import annotations

import shutil
from collections import Counter
from typing import Any

from bench import common
from bench.common import ratio, say

NAME = "regeneration"
SCRIPTS = {
    "intro": ("single_scene", "Hello there! [pause 300ms] I am your new avatar.", []),
    "promo": ("multi_scene", "Our spring campaign starts today. Come and see what is new.",
              ["soft studio backdrop", "city at dusk"]),
}


def parameters(quick: bool) -> dict[str, Any]:
    slugs = list(SCRIPTS)[:1] if quick else list(SCRIPTS)
    return {
        "avatars": 2 if quick else 3,
        "outputs_per_avatar": len(slugs),
        "slugs": {slug: {"route": SCRIPTS[slug][0], "script": SCRIPTS[slug][1]} for slug in slugs},
        "master_short_side": 240,
        "fps": 25,
        "aspect_ratios": ["9:16"],
        "regenerated": "neutral_image of the second avatar",
        "photo_variants": "sample photo re-encoded as JPEG at quality 95, 94, ... (one per avatar)",
    }


def _expected(defs, avatar: str, slugs: list[str]) -> set[tuple[str, str]]:
    """Every partition downstream of neutral_image[avatar] that exists: identity assets of the avatar,
    video stages of its cells."""
    import dagster as dg

    from partitions import cell_key

    graph = defs.resolve_asset_graph()
    seen, frontier = set(), [dg.AssetKey("neutral_image")]
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    expected = set()
    for key in seen:
        if isinstance(graph.get(key).partitions_def, dg.MultiPartitionsDefinition):
            expected |= {(key.to_user_string(), str(cell_key(avatar, slug))) for slug in slugs}
        else:
            expected.add((key.to_user_string(), avatar))
    return expected


def _build(home, bundles, slugs, params):
    """Fresh home -> everything materialized. Returns (seconds, defs, instance, report)."""
    import dagster as dg

    common.activate_home(home, AVATAR_MASTER_SHORT_SIDE=str(params["master_short_side"]), AVATAR_FPS=str(params["fps"]))
    from avatar_assets.contracts import OutputRequest
    from avatar_assets.ops.runner import process
    from avatar_assets.video.requests import write_request
    from resources.wiring import store_of

    defs = common.load_definitions()
    instance = dg.DagsterInstance.get()
    common.copy_into_inbox(bundles, home)
    with store_of(defs) as store:
        for bundle in bundles:
            for slug in slugs:
                route, script, prompts = SCRIPTS[slug]
                write_request(store, OutputRequest(avatar_id=bundle.name, slug=slug, route=route, script=script,
                                                   background_prompts=prompts))
    seconds, report = common.timed(lambda: process(defs, instance, echo=lambda _: None))
    if not report.ok:
        raise RuntimeError(f"build failed: {report.as_dict()}")
    return seconds, defs, instance, report


def _regenerate(defs, instance, avatar: str) -> tuple[float, list[tuple[str, str]], dict[str, Any]]:
    import dagster as dg

    from avatar_assets.ops.runner import execute, process

    marker = common.latest_storage_id(instance)

    def go():
        outcome = execute(defs, instance, job_name=None, asset_keys=[dg.AssetKey("neutral_image")],
                          partition_key=avatar, tags={"avatar": avatar, "avatarops/regenerate": "neutral_image"},
                          origin="regenerate")
        report = process(defs, instance, echo=lambda _: None)
        if not outcome.success or not report.ok:
            raise RuntimeError(f"regeneration failed: {outcome} {report.as_dict()}")
        return [outcome, *report.runs]

    seconds, outcomes = common.timed(go)
    timings = [common.run_step_timings(instance, o.run_id) for o in outcomes]
    steps = sum(sum(t["steps"].values()) for t in timings)
    runs_s = sum(t["run_s"] for t in timings)
    where = {
        "runs": [f"{o.job} [{o.partition}] ({o.origin})" for o in outcomes],
        "step_s": steps,
        "in_runs_outside_steps_s": runs_s - steps,
        "outside_runs_s": seconds - runs_s,  # sensor rounds and automation ticks of runner.process
    }
    return seconds, common.materializations_after(instance, marker), where


def run(opts) -> dict[str, Any]:
    params = parameters(opts.quick)
    slugs = list(params["slugs"])
    with common.workdir(NAME, keep=opts.keep) as work:
        common.activate_home(work / "setup-home")
        say("building the sample bundle and its variants")
        sample = common.sample_bundle(work / "sample" / "astronaut")
        avatars = [f"bench-re-{i}" for i in range(params["avatars"])]
        bundles = common.bundle_variants(sample, work / "bundles", avatars)
        target = avatars[1]

        say(f"initial build of {len(avatars)} avatars x {len(slugs)} outputs (cold process)")
        cold_s, defs, instance, report = _build(work / "home-a", bundles, slugs, params)
        built = Counter(common.materializations_after(instance, 0))
        say(f"  {cold_s:.1f} s, {sum(built.values())} materializations in {len(report.runs)} runs")
        expected = _expected(defs, target, slugs)
        try:
            say(f"regenerating neutral_image[{target}] (content cache in place)")
            cached_s, cached_mats, cached_runs = _regenerate(defs, instance, target)
            say(f"  {cached_s:.1f} s, {len(cached_mats)} materializations")
            shutil.rmtree(work / "home-a" / "cache", ignore_errors=True)
            say(f"regenerating neutral_image[{target}] (content cache emptied: every stage recomputes)")
            forced_s, forced_mats, forced_runs = _regenerate(defs, instance, target)
            say(f"  {forced_s:.1f} s, {len(forced_mats)} materializations")
        finally:
            instance.dispose()

        say("full build of the same avatars and outputs on a fresh home (warm process)")
        full_s, _, instance_b, report_b = _build(work / "home-b", bundles, slugs, params)
        full_mats = common.materializations_after(instance_b, 0)
        instance_b.dispose()
        say(f"  {full_s:.1f} s, {len(full_mats)} materializations in {len(report_b.runs)} runs")

    def verdict(mats: list[tuple[str, str]]) -> dict[str, Any]:
        followers = [m for m in mats if m != ("neutral_image", target)]
        got = set(followers)
        return {
            "materializations": len(mats),
            "followers": len(followers),
            "followers_list": sorted(f"{a}[{p}]" for a, p in followers),
            "exact": got == expected and len(followers) == len(expected),
            "missing": sorted(f"{a}[{p}]" for a, p in expected - got),
            "unexpected": sorted(f"{a}[{p}]" for a, p in got - expected),
            "duplicates": sorted(f"{a}[{p}]" for (a, p), c in Counter(followers).items() if c > 1),
        }

    cached, forced = verdict(cached_mats), verdict(forced_mats)
    figures = {
        "regenerated": f"neutral_image[{target}]",
        "expected_followers": len(expected),
        "expected_followers_list": sorted(f"{a}[{p}]" for a, p in expected),
        "initial_build_cold_s": cold_s,
        "initial_build_materializations": sum(built.values()),
        "full_rebuild_warm_s": full_s,
        "full_rebuild_materializations": len(full_mats),
        "regenerate_cached_s": cached_s,
        "regenerate_cached_where": cached_runs,
        "regenerate_cached": cached,
        "regenerate_recompute_s": forced_s,
        "regenerate_recompute_where": forced_runs,
        "regenerate_recompute": forced,
        "ratio_cached_vs_full": ratio(cached_s, full_s),
        "ratio_recompute_vs_full": ratio(forced_s, full_s),
        "lineage_share_of_partitions": ratio(len(expected) + 1, len(full_mats)),
    }
    exact = cached["exact"] and forced["exact"]
    return {
        "parameters": params,
        "figures": figures,
        "targets": {"exact_lineage": {"op": "==", "limit": True, "value": exact, "met": exact}},
        "baseline": "full build of the same avatars x outputs on a fresh home, same process (warm)",
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    c, r = f["regenerate_cached"], f["regenerate_recompute"]
    cw, rw = f["regenerate_cached_where"], f["regenerate_recompute_where"]
    lines = [
        (f"{p['avatars']} avatars x {p['outputs_per_avatar']} outputs at {p['master_short_side']} short side; "
        f"regenerated {f['regenerated']}"),
        (f"followers expected {f['expected_followers']}: got {c['followers']} (cached, exact={c['exact']}) and "
        f"{r['followers']} (recompute, exact={r['exact']})"),
        (f"regenerate with content cache {f['regenerate_cached_s']:.1f} s ({len(cw['runs'])} runs), "
        f"with cache emptied {f['regenerate_recompute_s']:.1f} s vs full rebuild {f['full_rebuild_warm_s']:.1f} s "
        f"({f['full_rebuild_materializations']} materializations) -> ratios "
        f"**{f['ratio_cached_vs_full']:.2f}** (cached) / **{f['ratio_recompute_vs_full']:.2f}** (recompute); "
        f"the lineage is {100 * f['lineage_share_of_partitions']:.0f} % of the partitions"),
        f"initial build (cold process) {f['initial_build_cold_s']:.1f} s",
        (f"where the regeneration time went (cached / recompute): steps {cw['step_s']:.1f} / {rw['step_s']:.1f} s, "
        f"run machinery {cw['in_runs_outside_steps_s']:.1f} / {rw['in_runs_outside_steps_s']:.1f} s, sensor rounds "
        f"and automation ticks {cw['outside_runs_s']:.1f} / {rw['outside_runs_s']:.1f} s"),
        "followers: " + ", ".join(f["expected_followers_list"]),
    ]
    for label, v in (("cached", c), ("recompute", r)):
        if not v["exact"]:
            lines.append(f"{label}: missing {v['missing']}, unexpected {v['unexpected']}, duplicates {v['duplicates']}")
    return lines
