"""The video graph as the stages declare it: their order, and the human gates each stage waits behind.

Both are read from the stages' definitions (what each one reads), so adding or rewiring a stage updates
them; `video.assets` derives `VIDEO_STAGES` and `GUARDED_BY` from its stages with these functions. Which
stage each approval job type gates is a product rule, kept as a table in `gates`.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from avatar_assets.contracts import OutputRequest
from avatar_assets.video.gates import GATE_ASSET, gate_assets


def _reads(stages: Sequence[dg.AssetsDefinition]) -> dict[str, set[str]]:
    """Each stage's video inputs (identity inputs left out)."""
    names = {stage.key.to_user_string() for stage in stages}
    return {stage.key.to_user_string(): {key.to_user_string() for key in stage.dependency_keys} & names
            for stage in stages}


def stage_order(stages: Sequence[dg.AssetsDefinition]) -> list[str]:
    """Every stage after the stages it reads; stages ready together keep the order they are defined in."""
    reads = _reads(stages)
    order: list[str] = []
    while len(order) < len(reads):
        order.append(next(name for name in reads if name not in order and reads[name] <= set(order)))
    return order


def gates_waited_for(stages: Sequence[dg.AssetsDefinition]) -> dict[str, tuple[str, ...]]:
    """The gated stages that a stage is the first to read: it runs only once they are approved. A gate it
    also reads through another input was waited for there (lip_sync reads script, storyboard waited for it)."""
    reads = _reads(stages)

    def upstream(stage: str) -> set[str]:
        return set().union(*({read} | upstream(read) for read in reads[stage]))

    return {
        stage: gated
        for stage in stage_order(stages)
        if (gated := tuple(
            gate for gate in stage_order(stages)
            if gate in reads[stage] and gate in GATE_ASSET.values()
            and not any(gate in upstream(other) for other in reads[stage])
        ))
    }


def next_segment(stages: Sequence[str], request: OutputRequest, after: str | None) -> list[str]:
    """Of `stages` (in order), those to run after `after` (None: from the start), stopping at the next
    gated stage, inclusive."""
    start = 0 if after is None else stages.index(after) + 1
    gates = gate_assets(request)
    segment = []
    for stage in stages[start:]:
        segment.append(stage)
        if stage in gates:
            break
    return segment
