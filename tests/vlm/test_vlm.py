"""VisionLanguageModel: parity with transformers' Llava, label masking, freezing, overfitting
a few captions, batched generation, and save/load. Everything is tiny, random and offline."""

import json
import time

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

from tests.helpers.checkpoints import TINY_VISION, perturb_
from tests.helpers.lm import llama_config, tiny_llama, tiny_tokenizer
from vlm_vision import CheckpointError, ImageProcessor, NaFlexProcessor, VisionConfig, VisionTransformer
from vlm_vision.vlm.model import (
    CONFIG_NAME,
    IGNORE_INDEX,
    PROJECTOR_WEIGHTS,
    VisionLanguageModel,
    _reference,
    positions,
)
from vlm_vision.vlm.projector import Projector, ProjectorConfig

N_IMAGE = (TINY_VISION["image_size"] // TINY_VISION["patch_size"]) ** 2  # 16 image tokens per image
CAPTIONS = ["a red cat sits on a mat", "two blue dogs run in the park", "one green bird sings loudly",
            "a yellow fish swims"]


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: a second intra-op thread buys nothing, and on a busy machine its
    OpenMP synchronisation turned 10 ms training steps into 0.1-1.8 s ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vlm(tokenizer=None, seed: int = 0, **projector) -> VisionLanguageModel:
    """A random tiny SigLIP tower + projector + tiny Llama."""
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    vision = VisionTransformer(VisionConfig(**TINY_VISION)).eval()
    config = ProjectorConfig(**(dict(kind="mlp2x_gelu", vision_dim=64, lm_dim=64) | projector))
    return VisionLanguageModel(vision, Projector(config), tiny_llama(tokenizer, seed), tokenizer,
                               ImageProcessor(size=(32, 32)))


def llava_and_ours(feature_layer: int = -2) -> tuple[LlavaForConditionalGeneration, VisionLanguageModel]:
    """A random Llava (SigLIP tower, mlp2x_gelu projector, tiny Llama) and our model holding its weights."""
    tokenizer = tiny_tokenizer()
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(**TINY_VISION),
        text_config=llama_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=N_IMAGE,
        projector_hidden_act="gelu",
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy="full",  # SigLIP has no class token to drop
    )
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(config).eval()
    perturb_(llava, seed=0)
    state = llava.state_dict()

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    vision = VisionTransformer.from_hf_state_dict(part("model.vision_tower."), VisionConfig(**TINY_VISION))
    projector = Projector(ProjectorConfig(kind="mlp2x_gelu", vision_dim=64, lm_dim=64, feature_layer=feature_layer))
    projector.load_state_dict(part("model.multi_modal_projector."), strict=True)
    lm = tiny_llama(tokenizer)
    lm.load_state_dict({f"model.{k}": v for k, v in part("model.language_model.").items()}
                       | {"lm_head.weight": state["lm_head.weight"]}, strict=True)
    return llava, VisionLanguageModel(vision.eval(), projector, lm, tokenizer, ImageProcessor(size=(32, 32))).eval()


@torch.no_grad()
def test_logits_match_transformers_llava():
    llava, ours = llava_and_ours(feature_layer=-2)
    pixel_values = torch.randn(2, 3, 32, 32)
    same_length = ours.prepare_inputs(pixel_values, ["what is this ?", "<image> describe the picture please"],
                                      ["a red cat"] * 2)
    assert same_length["attention_mask"].all()
    mine = ours(**same_length)
    theirs = llava(pixel_values=pixel_values, input_ids=same_length["input_ids"],
                   attention_mask=same_length["attention_mask"], labels=same_length["labels"])
    diff = (mine.logits - theirs.logits).abs().max().item()
    print(f"Llava parity, equal lengths: max |logits diff| = {diff:.3g}")
    assert diff < 1e-4
    torch.testing.assert_close(mine.loss, theirs.loss, rtol=0, atol=1e-5)

    # Left-padded batch: Llava agrees once it gets the same position ids (it doesn't derive them from the mask).
    padded = ours.prepare_inputs(pixel_values, ["caption:", "what is this ? a"], ["a red cat", "two blue dogs"])
    mask = padded["attention_mask"].bool()
    assert not mask.all()
    mine = ours(**padded).logits
    theirs = llava(pixel_values=pixel_values, input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                   position_ids=positions(padded["attention_mask"])).logits
    diff = (mine - theirs)[mask].abs().max().item()
    print(f"Llava parity, left-padded: max |logits diff| = {diff:.3g}")
    assert diff < 1e-4


