"""The diffusers image provider through the real assets, the real loading code and a real (tiny,
random-weight) Stable Diffusion pipeline on CPU, built offline in a temporary folder.

The tiny model makes 64 px noise, not faces, so on its images the identity-consistency gate fails,
which is correct, and these tests assert that it fails and says why. The passing paths are the
classical provider and the classical fallback. Every home is a temporary AVATAR_HOME with its own
Dagster instance, so a failed gate here changes nothing for other tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from avatar_assets.contracts import OutputRequest
from avatar_assets.media.images import decode_image
from avatar_assets.styles import PRESETS, SHEET_VARIANTS
from partitions import cell_key
from resources.diffusers.models import clear_generator_cache, load_count
from resources.diffusers.provider import DiffusersImageGenerator
from tests.conftest import avatar_home, copy_sample
from tests.media.tiny_sd import build_tiny_sd

ROOT = Path(__file__).resolve().parents[1]
IMAGE_ASSETS = ["source_upload", "validated_inputs", "neutral_image"]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def broken_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Loads fine, fails on every call: the tokenizer pads to 100 tokens, the text encoder holds 77."""
    broken = tmp_path_factory.mktemp("models") / "tiny-sd-broken-tokenizer"
    shutil.copytree(tiny_model, broken)
    config_path = broken / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = 100
    config_path.write_text(json.dumps(config))
    return broken


@pytest.fixture(scope="module")
def astronaut_rgb() -> np.ndarray:
    from avatar_assets.media.images import load_photo
    from tests.conftest import SAMPLE_PHOTO

    return load_photo(SAMPLE_PHOTO.read_bytes()).rgb


@pytest.fixture(scope="module")
def astronaut_face(astronaut_rgb: np.ndarray):
    from avatar_assets.media.faces import detect_faces

    (face,) = detect_faces(astronaut_rgb)
    return face


@pytest.fixture(scope="module")
def neutral_portrait(astronaut_rgb: np.ndarray, astronaut_face):
    from avatar_assets.media.portrait import make_neutral_portrait

    return make_neutral_portrait(astronaut_rgb, astronaut_face, size=512)


