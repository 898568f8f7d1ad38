"""The video graph as the stages declare it: their order, and the human gates each stage waits behind.

Both are read from the stages' definitions (what each one reads), so adding or rewiring a stage updates
them. Which stage each approval job type gates is a product rule, kept as a table in `gates`.
"""

from __future__ import annotations

from avatar_assets.contracts import OutputRequest
from avatar_assets.video.assets import VIDEO_ASSETS
from avatar_assets.video.gates import GATE_ASSET, gate_assets

_NAMES = [stage.key.to_user_string() for stage in VIDEO_ASSETS]
_READS = {
    name: {key.to_user_string() for key in stage.dependency_keys} & set(_NAMES)  # identity inputs left out
    for name, stage in zip(_NAMES, VIDEO_ASSETS, strict=True)
}


def _in_order() -> list[str]:
    """Every stage after the stages it reads; stages ready together keep the order they are defined in."""
    order: list[str] = []
    while len(order) < len(_NAMES):
        order.append(next(name for name in _NAMES if name not in order and _READS[name] <= set(order)))
    return order


def _upstream(stage: str) -> set[str]:
    return set().union(*({read} | _upstream(read) for read in _READS[stage]))


VIDEO_STAGES = _in_order()

GUARDED_BY = {
    stage: gated
    for stage in VIDEO_STAGES
    if (gated := tuple(
        gate for gate in VIDEO_STAGES
        if gate in _READS[stage] and gate in GATE_ASSET.values()
        and not any(gate in _upstream(other) for other in _READS[stage])
    ))
}
"""The gated stages that a stage is the first to read: it runs only once they are approved. A gate it
also reads through another input was waited for there (lip_sync reads script, storyboard waited for it)."""


def next_segment(request: OutputRequest, after: str | None) -> list[str]:
    """Stages to run after `after` (None: from the start), stopping at the next gated stage, inclusive."""
    start = 0 if after is None else VIDEO_STAGES.index(after) + 1
    gates = gate_assets(request)
    segment = []
    for stage in VIDEO_STAGES[start:]:
        segment.append(stage)
        if stage in gates:
            break
    return segment
