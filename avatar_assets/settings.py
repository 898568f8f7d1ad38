"""Where things live. One environment variable picks the home, another switches media to S3."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_HOME = "./.avatar_home"


class ConfigurationError(ValueError):
    """A setting the platform cannot use; the message names the variable and what it expects."""


def avatar_home() -> Path:
    return Path(os.environ.get("AVATAR_HOME", DEFAULT_HOME)).expanduser().resolve()


def export_home() -> None:
    """The store reads AVATAR_HOME through dg.EnvVar, which knows no default: name the default home in the
    environment when none is given (absolute, so the processes this one starts agree on it)."""
    os.environ.setdefault("AVATAR_HOME", str(avatar_home()))


def inbox_dir() -> Path:
    return avatar_home() / "inbox"


def quarantine_dir() -> Path:
    return avatar_home() / "quarantine"


def scratch_root() -> Path:
    return avatar_home() / "tmp"


def run_scratch_dir(run_id: str) -> Path:
    """A run's scratch files: one folder per run, so the folder of a run that is over can be removed whole."""
    return scratch_root() / run_id


def api_home() -> Path:
    """The job API's folder: its SQLite state and the staging of uploads still arriving. Not under scratch_root(),
    whose folders belong to runs and are removed once no active run owns them."""
    return avatar_home() / "api"


def dagster_home() -> Path:
    return avatar_home() / "dagster"


def home_relative(path: Path) -> str:
    """How a file written under AVATAR_HOME names a place in it: relative to the home, so a copied or moved
    home still names the right place. A place outside the home keeps its absolute path."""
    path, home = path.resolve(), avatar_home()
    return path.relative_to(home).as_posix() if path.is_relative_to(home) else str(path)


def storage_url() -> str:
    """`AVATAR_STORAGE`: empty for the local filesystem under AVATAR_HOME, or s3://bucket/prefix."""
    return os.environ.get("AVATAR_STORAGE", "").strip()


def upload_settle_seconds() -> float:
    """How long a bundle must stay unchanged before it is taken (protects half-copied files)."""
    return decimal_number("AVATAR_UPLOAD_SETTLE_SECONDS", 2.0)


def incomplete_upload_seconds() -> float:
    """How long a bundle in an object store whose manifest names files not uploaded yet waits for them before
    it is quarantined (the uploader writes the manifest last, so such a bundle is a broken upload)."""
    return decimal_number("AVATAR_INCOMPLETE_UPLOAD_SECONDS", 3600.0)


def sensor_interval_seconds() -> int:
    return whole_number("AVATAR_SENSOR_INTERVAL_SECONDS", 15, minimum=1)


def tenant_render_cap() -> int:
    """`AVATAR_TENANT_RENDER_CAP`: renders of one tenant in flight at once, unless the tenant has its own cap
    (`avatarops quotas render-cap`); a render beyond it waits as `queued`."""
    return whole_number("AVATAR_TENANT_RENDER_CAP", 8)


def whole_number(name: str, default: int, *, minimum: int = 0, environ: Mapping[str, str] | None = None) -> int:
    """An integer setting of at least `minimum`; unset or blank means `default`."""
    value = parsed_setting(os.environ if environ is None else environ, name, default, int, "a whole number")
    if value < minimum:
        raise ConfigurationError(f"{name}={value}: expected a whole number >= {minimum}")
    return value


def decimal_number(name: str, default: float) -> float:
    """A number setting (seconds, thresholds); unset or blank means `default`."""
    return parsed_setting(os.environ, name, default, float, "a number")


def parsed_setting(environ: Mapping[str, str], name: str, default, parse: Callable[[str], Any], expected: str):
    """`name` from `environ` through `parse`; unset or blank means `default`, a value `parse` refuses is a
    ConfigurationError saying what was `expected`."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r}: expected {expected}") from None


def local_file_setting(environ: Mapping[str, str], name: str) -> str | None:
    """A local model file named by `name`, made absolute (`~` expanded) so every process reads the same one."""
    raw = environ.get(name, "").strip()
    return str(Path(raw).expanduser().absolute()) if raw else None


def console_log_level() -> str:
    """Console log level of runs that `avatarops` executes in-process (the UI always keeps everything)."""
    return os.environ.get("AVATAR_LOG_LEVEL", "WARNING").upper()
