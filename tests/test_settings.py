"""Settings read from the environment: a bad value names the variable and what was expected, never a traceback
from deep inside a run."""

import pytest

from avatar_assets import settings
from avatar_assets.checks.consistency import max_distance, min_similarity
from avatar_assets.settings import ConfigurationError


def test_numbers_default_when_unset_or_blank(monkeypatch) -> None:
    monkeypatch.setenv("AVATAR_UPLOAD_SETTLE_SECONDS", " ")
    monkeypatch.delenv("AVATAR_TENANT_RENDER_CAP", raising=False)
    assert settings.upload_settle_seconds() == 2.0
    assert settings.tenant_render_cap() == 8


def test_a_bad_number_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("AVATAR_IDENTITY_MAX_DISTANCE", "close")
    with pytest.raises(ConfigurationError, match="AVATAR_IDENTITY_MAX_DISTANCE='close': expected a number"):
        max_distance()
    monkeypatch.setenv("AVATAR_IDENTITY_MIN_SIMILARITY", "0.4")
    assert min_similarity() == 0.4


def test_a_whole_number_below_its_minimum_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("AVATAR_SENSOR_INTERVAL_SECONDS", "0")
    with pytest.raises(ConfigurationError, match="AVATAR_SENSOR_INTERVAL_SECONDS=0: expected a whole number >= 1"):
        settings.sensor_interval_seconds()
    monkeypatch.setenv("AVATAR_TENANT_RENDER_CAP", "-2")
    with pytest.raises(ConfigurationError, match=">= 0"):
        settings.tenant_render_cap()


def test_a_rendition_short_side_too_small_to_encode_is_refused(monkeypatch) -> None:
    from resources.wiring import build_resources

    monkeypatch.setenv("AVATAR_MASTER_SHORT_SIDE", "8")
    with pytest.raises(ConfigurationError, match="AVATAR_MASTER_SHORT_SIDE=8: expected a whole number >= 16"):
        build_resources()
