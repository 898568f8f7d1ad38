"""The code location. Loading it must stay light: no torch, diffusers, great-expectations or resemblyzer."""

import dagster as dg

from avatar_assets import settings
from avatar_assets.checks.consistency import CONSISTENCY_CHECKS
from avatar_assets.checks.identity import IDENTITY_CHECKS
from avatar_assets.checks.video import VIDEO_CHECKS
from avatar_assets.jobs import ASSETS, identity_job, video_job
from avatar_assets.launchpad import OPERATION_JOBS
from avatar_assets.pipeline import privacy
from resources.wiring import build_resources
from sensors.approvals import build_approval_sensor
from sensors.events import build_delivery_sensor
from sensors.requests import build_request_sensor
from sensors.uploads import build_upload_sensor

# Every Dagster process that serves this location (code server, sensor ticks, run workers) imports this.
privacy.make_private()

automation = dg.AutomationConditionSensorDefinition(
    "avatar_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.sensor_interval_seconds(),
    description="Refreshes existing partitions whose dependencies changed; never creates new ones.",
)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=[*IDENTITY_CHECKS, *CONSISTENCY_CHECKS, *VIDEO_CHECKS],
    jobs=[identity_job, video_job, *OPERATION_JOBS],
    sensors=[
        build_upload_sensor(identity_job),
        build_request_sensor(video_job),
        build_approval_sensor([identity_job, video_job]),
        build_delivery_sensor(),
        automation,
    ],
    resources=build_resources(),
    # One process per run: models and caches stay loaded across a run's steps.
    executor=dg.in_process_executor,
)
