"""`avatarops`: upload bundles, process them headlessly, and see where every avatar stands."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click

from avatar_assets import settings
from avatar_assets.ops import instance_config
from avatar_assets.pipeline import privacy

EXIT_BAD_INPUT = 2

creator_option = click.option(
    "--creator", default=None,
    help="Act as this creator: refused (exit 2) unless the creator owns the avatar. Default: the operator.",
)


def refuse_unless_owner(avatar_id: str, creator: str | None, action: str) -> None:
    from avatar_assets.identity.ownership import OwnershipError, require_owner

    try:
        require_owner(loaded_store(), avatar_id, creator, action)
    except OwnershipError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)


def ensure_instance_home() -> Path:
    """Point Dagster at AVATAR_HOME/dagster (the same instance `make dev` opens) unless told otherwise."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home())))
    instance_config.ensure_config(home)
    return home


def load_defs():
    """The code location, as the daemon and the UI load it; a setting it cannot use ends the command with
    the reason, not a traceback."""
    try:
        from avatar_assets.definitions import defs
    except settings.ConfigurationError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    return defs


def load_instance_and_defs():
    ensure_instance_home()
    import dagster as dg

    return dg.DagsterInstance.get(), load_defs()


def loaded_store():
    """The media store of the loaded definitions (the one runs and sensors are given), set up for the rest
    of the command."""
    from resources.wiring import store_of

    return click.get_current_context().with_resource(store_of(load_defs()))


def daemon_drives(instance) -> bool:
    """Whether a daemon runs on this instance (then runs are handed to its queue, never executed here)."""
    from avatar_assets.ops.daemon_handoff import live_daemon_age

    age = live_daemon_age(instance)
    if age is not None:
        click.echo(f"a dagster-daemon runs on this instance (heartbeat {age:.0f} s ago): it executes runs and "
                   "automation; this command hands its runs to the daemon's queue")
    return age is not None


@click.group()
def main() -> None:
    """Avatar platform operations (AVATAR_HOME selects the home; default ./.avatar_home)."""
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    # Beta/preview notices about the APIs the design chose are for developers, not operators.
    warnings.simplefilter("ignore", BetaWarning)
    warnings.simplefilter("ignore", PreviewWarning)
    privacy.make_private()


