"""Pydantic v2 models for every contract that crosses a boundary: uploads, requests, records, events.

Uploads and requests come from people, so they are strict (unknown fields and unsafe paths are refused
with a message that names the field). Records are what assets return; the record IO manager stores them
as JSON next to the media they point at.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlparse

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from partitions import PARTITION_KEY_PATTERN

PartitionId = Annotated[str, StringConstraints(pattern=PARTITION_KEY_PATTERN.pattern)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _safe_relative_path(value: str) -> str:
    """Bundle paths must stay inside the bundle: a manifest may not point at /etc/passwd or ../.."""
    if not value or "\x00" in value or "\\" in value:
        raise ValueError(f"path {value!r} is empty or contains a NUL or backslash")
    if value.startswith("/") or (len(value) > 2 and value[1] == ":" and value[2] == "/"):
        raise ValueError(f"path {value!r} is absolute; paths must be relative to the bundle")
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{value}/":
        raise ValueError(f"path {value!r} leaves the bundle (path traversal)")
    return normal


BundlePath = Annotated[str, AfterValidator(_safe_relative_path)]

ConsentScope = Literal["likeness", "voice"]
Platform = Literal[
    "tiktok", "instagram_reels", "youtube_shorts", "instagram_feed", "youtube", "linkedin"
]
AspectRatio = Literal["9:16", "1:1", "16:9"]
Route = Literal["single_scene", "multi_scene", "broll", "pose", "approval_gated"]

PLATFORM_ASPECT: dict[str, str] = {
    "tiktok": "9:16",
    "instagram_reels": "9:16",
    "youtube_shorts": "9:16",
    "instagram_feed": "1:1",
    "youtube": "16:9",
    "linkedin": "16:9",
}
ASPECT_SIZE: dict[str, tuple[int, int]] = {
    "9:16": (1080, 1920),
    "1:1": (1080, 1080),
    "16:9": (1920, 1080),
}
DELIVERY_SHORT_SIDE = 1080  # ASPECT_SIZE's short side: renditions rendered at it are the platform sizes


def rendition_size(aspect_ratio: str, short_side: int = DELIVERY_SHORT_SIDE) -> tuple[int, int]:
    """(width, height) of a rendition of `aspect_ratio` whose short side is `short_side` (even, yuv420p):
    `ASPECT_SIZE` at 1080; tests and benchmarks lower `AVATAR_MASTER_SHORT_SIDE` and get every rendition
    at the same smaller scale."""
    if aspect_ratio not in ASPECT_SIZE:
        raise ValueError(f"unknown aspect ratio {aspect_ratio!r}; expected one of {sorted(ASPECT_SIZE)}")
    if short_side < 16:
        raise ValueError(f"rendition short side must be at least 16 pixels, got {short_side}")
    width, height = ASPECT_SIZE[aspect_ratio]
    short = short_side - short_side % 2
    scale = short / min(width, height)
    return (short, round(height * scale / 2) * 2) if width < height else (round(width * scale / 2) * 2, short)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Consent(Strict):
    subject: str = Field(min_length=1, max_length=200)
    granted_by: str = Field(min_length=1, max_length=200)
    granted_at: datetime
    scopes: list[ConsentScope] = Field(default_factory=list)
    evidence_sha256: Sha256


class Style(Strict):
    preset: str = Field(default="natural", pattern=r"^[a-z0-9_-]{1,40}$")
    notes: str = Field(default="", max_length=2000)


class AvatarUpload(Strict):
    """`<inbox>/avatars/<avatar_id>/manifest.json`."""

    avatar_id: PartitionId
    creator_id: str = Field(min_length=1, max_length=128)
    photos: list[BundlePath] = Field(min_length=1, max_length=32)
    voice_sample: BundlePath | None = None
    consent: Consent
    style: Style = Style()
    target_platforms: list[Platform] = Field(default_factory=list)

    def referenced_paths(self) -> list[str]:
        return [*self.photos, *([self.voice_sample] if self.voice_sample else [])]


class QuarantineReason(Strict):
    """`quarantine/<name>-<time>/reason.json` for an upload bundle or an output request: written for a person
    to read, and read back by `avatarops status` through this one schema."""

    kind: Literal["upload", "output_request"] = "upload"
    avatar_id: str
    slug: str | None = None  # output requests only
    bundle: str  # what was quarantined (the upload bundle folder or the request file), relative to AVATAR_HOME
    quarantined_at: datetime
    problems: list[str]
    original_files: dict[str, Sha256]
    action: str = "Fix the problems listed, then upload the bundle again (avatarops upload DIR)."


# --------------------------------------------------------------------------- records


MEDIA = "media/"


def media_key(sha256: str, ext: str) -> str:
    """The store-relative key of a content-addressed blob, the same in every store (`resources.layout`
    holds every other key; this one lives here because MediaRef checks each ref against it)."""
    return f"{MEDIA}{sha256[:2]}/{sha256}.{ext.lstrip('.')}"


def key_from_location(location: str, depth: int) -> str:
    """The store-relative key that ends an absolute location of `depth` segments.

    Records written before keys held absolute locations (`file:///old/home/media/ab/<sha>.png`,
    `s3://bucket/prefix/media/ab/<sha>.png`). Every store puts a key at the end of its location, so the
    tail is the key wherever the home has moved since; the store that reads the record resolves it.
    """
    segments = unquote(urlparse(location).path).rstrip("/").split("/")
    return "/".join(segments[-depth:])


class MediaRef(Strict):
    """A blob by its store-relative key (`media/ab/<sha>.png`), never by location: the active MediaStore
    resolves the key, so a home can be copied, moved or synced to S3 and a record's hash stays the same."""

    key: str
    sha256: Sha256
    size: int
    media_type: str

    @model_validator(mode="before")
    @classmethod
    def _key_of_legacy_uri(cls, data: Any) -> Any:
        """Older records hold the blob's absolute `uri`; they are read as the key at its end."""
        if isinstance(data, dict) and "uri" in data and "key" not in data:
            data = {**{k: v for k, v in data.items() if k != "uri"}, "key": key_from_location(data["uri"], 3)}
        return data

    @model_validator(mode="after")
    def _content_addressed(self) -> MediaRef:
        """A ref names its own blob: `media/<sha256[:2]>/<sha256>.<ext>`, nothing else in any store."""
        head = media_key(self.sha256, "")
        ext = self.key.removeprefix(head)
        if ext == self.key or not ext or "/" in ext:
            raise ValueError(f"key {self.key!r} is not {head}<ext> (the blob of sha256 {self.sha256})")
        return self


