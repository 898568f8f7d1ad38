"""The local Dagster instance's dagster.yaml: one owner for the settings every entry point gives it.

`avatarops` (`cli.ensure_instance_home`) writes them into a new instance; `make dev`
(`python -m avatar_assets.ops.instance_config`, before the webserver and daemon start) also adds the ones an
existing dagster.yaml lacks, so homes made before a setting was added get it too. Telemetry stays off and
the UI's first-visit newsletter dialog (`nux`) does not appear.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from avatar_assets.media.partial import atomic_write_text
from avatar_assets.pipeline import privacy

DEFAULTS: dict[str, dict] = {
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
}


def ensure_config(home: Path, *, fill_in: bool = False) -> Path:
    """Create `home` and its dagster.yaml with DEFAULTS when missing; return the file.

    `fill_in` also appends the DEFAULTS sections an existing file lacks, leaving what it says (and its
    comments) alone. Only `make dev` asks for it, on a developer's own instance: `avatarops` never edits
    an existing file, which in production is deploy/dagster.yaml, perhaps on a read-only mount.
    """
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        atomic_write_text(config, _sections(DEFAULTS))
    elif fill_in:
        text = config.read_text(encoding="utf-8")
        present = yaml.safe_load(text) or {}
        missing = {key: value for key, value in DEFAULTS.items() if key not in present}
        if missing:
            separator = "\n" if text and not text.endswith("\n") else ""
            with config.open("a", encoding="utf-8") as handle:
                handle.write(separator + _sections(missing))
    return config


def _sections(settings: dict[str, dict]) -> str:
    return yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)


if __name__ == "__main__":
    ensure_config(privacy.instance_home(), fill_in=True)
