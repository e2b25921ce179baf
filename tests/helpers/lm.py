"""A tiny tokenizer and Llama built offline, for vision-language model tests.

The tokenizer is a real `tokenizers` word-level model trained on a few sentences,
wrapped as a `PreTrainedTokenizerFast` with <pad>, <unk>, <s> (prepended, as Llama's
tokenizer does) and </s>; `<image>` is added as a special token unless told not to.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tests.helpers.checkpoints import perturb_

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]
SENTENCES = [
    "caption: describe the picture please",
    "what is this ? a red cat sits on a mat",
    "two blue dogs run in the park",
    "one green bird sings loudly",
    "a yellow fish swims",
]
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)


def tiny_tokenizer(sentences: list[str] = SENTENCES, image_token: str | None = "<image>") -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer; decoding joins words with single spaces, so text round-trips."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(sentences, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])  # BOS first, as Llama
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    if image_token is not None:
        tokenizer.add_tokens([image_token], special_tokens=True)
    return tokenizer


def llama_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> LlamaConfig:
    return LlamaConfig(**(TINY_LLAMA | dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                            bos_token_id=tokenizer.bos_token_id,
                                            eos_token_id=tokenizer.eos_token_id) | overrides))


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A random LlamaForCausalLM sized to the tokenizer, every parameter perturbed (RMSNorm weights aren't all 1)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tokenizer, **overrides)).eval()
    perturb_(model, seed)
    return model
