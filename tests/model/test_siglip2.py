"""SigLIP 2 against transformers' own classes, on random weights: fixed-resolution checkpoints (a `SiglipModel` with
a Gemma tokenizer), and NaFlex (`Siglip2Model`): the processor, the vision tower and the dual encoder. Offline, CPU.
"""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from PIL import Image, ImageOps
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Siglip2ImageProcessorPil,
    Siglip2Model,
    Siglip2VisionModel,
)
from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

from tests.helpers import checkpoints
from tests.helpers.images import KINDS, SIZES, photo, to_8bit_gray, write_image
from vlm_vision import CheckpointError, NaFlexProcessor, VisionTransformer
from vlm_vision.model import ImageProcessor, patch_grid_size, processor_from_pretrained
from vlm_vision.model.dual_encoder import DualEncoder

TEXTS = [
    "A Photo of a CAT on the Beach.",
    "a photo of a cat on the beach",
    "emoji: 😀 smiling face!!",
    "punctuation, (brackets) & symbols #1",
    " ".join(["a very long caption"] * 100),  # past the 64-token context
]
ASPECTS = [(60, 20), (20, 60), (37, 37), (5, 300)]  # (width, height): wide, tall, square, a sliver


def images(sizes=ASPECTS) -> list[Image.Image]:
    return [photo(w, h, seed=i) for i, (w, h) in enumerate(sizes)]


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip2_fixed")
    return folder, checkpoints.siglip2_fixed_checkpoint(folder)


# --- the NaFlex processor -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_naflex_processor_matches_transformers_for_every_mode_and_size(tmp_path, kind, width, height):
    path = write_image(tmp_path, kind, width, height)
    opened = ImageOps.exif_transpose(Image.open(path))
    theirs_input = to_8bit_gray(opened) if opened.mode == "I;16" else opened
    for max_num_patches in (1, 7, 256):
        ours = NaFlexProcessor(max_num_patches=max_num_patches)
        theirs = Siglip2ImageProcessorPil(max_num_patches=max_num_patches)(
            images=convert(theirs_input), return_tensors="pt")
        for got in (ours(path), ours(opened)):
            assert got.keys() == theirs.keys()
            for key in got:
                assert got[key].dtype == theirs[key].dtype, key
                assert torch.equal(got[key], theirs[key]), (key, max_num_patches)


def convert(image: Image.Image) -> Image.Image:
    """What our loader makes of any PIL mode (transformers' PIL NaFlex processor takes RGB as it is)."""
    from vlm_vision.model import convert_to_rgb

    return convert_to_rgb(image)


def test_naflex_processor_batches_mixed_aspect_ratios_and_exif_rotations(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 40x20 file shows 20x40
    path = tmp_path / "rotated.jpg"
    photo(40, 20).save(path, "JPEG", exif=exif, quality=95)
    batch = [*images(), path]
    ours = NaFlexProcessor(patch_size=8, max_num_patches=24)(batch)
    theirs = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24)(
        images=[*images(), ImageOps.exif_transpose(Image.open(path))], return_tensors="pt")
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert ours["spatial_shapes"].tolist()[-1][0] > ours["spatial_shapes"].tolist()[-1][1]  # shown tall
    assert ours["pixel_attention_mask"].sum(1).tolist() == ours["spatial_shapes"].prod(1).tolist()


def test_patch_grid_size_follows_transformers():
    rng = random.Random(0)
    cases = [(1, 1), (1, 10_000), (10_000, 1), (224, 224), (480, 640), (3, 517)]
    cases += [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(200)]
    for height, width in cases:
        for patch, budget in ((16, 256), (14, 729), (8, 7), (16, 1024)):
            assert patch_grid_size(height, width, patch, budget) == get_image_size_for_max_num_patches(
                height, width, patch, budget), (height, width, patch, budget)


def test_naflex_processor_config_round_trips_through_transformers(tmp_path):
    Siglip2ImageProcessorPil(patch_size=14, max_num_patches=100, resample=3, image_mean=[0.4, 0.5, 0.6]
                             ).save_pretrained(tmp_path / "theirs")
    ours = processor_from_pretrained(tmp_path / "theirs")
    assert ours == NaFlexProcessor(patch_size=14, max_num_patches=100, resample=3, image_mean=(0.4, 0.5, 0.6))
    ours.save_pretrained(tmp_path / "ours")
    theirs = Siglip2ImageProcessorPil.from_pretrained(tmp_path / "ours")
    assert (theirs.patch_size, theirs.max_num_patches, theirs.resample, list(theirs.image_mean)) == (
        14, 100, 3, [0.4, 0.5, 0.6])
    assert isinstance(processor_from_pretrained(tmp_path / "ours"), NaFlexProcessor)
    ImageProcessor().save_pretrained(tmp_path / "fixed")
    assert type(processor_from_pretrained(tmp_path / "fixed")) is ImageProcessor
    with pytest.raises(ValueError, match="max_num_patches must be a positive int"):
        NaFlexProcessor(max_num_patches=0)


