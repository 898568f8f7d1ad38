"""The video graph as the stages declare it: the order a render runs them in, the gates each stage waits
behind and the segments a gated request runs in. Read from the asset definitions, pinned here."""

from avatar_assets.contracts import OutputRequest
from avatar_assets.video.assets import GUARDED_BY, VIDEO_STAGES
from avatar_assets.video.graph import next_segment


def test_stages_run_in_the_order_they_read_each_other():
    assert VIDEO_STAGES == ["script", "storyboard", "speech", "backgrounds", "scene_assets", "lip_sync",
                            "stitched_video", "enhanced_video", "output_package"]


def test_each_stage_waits_for_the_gates_it_is_first_to_read():
    assert GUARDED_BY == {"storyboard": ("script",), "speech": ("storyboard",), "backgrounds": ("storyboard",),
                          "scene_assets": ("backgrounds",), "stitched_video": ("lip_sync",)}


def test_a_gated_request_runs_in_segments_that_end_at_its_gates():
    request = OutputRequest(avatar_id="ada", slug="launch", script="Hello there.", route="approval_gated",
                            approvals_required=["storyboard_approval"])
    assert next_segment(VIDEO_STAGES, request, None) == ["script", "storyboard"]
    assert next_segment(VIDEO_STAGES, request, "storyboard") == ["speech", "backgrounds", "scene_assets", "lip_sync"]
    assert next_segment(VIDEO_STAGES, request, "lip_sync") == ["stitched_video", "enhanced_video", "output_package"]
    assert next_segment(VIDEO_STAGES, request, "output_package") == []
