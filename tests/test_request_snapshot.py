"""The request travels with the run: a render renders the snapshot the request sensor accepted.

The request sensor stores each request it accepts under its sha256 and names it in the run's
`request_sha256` tag; the `script` stage renders that snapshot, never the inbox file, which a person may
have changed since. A run without the tag (automation, `regenerate`, `retry`, a launch from the UI)
renders the cell's current accepted snapshot. A real SQLite instance, the real request sensor, real runs.
"""

from __future__ import annotations

import hashlib

import dagster as dg
import pytest

from avatar_assets.contracts import OutputRequest
from avatar_assets.ops.runner import sensor_context
from avatar_assets.video.requests import REQUEST_TAG, write_request
from resources.layout import current_request_key, request_snapshot_key
from tests.regen_helpers import materialize_only
from tests.video_helpers import cell, record, video_home

pytestmark = pytest.mark.slow  # builds an identity through the upload sensor

AVATAR = "snap-a"
FIRST = "Hello there. This is the first version of the script."
SECOND = "Good evening. The second version says something else entirely."


@pytest.fixture(scope="module")
def studio(tmp_path_factory, sample_bundle):
    with video_home(tmp_path_factory.mktemp("snapshots") / "home", sample_bundle, (AVATAR,)) as home:
        yield home


def submit(home, slug: str, script: str) -> bytes:
    """Put the request in the inbox the way `avatarops request` does; its bytes."""
    return home.store.read(write_request(home.store, OutputRequest(avatar_id=AVATAR, slug=slug, script=script)))


def request_sensor_tick(home, slug: str) -> list[dg.RunRequest]:
    """One evaluation of the deployed request sensor (what the daemon does), its outputs partition added;
    the runs it asks for `slug` (it asks again for every request in the inbox; the run key de-duplicates)."""
    sensor = home.defs.get_repository_def().get_sensor_def("output_request_sensor")
    with sensor_context(home.defs, home.instance, sensor, None) as context:
        data = sensor(context)
    for request in data.dynamic_partitions_requests:
        home.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return [request for request in data.run_requests if request.partition_key.keys_by_dimension["output"] == slug]


def render_script(home, run_request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return home.defs.resolve_job_def("render_video").execute_in_process(
        instance=home.instance, partition_key=run_request.partition_key, asset_selection=[dg.AssetKey("script")],
        tags=run_request.tags, raise_on_error=False,
    )


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def test_the_run_renders_what_the_sensor_accepted_even_if_the_file_changed(studio) -> None:
    first = submit(studio, "race", FIRST)
    [launched] = request_sensor_tick(studio, "race")
    assert launched.tags[REQUEST_TAG] == sha(first)
    assert studio.store.read_text(request_snapshot_key(AVATAR, "race", sha(first))) == first.decode()

    second = submit(studio, "race", SECOND)  # changed between the sensor's look and the run's start
    result = render_script(studio, launched)
    assert result.success
    script = record(studio, "script", AVATAR, "race")
    assert (script.request.script, script.request_sha256) == (FIRST, sha(first))

    # The next tick accepts the new file: a new run, naming the new snapshot, which it renders.
    [relaunched] = request_sensor_tick(studio, "race")
    assert relaunched.tags[REQUEST_TAG] == sha(second) and relaunched.run_key != launched.run_key
    assert render_script(studio, relaunched).success
    assert record(studio, "script", AVATAR, "race").request.script == SECOND


def test_an_edited_request_changes_nothing_until_the_sensor_accepts_it(studio) -> None:
    first = submit(studio, "edit", FIRST)
    [launched] = request_sensor_tick(studio, "edit")
    assert render_script(studio, launched).success

    second = submit(studio, "edit", SECOND)
    # A run without the tag (`avatarops regenerate`, the UI's Materialize) renders the current snapshot.
    materialize_only(studio, "script", cell(AVATAR, "edit"))
    script = record(studio, "script", AVATAR, "edit")
    assert (script.request.script, script.request_sha256) == (FIRST, sha(first))

    request_sensor_tick(studio, "edit")  # accepted: now the cell's current request
    assert sha(second) in studio.store.read_text(current_request_key(AVATAR, "edit"))
    materialize_only(studio, "script", cell(AVATAR, "edit"))
    assert record(studio, "script", AVATAR, "edit").request.script == SECOND


def test_a_cell_without_an_accepted_request_fails_with_the_reason(studio) -> None:
    studio.instance.add_dynamic_partitions("outputs", ["never"])
    result = studio.defs.resolve_job_def("render_video").execute_in_process(
        instance=studio.instance, partition_key=dg.MultiPartitionKey({"avatar": AVATAR, "output": "never"}),
        asset_selection=[dg.AssetKey("script")], raise_on_error=False,
    )
    assert not result.success
    [failure] = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert f"no request for {AVATAR}/never has been accepted" in failure.step_failure_data.error.message
