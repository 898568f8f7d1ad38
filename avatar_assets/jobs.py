"""Jobs that sensors and the CLI target (partitioning comes from the selected assets)."""

import warnings

import dagster as dg

from avatar_assets.identity.assets import IDENTITY_ASSETS
from avatar_assets.video.assets import VIDEO_ASSETS

# build_identity runs one avatar; its image assets' multi_run policy (for backfills) differs from the
# others', which dagster reports every time it resolves the job. Expected, so not shown.
warnings.filterwarnings(
    "ignore", message="Asset job build_identity materializes assets with varying BackfillPolicies", category=UserWarning
)

ASSETS = [*IDENTITY_ASSETS, *VIDEO_ASSETS]
"""Every asset of the platform (what revocation forgets partitions of, too)."""

identity_job = dg.define_asset_job(
    "build_identity",
    selection=dg.AssetSelection.assets(*IDENTITY_ASSETS),
    description="Builds one avatar's identity from its upload, with the QA gates.",
)

video_job = dg.define_asset_job(
    "render_video",
    selection=dg.AssetSelection.assets(*VIDEO_ASSETS),
    description="Renders one video cell (avatar x output) from its request, with the QA gates.",
)
