"""Image-text dual encoder: our vision tower beside transformers' `SiglipTextModel` (`Siglip2TextModel` for SigLIP 2
NaFlex checkpoints, the same architecture).

Embeddings are L2-normalised; `logits = t * <image, text> + b` and each
label's probability is `sigmoid(logits)` on its own (SigLIP scores every
image-text pair independently, so probabilities don't sum to one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..quiet import quiet_torchao

with quiet_torchao():  # transformers imports torchao where installed (the int8 extra), which is noisy on a CPU
    from transformers import (
        AutoTokenizer,
        PreTrainedTokenizerBase,
        Siglip2TextConfig,
        Siglip2TextModel,
        SiglipTextConfig,
        SiglipTextModel,
        SiglipTokenizer,
    )

from ..checkpoints import (
    check_keys,
    default_model,
    load_weights,
    mismatch_message,
    read_json,
    resolve_checkpoint,
    weight_files,
    write_json,
    write_safetensors,
)
from ..errors import CheckpointError
from .config import INIT_LOGIT_BIAS, INIT_LOGIT_SCALE, VisionConfig
from .device import as_device, compute_dtype
from .naflex import NaFlexProcessor, processor_from_pretrained
from .processor import CONFIG_NAME, ImageInput, ImageProcessor, Preprocessing
from .prompts import fill_template
from .vision_transformer import VisionTransformer, vision_inputs

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "This is a photo of {}."  # transformers' zero-shot pipeline prompt


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], context_length: int) -> torch.Tensor:
    """Token ids (T, context_length) of `texts`, padded to the full context as SigLIP was trained."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    return tokenizer(
        list(texts), padding="max_length", max_length=context_length, truncation=True, return_tensors="pt"
    ).input_ids