class ProviderInfo(Strict):
    capability: str
    provider: str
    model_id: str
    version: str
    seed: int | None = None
    fallback_from: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


RECORD_TYPES: dict[str, type[Record]] = {}


class Record(Strict):
    """Base of asset records. `content_hash` is the data version that drives staleness."""

    kind: ClassVar[str]
    record_schema: int = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        RECORD_TYPES[cls.kind] = cls

    def content_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class SourcePhoto(Strict):
    path: str
    original: MediaRef
    upright: MediaRef | None = None
    problem: str | None = None
    width: int | None = None
    height: int | None = None
    original_mode: str | None = None
    exif_orientation: int = 1


class SourceVoice(Strict):
    path: str
    original: MediaRef


class SourceUploadRecord(Record):
    kind: ClassVar[str] = "source_upload"
    avatar_id: str
    bundle_sha256: Sha256
    manifest: AvatarUpload
    manifest_ref: MediaRef
    photos: list[SourcePhoto]
    voice: SourceVoice | None


class PhotoRow(Strict):
    path: str
    usable: bool
    problem: str | None
    width: int | None = None
    height: int | None = None
    face_count: int | None = None
    face_box: tuple[int, int, int, int] | None = None
    face_fraction: float | None = None
    sharpness: float | None = None
    exposure: float | None = None
    clipped_fraction: float | None = None
    colour_cast: float | None = None
    eye_angle_deg: float | None = None


