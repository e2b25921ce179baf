"""The files that ship with vlm-vision: the embedded default models and the sample images.

An installed wheel carries them inside the package (`vlm_vision/data/`); a source checkout keeps them in `data/`
at the top of the repository. pyproject.toml maps the one onto the other.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

_INSTALLED = Path(__file__).resolve().parents[1] / "data"
DATA_DIR = _INSTALLED if _INSTALLED.is_dir() else Path(__file__).resolve().parents[2] / "data"

# A small SigLIP trained by this project on open emoji artwork (model card: its README.md), named "default"
# wherever a model name is taken (--model default); an index records it by that name.
DEFAULT_MODEL = DATA_DIR / "models" / "siglip-emoji"
DEFAULT_MODEL_NAME = "default"
# A tiny VLM (this SigLIP, a projector and a 4-layer Llama) that names emoji (model card: its README.md).
DEFAULT_CAPTIONER = DATA_DIR / "models" / "emoji-captioner"
SAMPLES = DATA_DIR / "samples"


def default_model() -> Path:
    """The embedded default model's folder, or CheckpointError saying what to pass instead."""
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise CheckpointError(
            f"The embedded default model is not at {DEFAULT_MODEL}: reinstall vlm-vision, or pass --model, "
            f"e.g. --model google/siglip-base-patch16-224"
        )
    return DEFAULT_MODEL
