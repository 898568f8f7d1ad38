"""Delivers lifecycle events from the outbox to AVATAR_WEBHOOK_URL on every tick, signed, with per-event retries."""

import os

import dagster as dg

from avatar_assets import settings
from avatar_assets.pipeline import events
from resources.media_store import MediaStore

DELIVERY_SENSOR = "webhook_delivery_sensor"
# Dagster gives a sensor evaluation 60 s; a pass stops starting attempts after this (one may take TIMEOUT_S).
TICK_BUDGET_S = 40.0


def build_delivery_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=DELIVERY_SENSOR,
        minimum_interval_seconds=settings.sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts lifecycle events to the webhook, signed; a failing event is retried on its own "
        "backoff and dead-lettered, never blocking later ones.",
    )
    def webhook_delivery_sensor(context: dg.SensorEvaluationContext, store: MediaStore):
        url = os.environ.get(events.URL_ENV)
        if not url:
            return dg.SkipReason(f"{events.URL_ENV} is not set; events stay in the outbox")
        try:
            config = events.WebhookConfig.from_env(url)
        except events.WebhookConfigError as error:  # nothing is ever delivered unsigned
            context.log.warning(f"webhook delivery stopped: {error}; events stay in the outbox")
            return dg.SkipReason(f"{error}; events stay in the outbox")
        report = events.deliver(store, config.url, config.signer, max_attempts=config.max_attempts,
                                budget_s=TICK_BUDGET_S)
        if report.error:
            context.log.warning(f"webhook delivery: {report.summary()}")
        return dg.SkipReason(report.summary())

    return webhook_delivery_sensor