@main.command()
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def upload(bundle_dir: Path) -> None:
    """Validate BUNDLE_DIR (manifest.json, photos, voice) and copy it into the inbox."""
    from avatar_assets.ops.uploads import UploadError, upload_bundle

    try:
        destination = upload_bundle(loaded_store(), bundle_dir)
    except UploadError as error:
        click.echo(f"error: {error}", err=True)
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
@creator_option
def request(avatar_id, slug, script_file, route, platforms, aspect_ratios, backgrounds, seed, creator) -> None:
    """Ask for a video of AVATAR_ID under the output SLUG (validated, then written atomically)."""
    from avatar_assets.pipeline.tombstones import tombstone
    from avatar_assets.video.requests import RequestError, parse_request, write_request

    stone = tombstone(loaded_store(), avatar_id)
    if stone is not None:
        click.echo(f"error: avatar {avatar_id} was revoked at {stone.revoked_at:%Y-%m-%d %H:%M} UTC by {stone.by} "
                   f"({stone.reason}); requests for it are refused", err=True)
        sys.exit(EXIT_BAD_INPUT)
    refuse_unless_owner(avatar_id, creator, "request videos of")

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
    store = loaded_store()
    click.echo(f"requested {avatar_id}/{slug} ({parsed.route}) at {store.uri(write_request(store, parsed))}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def process(as_json: bool) -> None:
    """Run sensors, requested runs and automation once, synchronously, until nothing is left."""
    from avatar_assets.ops.daemon_handoff import live_daemon_age
    from avatar_assets.ops.runner import process as run_process

    instance, defs = load_instance_and_defs()
    age = live_daemon_age(instance)
    if age is not None:
        click.echo(
            f"error: a dagster-daemon runs on this instance (heartbeat {age:.0f} s ago): sensors and automation are "
            "its, and a second driver would race it. Follow its runs with `avatarops status` (or the UI); stop the "
            "daemon to process headlessly.", err=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    report = run_process(defs, instance, echo=(lambda _: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for run in report.runs:
            verdict = "ok" if run.success and not run.failed_checks else "FAILED"
            click.echo(f"{verdict:6} {run.job} [{run.partition}] run {run.run_id[:8]} ({run.origin})")
            for reason in [*run.failed_checks, *([run.error] if run.error else [])]:
                click.echo(f"       - {reason}")
        for run_id in report.crashed:
            click.echo(f"CRASHED run {run_id}: its process died; marked failed. Resume it: avatarops retry {run_id}")
        for item in report.quarantined:
            click.echo(f"QUARANTINED {item['path']}")
            for problem in item["problems"]:
                click.echo(f"       - {problem}")
        if not report.runs and not report.quarantined:
            click.echo("nothing to do")
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def status(as_json: bool) -> None:
    """Where every avatar stands: assets, gates, and quarantined bundles."""
    from avatar_assets.ops.status import collect_status, format_status

    instance, defs = load_instance_and_defs()
    report = collect_status(defs, instance, loaded_store())
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report))


@main.command()
def demo() -> None:
    """Upload the bundled sample avatar, process it, and print where the results are."""
    from avatar_assets.ops.demo import run_demo

    instance, defs = load_instance_and_defs()
    sys.exit(run_demo(instance, defs, loaded_store(), echo=click.echo))


def _decide(decision: str, asset: str, avatar: str, output: str | None, job_type: str | None, by: str, note: str,
            content_hash: str | None, run_id: str | None, creator: str | None) -> None:
    from avatar_assets.ops import approvals
    from avatar_assets.video import gates

    refuse_unless_owner(avatar, creator, decision)
    instance, _ = load_instance_and_defs()
    job_type = job_type or gates.ASSET_JOB_TYPE.get(asset) or ("video_asset_approval" if output else None)
    if job_type is None:
        click.echo(f"error: say which --job-type this {decision} is for", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        approval = approvals.record_decision(
            loaded_store(), instance, job_type=job_type, asset=asset, avatar_id=avatar, output=output,
            decision=decision, by=by, note=note, content_hash=content_hash, run_id=run_id,
        )
    except approvals.ApprovalError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"{decision}d {asset} {approval.content_hash[:12]} of {avatar}/{output} as {approval.approval_id}")
    click.echo("the approval sensor acts on it (or run: avatarops process)")


def decision_options(fn):
    for option in reversed([
        click.argument("asset"),
        click.option("--avatar", required=True),
        click.option("--output", default=None, help="Output slug (video stages)."),
        click.option("--job-type", default=None, help="Default: the gate of ASSET (script_approval, ...)."),
        click.option("--by", default=lambda: os.environ.get("USER", "operator"), show_default="$USER"),
        click.option("--hash", "content_hash", default=None, help="Content hash you reviewed (refused if it changed)."),
        click.option("--run-id", default=None, help="Failed run, for --job-type retry_from_stage."),
        creator_option,
    ]):
        fn = option(fn)
    return fn


@main.command()
@decision_options
@click.option("--note", default="")
def approve(asset, avatar, output, job_type, by, content_hash, run_id, creator, note) -> None:
    """Approve ASSET of an avatar/output at its current (or --hash) content."""
    _decide("approve", asset, avatar, output, job_type, by, note, content_hash, run_id, creator)


@main.command()
@decision_options
@click.option("--note", required=True, help="What should change (a rejection needs one).")
def reject(asset, avatar, output, job_type, by, content_hash, run_id, creator, note) -> None:
    """Reject ASSET with a note; the stage is regenerated with a new seed."""
    _decide("reject", asset, avatar, output, job_type, by, note, content_hash, run_id, creator)


@main.command()
@click.argument("asset")
@click.option("--avatar", required=True)
@click.option("--output", default=None, help="Output slug, for video stages.")
@click.option("--seed", default=None, type=int, help="New seed (recorded); default keeps the configured one.")
@creator_option
def regenerate(asset, avatar, output, seed, creator) -> None:
    """Re-materialize one asset partition, then refresh exactly its existing downstream partitions."""
    from avatar_assets.ops import regeneration
    from avatar_assets.ops.runner import execute
    from avatar_assets.ops.runner import process as run_process
    from avatar_assets.pipeline.lifecycle import SEED_TAG

    instance, defs = load_instance_and_defs()
    try:
        key, partition = regeneration.target(defs.resolve_asset_graph(), instance, asset, avatar, output)
    except regeneration.RegenerationError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    refuse_unless_owner(avatar, creator, "regenerate")
    tags = {"avatar": avatar, regeneration.REGENERATE_TAG: asset, **({SEED_TAG: str(seed)} if seed is not None else {})}
    if daemon_drives(instance):
        from avatar_assets.ops.daemon_handoff import submit_asset_run

        run_id = submit_asset_run(instance, defs, [key], partition_key=partition, tags=tags)
        click.echo(f"queued {asset} [{partition}] as run {run_id}; the daemon's automation refreshes what follows")
        return
    outcome = execute(defs, instance, job_name=None, asset_keys=[key], partition_key=partition, tags=tags, origin="regenerate")
    click.echo(f"{'ok' if outcome.success else 'FAILED'} {asset} [{partition}] run {outcome.run_id[:8]}")
    report = run_process(defs, instance, echo=click.echo)
    for run in report.runs:
        click.echo(f"  refreshed {run.job} [{run.partition}] {'ok' if run.success and not run.failed_checks else 'FAILED'}")
    sys.exit(0 if outcome.success and report.ok else 1)


@main.command()
@click.argument("assets", nargs=-1, required=True)
@click.option("--avatar", "avatar_ids", multiple=True, help="Avatar to include (repeatable).")
@click.option("--all", "all_avatars", is_flag=True, help="Every avatar.")
@click.option("--seed", default=None, type=int, help="New seed (recorded); default keeps the configured one.")
def backfill(assets, avatar_ids, all_avatars, seed) -> None:
    """Re-materialize identity ASSETS for many avatars in batched runs, then refresh their existing downstream.

    neutral_image and character_sheet run up to 8 avatars per run, so a model is loaded once per run
    and generates for all of them in batches; each avatar's gates are judged on their own.
    """
    import dagster as dg

    from avatar_assets.ops.runner import backfill as run_backfill
    from avatar_assets.ops.runner import process as run_process
    from avatar_assets.pipeline.lifecycle import SEED_TAG
    from partitions import avatars

    instance, defs = load_instance_and_defs()
    graph = defs.resolve_asset_graph()
    keys = [dg.AssetKey(name) for name in assets]
    for key in keys:
        if not graph.has(key) or graph.get(key).partitions_def != avatars:
            click.echo(f"error: {key.to_user_string()} is not an identity asset (partitioned by avatar)", err=True)
            sys.exit(EXIT_BAD_INPUT)
    if bool(avatar_ids) == all_avatars:
        click.echo("error: give --avatar (one or more) or --all", err=True)
        sys.exit(EXIT_BAD_INPUT)
    known = instance.get_dynamic_partitions("avatars")
    unknown = sorted(set(avatar_ids) - set(known))
    if unknown:
        click.echo(f"error: no such avatar: {', '.join(unknown)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    tags = {"avatarops/backfill": ",".join(assets), **({SEED_TAG: str(seed)} if seed is not None else {})}
    if daemon_drives(instance):
        from avatar_assets.ops.daemon_handoff import submit_asset_run
        from avatar_assets.ops.runner import backfill_batches

        try:
            planned = backfill_batches(defs, instance, keys, list(avatar_ids) or known)
        except ValueError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        for batch in planned:
            run_id = submit_asset_run(instance, defs, keys, tags=tags, partition_key=batch[0] if len(batch) == 1 else None,
                                      partition_range=batch if len(batch) > 1 else None)
            click.echo(f"queued [{batch[0]}{'...' + batch[-1] if len(batch) > 1 else ''}] as run {run_id}")
        return
    try:
        outcomes = run_backfill(defs, instance, keys, list(avatar_ids) or known, tags=tags, echo=click.echo)
    except ValueError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for outcome in outcomes:
        state = "ok" if outcome.success and not outcome.failed_checks else "FAILED"
        click.echo(f"{state} [{outcome.partition}] run {outcome.run_id[:8]}")
        for failure in outcome.failed_checks:
            click.echo(f"  gate: {failure}")
        if outcome.error:
            click.echo(f"  error: {outcome.error}")
    report = run_process(defs, instance, echo=click.echo)
    for run in report.runs:
        click.echo(f"  refreshed {run.job} [{run.partition}] {'ok' if run.success and not run.failed_checks else 'FAILED'}")
    ok = all(o.success and not o.failed_checks for o in outcomes) and report.ok
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("run_id")
def retry(run_id) -> None:
    """Re-execute a failed run from its failed stage; finished stages are not run again."""
    from avatar_assets.ops.retry import queue_retry, retry_from_failure

    instance, _ = load_instance_and_defs()
    try:
        if daemon_drives(instance):
            click.echo(f"queued re-execution {queue_retry(instance, run_id)} of {run_id}")
            return
        result = retry_from_failure(instance, run_id)
    except ValueError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"{'ok' if result.success else 'FAILED'} re-execution {result.run_id} of {run_id}")
    sys.exit(0 if result.success else 1)


@main.command()
@click.argument("avatar")
@click.option("--reason", required=True)
@click.option("--by", default=lambda: os.environ.get("USER", "operator"), show_default="$USER")
@click.option("--wait", "wait_s", default=120.0, show_default=True, help="Seconds to wait for running renders to stop.")
@creator_option
def revoke(avatar, reason, by, wait_s, creator) -> None:
    """Stop AVATAR's runs, delete everything derived from it, keep a tombstone, refuse new requests for it."""
    from avatar_assets.ops import revoke as revocation

    refuse_unless_owner(avatar, creator, "revoke")
    instance, defs = load_instance_and_defs()
    try:
        stone = revocation.revoke(instance, loaded_store(), avatar, by=by, reason=reason, wait_s=wait_s)
    except revocation.RevokeError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(
        f"revoked {avatar}: {len(stone.deleted_blobs)} blobs and {len(stone.deleted_records)} records deleted, "
        f"{len(stone.kept_shared_blobs)} shared blobs kept; tombstone at tombstones/{avatar}.json"
    )


@main.group()
def events() -> None:
    """Lifecycle events in the outbox and their webhook delivery."""


@events.command("list")
@click.option("--limit", default=50, show_default=True)
def events_list(limit) -> None:
    """The latest events with their delivery state: delivered, pending (with failed attempts) or dead."""
    from avatar_assets.pipeline import events as outbox
    from resources.layout import outbox_key

    store = loaded_store()
    state = outbox.DeliveryState.load(store)
    dead = outbox.dead_letter_ids(store)
    for event_id in outbox.pending_ids(store, None)[-limit:]:
        text = store.read_text(outbox_key(event_id))
        if text is None:  # forgotten (revoke) since the listing
            continue
        event = json.loads(text)
        mark = state.status_of(event_id, dead)
        where = "/".join(p for p in (event["avatar_id"], event.get("output")) if p)
        retry = state.retrying.get(event_id)
        note = f" ({retry.attempts} failed attempt(s): {retry.last_error})" if retry and retry.attempts else ""
        click.echo(f"{event_id} {mark:9} {event['type']:9} {where} {event.get('asset') or ''}{note}")


@events.command("deliver")
@click.option("--url", default=lambda: os.environ.get("AVATAR_WEBHOOK_URL", ""), show_default="$AVATAR_WEBHOOK_URL")
@click.option("--follow", is_flag=True, help="Keep delivering (each failing event on its own backoff) until interrupted.")
def events_deliver(url, follow) -> None:
    """Deliver every due event, signed with $AVATAR_WEBHOOK_SECRET; exit 1 when an attempt failed or
    events still wait (a retry, or too new to be settled)."""
    import time

    from avatar_assets.pipeline import events as outbox

    try:
        config = outbox.WebhookConfig.from_env(url)
    except outbox.WebhookConfigError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    store = loaded_store()
    first = True
    while True:
        report = outbox.deliver(store, config.url, config.signer, max_attempts=config.max_attempts)
        if first or report.delivered or report.failed:
            click.echo(report.summary())
        if not follow:
            sys.exit(1 if report.failed or report.pending else 0)
        first = False
        time.sleep(2.0)  # a pass attempts only what is due, so polling costs one listing


@events.command("dead-letters")
def events_dead_letters() -> None:
    """Events the deliverer gave up on (410 Gone, or every attempt failed)."""
    from avatar_assets.pipeline import events as outbox

    letters = outbox.dead_letters(loaded_store())
    for letter in letters:
        where = "/".join(p for p in (letter.avatar_id, letter.output) if p)
        click.echo(f"{letter.event_id} {letter.type or '?':9} {where} {letter.asset or ''} "
                   f"attempts={letter.attempts} {letter.last_error}")
    hint = ": `avatarops events replay --dead-letters` sends them again" if letters else ""
    click.echo(f"{len(letters)} dead letter(s){hint}")


@events.command("replay")
@click.option("--since", "since_event_id", default=None, help="Event id to replay from (inclusive); default all.")
@click.option("--dead-letters", "dead_letters", is_flag=True, help="Queue every dead letter again (attempts anew).")
def events_replay(since_event_id, dead_letters) -> None:
    from avatar_assets.pipeline import events as outbox

    if dead_letters and since_event_id:
        click.echo("error: --since and --dead-letters are separate replays; give one", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if dead_letters:
        click.echo(f"{outbox.replay_dead_letters(loaded_store())} dead letter(s) queued again")
        return
    count = outbox.replay(loaded_store(), since_event_id)
    click.echo(f"{count} event(s) will be delivered again")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def serve(host, port) -> None:
    """Serve the job API (/v1, OpenAPI at /v1/openapi.json). It only serves: runs come from the daemon
    (make dev), the cluster, or `avatarops process`."""
    import uvicorn

    from avatar_assets.api.app import ApiContext, create_app

    instance, defs = load_instance_and_defs()
    context = ApiContext(defs=defs, instance=instance, store=loaded_store(), sessions=api_state())
    click.echo(f"avatarops job API on http://{host}:{port}/v1 (OpenAPI: /v1/openapi.json)")
    uvicorn.run(create_app(context), host=host, port=port, log_level="warning")


@main.group()
def tokens() -> None:
    """The job API's bearer tokens (AVATAR_API_DATABASE_URL; default SQLite under AVATAR_HOME/api)."""


def api_state():
    """The job API's state database, its schema created or upgraded first."""
    from avatar_assets.api.state import open_state

    try:
        return open_state()
    except settings.ConfigurationError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@tokens.command("create")
@click.option("--tenant", required=True, help="The tenant: the creator_id its manifests carry.")
@click.option("--scopes", required=True, help="Comma-separated: avatars:write,renders:write,renders:read,admin")
@click.option("--expires", default="90d", show_default=True, help="Lifetime: <n>d, <n>h or <n>m.")
def tokens_create(tenant, scopes, expires) -> None:
    """Create a token; it is printed once, alone on the last line (only its hash is kept)."""
    from avatar_assets.api import tokens as api_tokens

    try:
        parsed_scopes, lifetime = api_tokens.parse_scopes(scopes), api_tokens.parse_expiry(expires)
        token, info = api_tokens.create_token(api_state(), tenant, parsed_scopes, lifetime)
    except api_tokens.TokenError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"token {info.token_id} of tenant {info.tenant} ({','.join(info.scopes)}), expires "
               f"{info.expires_at:%Y-%m-%d %H:%M} UTC; it is shown only now:")
    click.echo(token)


@tokens.command("list")
@click.option("--tenant", default=None, help="Only this tenant's tokens.")
def tokens_list(tenant) -> None:
    """Every token (never its secret): id, tenant, scopes, expiry and whether it is revoked."""
    from avatar_assets.api.tokens import list_tokens

    for info in list_tokens(api_state(), tenant):
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else (
            "active" if info.active else "expired")
        click.echo(f"{info.token_id} {info.tenant} {','.join(info.scopes)} expires {info.expires_at:%Y-%m-%d %H:%M} {state}")


@tokens.command("revoke")
@click.argument("token_id")
def tokens_revoke(token_id) -> None:
    """Revoke TOKEN_ID (as `tokens list` shows it): every request with it answers 401 from now on."""
    from avatar_assets.api import tokens as api_tokens

    try:
        info = api_tokens.revoke_token(api_state(), token_id)
    except api_tokens.TokenError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"revoked token {info.token_id} of tenant {info.tenant}")


@main.group()
def quotas() -> None:
    """Quotas: the job API's token bucket per tenant and action class (upload, render, regenerate), and each
    tenant's cap on renders in flight (held by the output-request sensor, whoever drives the instance)."""


@quotas.command("set")
@click.option("--tenant", required=True)
@click.option("--action", required=True, type=click.Choice(["upload", "render", "regenerate"]))
@click.option("--burst", required=True, type=int, help="Actions allowed at once (the bucket's size).")
@click.option("--per-hour", required=True, type=float, help="How fast the bucket refills.")
def quotas_set(tenant, action, burst, per_hour) -> None:
    """Give TENANT its own limit for ACTION (its bucket starts full)."""
    from pydantic import ValidationError

    from avatar_assets.api import quotas as api_quotas

    try:
        limit = api_quotas.Limit(burst=burst, per_hour=per_hour)
    except ValidationError as error:
        click.echo(f"error: {'; '.join(e['loc'][0] + ': ' + e['msg'] for e in error.errors())}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    api_quotas.set_limit(api_state(), tenant, action, limit)
    click.echo(f"{tenant} {action}: {burst} at once, {per_hour:g} per hour")


@quotas.command("render-cap")
@click.option("--tenant", required=True)
@click.option("--renders", required=True, type=click.IntRange(1, 10_000), help="Renders in flight at once.")
def quotas_render_cap(tenant, renders) -> None:
    """Give TENANT its own cap on renders in flight; renders beyond it wait as `queued`."""
    from avatar_assets.ops import render_cap

    render_cap.set_cap(loaded_store(), tenant, renders)
    click.echo(f"{tenant} renders in flight: at most {renders}")


@quotas.command("list")
@click.option("--tenant", default=None, help="Only this tenant (with the defaults it has not changed).")
def quotas_list(tenant) -> None:
    """The default limits, and every tenant's own."""
    from avatar_assets.api import quotas as api_quotas
    from avatar_assets.ops import render_cap

    sessions = api_state()
    for action, limit in api_quotas.DEFAULT_LIMITS.items():
        own = api_quotas.limit_of(sessions, tenant, action) if tenant else limit
        source = "own" if tenant and own != limit else "default"
        click.echo(f"{tenant or '*'} {action}: {own.burst} at once, {own.per_hour:g} per hour ({source})")
    cap = render_cap.cap_of(loaded_store(), tenant) if tenant else settings.tenant_render_cap()
    source = "own" if tenant and cap != settings.tenant_render_cap() else "default"
    click.echo(f"{tenant or '*'} renders in flight: at most {cap} ({source})")
