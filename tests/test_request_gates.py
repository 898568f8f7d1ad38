"""The request sensor holds renders until every identity gate passed: its list must be the graph's."""

from avatar_assets.definitions import defs
from sensors.requests import IDENTITY_GATED


def test_request_sensor_waits_for_every_blocking_identity_gate():
    graph = defs.resolve_asset_graph()
    blocking = {
        (spec.asset_key.to_user_string(), spec.name)
        for checks_def in defs.asset_checks
        for spec in checks_def.check_specs
        if spec.blocking and getattr(graph.get(spec.asset_key).partitions_def, "name", None) == "avatars"
    }
    assert len(blocking) == 5
    assert blocking == {(asset, check) for asset, checks in IDENTITY_GATED.items() for check in checks}
