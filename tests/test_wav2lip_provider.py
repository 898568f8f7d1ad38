"""The Wav2Lip provider through the real assets on CPU, with a random-weight checkpoint the test saves.

One home: the sample avatar's identity is built once, then each test renders script..lip_sync of its own
cell with AVATAR_LIPSYNC_* set the way a studio sets them. The CPU default's render of the same script is
the reference: wav2lip may change the decoded frames only inside the feathered lower face of the crop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from avatar_assets.media.model_files import file_sha256
from avatar_assets.media.wav2lip import LipSyncFailed, Wav2LipModel, face_crop_box
from avatar_assets.settings import ConfigurationError
from tests.conftest import avatar_home
from tests.media.tiny_wav2lip import save_random_wav2lip
from tests.regen_helpers import submit_accepted
from tests.video_helpers import FPS, SHORT_SIDE, cell, decoded_frames, video_home

AVATAR = "astro-v"
SCRIPT = "Hello there, welcome to our show."
SLUGS = ["base", "synced", "lost", "corrupt", "broken", "tight"]
UP_TO_LIP_SYNC = ["script", "storyboard", "speech", "backgrounds", "scene_assets", "lip_sync"]
SIZE_ENV = {"AVATAR_MASTER_SHORT_SIDE": str(SHORT_SIDE), "AVATAR_FPS": str(FPS)}


def render(home, slug: str) -> dg.ExecuteInProcessResult:
    return home.defs.resolve_job_def("render_video").execute_in_process(
        instance=home.instance, partition_key=cell(AVATAR, slug),
        asset_selection=[dg.AssetKey(name) for name in UP_TO_LIP_SYNC], raise_on_error=False,
    )


def lip_sync_step_failed(result: dg.ExecuteInProcessResult) -> bool:
    return any(e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key == "lip_sync" for e in result.all_events)


@pytest.fixture(scope="module")
def world(tmp_path_factory, sample_bundle):
    """(home root, checkpoint, the CPU default's lip_sync record and decoded frames)."""
    base = tmp_path_factory.mktemp("wav2lip")
    checkpoint = save_random_wav2lip(base / "wav2lip.pth")
    with video_home(base / "home", sample_bundle, (AVATAR,)) as home:
        for slug in SLUGS:
            submit_accepted(home, AVATAR, slug, SCRIPT)
        home.instance.add_dynamic_partitions("outputs", SLUGS)
        assert not lip_sync_step_failed(render(home, "base"))
        record = home.record("lip_sync", cell(AVATAR, "base"))
        frames = decoded_frames(home.store.local_path(record.video))
        scenes = home.record("scene_assets", cell(AVATAR, "base"))
    return base / "home", checkpoint, record, frames, scenes


def lip_sync_with(root: Path, slug: str, **env: str):
    """Render `slug` up to lip_sync with these AVATAR_LIPSYNC_* settings: (result, record, decoded frames)."""
    with avatar_home(root, **SIZE_ENV, **env) as home:
        result = render(home, slug)
        record = home.record("lip_sync", cell(AVATAR, slug))
        frames = decoded_frames(home.store.local_path(record.video)) if record else None
    return result, record, frames


def wav2lip_env(model: Path | str) -> dict[str, str]:
    return {"AVATAR_LIPSYNC_PROVIDER": "wav2lip", "AVATAR_LIPSYNC_MODEL": str(model),
            "AVATAR_LIPSYNC_DEVICE": "cpu", "AVATAR_LIPSYNC_BATCH": "8"}


# --------------------------------------------------------------------------- configuration


def test_provider_is_chosen_by_env_and_bad_values_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from resources.providers import LipSyncer
    from resources.wav2lip import Wav2LipSyncer
    from resources.wiring import lip_syncer

    monkeypatch.delenv("AVATAR_LIPSYNC_PROVIDER", raising=False)
    assert type(lip_syncer()) is LipSyncer
    for name, value in wav2lip_env(tmp_path / "w.pth").items():
        monkeypatch.setenv(name, value)
    chosen = lip_syncer()
    assert isinstance(chosen, Wav2LipSyncer)
    assert (chosen.model_path, chosen.device, chosen.batch_size) == (str(tmp_path / "w.pth"), "cpu", 8)
    monkeypatch.setenv("AVATAR_LIPSYNC_BATCH", "0")
    with pytest.raises(ConfigurationError, match="AVATAR_LIPSYNC_BATCH=0"):
        lip_syncer()
    monkeypatch.setenv("AVATAR_LIPSYNC_PROVIDER", "unknown")
    with pytest.raises(ConfigurationError, match="AVATAR_LIPSYNC_PROVIDER='unknown': expected 'landmark-mesh' or 'wav2lip'"):
        lip_syncer()


def test_definitions_with_wav2lip_configured_import_no_torch(tmp_path: Path):
    probe = (
        "import sys, json, avatar_assets.definitions as d; "
        "print(json.dumps([type(d.defs.resources['lipsync']).__name__, "
        "sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'librosa', 'cv2'})]))"
    )
    env = {"PATH": "/usr/bin:/bin", "AVATAR_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster"),
           **wav2lip_env(tmp_path / "wav2lip.pth")}
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["Wav2LipSyncer", []]


