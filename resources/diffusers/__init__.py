"""The diffusers-backed image provider: `ImageGenerator` with a real model behind the same interface.

Selected by configuration (`resources.wiring.image_generator`): `AVATAR_IMAGE_PROVIDER=diffusers` and
`AVATAR_DIFFUSERS_MODEL=<local diffusers folder>`; `config.py` reads the rest (docs/diffusers.md).
Weights are only ever read from local folders (`local_files_only=True` in `media.diffusion`).

- `provider.py`: `DiffusersImageGenerator`, what each capability generates and how it falls back.
- `models.py`: the process-wide cache of loaded pipelines.
- `config.py`: the AVATAR_DIFFUSERS_* environment variables.

Importing this package imports neither torch nor diffusers (only `DiffusionGenerator` methods do).
"""