# --- the NaFlex vision tower --------------------------------------------------------------------------------------

SHAPES = {  # transformers' Siglip2VisionConfig fields
    "B/16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 patch_size=16, num_patches=256),
    "So400m/16, 2 layers": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=2,
                                num_attention_heads=16, patch_size=16, num_patches=256),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_naflex_tower_matches_transformers(tmp_path, shape):
    theirs = checkpoints.naflex_vision_checkpoint(tmp_path, **SHAPES[shape])
    ours = VisionTransformer.from_pretrained(tmp_path)
    assert ours.config.naflex and ours.config.grid_size == 16
    inputs = NaFlexProcessor(max_num_patches=64)(images([(300, 100), (100, 300), (64, 64), (5, 300)]))
    real = inputs["pixel_attention_mask"].bool()
    with torch.no_grad():
        expected = theirs(**inputs)
        for attention in ("sdpa", "eager"):
            ours.set_attn_implementation(attention)
            got = ours(**inputs)
            assert (got.last_hidden_state - expected.last_hidden_state)[real].abs().max() < 1e-5, attention
            assert (got.pooler_output - expected.pooler_output).abs().max() < 1e-5, attention
    # Each image alone, unpadded, gives its own answer: the padding is masked out everywhere.
    alone = NaFlexProcessor(max_num_patches=64)(images([(300, 100)]))
    with torch.no_grad():
        assert (ours(**alone).pooler_output[0] - got.pooler_output[0]).abs().max() < 1e-5


def test_naflex_tower_saves_what_transformers_loads_and_back(tmp_path):
    checkpoints.naflex_vision_checkpoint(tmp_path / "theirs")
    ours = VisionTransformer.from_pretrained(tmp_path / "theirs")
    ours.save_pretrained(tmp_path / "ours")
    theirs = Siglip2VisionModel.from_pretrained(tmp_path / "ours").eval()
    again = VisionTransformer.from_pretrained(tmp_path / "ours")
    assert again.config == ours.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))
    inputs = NaFlexProcessor(patch_size=8, max_num_patches=16)(images())
    with torch.no_grad():
        assert torch.allclose(theirs(**inputs).pooler_output, ours(**inputs).pooler_output, atol=1e-5)


def test_every_naflex_parameter_gets_a_gradient(tmp_path):
    checkpoints.naflex_vision_checkpoint(tmp_path)
    tower = VisionTransformer.from_pretrained(tmp_path).train()
    tower(**NaFlexProcessor(patch_size=8, max_num_patches=16)(images())).pooler_output.square().sum().backward()
    assert [n for n, p in tower.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_naflex_and_fixed_resolution_are_not_mixed_up(tmp_path, tiny_vision):
    checkpoints.naflex_vision_checkpoint(tmp_path / "naflex")
    naflex = VisionTransformer.from_pretrained(tmp_path / "naflex")
    fixed = VisionTransformer.from_pretrained(tiny_vision[0])
    with pytest.raises(CheckpointError, match="These weights are a fixed-resolution SigLIP tower .* a NaFlex one"):
        VisionTransformer.from_pretrained(tiny_vision[0] / "model.safetensors", config=naflex.config)
    with pytest.raises(CheckpointError, match="These weights are a SigLIP 2 NaFlex tower .* a fixed-resolution one"):
        VisionTransformer.from_pretrained(tmp_path / "naflex" / "model.safetensors", config=fixed.config)
    with pytest.raises(ValueError, match="Use vlm_vision.NaFlexProcessor"):
        naflex(torch.zeros(1, 3, 32, 32))
    patches = NaFlexProcessor(patch_size=8, max_num_patches=16)(images())
    with pytest.raises(ValueError, match="inputs of SigLIP 2 NaFlex towers"):
        fixed(**patches)
    patches["spatial_shapes"][0] = torch.tensor([5, 5])
    with pytest.raises(ValueError, match="must count its unmasked patches"):
        naflex(**patches)


# --- dual encoders: NaFlex, and fixed-resolution SigLIP 2 ---------------------------------------------------------

def test_naflex_dual_encoder_logits_match_siglip2_model(tiny_naflex, tmp_path):
    folder, theirs = tiny_naflex
    ours = DualEncoder.from_pretrained(folder)
    assert isinstance(ours.processor, NaFlexProcessor) and ours.processor.max_num_patches == 24
    tokens = AutoTokenizer.from_pretrained(folder)(TEXTS, padding="max_length", max_length=64, truncation=True,
                                                   return_tensors="pt")
    assert torch.equal(ours.tokenize(TEXTS), tokens.input_ids)
    # transformers' Siglip2Tokenizer lower-cases, as SigLIP 2 was trained
    assert torch.equal(ours.tokenize(["A CAT"]), ours.tokenize(["a cat"]))
    inputs = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24)(images=images(), return_tensors="pt")
    with torch.no_grad():
        expected = theirs(input_ids=tokens.input_ids, **inputs).logits_per_image
    assert (ours.logits(images(), TEXTS) - expected).abs().max() < 1e-4

    ours.save_pretrained(tmp_path)
    again = Siglip2Model.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert processor.image_processor.max_num_patches == 24
    with torch.no_grad():
        assert (again(input_ids=tokens.input_ids, **inputs).logits_per_image - expected).abs().max() < 1e-5