def test_inputs_and_labels_at_exact_positions():
    vlm = tiny_vlm()
    tok = vlm.tokenizer
    bos, eos, pad, image = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, vlm.image_token_id
    words = tok.convert_tokens_to_ids
    batch = vlm.prepare_inputs(torch.zeros(2, 3, 32, 32), ["caption:", "what is this ? <image> a"],
                               ["a red cat", "two blue dogs"])
    prompt0 = [bos] + [image] * N_IMAGE + words(["caption:"])  # no <image> in the prompt: prepended
    prompt1 = [bos] + words(["what", "is", "this", "?"]) + [image] * N_IMAGE + words(["a"])
    caption0, caption1 = words(["a", "red", "cat"]) + [eos], words(["two", "blue", "dogs"]) + [eos]
    padding = len(prompt1) - len(prompt0)
    assert batch["input_ids"].tolist() == [[pad] * padding + prompt0 + caption0, prompt1 + caption1]
    assert batch["attention_mask"].tolist() == [[0] * padding + [1] * (len(prompt0) + 4), [1] * (len(prompt1) + 4)]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] * (padding + len(prompt0)) + caption0,
        [IGNORE_INDEX] * len(prompt1) + caption1,
    ]
    # Generation batches have no labels, and are left-padded the same way.
    assert "labels" not in vlm.prepare_inputs(torch.zeros(1, 3, 32, 32), "caption:")


def test_prompt_rules_and_image_inputs():
    vlm = tiny_vlm()
    pixels = torch.zeros(1, 3, 32, 32)
    explicit = vlm.prepare_inputs(pixels, "<image>caption:")["input_ids"]
    assert torch.equal(vlm.prepare_inputs(pixels, "caption:")["input_ids"], explicit)
    with pytest.raises(ValueError, match="exactly one '<image>'; got 2"):
        vlm.prepare_inputs(pixels, "<image> and <image>")
    with pytest.raises(ValueError, match="one prompt .* per image: 1 images, 2 prompts"):
        vlm.prepare_inputs(pixels, ["a", "b"])
    with pytest.raises(ValueError, match="don't fill the image-token positions"):
        vlm(pixel_values=torch.zeros(2, 3, 32, 32), input_ids=explicit)
    images = [Image.new("RGB", (40, 30), color) for color in ("red", "blue")]
    batch = vlm.prepare_inputs(images, "caption:")
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    torch.testing.assert_close(batch["pixel_values"], vlm.processor(images))


def test_missing_image_token_is_added_with_deterministic_embedding_rows():
    tokenizer = tiny_tokenizer(image_token=None)
    vocab = len(tokenizer)
    lm = tiny_llama(tokenizer)
    old_in = lm.get_input_embeddings().weight.detach().clone()
    old_out = lm.get_output_embeddings().weight.detach().clone()
    projector = Projector(ProjectorConfig(kind="linear", vision_dim=64, lm_dim=64))
    vlm = VisionLanguageModel(VisionTransformer(VisionConfig(**TINY_VISION)), projector, lm, tokenizer,
                              ImageProcessor(size=(32, 32)))
    assert vlm.image_token_id == vocab and len(tokenizer) == vocab + 1
    assert lm.get_input_embeddings().num_embeddings == vocab + 1 and lm.config.vocab_size == vocab + 1
    torch.testing.assert_close(lm.get_input_embeddings().weight[:vocab], old_in, rtol=0, atol=0)
    torch.testing.assert_close(lm.get_input_embeddings().weight[vocab], old_in.mean(0))
    torch.testing.assert_close(lm.get_output_embeddings().weight[vocab], old_out.mean(0))