class DualEncoder(nn.Module):
    """SigLIP image and text towers with the learned logit scale `t' ` and bias `b`."""

    def __init__(
        self,
        vision: VisionTransformer,
        text: SiglipTextModel | Siglip2TextModel,
        tokenizer: PreTrainedTokenizerBase,
        processor: Preprocessing,
        logit_scale: float = INIT_LOGIT_SCALE,  # t' of the SigLIP paper; t = exp(t')
        logit_bias: float = INIT_LOGIT_BIAS,  # b of the SigLIP paper
    ) -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.tokenizer = tokenizer
        self.processor = processor
        self.logit_scale = nn.Parameter(torch.tensor([float(logit_scale)]))
        self.logit_bias = nn.Parameter(torch.tensor([float(logit_bias)]))
        self.name_or_path: str | None = None  # what from_pretrained was given, as transformers models record it

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def context_length(self) -> int:
        """Tokens per text: the text tower's position count (64 for SigLIP)."""
        return self.text.config.max_position_embeddings

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (T, L), padded to the full context as SigLIP was trained (no attention mask)."""
        return token_ids(self.tokenizer, texts, self.context_length)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image (B, D) and text (T, D) embeddings, with gradients (for training)."""
        image = self.vision(**vision_inputs(pixel_values, self.device)).pooler_output
        text = self.text(input_ids=input_ids.to(self.device)).pooler_output
        return F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)

    def scale_and_bias(self, similarity: torch.Tensor) -> torch.Tensor:
        """Cosine similarities -> logits: `exp(t') * s + b`, on the device of `similarity`.

        (`encode_*` return CPU tensors while the parameters may sit on a GPU.)
        """
        scale, bias = (p.float().to(similarity.device) for p in (self.logit_scale, self.logit_bias))
        return similarity * scale.exp() + bias

    @torch.inference_mode()
    def encode_images(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor | dict[str, torch.Tensor],
                      batch_size: int = 32) -> torch.Tensor:
        """L2-normalised float32 embeddings (B, D) of images, paths, or the processor's output: pixel values
        (B, 3, H, W), or for a NaFlex tower the dict of patches, mask and spatial shapes."""
        if isinstance(images, (torch.Tensor, dict)):
            inputs = vision_inputs(images)
            count = len(inputs["pixel_values"])
            batches = ({k: v[i: i + batch_size] for k, v in inputs.items()} for i in range(0, count, batch_size))
        else:
            items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
            if not items:
                raise ValueError("images must not be empty")
            batches = (self.processor(items[i: i + batch_size]) for i in range(0, len(items), batch_size))
        pooled = [self.vision(**vision_inputs(b, self.device)).pooler_output for b in batches]
        return F.normalize(torch.cat(pooled).float(), dim=-1).cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised float32 embeddings (T, D) of texts."""
        ids = self.tokenize(texts)
        pooled = [self.text(input_ids=b.to(self.device)).pooler_output for b in ids.split(batch_size)]
        return F.normalize(torch.cat(pooled).float(), dim=-1).cpu()

    @torch.inference_mode()
    def logits(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(B, T) logits, equal to transformers' `SiglipModel(...).logits_per_image`."""
        return self.scale_and_bias(self.encode_images(images) @ self.encode_texts(texts).T)

    def classify(self, image: ImageInput, labels: Sequence[str],
                 template: str = DEFAULT_TEMPLATE) -> list[tuple[str, float]]:
        """Each label's sigmoid probability for one image, highest first."""
        return self.classify_embedding(self.encode_images(image)[0], labels, template)

    @torch.inference_mode()
    def classify_embedding(self, embedding: torch.Tensor, labels: Sequence[str], template: str = DEFAULT_TEMPLATE,
                           text_vectors: Callable[[Sequence[str]], np.ndarray] | None = None
                           ) -> list[tuple[str, float]]:
        """`classify` for an image already encoded: its L2-normalised embedding (D,). `text_vectors`, when given,
        embeds the prompts instead of `encode_texts` (a cache of them, as the photo index keeps)."""
        labels = [label.strip() for label in labels if label.strip()]
        if not labels:
            raise ValueError("Give at least one non-empty label")
        prompts = fill_template(template, labels)
        texts = torch.from_numpy(text_vectors(prompts)) if text_vectors is not None else self.encode_texts(prompts)
        probs = torch.sigmoid(self.scale_and_bias(embedding.float().cpu()[None] @ texts.T))[0]
        return sorted(zip(labels, probs.tolist()), key=lambda pair: pair[1], reverse=True)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        *,
        revision: str | None = None,
        allow_pickle: bool = False,
    ) -> DualEncoder:
        """Load a full SigLIP or SigLIP 2 checkpoint (transformers `SiglipModel`, or `Siglip2Model` for NaFlex) in
        eval mode; with no name, the embedded default model."""
        device = as_device(device)
        name_or_path = default_model() if name_or_path is None else name_or_path
        folder = resolve_checkpoint(name_or_path, revision=revision, allow_pickle=allow_pickle)
        if not folder.is_dir():
            raise CheckpointError(
                f"DualEncoder needs a checkpoint folder (config, weights, tokenizer); got the file {folder}"
            )
        raw = read_json(folder, "config.json")
        if raw is None or raw.get("model_type") not in ("siglip", "siglip2"):
            found = "no config.json" if raw is None else f"model_type {raw.get('model_type')!r}"
            raise CheckpointError(
                f"{folder} is not a full SigLIP image-text checkpoint ({found}; expected model_type 'siglip', or "
                f"'siglip2' for SigLIP 2 NaFlex). For a vision tower alone use VisionTransformer.from_pretrained."
            )
        state = load_weights(weight_files(folder, allow_pickle), allow_pickle=allow_pickle)
        vision_config = VisionConfig.from_hf_dict(raw)
        vision = VisionTransformer.from_hf_state_dict(state, vision_config)
        text_classes = (Siglip2TextModel, Siglip2TextConfig) if raw["model_type"] == "siglip2" else (
            SiglipTextModel, SiglipTextConfig)
        text = text_classes[0](text_classes[1].from_dict(raw.get("text_config", {})))
        _load_text_tower(text, state)
        for key in ("logit_scale", "logit_bias"):
            if key not in state:
                raise CheckpointError(f"{folder} has no {key!r} weight; a SigLIP checkpoint has both logit_scale and "
                                      f"logit_bias")
        model = cls(vision, text, _load_tokenizer(folder), load_processor(folder, vision_config),
                    state["logit_scale"].item(), state["logit_bias"].item())
        model.name_or_path = str(name_or_path)
        return model.to(device=device, dtype=compute_dtype(dtype, device)).eval()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a transformers `SiglipModel` (NaFlex: `Siglip2Model`) checkpoint: config, weights, tokenizer and
        preprocessor config."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self.vision.hf_state_dict()
        state |= {f"text_model.{k}": v.contiguous() for k, v in self.text.state_dict().items()}
        state |= {"logit_scale": self.logit_scale.detach(), "logit_bias": self.logit_bias.detach()}
        write_safetensors(folder / "model.safetensors", state)
        text_config = self.text.config.to_dict()
        for key in ("architectures", "transformers_version", "dtype", "torch_dtype"):
            text_config.pop(key, None)
        naflex = self.vision.config.naflex
        write_json(folder / "config.json", {
            "architectures": ["Siglip2Model" if naflex else "SiglipModel"],
            "model_type": "siglip2" if naflex else "siglip",
            "vision_config": self.vision.config.to_hf_dict(),
            "text_config": text_config,
        })
        self.tokenizer.save_pretrained(folder)
        self.processor.save_pretrained(folder)


