"""Small random SigLIP checkpoints built with transformers itself, for offline tests.

Every parameter is perturbed after transformers' init, so LayerNorm weights
aren't all ones and biases aren't all zeros: a swapped or skipped tensor shows
up as a numeric difference, not a silent pass.
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import (
    GemmaTokenizer,
    Siglip2Config,
    Siglip2ImageProcessorPil,
    Siglip2Model,
    Siglip2VisionConfig,
    Siglip2VisionModel,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipTokenizer,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from vlm_vision.model import tokenizer

B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
           image_size=224, patch_size=16)
TINY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   image_size=32, patch_size=8)
TINY_NAFLEX = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_patches=16, patch_size=8)  # a 4 x 4 position grid
TINY_TEXT = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 projection_size=64)  # the text head projects into the vision width

_WORDS = dict(
    adj="red green blue yellow small big happy sad old young bright dark shiny striped spotted wooden".split(),
    noun="cat dog bird fish horse cow sheep lion tiger bear apple banana car tree house flower boat".split(),
    place="beach street grass table sofa forest river snow road kitchen".split(),
)


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=generator) * std)


def sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"a photo of a {rng.choice(_WORDS['adj'])} {rng.choice(_WORDS['noun'])} on the {rng.choice(_WORDS['place'])}."
        for _ in range(n)
    ]


def train_tokenizer(folder: Path, vocab_size: int = 64) -> SiglipTokenizer:
    """A real SentencePiece unigram model, trained on a few hundred captions, as a SiglipTokenizer."""
    return tokenizer.train_tokenizer(sentences(), folder, vocab_size=vocab_size)


def vision_checkpoint(folder: Path, seed: int = 0, **config) -> SiglipVisionModel:
    """Save a random transformers `SiglipVisionModel` (tiny unless told otherwise) to `folder`."""
    torch.manual_seed(seed)
    model = SiglipVisionModel(SiglipVisionConfig(**(TINY_VISION | config))).eval()
    perturb_(model, seed)
    model.save_pretrained(folder)
    return model


def siglip_checkpoint(folder: Path, seed: int = 0, vision: dict | None = None, text: dict | None = None) -> SiglipModel:
    """Save a random transformers `SiglipModel` with a trained tokenizer and its preprocessor config."""
    tokenizer = train_tokenizer(folder)
    text_config = TINY_TEXT | dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id, bos_token_id=None) | (text or {})
    vision_config = TINY_VISION | (vision or {})
    size = vision_config["image_size"]
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(vision_config=vision_config, text_config=text_config))
    return _save_dual_encoder(folder, seed, model, SiglipImageProcessorPil(size={"height": size, "width": size}))


def gemma_tokenizer(folder: Path) -> GemmaTokenizer:
    """A real SentencePiece BPE model with Gemma's special tokens (pad 0, eos 1, bos 2, unk 3) and byte fallback,
    trained on captions with capitals and punctuation, saved as SigLIP 2 checkpoints save theirs (GemmaTokenizer,
    padding on the right)."""
    buffer = io.BytesIO()
    texts = [*sentences(), *(t.upper() for t in sentences(50, seed=1)), "Emoji: 😀 smiling face!"]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(dict.fromkeys(texts)), model_writer=buffer, vocab_size=400, model_type="bpe",
        hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(buffer.getvalue())
    tokenizer = GemmaTokenizer.from_pretrained(folder, padding_side="right")
    tokenizer.save_pretrained(folder)
    return tokenizer


def _text_config(tokenizer, text: dict | None) -> dict:
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id)
    return TINY_TEXT | dict(vocab_size=len(tokenizer)) | ids | (text or {})


def _save_dual_encoder(folder: Path, seed: int, model: torch.nn.Module, processor) -> torch.nn.Module:
    """Perturb a random transformers dual encoder (built after seeding), set a scale and bias, save it with its
    image processor's config."""
    model.eval()
    perturb_(model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model


def siglip2_fixed_checkpoint(folder: Path, seed: int = 0, vision: dict | None = None) -> SiglipModel:
    """A fixed-resolution SigLIP 2 checkpoint: a `SiglipModel` (model_type "siglip") with a Gemma tokenizer."""
    tokenizer = gemma_tokenizer(folder)
    vision_config = TINY_VISION | (vision or {})
    size = vision_config["image_size"]
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(vision_config=vision_config, text_config=_text_config(tokenizer, None)))
    return _save_dual_encoder(folder, seed, model, SiglipImageProcessorPil(size={"height": size, "width": size}))


def naflex_vision_checkpoint(folder: Path, seed: int = 0, **config) -> Siglip2VisionModel:
    """Save a random transformers `Siglip2VisionModel` (tiny unless told otherwise) to `folder`."""
    torch.manual_seed(seed)
    model = Siglip2VisionModel(Siglip2VisionConfig(**(TINY_NAFLEX | config))).eval()
    perturb_(model, seed)
    model.save_pretrained(folder)
    return model


def naflex_checkpoint(folder: Path, seed: int = 0, max_num_patches: int = 24, vision: dict | None = None,
                      text: dict | None = None) -> Siglip2Model:
    """Save a random transformers `Siglip2Model` (NaFlex) with a Gemma tokenizer and its NaFlex processor config."""
    tokenizer = gemma_tokenizer(folder)
    vision_config = TINY_NAFLEX | (vision or {})
    torch.manual_seed(seed)
    model = Siglip2Model(Siglip2Config(vision_config=vision_config, text_config=_text_config(tokenizer, text)))
    processor = Siglip2ImageProcessorPil(patch_size=vision_config["patch_size"], max_num_patches=max_num_patches)
    return _save_dual_encoder(folder, seed, model, processor)
