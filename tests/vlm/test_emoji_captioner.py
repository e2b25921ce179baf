"""The shipped emoji captioner: fits its size budget, loads from any working directory, names held-out emoji.

The floor comes from the model card (data/models/emoji-captioner/README.md): its exact match on
the committed held-out subset, less a small margin for float differences across machines.
A retrained model must update both.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from vlm_vision.checkpoints import DEFAULT_MODEL
from vlm_vision.model.dual_encoder import DualEncoder
from vlm_vision.training.data import read_records
from vlm_vision.vlm.model import VisionLanguageModel
from vlm_vision.vlm.train import evaluate_captions

ROOT = Path(__file__).resolve().parents[2]
CAPTIONER = ROOT / "data" / "models" / "emoji-captioner"
HELD_OUT = ROOT / "data" / "emoji-eval" / "twitter" / "captions.jsonl"  # Twemoji: a style never trained on
# Model card: 20.00% exact match (60 of 300) and 72.74% token accuracy on this subset; floors ~5 images lower
# (55 of 300 is 0.18333334 in float32).
EXACT_MATCH_FLOOR = 0.183
TOKEN_ACCURACY_FLOOR = 0.71
# Three held-out images it names right, each token ahead of the runner-up by at least 4.1 nats (see the card).
NAMED = {"images/1F46D.png": "women holding hands", "images/1F1E8-1F1FA.png": "flag Cuba",
         "images/1F1F2-1F1F1.png": "flag Mali"}


@pytest.fixture(scope="module")
def model():
    return VisionLanguageModel.from_pretrained(CAPTIONER)


def test_fits_the_size_budget_with_a_card():
    size = sum(f.stat().st_size for f in CAPTIONER.rglob("*") if f.is_file())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MiB"
    assert (CAPTIONER / "README.md").is_file()
    config = json.loads((CAPTIONER / "vlm_config.json").read_text())
    assert config["vision"] is None and config["language_model"] is None  # both inside: no paths to resolve


def test_loads_from_another_working_directory(model, tmp_path):
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        elsewhere = VisionLanguageModel.from_pretrained(CAPTIONER)
        os.chdir(ROOT)
        relative = VisionLanguageModel.from_pretrained("data/models/emoji-captioner")
    finally:
        os.chdir(cwd)
    for loaded in (elsewhere, relative):
        for key, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], tensor), key


def test_reads_the_embedded_siglips_tower(model):
    """The captioner's tower is a copy of the shipped SigLIP's: retraining one without the other fails here."""
    siglip = DualEncoder.from_pretrained(DEFAULT_MODEL).vision.state_dict()
    tower = model.vision.state_dict()
    assert tower.keys() == siglip.keys()
    assert all(torch.equal(tower[key], siglip[key]) for key in siglip)


def test_names_three_held_out_images(model):
    images = [HELD_OUT.parent / path for path in NAMED]
    assert model.prompt == "<image> name:"  # the prompt it was trained with, saved in its vlm_config.json
    assert model.generate(images) == list(NAMED.values())


def test_held_out_exact_match_floor(model):
    records = read_records(HELD_OUT)
    result = evaluate_captions(model, records, model.prompt)
    assert result.num_images == 300
    assert result.exact_match >= EXACT_MATCH_FLOOR and result.token_accuracy >= TOKEN_ACCURACY_FLOOR, result