def _load_text_tower(text: SiglipTextModel, state: dict[str, torch.Tensor]) -> None:
    """Strictly load the `text_model.` tensors of a SiglipModel checkpoint, naming any mismatch."""
    state = {k: v for k, v in state.items() if k.startswith("text_model.")}
    expected = {f"text_model.{k}": v.shape for k, v in text.state_dict().items()}
    check_keys(state, list(expected), what="SigLIP text tower")
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k])}"
             for k, v in state.items() if v.shape != expected[k]]
    if wrong:
        raise CheckpointError(mismatch_message([], [], wrong, state, what="SigLIP text tower"))
    text.load_state_dict({k.removeprefix("text_model."): v for k, v in state.items()}, strict=True)


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    if not any((folder / name).is_file() for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json")):
        raise CheckpointError(f"{folder} has no tokenizer files (spiece.model or tokenizer.json)")
    if (read_json(folder, "tokenizer_config.json") or {}).get("tokenizer_class") == "SiglipTokenizer":
        # Direct: AutoTokenizer would first build a SiglipConfig, which warns about its own default token ids.
        return SiglipTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def load_processor(folder: Path, vision_config: VisionConfig) -> Preprocessing:
    """A checkpoint folder's image processor: its preprocessor_config.json, else SigLIP's defaults for its tower."""
    if (folder / CONFIG_NAME).is_file():
        processor = processor_from_pretrained(folder)
        if isinstance(processor, NaFlexProcessor) != vision_config.naflex:
            kind = "NaFlex (patches)" if vision_config.naflex else "fixed-resolution (whole images)"
            raise CheckpointError(f"{folder / CONFIG_NAME} is a {type(processor).__name__} but the vision tower is "
                                  f"{kind}: the two come from different checkpoints")
        return processor
    if vision_config.naflex:
        logger.warning("%s has no %s; using SigLIP 2's NaFlex defaults (256 patches)", folder, CONFIG_NAME)
        return NaFlexProcessor(patch_size=vision_config.patch_size)
    size = vision_config.image_size
    logger.warning("%s has no %s; using SigLIP's defaults at %dx%d", folder, CONFIG_NAME, size, size)
    return ImageProcessor(size=(size, size))

