"""What stitched_video encodes: every rendition's timeline, built from the records of one cell.

Each rendition (aspect ratio) gets its own scenes: an avatar scene is the avatar layer (the lip-sync video,
decoded once and shared by every rendition) placed over that scene's backdrop for that frame with the
placement scene_assets chose; a b-roll scene is a slow zoom over its backdrop. The captions are laid out for
that frame's size and caption-safe band, clear of the avatar's mouth in it. The enhancement (sharpening and
saturation) is applied once per source, not per rendition frame: to each layer frame as it is decoded (ahead,
in the decoder's thread), and to each backdrop once.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from avatar_assets.contracts import LipSyncRecord, SceneAssetsRecord, SpeechRecord
from avatar_assets.media import compose
from avatar_assets.media.captions import CaptionLook, to_ass
from avatar_assets.media.enhance import enhance_frame
from avatar_assets.media.images import decode_image
from avatar_assets.media.talking_head import layer_scene_source, scene_spans
from avatar_assets.media.tts import WordTiming
from avatar_assets.media.video import DecodedFrames, RenditionJob, SceneClip, ken_burns
from resources.media_store import MediaStore


def rendition_captions(speech: SpeechRecord, scene_assets: SceneAssetsRecord, aspect: str) -> str:
    """The ASS captions of one rendition: the request's style at that frame's size, clear of the mouths in it."""
    size = scene_assets.renditions[aspect]
    mouths = [tuple(s.frame(aspect).mouth_box) for s in scene_assets.scenes if s.frame(aspect).mouth_box]
    return to_ass([WordTiming(w.word, w.start_s, w.end_s, 0) for w in speech.words],
                  CaptionLook(**speech.caption_style.model_dump(exclude={"preset"})), size, avoid=mouths)


def rendition_jobs(store: MediaStore, scene_assets: SceneAssetsRecord, lip_sync: LipSyncRecord, speech: SpeechRecord,
                   folder: Path, *, sharpen: float, saturation: float, captions: bool = True) -> dict[str, RenditionJob]:
    """aspect ratio -> the job that encodes it into `folder` (`media.video.encode_renditions`), its sources
    enhanced by `sharpen` and `saturation` (`media.enhance.enhance_frame`)."""
    fps = lip_sync.fps
    layer = DecodedFrames(store.local_path(lip_sync.video),
                          transform=partial(enhance_frame, sharpen=sharpen, saturation=saturation))
    scenes = scene_assets.scenes
    spans = scene_spans(scenes, lip_sync.frames, fps)
    masks = [decode_image(store.read(scene.mask))[..., 0] for scene in scenes]
    scaled = compose.ScaledLayer()
    jobs = {}
    for aspect, size in scene_assets.renditions.items():
        clips = []
        for index, (scene, mask) in enumerate(zip(scenes, masks)):
            framed = scene.frame(aspect)
            background = enhance_frame(decode_image(store.read(framed.background)), sharpen=sharpen, saturation=saturation)
            if framed.placement is None:
                frame_at = ken_burns(background, size, scene.end_s - scene.start_s)
            else:
                frame_at = layer_scene_source(compose.AvatarOverlay(mask, framed.placement, size, scaled), background, layer,
                                              scene.start_s, spans[index], fps)
            clips.append(SceneClip(scene.start_s, scene.end_s, frame_at=frame_at))
        jobs[aspect] = RenditionJob(size, clips, folder / f"stitched_{aspect.replace(':', 'x')}.mp4",
                                    rendition_captions(speech, scene_assets, aspect) if captions else None)
    return jobs