class ValidatedInputsRecord(Record):
    kind: ClassVar[str] = "validated_inputs"
    avatar_id: str
    rows: list[PhotoRow]
    table: MediaRef
    best_photo: str | None
    consent_scopes: list[str]


class NeutralImageRecord(Record):
    kind: ClassVar[str] = "neutral_image"
    avatar_id: str
    image: MediaRef
    mask: MediaRef
    source_photo: str
    face_box: tuple[int, int, int, int] | None
    left_eye: tuple[float, float] | None
    right_eye: tuple[float, float] | None
    face_count: int
    centre_offset: float | None
    eye_angle_deg: float | None
    provider: ProviderInfo
    landmarks: list[tuple[float, float]] | None = None  # 68 dlib points on `image`; None without the model


class CharacterSheetRecord(Record):
    kind: ClassVar[str] = "character_sheet"
    avatar_id: str
    sheet: MediaRef
    geometry: MediaRef
    variants: dict[str, MediaRef]
    palette: list[str]
    provider: ProviderInfo


class VoiceMetricsModel(Strict):
    duration_s: float
    speech_s: float
    sample_rate: int
    channels: int
    median_f0_hz: float | None
    f0_p10_hz: float | None
    f0_p90_hz: float | None
    speaking_rate_sps: float | None
    loudness_lufs: float | None
    snr_db: float | None
    clipping_fraction: float
    peak_dbfs: float | None


class VoiceProfileRecord(Record):
    kind: ClassVar[str] = "voice_profile"
    avatar_id: str
    sample: MediaRef | None
    problem: str | None
    metrics: VoiceMetricsModel | None
    embedding: MediaRef | None
    consent: Consent
    waveform_sha256: Sha256 | None
    provider: ProviderInfo | None


class IdentityPart(Strict):
    asset: str
    record_hash: Sha256
    media: dict[str, MediaRef]
    providers: list[ProviderInfo] = Field(default_factory=list)


class IdentityBundleRecord(Record):
    kind: ClassVar[str] = "identity_bundle"
    avatar_id: str
    bundle_sha256: Sha256
    consent: Consent
    parts: list[IdentityPart]
    # dlib's 128-d embedding of the uploaded face: personal data, kept in this record only (revoke
    # deletes it with the record), never in metadata or events. None when the landmark model is missing.
    face_embedding: list[float] | None = None



# --------------------------------------------------------------------------- output requests

MAX_SCRIPT_CHARS = 5000


class VoiceSettings(Strict):
    voice: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})?(\+[a-z0-9]{1,8})?$")
    rate_wpm: int = Field(default=155, ge=80, le=300)
    pitch_shift: int = Field(default=0, ge=-30, le=30)


def _hex_colour(value: str) -> str:
    if not (len(value) == 7 and value[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in value[1:])):
        raise ValueError(f"{value!r} is not a colour: write it as #RRGGBB, e.g. #FFD400")
    return value.upper()


HexColour = Annotated[str, AfterValidator(_hex_colour)]
CaptionPreset = Literal["classic", "karaoke", "minimal"]
CaptionPosition = Literal["auto", "top", "middle", "bottom"]

CAPTION_PRESETS: dict[str, dict[str, Any]] = {
    # Today's look, the default for requests that name no style: white bold text on a dark box, low on
    # the frame, moved to the top where it would cover the avatar's mouth.
    "classic": {"font_size": 64, "position": "auto", "text_colour": "#FFFFFF", "highlight_colour": "#FFD400",
                "background_box": True, "word_highlight": False},
    "karaoke": {"font_size": 72, "position": "auto", "text_colour": "#FFFFFF", "highlight_colour": "#FFD400",
                "background_box": True, "word_highlight": True},
    "minimal": {"font_size": 56, "position": "bottom", "text_colour": "#FFFFFF", "highlight_colour": "#FFFFFF",
                "background_box": False, "word_highlight": False},
}