@pytest.mark.parametrize("freeze_vision, freeze_lm", [(True, True), (True, False), (False, True)])
def test_gradients_reach_exactly_the_unfrozen_parts(freeze_vision, freeze_lm):
    vlm = tiny_vlm()
    vlm.freeze(vision=freeze_vision, language_model=freeze_lm)
    vlm.train()
    batch = vlm.prepare_inputs(torch.randn(2, 3, 32, 32), ["caption:", "what is this ?"], CAPTIONS[:2])
    vlm(**batch).loss.backward()
    for name, p in vlm.named_parameters():
        part = name.split(".")[0]
        # patch features (feature_layer -1) never pass through the tower's attention-pooling head
        trains = (part == "projector" or (part == "language_model" and not freeze_lm)
                  or (part == "vision" and not freeze_vision and not name.startswith("vision.head.")))
        assert (p.grad is not None) == trains, name
        if trains:
            assert p.grad.abs().sum() > 0, name


def test_overfits_four_captions_then_generates_them():
    start = time.perf_counter()
    vlm = tiny_vlm(seed=1)
    vlm.freeze(vision=True, language_model=False)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(4, 3, 32, 32, generator=generator)
    batch = vlm.prepare_inputs(pixel_values, "caption:", CAPTIONS)  # same prompt: only the image tells them apart
    optimizer = torch.optim.Adam([p for p in vlm.parameters() if p.requires_grad], lr=3e-3)
    vlm.train()
    losses = []
    for _ in range(150):
        loss = vlm(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    vlm.eval()
    print(f"overfit: loss {losses[0]:.3f} -> {losses[-1]:.4f} in {time.perf_counter() - start:.1f} s")
    assert losses[-1] <= 0.1 * losses[0]
    assert vlm.generate(pixel_values, "caption:") == CAPTIONS
    assert vlm.generate(pixel_values[2:3], "caption:") == CAPTIONS[2:3]


def test_batched_generation_equals_one_at_a_time():
    vlm = tiny_vlm(seed=2).eval()
    pixel_values = torch.randn(3, 3, 32, 32)
    prompts = ["caption:", "what is this ? <image> a red cat sits on a", "describe the picture please"]
    kwargs = dict(min_new_tokens=6, max_new_tokens=6)  # random weights: run past any early EOS
    batched = vlm.generate_ids(pixel_values, prompts, **kwargs)
    for i, prompt in enumerate(prompts):
        alone = vlm.generate_ids(pixel_values[i:i + 1], prompt, **kwargs)
        assert batched[i].tolist() == alone[0].tolist(), prompt
    assert batched.shape == (3, 6)
    texts = vlm.tokenizer.batch_decode(batched, skip_special_tokens=True)
    assert vlm.generate(pixel_values, prompts, **kwargs) == texts


def test_the_trained_prompt_is_saved_with_the_model_and_used_when_none_is_given(tmp_path):
    vlm = tiny_vlm(seed=2).eval()
    vlm.prompt = "caption:"
    pixel_values = torch.randn(2, 3, 32, 32)
    kwargs = dict(min_new_tokens=4, max_new_tokens=4)
    assert vlm.generate_ids(pixel_values, **kwargs).tolist() == vlm.generate_ids(pixel_values, "caption:",
                                                                                 **kwargs).tolist()
    vlm.save_pretrained(tmp_path / "vlm", save_vision=True, save_language_model=True)
    assert json.loads((tmp_path / "vlm" / CONFIG_NAME).read_text())["prompt"] == "caption:"
    assert VisionLanguageModel.from_pretrained(tmp_path / "vlm").prompt == "caption:"

    # A folder written before the prompt was saved in its config: training wrote it in training_config.json.
    config = json.loads((tmp_path / "vlm" / CONFIG_NAME).read_text())
    del config["prompt"]
    (tmp_path / "vlm" / CONFIG_NAME).write_text(json.dumps(config))
    (tmp_path / "vlm" / "training_config.json").write_text(json.dumps({"prompt": "<image> name:", "steps": 3}))
    assert VisionLanguageModel.from_pretrained(tmp_path / "vlm").prompt == "<image> name:"
    (tmp_path / "vlm" / "training_config.json").unlink()
    assert VisionLanguageModel.from_pretrained(tmp_path / "vlm").prompt == ""  # none known: the image alone


@torch.no_grad()
def test_save_and_load_give_equal_logits(tmp_path, umask_022):
    tokenizer = tiny_tokenizer(image_token=None)  # the LM on disk has no <image> row; loading must add the same one
    tiny_llama(tokenizer).save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    VisionTransformer(VisionConfig(**TINY_VISION)).save_pretrained(tmp_path / "tower")
    vision = VisionTransformer.from_pretrained(tmp_path / "tower")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    projector = Projector(ProjectorConfig(kind="pixel_shuffle", vision_dim=64, lm_dim=64, feature_layer=-2))
    vlm = VisionLanguageModel(vision, projector, lm, tokenizer, ImageProcessor(size=(32, 32)),
                              vision_name_or_path=str(tmp_path / "tower")).eval()
    assert vlm.num_image_tokens == N_IMAGE // 4
    batch = vlm.prepare_inputs(torch.randn(2, 3, 32, 32), ["caption:", "what is this ?"], CAPTIONS[:2])
    expected = vlm(**batch).logits

    vlm.save_pretrained(tmp_path / "by_reference")
    assert not (tmp_path / "by_reference" / "vision").exists()
    assert not (tmp_path / "by_reference" / "language_model").exists()
    saved = json.loads((tmp_path / "by_reference" / CONFIG_NAME).read_text())
    assert (saved["vision"], saved["language_model"]) == (str(tmp_path / "tower"), str(tmp_path / "lm"))
    loaded = VisionLanguageModel.from_pretrained(tmp_path / "by_reference")
    assert loaded.projector.config == projector.config and not loaded.training
    torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)

    perturb_(vlm.language_model, seed=3)  # as if it had been trained: it must be written out
    expected = vlm(**batch).logits
    vlm.save_pretrained(tmp_path / "whole", save_vision=True, save_language_model=True)
    assert (tmp_path / "whole" / "vision" / "model.safetensors").is_file()
    loaded = VisionLanguageModel.from_pretrained(tmp_path / "whole")
    torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)
    assert (tmp_path / "whole" / CONFIG_NAME).is_file()
    mode = (tmp_path / "whole" / CONFIG_NAME).stat().st_mode & 0o777  # weights as readable as the JSON
    weights = (PROJECTOR_WEIGHTS, "vision/model.safetensors")
    assert {(tmp_path / "whole" / f).stat().st_mode & 0o777 for f in weights} == {mode}

    save_file({"proj.weight": torch.zeros(64, 3)}, tmp_path / "whole" / PROJECTOR_WEIGHTS)
    with pytest.raises(CheckpointError, match=r"missing \(1\): proj.bias"):
        VisionLanguageModel.from_pretrained(tmp_path / "whole")
    wrong_shape = {"proj.weight": torch.zeros(64, 3), "proj.bias": torch.zeros(64)}
    save_file(wrong_shape, tmp_path / "whole" / PROJECTOR_WEIGHTS)
    with pytest.raises(CheckpointError, match=r"proj.weight: checkpoint \(64, 3\) vs model \(64, 256\)"):
        VisionLanguageModel.from_pretrained(tmp_path / "whole")


@torch.no_grad()
def test_relative_references_load_from_any_directory_and_move_with_the_parts(tmp_path, monkeypatch):
    tokenizer = tiny_tokenizer(image_token=None)
    parts = tmp_path / "project"
    parts.mkdir()
    monkeypatch.chdir(parts)  # the tower and the LM are named relative to the working directory
    tiny_llama(tokenizer).save_pretrained("lm")
    torch.manual_seed(0)
    VisionTransformer(VisionConfig(**TINY_VISION)).save_pretrained("tower")
    lm = AutoModelForCausalLM.from_pretrained("lm").eval()
    projector = Projector(ProjectorConfig(kind="mlp2x_gelu", vision_dim=64, lm_dim=64))
    vlm = VisionLanguageModel(VisionTransformer.from_pretrained("tower"), projector, lm, tokenizer,
                              ImageProcessor(size=(32, 32)), vision_name_or_path="tower").eval()
    batch = vlm.prepare_inputs(torch.randn(2, 3, 32, 32), ["caption:", "what is this ?"], CAPTIONS[:2])
    expected = vlm(**batch).logits
    vlm.save_pretrained("runs/vlm")
    saved = json.loads((parts / "runs" / "vlm" / CONFIG_NAME).read_text())
    assert (saved["vision"], saved["language_model"]) == ("../../tower", "../../lm")  # as seen from the folder
    (parts / "latest").symlink_to(parts / "tower", target_is_directory=True)
    assert _reference("latest", parts / "runs" / "vlm", parts) == "../../latest"  # a link stays a link, not its target
    assert _reference(".", parts / "runs" / "vlm", parts / "tower") == "../../tower"  # loaded from inside the part
    assert _reference("..", parts / "runs" / "vlm", parts / "runs") == "../.."

    monkeypatch.chdir(tmp_path)  # elsewhere, then with the whole project moved
    for moved in (False, True):
        if moved:
            parts = parts.rename(tmp_path / "moved")
        loaded = VisionLanguageModel.from_pretrained(parts / "runs" / "vlm")
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)
    monkeypatch.chdir(tmp_path / "moved" / "runs")  # a chdir after loading changes nothing
    loaded.save_pretrained(tmp_path / "again")  # saved again elsewhere: the references follow
    saved = json.loads((tmp_path / "again" / CONFIG_NAME).read_text())
    assert (saved["vision"], saved["language_model"]) == ("../moved/tower", "../moved/lm")
    monkeypatch.chdir(tmp_path)
    torch.testing.assert_close(VisionLanguageModel.from_pretrained(tmp_path / "again")(**batch).logits, expected,
                               rtol=0, atol=0)

    (tmp_path / "moved" / "tower").rename(tmp_path / "moved" / "tower-gone")
    with pytest.raises(CheckpointError, match=r"names the vision tower '\.\./moved/tower', a path relative to .*again, "
                                              r"and .*moved/tower doesn't exist: put the vision tower back there"):
        VisionLanguageModel.from_pretrained(tmp_path / "again")
    (tmp_path / "moved" / "tower-gone").rename(tmp_path / "moved" / "tower")

    older = saved | {"vision": "moved/tower", "language_model": "moved/lm"}  # configs from before: cwd-relative
    (tmp_path / "moved" / "runs" / "vlm" / CONFIG_NAME).write_text(json.dumps(older))
    loaded = VisionLanguageModel.from_pretrained(tmp_path / "moved" / "runs" / "vlm")
    torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)


def test_a_naflex_tower_gives_each_image_its_own_number_of_tokens():
    """SigLIP 2 NaFlex: the images run as one padded batch with their patch mask; each image's <image> becomes its
    h x w real patch tokens, and each sequence reads as it does alone."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    naflex = VisionConfig(**(TINY_VISION | dict(image_size=32, naflex=True)))  # a 4 x 4 position grid
    vision = VisionTransformer(naflex).eval()
    projector = Projector(ProjectorConfig(kind="mlp2x_gelu", vision_dim=64, lm_dim=64))
    vlm = VisionLanguageModel(vision, projector, tiny_llama(tokenizer), tokenizer,
                              NaFlexProcessor(patch_size=8, max_num_patches=16)).eval()
    # 2 x 8 and 5 x 3 patches:
    wide, tall = Image.new("RGB", (120, 30), (200, 40, 40)), Image.new("RGB", (30, 50), (40, 40, 200))
    batch = vlm.prepare_inputs([wide, tall], "<image> caption:")
    grids = batch["spatial_shapes"].prod(1).tolist()
    assert grids[0] != grids[1] and (batch["input_ids"] == vlm.image_token_id).sum(1).tolist() == grids
    with torch.no_grad():
        together = vlm(**batch).logits[:, -1]
        for i, image in enumerate((wide, tall)):
            alone = vlm(**vlm.prepare_inputs([image], "<image> caption:")).logits[0, -1]
            assert torch.allclose(together[i], alone, atol=1e-4)
    assert vlm.generate([wide, tall], "<image> caption:", max_new_tokens=3) == [
        vlm.generate([wide], "<image> caption:", max_new_tokens=3)[0],
        vlm.generate([tall], "<image> caption:", max_new_tokens=3)[0]]
    with pytest.raises(ValueError, match="pixel_shuffle merges blocks of one square patch grid"):
        VisionLanguageModel(vision, Projector(ProjectorConfig(kind="pixel_shuffle", vision_dim=64, lm_dim=64)),
                            tiny_llama(tokenizer), tokenizer, NaFlexProcessor(patch_size=8))