def test_fixed_resolution_siglip2_tokenizes_and_scores_as_transformers(fixed):
    folder, theirs = fixed
    ours = DualEncoder.from_pretrained(folder)
    assert not ours.vision.config.naflex
    theirs_tokens = AutoTokenizer.from_pretrained(folder)(TEXTS, padding="max_length", max_length=64,
                                                          truncation=True, return_tensors="pt").input_ids
    processed = AutoProcessor.from_pretrained(folder)(text=TEXTS, images=images(), padding="max_length",
                                                      max_length=64, truncation=True, return_tensors="pt")
    ids = ours.tokenize(TEXTS)
    assert torch.equal(ids, theirs_tokens) and torch.equal(ids, processed.input_ids)
    assert ids.shape == (len(TEXTS), 64) and ids[-1, -1] != ours.tokenizer.pad_token_id  # the long one fills it
    # The GemmaTokenizer these checkpoints declare keeps case, in transformers too: docs/siglip2.md says to lower-case
    assert not torch.equal(ours.tokenize(["A CAT"]), ours.tokenize(["a cat"]))
    with torch.no_grad():
        expected = theirs(input_ids=ids, pixel_values=processed.pixel_values).logits_per_image
    assert (ours.logits(images(), TEXTS) - expected).abs().max() < 1e-4


def test_a_processor_of_the_other_kind_is_refused(tiny_siglip, tmp_path):
    shutil.copytree(tiny_siglip[0], tmp_path / "mixed")
    NaFlexProcessor().save_pretrained(tmp_path / "mixed")
    with pytest.raises(CheckpointError, match="is a NaFlexProcessor but the vision tower is fixed-resolution"):
        DualEncoder.from_pretrained(tmp_path / "mixed")


@pytest.mark.slow  # two compiles, about a minute on 2 cores
def test_naflex_towers_run_in_the_fast_and_int8_modes(tmp_path):
    pytest.importorskip("torchao")
    from vlm_vision import optimize

    checkpoints.naflex_vision_checkpoint(tmp_path)
    inputs = NaFlexProcessor(patch_size=8, max_num_patches=16)(images())
    exact = VisionTransformer.from_pretrained(tmp_path)
    with torch.no_grad():
        expected = exact(**inputs).pooler_output
        fast = optimize(VisionTransformer.from_pretrained(tmp_path), "fast")(**inputs).pooler_output
        int8 = optimize(VisionTransformer.from_pretrained(tmp_path), "int8")(**inputs).pooler_output
    assert (fast - expected).abs().max() < 1e-4
    assert torch.nn.functional.cosine_similarity(int8, expected).min() >= 0.999



def test_naflex_towers_run_in_onnx_runtime(tiny_naflex, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from vlm_vision import optimize

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the exported graphs go there
    exact = DualEncoder.from_pretrained(tiny_naflex[0])
    for mode, tolerance in (("onnx", 1e-4), ("onnx-int8", None)):
        onnx = optimize(DualEncoder.from_pretrained(tiny_naflex[0]), mode)
        for budget, count in ((24, 4), (9, 1)):  # the graph's batch and patch count are both dynamic
            inputs = NaFlexProcessor(patch_size=8, max_num_patches=budget)(images()[:count])
            got, expected = onnx.encode_images(inputs), exact.encode_images(inputs)
            if tolerance is not None:
                assert (got - expected).abs().max() < tolerance, (mode, budget)
            else:
                assert torch.nn.functional.cosine_similarity(got, expected).min() >= 0.999, (mode, budget)
