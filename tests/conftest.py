"""Test-wide settings: never reach the network, quiet transformers, deterministic torch."""

import os

# Read by huggingface_hub at import time, so set before anything imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry or version check from app tests
# Read by ray at import time: drivers and clusters of the tests find their nodes on 127.0.0.1, not the network.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import checkpoints  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory):
    """(folder, transformers model) of a tiny random SiglipVisionModel checkpoint."""
    folder = tmp_path_factory.mktemp("tiny_vision")
    return folder, checkpoints.vision_checkpoint(folder)


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory):
    """(folder, transformers model) of a tiny random SiglipModel with a trained tokenizer."""
    folder = tmp_path_factory.mktemp("tiny_siglip")
    return folder, checkpoints.siglip_checkpoint(folder)


@pytest.fixture(scope="session")
def tiny_naflex(tmp_path_factory):
    """(folder, transformers model) of a tiny random SigLIP 2 NaFlex `Siglip2Model` with a Gemma tokenizer (patch 8,
    a 4 x 4 position grid, 24 patches per image in its processor config); the tests only read it."""
    folder = tmp_path_factory.mktemp("tiny_naflex")
    return folder, checkpoints.naflex_checkpoint(folder)


@pytest.fixture(scope="session")
def emoji_model():
    """The embedded default DualEncoder (data/models/siglip-emoji), loaded once; the index tests only read it."""
    from vlm_vision.checkpoints import DEFAULT_MODEL
    from vlm_vision.model.dual_encoder import DualEncoder

    return DualEncoder.from_pretrained(DEFAULT_MODEL)


@pytest.fixture
def umask_022():
    """The usual umask for the test's duration, so that file-mode checks mean the same on every machine."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="session")
def ann_data():
    """(base vectors, ids, queries) shared by the ANN tests: `tests.vectors.example_data()`."""
    from tests.helpers.vectors import example_data

    return example_data()


@pytest.fixture(scope="session")
def ann_indexes(ann_data):
    """One index of each type over `ann_data`, shared by the ANN tests, which only read them."""
    from vlm_vision.index import ann

    base, ids, _ = ann_data
    return {kind: ann.build_ann(base, ids, kind) for kind in ann.INDEX_TYPES}
