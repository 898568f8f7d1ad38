"""DiffusionGenerator against a real (tiny, random-weight) Stable Diffusion pipeline on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from avatar_assets.media.diffusion import (
    DiffusionGenerator,
    GenerationError,
    GenerationSettings,
    ModelUnavailable,
)
from tests.media.tiny_sd import build_tiny_sd

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS = GenerationSettings(
    prompt="a portrait of an astronaut",
    steps=4,
    guidance_scale=7.5,
    strength=0.75,
    seed=0,
    width=64,
    height=64,
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def generator(tiny_model: Path) -> DiffusionGenerator:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        gen = DiffusionGenerator(tiny_model, device="cpu")
        gen.load()
    return gen


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_loads_offline_from_local_path(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen = DiffusionGenerator(tiny_model, device="cpu")
    gen.load()
    assert gen.load_seconds is not None and gen.load_seconds > 0
    assert type(gen._loaded().text2img).__name__ == "StableDiffusionPipeline"
    assert type(gen._loaded().img2img).__name__ == "StableDiffusionImg2ImgPipeline"


def test_img2img_shares_components_with_text2img(generator: DiffusionGenerator) -> None:
    pipes = generator._loaded()
    assert pipes.img2img.unet is pipes.text2img.unet
    assert pipes.img2img.vae is pipes.text2img.vae


def test_text2img_shape_and_dtype(generator: DiffusionGenerator) -> None:
    images = generator.text2img(["a cat", "a dog"], SETTINGS)
    assert len(images) == 2
    for image in images:
        assert image.shape == (64, 64, 3)
        assert image.dtype == np.uint8


def test_img2img_output_size_equals_input_size(generator: DiffusionGenerator) -> None:
    inputs = [photo(70, 50), photo(64, 64, seed=1)]
    outputs = generator.img2img(inputs, SETTINGS)
    assert [o.shape for o in outputs] == [(70, 50, 3), (64, 64, 3)]
    assert all(o.dtype == np.uint8 for o in outputs)


def test_img2img_without_size_uses_input_size(generator: DiffusionGenerator) -> None:
    inputs = [photo(44, 60), photo(64, 64, seed=1)]
    outputs = generator.img2img(inputs, replace(SETTINGS, width=None, height=None))
    assert [o.shape for o in outputs] == [(44, 60, 3), (64, 64, 3)]


def test_same_seed_gives_identical_bytes(generator: DiffusionGenerator) -> None:
    first = generator.text2img(["a cat"], SETTINGS, seeds=[7])[0]
    second = generator.text2img(["a cat"], SETTINGS, seeds=[7])[0]
    assert first.tobytes() == second.tobytes()
    source = photo(64, 64)
    assert (
        generator.img2img([source], SETTINGS, seeds=[7])[0].tobytes()
        == generator.img2img([source], SETTINGS, seeds=[7])[0].tobytes()
    )


def test_different_seeds_differ(generator: DiffusionGenerator) -> None:
    first, second = generator.text2img(["a cat", "a cat"], SETTINGS, seeds=[1, 2])
    assert not np.array_equal(first, second)
    source = photo(64, 64)
    a, b = generator.img2img([source, source], SETTINGS, seeds=[1, 2])
    assert not np.array_equal(a, b)


def test_default_seeds_count_up_from_settings_seed(generator: DiffusionGenerator) -> None:
    implicit = generator.text2img(["a cat", "a cat"], replace(SETTINGS, seed=5))
    explicit = generator.text2img(["a cat", "a cat"], SETTINGS, seeds=[5, 6])
    assert all(np.array_equal(a, b) for a, b in zip(implicit, explicit, strict=True))


@pytest.mark.parametrize("scheduler", [None, "euler", "dpm++"])
def test_batch_equals_one_by_one(generator: DiffusionGenerator, scheduler: str | None) -> None:
    """Per-image generators make batching invisible up to float rounding: CPU kernels sum in a
    batch-size-dependent order, so a pixel may move by one level (measured: max diff 1, not 0)."""
    settings = replace(SETTINGS, scheduler=scheduler)
    prompts = ["a cat", "a dog", "a cat", "an astronaut"]
    seeds = [1, 2, 3, 4]
    batched = generator.text2img(prompts, settings, seeds=seeds, batch_size=4)
    single = [generator.text2img([p], settings, seeds=[s])[0] for p, s in zip(prompts, seeds, strict=True)]
    for a, b in zip(batched, single, strict=True):
        assert np.abs(a.astype(np.int16) - b).max() <= 1

    sources = [photo(64, 64, seed=i) for i in range(4)]
    batched = generator.img2img(sources, settings, seeds=seeds, batch_size=4)
    single = [generator.img2img([x], settings, seeds=[s])[0] for x, s in zip(sources, seeds, strict=True)]
    for a, b in zip(batched, single, strict=True):
        assert np.abs(a.astype(np.int16) - b).max() <= 1


def test_missing_path_raises_model_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelUnavailable, match=str(missing)):
        DiffusionGenerator(missing, device="cpu").load()


def test_folder_without_model_index_raises_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="model_index.json"):
        DiffusionGenerator(tmp_path, device="cpu").load()


def test_broken_folder_raises_model_unavailable(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "model_index.json").write_bytes((tiny_model / "model_index.json").read_bytes())
    with pytest.raises(ModelUnavailable, match=str(tmp_path)):
        DiffusionGenerator(tmp_path, device="cpu").load()


def test_pipeline_failure_raises_generation_error_with_context(
    generator: DiffusionGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_unet(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unet exploded")

    monkeypatch.setattr(generator._loaded().text2img.unet, "forward", broken_unet)
    with pytest.raises(GenerationError, match=r"text2img images \[0, 1\].*'a cat'.*unet exploded"):
        generator.text2img(["a cat", "a dog"], SETTINGS)


def test_img2img_with_one_prompt_per_image_equals_one_by_one(generator: DiffusionGenerator) -> None:
    sources = [photo(64, 64, seed=i) for i in range(3)]
    prompts = ["a smiling face", "a face in profile", "a face, cool light"]
    batched = generator.img2img(sources, SETTINGS, seeds=[5, 5, 5], batch_size=3, prompts=prompts)
    single = [generator.img2img([x], replace(SETTINGS, prompt=p), seeds=[5])[0] for x, p in zip(sources, prompts, strict=True)]
    for a, b in zip(batched, single, strict=True):
        assert np.abs(a.astype(np.int16) - b).max() <= 1
    # The prompt really is per image: the same source under two prompts gives two pictures.
    same_source = generator.img2img([sources[0]] * 2, SETTINGS, seeds=[5, 5], prompts=prompts[:2])
    assert np.abs(same_source[0].astype(np.int16) - same_source[1]).mean() > 0.5
    with pytest.raises(ValueError, match="prompts"):
        generator.img2img(sources, SETTINGS, prompts=prompts[:2])


def test_invalid_inputs_are_rejected_before_generation(generator: DiffusionGenerator) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        generator.img2img([np.zeros((64, 64), dtype=np.uint8)], SETTINGS)
    with pytest.raises(ValueError, match="seeds"):
        generator.text2img(["a", "b"], SETTINGS, seeds=[1])
    with pytest.raises(ValueError, match="scheduler"):
        GenerationSettings(scheduler="lms")
    with pytest.raises(ValueError, match="multiple of 8"):
        GenerationSettings(width=60)


def test_info_fields(generator: DiffusionGenerator, tiny_model: Path) -> None:
    info = generator.info()
    assert set(info) == {"provider", "model_id", "version", "device", "dtype", "load_seconds"}
    assert info["provider"] == "diffusers"
    assert info["model_id"].startswith("tiny-sd@")
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"
    assert isinstance(info["load_seconds"], float)
    import diffusers

    assert info["version"] == diffusers.__version__
    json.dumps(info)


def test_module_import_does_not_load_torch_or_diffusers() -> None:
    code = (
        "import sys, avatar_assets.media.diffusion\n"
        "heavy = sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
