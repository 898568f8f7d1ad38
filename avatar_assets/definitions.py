"""The code location. Loading it must stay light: no torch, diffusers, great-expectations or resemblyzer."""

import dagster as dg

from avatar_assets.checks.identity import IDENTITY_CHECKS
from avatar_assets.identity.assets import IDENTITY_ASSETS
from avatar_assets.jobs import identity_job
from resources.wiring import build_resources
from sensors.uploads import build_upload_sensor

defs = dg.Definitions(
    assets=IDENTITY_ASSETS,
    asset_checks=IDENTITY_CHECKS,
    jobs=[identity_job],
    sensors=[build_upload_sensor(identity_job)],
    resources=build_resources(),
)