class CaptionStyle(Strict):
    """How burned-in captions (and `captions.ass`) look. A preset fills every field the request leaves out.

    `font_size` is in pixels of a frame whose short side is 1080 (scaled with the frame); `position` is the
    band the caption sits in (`auto`: bottom, or top where the bottom would cover the mouth);
    `word_highlight` fills each word with `highlight_colour` while it is spoken (ASS karaoke).
    """

    preset: CaptionPreset = "classic"
    font_size: int = Field(default=CAPTION_PRESETS["classic"]["font_size"], ge=24, le=160)
    position: CaptionPosition = CAPTION_PRESETS["classic"]["position"]
    text_colour: HexColour = CAPTION_PRESETS["classic"]["text_colour"]
    highlight_colour: HexColour = CAPTION_PRESETS["classic"]["highlight_colour"]
    background_box: bool = CAPTION_PRESETS["classic"]["background_box"]
    word_highlight: bool = CAPTION_PRESETS["classic"]["word_highlight"]

    @model_validator(mode="before")
    @classmethod
    def _preset_fills_the_rest(cls, data: Any) -> Any:
        """The named preset's values under the fields given; an unknown preset is left to the field's own error."""
        if isinstance(data, dict):
            return {**CAPTION_PRESETS.get(data.get("preset", "classic"), {}), **data}
        return data


class OutputRequest(Strict):
    """`<inbox>/outputs/<avatar_id>/<slug>.json`: one video of one avatar."""

    avatar_id: PartitionId
    slug: PartitionId
    route: Route = "single_scene"
    script: str = Field(max_length=MAX_SCRIPT_CHARS)
    background_prompts: list[Annotated[str, StringConstraints(max_length=300)]] = Field(
        default_factory=list, max_length=12
    )
    aspect_ratios: list[AspectRatio] = Field(default_factory=lambda: ["9:16"], min_length=1)
    platforms: list[Platform] = Field(default_factory=list)
    voice: VoiceSettings = VoiceSettings()
    captions: CaptionStyle = CaptionStyle()
    pronunciations: dict[str, str] = Field(default_factory=dict, max_length=100)
    approvals_required: list[
        Literal["full_output_generation", "script_approval", "storyboard_approval", "background_approval",
                "video_asset_approval"]
    ] = Field(default_factory=list)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("script")
    @classmethod
    def _script_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("script is empty")
        return value

    def gates(self) -> list[str]:
        """Approval gates in force: those asked for, plus the video gate of the approval_gated route."""
        gates = list(self.approvals_required)
        if self.route == "approval_gated" and "video_asset_approval" not in gates:
            gates.append("video_asset_approval")
        return gates

    def renditions(self) -> list[str]:
        """Aspect ratios to package: those asked for, plus those the platforms need, in order."""
        wanted = [*self.aspect_ratios, *(PLATFORM_ASPECT[p] for p in self.platforms)]
        return list(dict.fromkeys(wanted))


# --------------------------------------------------------------------------- video records


class Token(Strict):
    display: str
    spoken: str
    emphasis: bool = False
    pause_after_ms: int = 0


class AcceptedRequest(Strict):
    """Which stored request snapshot a video cell renders when a run does not name one."""

    avatar_id: str
    slug: str
    sha256: Sha256
    accepted_at: datetime


class ScriptRecord(Record):
    kind: ClassVar[str] = "script"
    avatar_id: str
    slug: str
    request: OutputRequest
    request_sha256: Sha256
    text: str
    sentences: list[list[Token]]
    ssml: str
    word_count: int
    estimated_duration_s: float
    cleaned: list[str]


class Scene(Strict):
    index: int
    tokens: tuple[int, int]
    text: str
    shot: Literal["close_up", "mid", "wide", "broll"]
    background_prompt: str
    variant: str
    est_start_s: float
    est_end_s: float


