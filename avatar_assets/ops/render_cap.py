"""The cap on a tenant's renders in flight, enforced where requests become runs (the output-request sensor).

A render is in flight while a run of its cell is queued, starting or running; one that waits for a person's
approval holds no run and counts for nothing. A request beyond the cap is held with a reason that starts with
`REASON`, which `avatarops status` and the job API show as `queued`: it starts when one of the tenant's
renders finishes. Avatars with no recorded owner (uploaded by the operator) are nobody's tenant and uncapped.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import dagster as dg

from avatar_assets import settings
from avatar_assets.contracts import TenantLimits
from avatar_assets.identity import ownership
from avatar_assets.ops.run_health import ACTIVE
from partitions import run_partition, split_cell
from resources.layout import tenant_limits_key
from resources.media_store import MediaStore

REASON = "tenant render cap"


def cap_of(store: MediaStore, tenant: str) -> int:
    """The tenant's own cap, or `AVATAR_TENANT_RENDER_CAP`."""
    text = store.read_text(tenant_limits_key(tenant))
    return TenantLimits.model_validate_json(text).renders_in_flight if text else settings.tenant_render_cap()


def set_cap(store: MediaStore, tenant: str, renders_in_flight: int) -> TenantLimits:
    limits = TenantLimits(tenant=tenant, renders_in_flight=renders_in_flight, set_at=datetime.now(UTC))
    store.write_text(tenant_limits_key(tenant), limits.model_dump_json(indent=2))
    return limits


class InFlight:
    """Renders in flight per tenant as of one sensor tick, counting the runs the tick itself asks for."""

    def __init__(self, instance: dg.DagsterInstance, store: MediaStore) -> None:
        self._store = store
        self._tenants: dict[str, str | None] = {}
        self._caps: dict[str, int] = {}
        cells = {run_partition(run.tags) for run in instance.get_runs(dg.RunsFilter(statuses=ACTIVE))}
        self.counts: Counter[str] = Counter()
        for cell in cells:
            avatar_id, slug = split_cell(cell or "")
            tenant = self.tenant_of(avatar_id) if slug else None
            if tenant is not None:
                self.counts[tenant] += 1

    def tenant_of(self, avatar_id: str) -> str | None:
        if avatar_id not in self._tenants:
            holder = ownership.owner(self._store, avatar_id)
            self._tenants[avatar_id] = holder.creator_id if holder else None
        return self._tenants[avatar_id]

    def refusal(self, avatar_id: str) -> str | None:
        """Why a new render of the avatar must wait, or None when its tenant is under its cap."""
        tenant = self.tenant_of(avatar_id)
        if tenant is None:
            return None
        if tenant not in self._caps:
            self._caps[tenant] = cap_of(self._store, tenant)
        cap = self._caps[tenant]
        if self.counts[tenant] < cap:
            return None
        return (f"{REASON}: tenant {tenant!r} has {self.counts[tenant]} renders in flight, its cap is {cap}; "
                "this render starts when one of them finishes")

    def take(self, avatar_id: str) -> None:
        tenant = self.tenant_of(avatar_id)
        if tenant is not None:
            self.counts[tenant] += 1
