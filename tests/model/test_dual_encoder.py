"""DualEncoder against transformers' SiglipModel, with a real SentencePiece tokenizer."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, SiglipImageProcessorPil, SiglipModel

from vlm_vision import CheckpointError
from vlm_vision.model.dual_encoder import DualEncoder

TEXTS = ["a photo of a red cat on the beach.", "a dog", "A BIG, shiny Tree!", "a photo of a blue car on the road."]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 30), (32, 32), (17, 61)]):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def reference_logits(folder, hf, images):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXTS, padding="max_length", return_tensors="pt").input_ids
    pixels = SiglipImageProcessorPil.from_pretrained(folder)([Image.open(p) for p in images],
                                                            return_tensors="pt").pixel_values
    with torch.no_grad():
        return hf(input_ids=ids, pixel_values=pixels).logits_per_image


def test_logits_match_siglip_model(tiny_siglip, images):
    folder, hf = tiny_siglip
    model = DualEncoder.from_pretrained(folder)
    ours = model.logits(images, TEXTS)
    ref = reference_logits(folder, hf, images)
    assert ours.shape == (3, 4)
    assert ref.std() > 0.1  # random logits that actually differ between pairs
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_tokenizer_pads_to_full_context(tiny_siglip):
    model = DualEncoder.from_pretrained(tiny_siglip[0])
    ids = model.tokenize(["a dog", "a photo of a red cat on the beach."])
    assert ids.shape == (2, 64)
    pad = model.tokenizer.pad_token_id
    assert (ids[0, 5:] == pad).all() and (ids[1, -5:] == pad).all()


def test_embeddings_are_normalised(tiny_siglip, images):
    model = DualEncoder.from_pretrained(tiny_siglip[0])
    image_emb, text_emb = model.encode_images(images), model.encode_texts(TEXTS)
    assert image_emb.shape == (3, 64) and text_emb.shape == (4, 64)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_emb.norm(dim=-1), torch.ones(4))
    # one image, a path, a PIL image, and pixel values all give the same embedding
    pixels = model.processor(images[0])
    single = [model.encode_images(images[0]), model.encode_images(Image.open(images[0])), model.encode_images(pixels)]
    for emb in single:
        torch.testing.assert_close(emb, image_emb[:1])
    # batching doesn't change results
    torch.testing.assert_close(model.encode_images(images, batch_size=2), image_emb, atol=1e-6, rtol=0)


def test_classify_sorts_sigmoid_probabilities(tiny_siglip, images):
    folder, hf = tiny_siglip
    model = DualEncoder.from_pretrained(folder)
    labels = ["red cat", "dog", "tree", "blue car"]
    result = model.classify(images[0], labels, template="a photo of a {}.")
    probs = [p for _, p in result]
    assert probs == sorted(probs, reverse=True)
    assert sorted(label for label, _ in result) == sorted(labels)
    expected = torch.sigmoid(model.logits(images[0], [f"a photo of a {x}." for x in labels]))[0]
    for label, p in result:
        assert p == pytest.approx(expected[labels.index(label)].item(), abs=1e-6)
    with pytest.raises(ValueError, match="at least one non-empty label"):
        model.classify(images[0], [" ", ""])
    for template in ("a photo", "{} and {}", "a {photo} of {}", "{"):  # no slot, two, other braces
        with pytest.raises(ValueError, match="needs one \\{\\} where the label goes"):
            model.classify(images[0], labels, template=template)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        model.encode_texts("a dog")


def test_save_pretrained_loads_in_transformers(tiny_siglip, images, tmp_path, umask_022):
    folder, hf = tiny_siglip
    model = DualEncoder.from_pretrained(folder)
    model.save_pretrained(tmp_path)
    reloaded = SiglipModel.from_pretrained(tmp_path).eval()
    for name, tensor in hf.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    torch.testing.assert_close(reference_logits(tmp_path, reloaded, images), model.logits(images, TEXTS),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(DualEncoder.from_pretrained(tmp_path).logits(images, TEXTS),
                               model.logits(images, TEXTS), atol=0, rtol=0)
    # The weights are as readable as the JSON beside them (safetensors' save_file would make them 0600).
    mode = (tmp_path / "config.json").stat().st_mode & 0o777
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == mode, oct(mode)
    (tmp_path / "vision").mkdir()
    (tmp_path / "vision" / "model.safetensors").touch(mode=0o600)  # as the old code wrote it: a re-save fixes it
    model.vision.save_pretrained(tmp_path / "vision")
    assert (tmp_path / "vision" / "model.safetensors").stat().st_mode & 0o777 == mode
    assert not list((tmp_path / "vision").glob("*.tmp"))


def test_bf16_dual_encoder_stays_close(tiny_siglip, images):
    folder, _ = tiny_siglip
    fp32 = DualEncoder.from_pretrained(folder).logits(images, TEXTS)
    bf16 = DualEncoder.from_pretrained(folder, dtype=torch.bfloat16)
    assert bf16.vision.dtype == torch.bfloat16
    assert bf16.encode_images(images).dtype == torch.float32
    torch.testing.assert_close(bf16.logits(images, TEXTS), fp32, atol=0.15, rtol=0.02)


def test_vision_only_checkpoint_is_refused(tiny_vision):
    with pytest.raises(CheckpointError, match="not a full SigLIP image-text checkpoint.*siglip_vision_model.*"
                                              "VisionTransformer.from_pretrained"):
        DualEncoder.from_pretrained(tiny_vision[0])


def test_missing_tokenizer_and_text_weights_are_named(tiny_siglip, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder, _ = tiny_siglip
    shutil.copy(folder / "config.json", tmp_path)
    shutil.copy(folder / "model.safetensors", tmp_path)
    with pytest.raises(CheckpointError, match="has no tokenizer files"):
        DualEncoder.from_pretrained(tmp_path)
    state = load_file(folder / "model.safetensors")
    del state["text_model.head.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"text tower:\n  missing \(1\): text_model.head.weight") as error:
        DualEncoder.from_pretrained(tmp_path)
    assert "looks like" not in str(error.value)  # the vision tower's foreign-architecture hints don't apply
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "siglip"


def test_fill_template_puts_each_name_in_the_one_slot():
    from vlm_vision.model.prompts import fill_template

    assert fill_template("a photo of {}.", ["cat", "red apple"]) == ["a photo of cat.", "a photo of red apple."]
    assert fill_template("{}", ["{x}"]) == ["{x}"]  # a name is never read as a template
    with pytest.raises(ValueError, match="where the class name goes"):
        fill_template("a photo", [], slot="the class name")