@pytest.fixture
def img2img_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images of every img2img pipeline call made from here on."""
    from avatar_assets.media.diffusion import DiffusionGenerator

    calls: list[int] = []
    real = DiffusionGenerator.img2img

    def counted(self, inits, *args, **kwargs):
        calls.append(len(inits))
        return real(self, inits, *args, **kwargs)

    monkeypatch.setattr(DiffusionGenerator, "img2img", counted)
    return calls


def diffusers_env(model: Path | str, **extra: str) -> dict[str, str]:
    return {
        "AVATAR_IMAGE_PROVIDER": "diffusers",
        "AVATAR_DIFFUSERS_MODEL": str(model),
        "AVATAR_DIFFUSERS_DEVICE": "cpu",
        "AVATAR_DIFFUSERS_SIZE": "64",
        "AVATAR_DIFFUSERS_BACKGROUND_SIZE": "64",
        "AVATAR_DIFFUSERS_STEPS": "4",
        "AVATAR_DIFFUSERS_RETRIES": "1",
        "AVATAR_DIFFUSERS_RETRY_BACKOFF_S": "0",
        "AVATAR_IMAGE_FALLBACK": "",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


def provider(model: Path, **fields) -> DiffusersImageGenerator:
    settings = {"device": "cpu", "working_side": 64, "background_long_side": 64, "steps": 4, "retry_backoff_s": 0.0}
    return DiffusersImageGenerator(model_path=str(model), **(settings | fields))


def add_avatar(home, sample_bundle: Path, avatar_id: str, preset: str = "natural") -> None:
    bundle = copy_sample(sample_bundle, home.inbox, avatar_id)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["style"] = {"preset": preset, "notes": ""}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    home.instance.add_dynamic_partitions("avatars", [avatar_id])


def run_identity(home, avatar_id: str, assets: list[str]) -> dg.ExecuteInProcessResult:
    return home.defs.resolve_job_def("build_identity").execute_in_process(
        partition_key=avatar_id,
        instance=home.instance,
        asset_selection=[dg.AssetKey(name) for name in assets],
        raise_on_error=False,
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    return {
        event.event_specific_data.check_name: event.event_specific_data
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def step_errors(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    errors = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error, messages = event.step_failure_data.error, []
            while error is not None:
                messages.append(error.message)
                error = error.cause
            errors[event.step_key] = " | ".join(messages)
    return errors


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture(scope="module")
def generated(tmp_path_factory, sample_bundle: Path, tiny_model: Path):
    """Two avatars (different presets, so no content-cache sharing) through neutral_image on diffusers."""
    clear_generator_cache()
    root = tmp_path_factory.mktemp("diffusers-home")
    with avatar_home(root, **diffusers_env(tiny_model, AVATAR_MASTER_SHORT_SIDE="64")) as home:
        add_avatar(home, sample_bundle, "gen-a", "natural")
        add_avatar(home, sample_bundle, "gen-b", "studio")
        results = {avatar: run_identity(home, avatar, IMAGE_ASSETS) for avatar in ("gen-a", "gen-b")}
        yield home, results, load_count(str(tiny_model))


# --------------------------------------------------------------------------- configuration


def test_provider_is_selected_by_env(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from resources.providers import ImageGenerator
    from resources.wiring import image_generator

    monkeypatch.delenv("AVATAR_IMAGE_PROVIDER", raising=False)
    assert type(image_generator()) is ImageGenerator
    for name, value in diffusers_env(tiny_model, AVATAR_IMAGE_FALLBACK="classical").items():
        monkeypatch.setenv(name, value)
    images = image_generator()
    assert isinstance(images, DiffusersImageGenerator)
    assert (images.provider, images.model_path, images.fallback) == ("diffusers", str(tiny_model), "classical")
    assert (images.working_side, images.steps, images.retries, images.device) == (64, 4, 1, "cpu")
    monkeypatch.setenv("AVATAR_IMAGE_FALLBACK", "magic")
    with pytest.raises(ValueError, match="AVATAR_IMAGE_FALLBACK"):
        image_generator()
    monkeypatch.setenv("AVATAR_IMAGE_PROVIDER", "dall-e")
    with pytest.raises(ValueError, match="AVATAR_IMAGE_PROVIDER"):
        image_generator()


def test_definitions_with_diffusers_configured_import_no_torch(tiny_model: Path, tmp_path: Path) -> None:
    probe = (
        "import sys, json, avatar_assets.definitions as d; "
        "print(json.dumps([type(d.defs.resources['images']).__name__, "
        "sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers', 'cv2'})]))"
    )
    env = {"PATH": "/usr/bin:/bin", "AVATAR_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster"),
           **diffusers_env(tiny_model)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["DiffusersImageGenerator", []]


def test_image_assets_are_in_the_gpu_pool_and_backfill_eight_avatars_per_run() -> None:
    from avatar_assets.identity.assets import character_sheet, neutral_image
    from avatar_assets.video.assets import backgrounds

    for asset in (neutral_image, character_sheet, backgrounds):
        assert asset.op.pool == "gpu"
    for asset in (neutral_image, character_sheet):
        assert asset.backfill_policy == dg.BackfillPolicy.multi_run(8)
    assert backgrounds.backfill_policy is None  # avatar x output cells cannot form a partition range


# --------------------------------------------------------------------------- the provider on real pixels


def test_neutral_portrait_is_img2img_of_the_aligned_crop_and_deterministic(
    tiny_model: Path, astronaut_rgb: np.ndarray, astronaut_face
) -> None:
    images = provider(tiny_model)
    first, info = images.neutral_portrait(astronaut_rgb, astronaut_face, size=256, preset="studio")
    again, _ = images.neutral_portrait(astronaut_rgb, astronaut_face, size=256, preset="studio")
    other_seed, other_info = images.neutral_portrait(astronaut_rgb, astronaut_face, size=256, preset="studio", seed=5)
    assert first.rgb.shape == (256, 256, 3) and first.rgb.dtype == np.uint8
    assert first.rgb.tobytes() == again.rgb.tobytes()
    assert not np.array_equal(first.rgb, other_seed.rgb)
    studio = PRESETS["studio"]
    assert (info.provider, info.capability, info.seed, other_info.seed) == ("diffusers", "neutral_image", studio.seed, studio.seed + 5)
    assert info.model_id.startswith("tiny-sd@") and info.fallback_from is None
    settings = info.settings
    assert settings["prompt"] == studio.portrait() and settings["negative_prompt"] == studio.negative_prompt
    assert (settings["strength"], settings["scheduler"], settings["steps"]) == (studio.portrait_strength, "dpm++", 4)
    assert (settings["preset"], settings["device"], settings["working_size"]) == ("studio", "cpu", [64, 64])
    # Composited onto the neutral backdrop with the classical person mask: the corners are the backdrop.
    assert tuple(first.rgb[2, 2]) == first.backdrop_rgb


def test_unknown_preset_falls_back_to_the_default_and_says_so(tiny_model: Path, astronaut_rgb, astronaut_face) -> None:
    _, info = provider(tiny_model).neutral_portrait(astronaut_rgb, astronaut_face, size=128, preset="anime")
    assert (info.settings["preset"], info.settings["preset_requested"]) == ("natural", "anime")


def test_sheet_variants_batched_equal_one_by_one(tiny_model: Path, neutral_portrait) -> None:
    """One fixed seed for every variant; a batch of variants matches them made one by one (<= 1 level, CPU)."""
    batched, info = provider(tiny_model, batch_size=8).character_sheet(neutral_portrait, seed=0)
    single, _ = provider(tiny_model, batch_size=1).character_sheet(neutral_portrait, seed=0)
    names = [v.name for v in SHEET_VARIANTS]
    assert list(batched.geometry["generated"]) == names
    for name in names:
        assert batched.variants[name].shape == (512, 512, 3)
        assert max_difference(batched.variants[name], single.variants[name]) <= 1, name
    assert batched.variants["turn_left"] is batched.variants["three_quarter_left"]  # pose-route alias
    assert info.seed == PRESETS["natural"].seed and batched.geometry["seed"] == info.seed
    assert set(info.settings["variants"]) == set(names)
    assert info.settings["variants"]["profile"]["strength"] == PRESETS["natural"].profile_strength


def test_portraits_of_many_avatars_share_the_model_call_and_equal_one_by_one(
    tiny_model: Path, astronaut_rgb, astronaut_face, neutral_portrait, img2img_calls: list[int]
) -> None:
    """A ranged run hands the provider several avatars: one img2img call per preset, same pixels."""
    from avatar_assets.media.faces import detect_faces
    from resources.providers import PortraitJob, SheetJob

    mirrored = np.ascontiguousarray(astronaut_rgb[:, ::-1])
    (mirrored_face,) = detect_faces(mirrored)
    jobs = [
        PortraitJob(astronaut_rgb, astronaut_face, "natural", 0),
        PortraitJob(mirrored, mirrored_face, "natural", 0),
        PortraitJob(astronaut_rgb, astronaut_face, "studio", 0),
    ]
    images = provider(tiny_model)
    singles = [images.neutral_portrait(j.rgb, j.face, size=256, preset=j.preset, seed=j.seed) for j in jobs]
    img2img_calls.clear()
    batched = images.neutral_portraits(jobs, size=256)
    assert sorted(img2img_calls) == [1, 2]  # natural: both avatars in one call; studio: its own
    for (portrait, info), (single, single_info) in zip(batched, singles, strict=True):
        assert max_difference(portrait.rgb, single.rgb) <= 1
        assert info == single_info
    assert not np.array_equal(batched[0][0].rgb, batched[1][0].rgb)

    img2img_calls.clear()
    sheets = images.character_sheets([SheetJob(neutral_portrait, 0, "natural"), SheetJob(neutral_portrait, 1, "natural")])
    assert sorted(img2img_calls) == [2, 10]  # the profiles of both avatars, then the other five variants of both
    alone, _ = provider(tiny_model).character_sheet(neutral_portrait, seed=1, preset="natural")
    for name in (v.name for v in SHEET_VARIANTS):
        assert max_difference(sheets[1][0].variants[name], alone.variants[name]) <= 1, name
    assert sheets[0][1].seed != sheets[1][1].seed


def test_backgrounds_text2img_shapes_seeds_and_prompts(tiny_model: Path) -> None:
    images = provider(tiny_model)
    prompts, seeds = ["a beach at sunset", "a quiet office"], [10, 11]
    first, info = images.backgrounds(prompts, (72, 128), seeds, preset="cinematic")
    again, _ = images.backgrounds(prompts, (72, 128), seeds, preset="cinematic")
    reseeded, _ = images.backgrounds(prompts, (72, 128), [12, 13], preset="cinematic")
    assert [image.shape for image in first] == [(128, 72, 3), (128, 72, 3)]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, reseeded, strict=True))
    style = PRESETS["cinematic"].background_style
    assert info.settings["prompts"] == [f"{p}, {style}" for p in prompts]
    assert (info.settings["seeds"], info.seed, info.settings["working_size"]) == (seeds, 10, [40, 64])


def test_generation_failure_is_retried_then_falls_back_and_records_it(broken_model: Path) -> None:
    from avatar_assets.media.backgrounds import classical_background

    images, info = provider(broken_model, fallback="classical", retries=1).backgrounds(["beach"], (64, 64), [3])
    assert (info.provider, info.fallback_from) == ("classical", "diffusers")
    assert info.settings["attempts"] == 2
    assert "max_position_embeddings" in info.settings["fallback_error"]
    assert images[0].tobytes() == classical_background("beach", 64, 64, seed=3).tobytes()
    with pytest.raises(dg.Failure, match=r"failed after 2 attempt\(s\)") as failure:
        provider(broken_model, retries=1).backgrounds(["beach"], (64, 64), [3])
    assert "AVATAR_IMAGE_FALLBACK=classical" in failure.value.description


# --------------------------------------------------------------------------- through the real assets


def test_model_loads_once_per_process_across_partitions(generated, tiny_model: Path) -> None:
    home, results, loads = generated
    records = {avatar: home.record("neutral_image", avatar) for avatar in results}
    assert {r.provider.provider for r in records.values()} == {"diffusers"}
    assert records["gen-a"].image.sha256 != records["gen-b"].image.sha256  # two generations, not a cache hit
    assert loads == 1


def test_neutral_image_record_and_metadata(generated) -> None:
    home, results, _ = generated
    record = home.record("neutral_image", "gen-b")
    info, studio = record.provider, PRESETS["studio"]
    assert (info.capability, info.seed, info.fallback_from) == ("neutral_image", studio.seed, None)
    assert info.model_id.startswith("tiny-sd@")
    assert info.settings["prompt"] == studio.portrait() and info.settings["preset"] == "studio"
    rgb = decode_image(home.store.read(record.image))
    assert rgb.shape == (1024, 1024, 3)
    materialization = next(
        event.event_specific_data.materialization
        for event in results["gen-b"].all_events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and event.event_specific_data.materialization.asset_key == dg.AssetKey("neutral_image")
    )
    assert materialization.metadata["provider"].value == "diffusers"
    assert materialization.metadata["model_id"].value == info.model_id


def test_identity_gate_fails_on_the_tiny_models_noise_and_says_why(generated) -> None:
    _, results, _ = generated
    for result in results.values():
        checks = evaluations(result)
        gate = checks["neutral_identity_consistency"]
        assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
        assert "no face found in the generated neutral image" in gate.description
        assert gate.metadata["generated"].value is True
        assert gate.metadata["max_face_distance"].value == pytest.approx(0.6)  # dlib's same-person threshold
        assert not checks["neutral_face_geometry"].passed  # the geometry gate agrees: no face
        assert checks["usable_photo_and_consent"].passed  # the upload itself was fine


@pytest.mark.slow  # a second home through neutral_image; the provider-level test covers the bytes too
def test_same_seed_and_inputs_give_identical_bytes_in_another_home(generated, tmp_path: Path, sample_bundle, tiny_model) -> None:
    home, _, _ = generated
    first = home.record("neutral_image", "gen-a")
    with avatar_home(tmp_path / "again", **diffusers_env(tiny_model)) as again:
        add_avatar(again, sample_bundle, "gen-a", "natural")
        run_identity(again, "gen-a", IMAGE_ASSETS)
        second = again.record("neutral_image", "gen-a")
    assert second.image.sha256 == first.image.sha256
    assert load_count(str(tiny_model)) == 1  # another run in the same process: still one load


def test_backgrounds_asset_uses_storyboard_prompts_and_the_avatars_preset(generated) -> None:
    from avatar_assets.video.requests import accept, write_request

    home, _, _ = generated
    request = OutputRequest(
        avatar_id="gen-b", slug="bg-one", route="multi_scene", background_prompts=["beach", "office"],
        script="Hello there. This is the second sentence. And a third one for good measure.",
    )
    accept(home.store, request, home.store.read(write_request(home.store, request)))  # what the request sensor does
    home.instance.add_dynamic_partitions("outputs", ["bg-one"])
    result = home.defs.resolve_job_def("render_video").execute_in_process(
        partition_key=cell_key("gen-b", "bg-one"),
        instance=home.instance,
        asset_selection=[dg.AssetKey(name) for name in ("script", "storyboard", "backgrounds")],
        raise_on_error=False,
    )
    assert result.success, step_errors(result)
    storyboard = home.record("storyboard", cell_key("gen-b", "bg-one"))
    record = home.record("backgrounds", cell_key("gen-b", "bg-one"))
    style = PRESETS["studio"].background_style  # gen-b's manifest asks for the studio preset
    assert record.provider.provider == "diffusers"
    assert record.provider.settings["prompts"] == [f"{s.background_prompt}, {style}" for s in storyboard.scenes]
    for ref in record.images:
        assert decode_image(home.store.read(ref)).shape[:2] == tuple(reversed(storyboard.master_size))


@pytest.mark.slow  # two homes: a classical identity, then the sheet on diffusers
def test_character_sheet_is_generated_from_a_classical_neutral_and_its_gate_explains(
    tmp_path: Path, sample_bundle: Path, tiny_model: Path
) -> None:
    root = tmp_path / "home"
    with avatar_home(root, AVATAR_IMAGE_PROVIDER="classical") as home:  # a real face: every gate passes
        add_avatar(home, sample_bundle, "sheet-a")
        classical = run_identity(home, "sheet-a", IMAGE_ASSETS)
        assert classical.success and all(e.passed for e in evaluations(classical).values())
    with avatar_home(root, **diffusers_env(tiny_model)) as home:
        result = run_identity(home, "sheet-a", ["character_sheet"])
        record = home.record("character_sheet", "sheet-a")
        geometry = json.loads(home.store.read(record.geometry))
        gate = evaluations(result)["sheet_identity_consistency"]
    names = [v.name for v in SHEET_VARIANTS]
    assert set(record.variants) == set(names) | {"turn_left", "turn_right", "smile"}
    assert record.variants["smile"] == record.variants["smiling"]  # alias: same blob
    assert geometry["generated"] == names and geometry["seed"] == record.provider.seed
    assert record.provider.provider == "diffusers" and record.provider.seed == PRESETS["natural"].seed
    assert {v["prompt"] for v in record.provider.settings["variants"].values()} == {
        PRESETS["natural"].variant_prompt(v) for v in SHEET_VARIANTS
    }
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert "front: no face found" in gate.description
    assert "three_quarter_left" in gate.metadata["variants"].value  # turned views are reported, not gated


def test_missing_model_path_fails_with_a_message_naming_the_path(tmp_path: Path, sample_bundle: Path) -> None:
    missing = tmp_path / "no-such-model"
    with avatar_home(tmp_path / "home", **diffusers_env(missing)) as home:
        add_avatar(home, sample_bundle, "lost-a")
        result = run_identity(home, "lost-a", IMAGE_ASSETS)
    assert not result.success
    error = step_errors(result)["neutral_image"]
    assert str(missing) in error and "does not exist" in error
    assert "AVATAR_IMAGE_FALLBACK=classical" in error


def test_fallback_is_recorded_and_not_reused_once_the_model_is_back(
    tmp_path: Path, sample_bundle: Path, tiny_model: Path
) -> None:
    missing, root = tmp_path / "no-such-model", tmp_path / "home"
    with avatar_home(root, **diffusers_env(missing, AVATAR_IMAGE_FALLBACK="classical")) as home:
        add_avatar(home, sample_bundle, "fall-a")
        result = run_identity(home, "fall-a", [*IMAGE_ASSETS, "character_sheet"])
        assert result.success, step_errors(result)
        neutral, sheet = home.record("neutral_image", "fall-a"), home.record("character_sheet", "fall-a")
        checks = evaluations(result)
    for record in (neutral, sheet):
        assert (record.provider.provider, record.provider.fallback_from) == ("classical", "diffusers")
        assert str(missing) in record.provider.settings["fallback_error"]
        assert record.provider.settings["attempts"] == 0  # a missing folder is not retried
    assert all(e.passed for e in checks.values()), {k: e.description for k, e in checks.items()}
    assert "fallback from diffusers" in checks["neutral_identity_consistency"].description

    with avatar_home(root, **diffusers_env(tiny_model)) as home:  # the model is back
        run_identity(home, "fall-a", ["neutral_image"])  # its gate fails on the tiny model's noise: fine here
        regenerated = home.record("neutral_image", "fall-a")
    assert regenerated.provider.provider == "diffusers"  # the cached fallback was not reused


# --------------------------------------------------------------------------- a ranged run on the model


@pytest.mark.slow  # two avatars through the upstream stages, then one ranged run of the images
def test_ranged_run_loads_once_generates_in_one_batch_and_gates_each_avatar(
    tmp_path: Path, sample_bundle: Path, tiny_model: Path, photos, img2img_calls: list[int]
) -> None:
    from avatar_assets.ops.runner import backfill
    from tests.conftest import write_bundle

    avatars = ["batch-a", "batch-b"]
    clear_generator_cache()
    img2img_calls.clear()
    with avatar_home(tmp_path / "home", **diffusers_env(tiny_model)) as home:
        for avatar_id, photo in zip(avatars, ("good", "mirrored"), strict=True):
            write_bundle(home.inbox, avatar_id, {"photos/front.jpg": photos[photo]})
            home.instance.add_dynamic_partitions("avatars", [avatar_id])
            assert run_identity(home, avatar_id, ["source_upload", "validated_inputs"]).success
        (outcome,) = backfill(
            home.defs, home.instance, [dg.AssetKey("neutral_image"), dg.AssetKey("character_sheet")], avatars,
            tags={}, echo=lambda _: None,
        )
        records = {a: home.record("neutral_image", a) for a in avatars}
        sheets = {a: home.record("character_sheet", a) for a in avatars}
    assert load_count(str(tiny_model)) == 1
    assert img2img_calls == [2]  # both portraits in one pipeline call; the sheet never ran
    assert {r.provider.provider for r in records.values()} == {"diffusers"}
    assert [r.avatar_id for r in records.values()] == avatars
    assert records["batch-a"].image.sha256 != records["batch-b"].image.sha256
    assert sheets == {"batch-a": None, "batch-b": None}  # blocked by the failed gates
    assert not outcome.success and outcome.partition == "batch-a...batch-b"
    # Each avatar failed its own gate, named with its partition: the tiny model draws noise.
    identity = [f for f in outcome.failed_checks if "neutral_identity_consistency" in f]
    assert sorted(f.split("]")[0] for f in identity) == ["neutral_image[batch-a", "neutral_image[batch-b"]
    assert all("no face found in the generated neutral image" in f for f in identity)