def test_lip_sync_is_in_the_gpu_pool():
    from avatar_assets.video.assets import lip_sync

    assert lip_sync.op.pool == "gpu"


# --------------------------------------------------------------------------- through the assets


@pytest.fixture(scope="module")
def synced(world):
    root, checkpoint, *_ = world
    return lip_sync_with(root, "synced", **wav2lip_env(checkpoint))


def lower_face_of(scenes) -> tuple[int, int, int]:
    [scene] = [s for s in scenes.scenes if s.mouth_box is not None]
    return face_crop_box(np.asarray(scene.landmarks), tuple(scenes.layer_size))


def placed(home, frames: np.ndarray, scenes, watermark: str, aspect: str = "9:16") -> np.ndarray:
    """Layer frames composed into the `aspect` rendition exactly as the stitcher composes them (enhanced, placed
    over the scene's backdrop, converted to I420 and watermarked on its luma), short of the captions and the
    encode, and converted back to RGB as a decoder does."""
    import cv2

    from avatar_assets.media.compose import AvatarOverlay, Placement
    from avatar_assets.media.enhance import enhance_frame
    from avatar_assets.media.images import decode_image
    from avatar_assets.media.video import to_i420
    from avatar_assets.media.watermark import luma_marks
    from resources.providers import Enhancer

    [scene] = [s for s in scenes.scenes if s.mouth_box is not None]
    framed, look = scene.frame(aspect), Enhancer()
    overlay = AvatarOverlay(decode_image(home.store.read(scene.mask))[..., 0], Placement(**framed.placement.model_dump()),
                            tuple(framed.size))
    background = enhance_frame(decode_image(home.store.read(framed.background)), sharpen=look.sharpen,
                               saturation=look.saturation)
    mark = luma_marks(bytes.fromhex(watermark), framed.size[1], framed.size[0])
    return np.stack([
        cv2.cvtColor(to_i420(overlay.over(background, enhance_frame(f, sharpen=look.sharpen, saturation=look.saturation)),
                             mark), cv2.COLOR_YUV2RGB_I420)
        for f in frames
    ])