class StoryboardRecord(Record):
    kind: ClassVar[str] = "storyboard"
    avatar_id: str
    slug: str
    route: Route
    scenes: list[Scene]
    renditions: dict[AspectRatio, tuple[int, int]]  # every rendition's (w, h), the request's order
    fps: int

    @model_validator(mode="before")
    @classmethod
    def _renditions_of_a_legacy_master(cls, data: Any) -> Any:
        """A storyboard from before native renditions named one master size: its aspect's rendition."""
        if isinstance(data, dict) and "renditions" not in data and "master_size" in data:
            w, h = (data := dict(data)).pop("master_size")
            data["renditions"] = {"9:16" if w < h else "1:1" if w == h else "16:9": (w, h)}
        return data

    @property
    def master_size(self) -> tuple[int, int]:
        """The first rendition's size (the request's first aspect ratio)."""
        return next(iter(self.renditions.values()))


class WordTimingModel(Strict):
    word: str
    start_s: float
    end_s: float


class PhonemeTimingModel(Strict):
    """A synthesiser phoneme (espeak-ng mnemonic) and when it is heard: drives the visemes."""

    phoneme: str
    start_s: float
    end_s: float


class SpeechRecord(Record):
    kind: ClassVar[str] = "speech"
    avatar_id: str
    slug: str
    audio: MediaRef
    sample_rate: int
    duration_s: float
    words: list[WordTimingModel]
    scene_times: list[tuple[float, float]]
    captions_srt: MediaRef
    captions_vtt: MediaRef
    caption_style: CaptionStyle = CaptionStyle()  # the request's, for the stage that burns the captions in
    longest_silence_s: float
    clipping_fraction: float
    loudness_lufs: float
    provider: ProviderInfo
    phonemes: list[PhonemeTimingModel] = Field(default_factory=list)


class BackgroundsRecord(Record):
    kind: ClassVar[str] = "backgrounds"
    avatar_id: str
    slug: str
    images: list[MediaRef]  # one per scene, at the first rendition's size
    by_aspect: dict[AspectRatio, list[MediaRef]] = Field(default_factory=dict)  # the other renditions' own
    prompts: list[str]
    seeds: list[int]
    provider: ProviderInfo

    def for_aspect(self, aspect_ratio: str) -> list[MediaRef]:
        """The scenes' backgrounds made for `aspect_ratio` (`images` for the first rendition)."""
        return self.by_aspect.get(aspect_ratio, self.images)


class Placement(Strict):
    """Where a scene's avatar layer lands in one rendition: `media.compose.Placement` as recorded (read from it by
    attribute), which `compose.AvatarOverlay` takes back as it is."""

    scale: float
    dx: float
    dy: float


class SceneFrame(Strict):
    """One scene as composed for one rendition (aspect ratio)."""

    aspect_ratio: AspectRatio
    size: tuple[int, int]
    background: MediaRef  # at `size`
    placement: Placement | None  # None for b-roll
    face_box: tuple[int, int, int, int] | None  # in rendition pixels
    mouth_box: tuple[int, int, int, int] | None


class SceneAsset(Strict):
    """A scene's avatar layer (what lip sync animates, in layer pixels: `SceneAssetsRecord.layer_size`) and
    its composition for every rendition. `keyframe` is the avatar image as drawn, `mask` its alpha;
    boxes and landmarks are in layer pixels. A b-roll scene has an empty layer (all-zero mask)."""

    index: int
    shot: str
    variant: str
    keyframe: MediaRef
    mask: MediaRef
    mouth_box: tuple[int, int, int, int] | None
    face_box: tuple[int, int, int, int] | None
    start_s: float
    end_s: float
    landmarks: list[tuple[float, float]] | None = None  # 68 points in layer pixels; None for b-roll
    frames: list[SceneFrame]  # one per rendition, in the request's order

    def frame(self, aspect_ratio: str) -> SceneFrame:
        return next(f for f in self.frames if f.aspect_ratio == aspect_ratio)


class SceneAssetsRecord(Record):
    kind: ClassVar[str] = "scene_assets"
    avatar_id: str
    slug: str
    scenes: list[SceneAsset]
    contact_sheet: MediaRef
    layer_size: tuple[int, int]  # (w, h) of the avatar layer that lip sync renders
    fps: int

    @property
    def renditions(self) -> dict[str, tuple[int, int]]:
        """Every rendition's (w, h), in the request's order."""
        return {frame.aspect_ratio: frame.size for frame in self.scenes[0].frames}


class VideoQAModel(Strict):
    """The delivery facts of a `media.video_qa.VideoQA`, read from it by attribute (`from_attributes=True`)."""

    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    audio_duration_s: float | None
    has_audio: bool
    longest_black_s: float
    longest_frozen_s: float
    loudness_lufs: float | None
    video_codec: str | None
    audio_codec: str | None


class LipSyncRecord(Record):
    kind: ClassVar[str] = "lip_sync"
    avatar_id: str
    slug: str
    video: MediaRef
    openness: MediaRef  # npy: (frames, 8) face controls (media.face_motion), or (frames,) openness on the fallback
    fps: int
    frames: int
    lag_frames: int
    motion_in_silence: float
    motion_in_speech: float
    provider: ProviderInfo
    awaiting_approval: bool = False


class RenditionVideo(Strict):
    """One aspect ratio's video of a stage, with its measured QA numbers."""

    aspect_ratio: AspectRatio
    video: MediaRef
    qa: VideoQAModel
    expected_size: tuple[int, int]
    captions_ass: MediaRef | None = None  # the captions burned into it (stitched_video)
    poster: MediaRef | None = None  # PNG of the frame a third of the way in, decoded once (stitched_video)


class VideoRecord(Record):
    """A rendered video (stitched or enhanced): one natively composed video per rendition, the first
    being the request's first aspect ratio (`video`, `qa`, `expected_size` read that one)."""

    kind: ClassVar[str] = "video"
    avatar_id: str
    slug: str
    stage: Literal["stitched_video", "enhanced_video"]
    renditions: list[RenditionVideo] = Field(min_length=1)
    expected_fps: int
    audio_duration_s: float
    provider: ProviderInfo
    watermark: str | None = None

    @property
    def video(self) -> MediaRef:
        return self.renditions[0].video

    @property
    def qa(self) -> VideoQAModel:
        return self.renditions[0].qa

    @property
    def expected_size(self) -> tuple[int, int]:
        return self.renditions[0].expected_size

    @property
    def captions_ass(self) -> MediaRef | None:
        return self.renditions[0].captions_ass

    def rendition(self, aspect_ratio: str) -> RenditionVideo:
        return next(r for r in self.renditions if r.aspect_ratio == aspect_ratio)


class Rendition(Strict):
    aspect_ratio: AspectRatio
    platforms: list[Platform]
    width: int
    height: int
    video: MediaRef


class StageProvenance(Strict):
    asset: str
    record_sha256: Sha256
    providers: list[ProviderInfo]
    prompts: list[str] = Field(default_factory=list)


class RightsManifest(Strict):
    """`rights_manifest.json`: what a video was made from, under which consent, by which models."""

    avatar_id: str
    slug: str
    created_at: datetime
    creator_id: str
    consent: Consent
    source_bundle_sha256: Sha256
    source_files: dict[str, Sha256]
    request_sha256: Sha256
    stages: list[StageProvenance]
    outputs: dict[str, Sha256]


class OutputPackageRecord(Record):
    kind: ClassVar[str] = "output_package"
    avatar_id: str
    slug: str
    renditions: list[Rendition]
    poster: MediaRef
    captions_srt: MediaRef
    captions_vtt: MediaRef
    captions_ass: MediaRef | None = None  # None only in packages made before styled captions
    rights_manifest: MediaRef
    short_side: int = DELIVERY_SHORT_SIDE  # the renditions' short side (AVATAR_MASTER_SHORT_SIDE)
    folder: str  # store-relative key of the package folder, `packages/<avatar>/<slug>`

    @field_validator("folder", mode="before")
    @classmethod
    def _key_of_legacy_folder(cls, value: Any) -> Any:
        """Older records hold the folder's absolute location; they are read as the key at its end."""
        return key_from_location(value, 3) if isinstance(value, str) and "://" in value else value


