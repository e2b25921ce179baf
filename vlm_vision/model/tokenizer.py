"""Train a SentencePiece tokenizer that transformers' `SiglipTokenizer` loads.

SigLIP's tokenizer lower-cases text and strips punctuation before SentencePiece
sees it, so we train on text canonicalised the same way; otherwise pieces would
be spent on capitals and commas that never reach the model.
"""

from __future__ import annotations

import io
import re
import string
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
from transformers import SiglipTokenizer

from ..checkpoints import replace_atomically

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def canonicalize(text: str) -> str:
    """What `SiglipTokenizer.canonicalize_text` feeds SentencePiece: lower case, no punctuation, single spaces."""
    return re.sub(r"\s+", " ", text.lower().translate(_PUNCTUATION)).strip()


def train_tokenizer(texts: Iterable[str], folder: str | Path, vocab_size: int = 4000,
                    max_length: int = 64) -> SiglipTokenizer:
    """Train a unigram SentencePiece model on `texts` and save it as a SiglipTokenizer in `folder`.

    Special ids follow SigLIP's: pad 0 and eos 1 (both "</s>"-style, no bos), unk 2.
    `vocab_size` is an upper bound: small corpora get as many pieces as they support. Repeated
    texts count once.
    """
    # Each distinct text once: SentencePiece 0.2.2's unigram trainer never finishes extracting substrings
    # from heavily repeated input (google/sentencepiece#641), such as captions shared by nine emoji styles.
    sentences = [c for c in dict.fromkeys(canonicalize(t) for t in texts) if c]
    if not sentences:
        raise ValueError("No text to train a tokenizer on")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=vocab_size, model_type="unigram",
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", minloglevel=2,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    replace_atomically(folder / "spiece.model", lambda f: f.write(buffer.getvalue()))
    tokenizer = SiglipTokenizer(str(folder / "spiece.model"), model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer
