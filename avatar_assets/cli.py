"""`avatarops`: upload bundles, process them headlessly, and see where every avatar stands."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import click

from avatar_assets import intake, settings

EXIT_BAD_INPUT = 2


def ensure_instance_home() -> Path:
    """Point Dagster at AVATAR_HOME/dagster (the same instance `make dev` opens) unless told otherwise."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        intake.atomic_write_text(config, "telemetry:\n  enabled: false\n")
    return home


def load_instance_and_defs():
    ensure_instance_home()
    import dagster as dg

    from avatar_assets.definitions import defs

    return dg.DagsterInstance.get(), defs


@click.group()
def main() -> None:
    """Avatar platform operations (AVATAR_HOME selects the home; default ./.avatar_home)."""
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    # Beta/preview notices about the APIs the design chose are for developers, not operators.
    warnings.simplefilter("ignore", BetaWarning)
    warnings.simplefilter("ignore", PreviewWarning)


def upload_bundle(source: Path) -> Path:
    """Validate, then copy into the inbox atomically: a partial bundle is never visible to the sensor."""
    manifest, problems = intake.read_manifest(source) if (source / intake.MANIFEST).is_file() else (
        None,
        [f"{source / intake.MANIFEST} not found"],
    )
    if manifest is not None:
        problems += intake.check_files(source, manifest)
    if problems or manifest is None:
        raise click.ClickException("bad upload bundle:\n  " + "\n  ".join(problems))
    avatars_dir = settings.inbox_dir() / "avatars"
    staging = settings.inbox_dir() / ".incoming" / f"{manifest.avatar_id}-{uuid.uuid4().hex[:8]}"
    for relative in [intake.MANIFEST, *manifest.referenced_paths()]:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
        with open(target, "rb+") as handle:
            os.fsync(handle.fileno())
    avatars_dir.mkdir(parents=True, exist_ok=True)
    destination = avatars_dir / manifest.avatar_id
    if destination.exists():
        archive = settings.avatar_home() / "archive" / "uploads"
        archive.mkdir(parents=True, exist_ok=True)
        os.rename(destination, archive / f"{manifest.avatar_id}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
    os.rename(staging, destination)
    return destination


@main.command()
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def upload(bundle_dir: Path) -> None:
    """Validate BUNDLE_DIR (manifest.json, photos, voice) and copy it into the inbox."""
    try:
        destination = upload_bundle(bundle_dir)
    except click.ClickException as error:
        click.echo(f"error: {error.message}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"uploaded to {destination}")


@main.command()
@click.argument("avatar_id")
@click.argument("slug")
@click.option("--script", "script_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file with the script (UTF-8). [pause 500ms] and *emphasis* are understood.")
@click.option("--route", default="single_scene", show_default=True,
              help="single_scene | multi_scene | broll | pose | approval_gated")
@click.option("--platforms", default="", help="Comma-separated: tiktok,instagram_reels,youtube_shorts,instagram_feed,youtube,linkedin")
@click.option("--aspect", "aspect_ratios", default="9:16", show_default=True, help="Comma-separated aspect ratios: 9:16,1:1,16:9")
@click.option("--background", "backgrounds", multiple=True, help="Background prompt per scene (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int)
def request(avatar_id, slug, script_file, route, platforms, aspect_ratios, backgrounds, seed) -> None:
    """Ask for a video of AVATAR_ID under the output SLUG (validated, then written atomically)."""
    from avatar_assets.requests import RequestError, parse_request, write_request

    document = {
        "avatar_id": avatar_id,
        "slug": slug,
        "route": route,
        "script": script_file.read_text(encoding="utf-8"),
        "background_prompts": list(backgrounds),
        "aspect_ratios": [a for a in aspect_ratios.split(",") if a],
        "platforms": [p for p in platforms.split(",") if p],
        "seed": seed,
    }
    try:
        parsed = parse_request(json.dumps(document).encode())
    except RequestError as error:
        click.echo(f"error: bad output request: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"requested {avatar_id}/{slug} ({parsed.route}) at {write_request(parsed)}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def process(as_json: bool) -> None:
    """Run sensors, requested runs and automation once, synchronously, until nothing is left."""
    from avatar_assets.runner import process as run_process

    instance, defs = load_instance_and_defs()
    report = run_process(defs, instance, echo=(lambda _: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for run in report.runs:
            verdict = "ok" if run.success and not run.failed_checks else "FAILED"
            click.echo(f"{verdict:6} {run.job} [{run.partition}] run {run.run_id[:8]} ({run.origin})")
            for reason in [*run.failed_checks, *([run.error] if run.error else [])]:
                click.echo(f"       - {reason}")
        if not report.runs:
            click.echo("nothing to do")
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def status(as_json: bool) -> None:
    """Where every avatar stands: assets, gates, and quarantined bundles."""
    from avatar_assets.status import collect_status, format_status

    instance, defs = load_instance_and_defs()
    report = collect_status(defs, instance)
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report))


@main.command()
def demo() -> None:
    """Upload the bundled sample avatar, process it, and print where the results are."""
    from avatar_assets.demo import run_demo

    sys.exit(run_demo(echo=click.echo))
