"""Delivers lifecycle events from the outbox to AVATAR_WEBHOOK_URL on every tick, with backoff."""

import os

import dagster as dg

from avatar_assets import events, settings
from resources.wiring import media_store

DELIVERY_SENSOR = "webhook_delivery_sensor"


def build_delivery_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=DELIVERY_SENSOR,
        minimum_interval_seconds=settings.sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts lifecycle events to the webhook in order; backs off while it is down.",
    )
    def webhook_delivery_sensor(context: dg.SensorEvaluationContext):
        url = os.environ.get("AVATAR_WEBHOOK_URL")
        if not url:
            return dg.SkipReason("AVATAR_WEBHOOK_URL is not set; events stay in the outbox")
        report = events.deliver(media_store(), url)
        if report.error:
            context.log.warning(f"webhook delivery paused: {report.error}; {report.pending} event(s) waiting")
        return dg.SkipReason(f"delivered {report.delivered}, {report.pending} pending")

    return webhook_delivery_sensor
