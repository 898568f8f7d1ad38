"""Jobs that sensors and the CLI target."""

import dagster as dg

from avatar_assets.identity.assets import IDENTITY_ASSETS
from partitions import avatars

identity_job = dg.define_asset_job(
    "build_identity",
    selection=dg.AssetSelection.assets(*IDENTITY_ASSETS),
    partitions_def=avatars,
    description="Builds one avatar's identity from its upload, with the QA gates.",
)