# --------------------------------------------------------------------------- lifecycle, approvals, revoke

EventType = Literal["accepted", "started", "progress", "completed", "failed", "revoked"]
JobType = Literal[
    "full_output_generation",
    "retry_from_stage",
    "script_approval",
    "storyboard_approval",
    "background_regeneration",
    "background_approval",
    "video_asset_approval",
]


class LifecycleEvent(Strict):
    """One outbox event, as written and as POSTed to the webhook.

    `sequence` orders events for a receiver (a retried event can arrive after later ones): it is the
    nanosecond wall-clock count that starts the event id, strictly increasing within one process and
    ordered by the clock across processes, so concurrent writers need no shared counter. Events written
    before the field existed get it from their id when they are read.
    """

    event_id: str
    sequence: int
    type: EventType
    at: datetime
    avatar_id: str
    output: str | None = None
    asset: str | None = None
    run_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _sequence_from_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and "sequence" not in data:
            prefix = str(data.get("event_id", "")).split("-", 1)[0]
            if prefix.isdigit():
                return {**data, "sequence": int(prefix)}
        return data


class DeadLetter(Strict):
    """An event the webhook deliverer gave up on (`events/dead/<event_id>.json`), kept until replayed.

    Holds what an operator needs to decide (which event, whose, how often it failed and why), not the
    event itself: that stays in the outbox, from where `avatarops events replay --dead-letters` sends it.
    """

    event_id: str
    sequence: int | None = None  # None when the outbox document could not be read
    type: EventType | None = None
    avatar_id: str | None = None
    output: str | None = None
    asset: str | None = None
    attempts: int = Field(ge=1)
    last_status: int | None = None  # the HTTP status of the last answer; None when none came
    last_error: str
    dead_at: datetime


class Approval(Strict):
    """A person's decision on one asset partition at one content hash. Durable and never edited."""

    approval_id: str
    job_type: JobType
    asset: str
    avatar_id: PartitionId
    output: PartitionId | None = None
    content_hash: Sha256
    decision: Literal["approve", "reject"]
    by: str = Field(min_length=1, max_length=200)
    at: datetime
    note: str = Field(default="", max_length=2000)
    run_id: str | None = None


class Regeneration(Strict):
    """A queued request to re-materialize one asset partition (the job API's regenerate), which the approval
    sensor turns into a run, so it waits out a daemon restart like a decision does."""

    regeneration_id: str
    asset: str
    avatar_id: PartitionId
    output: PartitionId | None = None
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    by: str = Field(min_length=1, max_length=200)
    at: datetime


class TenantLimits(Strict):
    """`tenants/<sha256 of the tenant>.json`: a tenant's own cap on renders in flight, read where requests
    become runs (the output-request sensor), so it holds for the daemon, `process` and the cluster alike."""

    tenant: str = Field(min_length=1, max_length=128)
    renders_in_flight: int = Field(ge=1, le=10_000)
    set_at: datetime


class Ownership(Strict):
    """`owners/<avatar_id>.json`: the creator who first claimed an avatar id; only that creator's bundles
    may replace the avatar, and `--creator` acts only on avatars it owns."""

    avatar_id: str
    creator_id: str
    claimed_at: datetime


class Tombstone(Strict):
    """What remains of a revoked avatar: who, when, why, and the hashes of what was deleted."""

    avatar_id: str
    status: Literal["revoking", "revoked"]
    revoked_at: datetime
    by: str
    reason: str
    deleted_blobs: list[Sha256] = Field(default_factory=list)
    deleted_records: list[str] = Field(default_factory=list)
    kept_shared_blobs: list[Sha256] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)


def describe_validation_error(error: ValidationError) -> list[str]:
    """One sentence per problem, naming the field, e.g. `photos.0: path '../x' leaves the bundle`."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "manifest"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (not part of the upload contract)"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{where}: {message}")
    return problems