def test_wav2lip_changes_only_the_feathered_lower_face_and_records_the_model(world, synced):
    root, checkpoint, base, base_frames, scenes = world
    result, record, frames = synced
    assert not lip_sync_step_failed(result)
    info = record.provider
    sha = file_sha256(checkpoint)
    assert (info.provider, info.fallback_from) == ("wav2lip", None)
    assert info.model_id == f"wav2lip.pth@{sha[:12]}"
    assert info.settings["sha256"] == sha and info.settings["model_path"] == str(checkpoint)
    assert info.settings["base"] == base.provider.provider == "landmark-mesh"

    x, y, side = lower_face_of(scenes)
    assert frames.shape == base_frames.shape
    difference = np.abs(frames.astype(np.int16) - base_frames.astype(np.int16)).max(axis=3)
    lower_face = np.zeros(difference.shape[1:], bool)
    lower_face[y + side // 2:y + side, x:x + side] = True
    margin = np.zeros_like(lower_face)  # the codec's macroblocks around the pasted region
    margin[max(0, y + side // 2 - 16):y + side + 16, max(0, x - 16):x + side + 16] = True
    assert difference[:, lower_face].mean() > 10  # the random model paints its noise there
    # Outside, only x264's noise: the pixels are the same before encoding (exact at the media level,
    # tests/media/test_wav2lip.py), but the noisy mouth takes bits from the rest of the picture.
    outside = difference[:, ~margin]
    assert outside.mean() < 0.5 and np.percentile(outside, 99) <= 5
    assert difference[:, lower_face].mean() > 20 * outside.mean()


def test_the_stitched_video_shows_the_models_mouth(world, synced):
    """stitched_video composes every rendition from the lip-sync video, the avatar layer (controls cannot
    redraw a model's faces): the 9:16 rendition's mouth is the model's, composed where the layer goes.
    Run on its own: the lip-sync gate fails on the random model's noise, which stops a whole render."""
    root, _, _, base_frames, scenes = world
    _, _, lip_frames = synced
    with avatar_home(root, **SIZE_ENV) as home:
        result = home.defs.resolve_job_def("render_video").execute_in_process(
            instance=home.instance, partition_key=cell(AVATAR, "synced"),
            asset_selection=[dg.AssetKey("stitched_video")], raise_on_error=False,
        )
        assert result.success
        record = home.record("stitched_video", cell(AVATAR, "synced"))
        stitched = decoded_frames(home.store.local_path(record.video))
        lip_frames = placed(home, lip_frames, scenes, record.watermark)
        base_frames = placed(home, base_frames, scenes, record.watermark)
    x, y, side = lower_face_of(scenes)
    [p] = [s.frame("9:16").placement for s in scenes.scenes if s.mouth_box is not None]
    x, y, side = round(x * p.scale + p.dx), round(y * p.scale + p.dy), round(side * p.scale)
    n = min(len(stitched), len(lip_frames))
    inset = round(8 * p.scale)
    mouth = (slice(0, n), slice(y + side // 2 + inset, y + side - inset), slice(x + inset, x + side - inset))

    def apart(a, b) -> float:
        return float(np.abs(a[mouth].astype(np.int16) - b[mouth].astype(np.int16)).mean())

    assert apart(stitched, lip_frames) < 4 < 5 * apart(stitched, lip_frames) < apart(stitched, base_frames)


def test_missing_or_corrupt_checkpoint_falls_back_to_the_cpu_default_and_says_why(world):
    root, _, base, base_frames, _ = world
    corrupt = root.parent / "corrupt.pth"
    corrupt.write_bytes(b"\x00" * 1024)
    for slug, model, problem in [("lost", root.parent / "missing.pth", "does not exist"),
                                 ("corrupt", corrupt, "not a readable torch checkpoint")]:
        result, record, frames = lip_sync_with(root, slug, **wav2lip_env(model))
        assert not lip_sync_step_failed(result)
        info = record.provider
        assert (info.provider, info.fallback_from) == ("landmark-mesh", "wav2lip")
        assert str(model) in info.settings["fallback_error"] and problem in info.settings["fallback_error"]
        assert np.abs(frames.astype(np.int16) - base_frames.astype(np.int16)).max() <= 2  # the CPU default's frames


def test_out_of_memory_at_the_batch_is_retried_one_frame_at_a_time(world, monkeypatch):
    root, checkpoint, *_ = world
    real = Wav2LipModel.predict

    def tight_memory(self, mels, faces):
        if len(mels) > 1:
            raise LipSyncFailed("wav2lip forward pass failed: CUDA out of memory (simulated)")
        return real(self, mels, faces)

    with monkeypatch.context() as patch:
        patch.setattr(Wav2LipModel, "predict", tight_memory)
        result, record, _ = lip_sync_with(root, "tight", **wav2lip_env(checkpoint))
    assert not lip_sync_step_failed(result)
    assert (record.provider.provider, record.provider.fallback_from) == ("wav2lip", None)
    assert record.provider.settings["batch_size"] == 1


def test_a_failed_forward_pass_falls_back_and_is_not_reused_once_the_model_works(world, monkeypatch):
    root, checkpoint, *_ = world

    def out_of_memory(self, mels, faces):
        raise LipSyncFailed("wav2lip forward pass failed: CUDA out of memory (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(Wav2LipModel, "predict", out_of_memory)
        result, record, _ = lip_sync_with(root, "broken", **wav2lip_env(checkpoint))
    assert not lip_sync_step_failed(result)
    assert (record.provider.provider, record.provider.fallback_from) == ("landmark-mesh", "wav2lip")
    error = record.provider.settings["fallback_error"]
    assert "batch 8: " in error and "batch 1: " in error and "out of memory" in error  # both attempts
    _, again, _ = lip_sync_with(root, "broken", **wav2lip_env(checkpoint))
    assert again.provider.provider == "wav2lip"  # the cached stand-in was not served
