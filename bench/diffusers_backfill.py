"""A backfill of `neutral_image` over N avatars on the diffusers provider, through real Dagster runs.

Subject: `runner.backfill` (what `avatarops backfill` and the UI's backfill do): the asset's
`BackfillPolicy.multi_run(8)` puts up to 8 avatars in one run, which loads the model once and generates
their portraits in one batched pipeline call. Baseline, same process: one single-avatar run per avatar
with the model cache emptied before each, i.e. what N daemon-launched runs (one process each) pay for
the model. Both passes generate the same images (same seed, the content cache emptied before each) and
run the real gates on them (with a tiny random model they fail on its noise, in both passes alike).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench import common
from bench.common import ratio, say


def bench_backfill(model_path: str, device: str, work: Path, *, avatars: int = 10, side: int, steps: int = 4) -> dict[str, Any]:
    import dagster as dg

    from avatar_assets.identity.assets import IMAGE_BATCH_PARTITIONS
    from avatar_assets.ops.runner import backfill, execute, process
    from avatar_assets.pipeline.lifecycle import SEED_TAG
    from resources.diffusers.models import clear_generator_cache, load_count

    home = work / "backfill-home"
    common.activate_home(
        home, AVATAR_IMAGE_PROVIDER="diffusers", AVATAR_DIFFUSERS_MODEL=model_path, AVATAR_DIFFUSERS_DEVICE=device,
        AVATAR_DIFFUSERS_SIZE=str(side), AVATAR_DIFFUSERS_STEPS=str(steps), AVATAR_DIFFUSERS_RETRY_BACKOFF_S="0",
        AVATAR_LOG_LEVEL="CRITICAL",  # a tiny random model fails the identity gates in every run: expected
    )
    defs = common.load_definitions()
    instance = dg.DagsterInstance.get()
    ids = [f"bench-bf-{i}" for i in range(avatars)]
    sample = common.sample_bundle(work / "backfill-sample" / "astronaut")
    common.copy_into_inbox(common.bundle_variants(sample, work / "backfill-bundles", ids), home)
    say(f"building {avatars} identities on the diffusers provider (setup)")
    process(defs, instance, echo=lambda _: None)  # the tiny model's noise fails the gates: fine, the inputs exist
    neutral = dg.AssetKey("neutral_image")

    def separate() -> tuple[list, int]:
        shutil.rmtree(home / "cache" / "neutral_image", ignore_errors=True)
        outcomes, loads = [], 0
        for avatar_id in ids:
            clear_generator_cache()  # a daemon-launched run is a process of its own
            outcomes.append(execute(defs, instance, job_name=None, asset_keys=[neutral], partition_key=avatar_id,
                                    tags={SEED_TAG: "101"}, origin="bench"))
            loads += load_count()
        return outcomes, loads

    def batched() -> tuple[list, int]:
        shutil.rmtree(home / "cache" / "neutral_image", ignore_errors=True)
        clear_generator_cache()
        outcomes = backfill(defs, instance, [neutral], ids, tags={SEED_TAG: "101"}, echo=lambda _: None)
        return outcomes, load_count()

    say(f"{avatars} single-avatar runs, one model load each")
    separate_s, (separate_outcomes, separate_loads) = common.timed(separate)
    say(f"  {separate_s:.1f} s; backfill: ranged runs of up to {IMAGE_BATCH_PARTITIONS} avatars")
    batched_s, (batched_outcomes, batched_loads) = common.timed(batched)
    say(f"  {batched_s:.1f} s in {len(batched_outcomes)} run(s)")
    batch_runs = {o.run_id for o in batched_outcomes}
    for avatar_id in ids:
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=neutral, asset_partitions=[avatar_id]), limit=1
        ).records
        if not latest or latest[0].run_id not in batch_runs:
            raise RuntimeError(f"the backfill did not materialize neutral_image[{avatar_id}]")
    saving = 1 - batched_s / separate_s
    return {
        "avatars": avatars,
        "separate_runs": len(separate_outcomes),
        "separate_loads": separate_loads,
        "separate_s": round(separate_s, 3),
        "separate_per_avatar_s": round(separate_s / avatars, 3),
        "batched_runs": len(batched_outcomes),
        "batched_loads": batched_loads,
        "batched_s": round(batched_s, 3),
        "batched_per_avatar_s": round(batched_s / avatars, 3),
        "speedup": ratio(separate_s, batched_s),
        "per_avatar_saving": round(saving, 3),
        "gates_failed_separate": sum(len(o.failed_checks) for o in separate_outcomes),
        "gates_failed_batched": sum(len(o.failed_checks) for o in batched_outcomes),
    }
