"""A vision-language model: our SigLIP tower -> `Projector` -> any transformers causal LM.

The recipe of transformers' `LlavaForConditionalGeneration`: each prompt holds one
`<image>` token, expanded to the projector's N' tokens; the LM's embeddings at those
positions are replaced by the projected image features (`masked_scatter`), and the LM
runs on `inputs_embeds`. Batches are left-padded and position ids are counted from the
attention mask, so a prompt gives the same tokens alone and in a batch. With a SigLIP 2
NaFlex tower, images run as one padded batch with their patch mask, and each image's
`<image>` becomes as many tokens as it has real patches (h x w, its own aspect ratio).
`save_pretrained` writes the projector's weights and a JSON config naming the vision
tower and the LM, which are written alongside only when asked (after training them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..quiet import quiet_torchao

with quiet_torchao():  # transformers imports torchao where installed: noisy on a CPU
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.modeling_outputs import CausalLMOutputWithPast


from ..checkpoints import (
    DEFAULT_CAPTIONER,
    check_keys,
    load_weights,
    mismatch_message,
    read_json,
    write_json,
    write_safetensors,
)
from ..errors import CheckpointError
from ..model import (
    ImageInput,
    Preprocessing,
    VisionTransformer,
    as_device,
    compute_dtype,
    processor_from_pretrained,
    vision_inputs,
)
from .projector import Projector, ProjectorConfig, select_features

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label transformers' causal-LM loss skips
CONFIG_NAME = "vlm_config.json"
PROJECTOR_WEIGHTS = "projector.safetensors"
# Paths / PIL images, or the processor's output: pixel values (B, 3, H, W), or NaFlex's dict of patches.
Images = ImageInput | Sequence[ImageInput] | torch.Tensor | dict[str, torch.Tensor]
NAFLEX_INPUTS = ("pixel_attention_mask", "spatial_shapes")


class VisionLanguageModel(nn.Module):
    """Image + prompt -> text. Train the projector alone (LLaVA stage 1) with `freeze()`, then `generate`.

    When `tokenizer` lacks `image_token`, it is added to it (in place) and the LM's embeddings grow by a row.
    """

    def __init__(
        self,
        vision: VisionTransformer,
        projector: Projector,
        language_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        processor: Preprocessing,
        image_token: str = "<image>",
        *,
        vision_name_or_path: str | None = None,  # where `vision` came from, so save_pretrained can refer to it
        prompt: str = "",  # the prompt it was trained with: `generate` uses it when given none
    ) -> None:
        super().__init__()
        lm_dim = language_model.get_input_embeddings().embedding_dim
        if projector.config.vision_dim != vision.config.hidden_size or projector.config.lm_dim != lm_dim:
            raise ValueError(
                f"Projector maps {projector.config.vision_dim} -> {projector.config.lm_dim}, but the vision tower "
                f"is {vision.config.hidden_size} wide and the language model {lm_dim}"
            )
        if vision.config.naflex and projector.config.kind == "pixel_shuffle":
            raise ValueError("pixel_shuffle merges blocks of one square patch grid, but a NaFlex tower gives each "
                             "image a grid of its own: use the 'linear' or 'mlp2x_gelu' projector")
        self.vision = vision
        self.projector = projector
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.processor = processor
        self.image_token = image_token
        self.vision_name_or_path = vision_name_or_path
        self.prompt = prompt
        try:  # what relative references (the tower's, the LM's name_or_path) are relative to
            self._base = Path.cwd()
        except FileNotFoundError:  # the working directory is gone: no relative reference can name anything
            self._base = Path(".")
        self.image_token_id = self._add_image_token()
        # N' per image; with NaFlex patch tokens, each image's own number (`image_tokens`)
        naflex_patches = vision.config.naflex and projector.config.feature == "patch"
        self.num_image_tokens = None if naflex_patches else projector.config.num_image_tokens(vision.config.num_patches)

    @property
    def device(self) -> torch.device:
        return self.language_model.device

    @property
    def pad_token_id(self) -> int:
        """Filler for padded positions (masked out, so EOS serves when the tokenizer has no pad token)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        if pad is None:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
        return pad

    def _add_image_token(self) -> int:
        """The image token's id; added to the tokenizer, and a row to the LM's embeddings, when missing."""
        if self.image_token not in self.tokenizer.get_vocab():
            self.tokenizer.add_tokens([self.image_token], special_tokens=True)
            logger.info("Added %r to the tokenizer", self.image_token)
        token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        old = self.language_model.get_input_embeddings().num_embeddings
        if token_id >= old:
            self.language_model.resize_token_embeddings(token_id + 1, mean_resizing=False)
            # The input row is always overwritten by image features; the output row must not be random,
            # so that a model reloaded from its LM's name gives the same logits. The mean row is deterministic.
            with torch.no_grad():
                for layer in (self.language_model.get_input_embeddings(), self.language_model.get_output_embeddings()):
                    if layer is not None:
                        layer.weight[old:] = layer.weight[:old].mean(0)
        return token_id

    def freeze(self, vision: bool = True, language_model: bool = True) -> None:
        """Train only the projector (the defaults, LLaVA stage 1), or also the parts passed False."""
        self.vision.requires_grad_(not vision)
        self.language_model.requires_grad_(not language_model)
        self.projector.requires_grad_(True)

    def image_tokens(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N') bool: which of the projector's tokens of each image enter the LM. All of them, except a NaFlex
        image's padding patches."""
        if self.num_image_tokens is None:  # NaFlex patch tokens: the image's real patches
            return inputs["pixel_attention_mask"].bool()
        return torch.ones(len(inputs["pixel_values"]), self.num_image_tokens, dtype=torch.bool)

    def _prompt_ids(self, prompt: str, image_tokens: int) -> list[int]:
        """Token ids of one prompt with its `<image>` expanded to `image_tokens` tokens (prepended if absent)."""
        count = prompt.count(self.image_token)
        if count > 1:
            raise ValueError(f"A prompt takes exactly one {self.image_token!r}; got {count} in {prompt!r}")
        ids = self.tokenizer(prompt if count else self.image_token + prompt).input_ids  # with BOS if the LM uses one
        if ids.count(self.image_token_id) != 1:
            raise ValueError(f"The tokenizer did not keep {self.image_token!r} as one token in {prompt!r}; "
                             f"it must be an added special token")
        i = ids.index(self.image_token_id)
        return ids[:i] + [self.image_token_id] * image_tokens + ids[i + 1:]

    def prepare_inputs(
        self, images: Images, prompts: str | Sequence[str], captions: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """A left-padded batch: pixel_values (and NaFlex's mask and shapes), input_ids, attention_mask, and labels
        when captions are given.

        A sequence is `prompt (image expanded) [caption EOS]`; labels are the caption's ids and
        EOS, and -100 (no loss) on padding, the prompt and its image tokens. No truncation.
        """
        processed = images if isinstance(images, (torch.Tensor, dict)) else self.processor(images)
        inputs = vision_inputs(processed)
        counts = self.image_tokens(inputs).sum(1).tolist()
        B = len(counts)
        prompts = [prompts] * B if isinstance(prompts, str) else list(prompts)
        if len(prompts) != B or (captions is not None and (isinstance(captions, str) or len(captions) != B)):
            raise ValueError(f"Give one prompt (or a single string) and one caption per image: {B} images, "
                             f"{len(prompts)} prompts, {'no' if captions is None else len(captions)} captions")
        if captions is not None and self.tokenizer.eos_token_id is None:
            raise ValueError("Training on captions needs an EOS token to end them; the tokenizer has none")
        rows = []
        for i, prompt in enumerate(prompts):
            ids = self._prompt_ids(prompt, counts[i])
            labels = [IGNORE_INDEX] * len(ids)
            if captions is not None:
                target = self.tokenizer(captions[i], add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
                ids, labels = ids + target, labels + target
            rows.append((ids, labels))
        L = max(len(ids) for ids, _ in rows)
        batch = {
            **inputs,  # pixel_values (B, 3, H, W), or NaFlex patches with their mask and shapes
            "input_ids": torch.tensor([[self.pad_token_id] * (L - len(ids)) + ids for ids, _ in rows]),  # (B, L)
            "attention_mask": torch.tensor([[0] * (L - len(ids)) + [1] * len(ids) for ids, _ in rows]),  # (B, L)
        }
        if captions is not None:
            batch["labels"] = torch.tensor([[IGNORE_INDEX] * (L - len(ids)) + labels for ids, labels in rows])
        return batch

    def image_features(self, pixel_values: torch.Tensor, **naflex: torch.Tensor) -> torch.Tensor:
        """Projected image tokens (B, N', D_lm); `naflex` holds NaFlex's pixel_attention_mask and spatial_shapes."""
        config = self.projector.config
        train_vision = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(train_vision):  # a frozen tower keeps no activations for backward
            out = self.vision(**vision_inputs({"pixel_values": pixel_values, **naflex}, self.vision.device),
                              output_hidden_states=config.needs_hidden_states)
        features = select_features(out, config)  # (B, N, D_vision)
        return self.projector(features.to(self.projector_dtype))  # (B, N', D_lm)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, **naflex: torch.Tensor) -> torch.Tensor:
        """The LM's input embeddings (B, L, D_lm), image features scattered into the image-token positions."""
        input_ids = input_ids.to(self.device)
        embeds = self.language_model.get_input_embeddings()(input_ids)  # (B, L, D_lm)
        features = self.image_features(pixel_values, **naflex)  # (B, N', D_lm)
        used = self.image_tokens({"pixel_values": pixel_values, **naflex}).to(features.device)  # (B, N')
        is_image = input_ids == self.image_token_id  # (B, L)
        counts, wanted = is_image.sum(1).tolist(), used.sum(1).tolist()
        if counts != wanted:
            raise ValueError(f"The images' tokens {wanted} don't fill the image-token positions of the "
                             f"{input_ids.shape[0]} sequences: {counts}")
        # Row-major fill: sequence b's image positions get image b's tokens in order, as in transformers' Llava.
        return embeds.masked_scatter(is_image.unsqueeze(-1), features[used].to(embeds.device, embeds.dtype))

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """The LM's output for a `prepare_inputs` batch: logits (B, L, V), and the mean loss when labels are given."""
        naflex = {} if spatial_shapes is None else {"pixel_attention_mask": pixel_attention_mask,
                                                    "spatial_shapes": spatial_shapes}
        position_ids = None
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
            position_ids = positions(attention_mask)  # left padding must not shift the real tokens' positions
        return self.language_model(
            inputs_embeds=self.embed(pixel_values, input_ids, **naflex),
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels.to(self.device) if labels is not None else None,
            **kwargs,
        )

    @torch.inference_mode()
    def generate_ids(
        self, images: Images, prompts: str | Sequence[str] | None = None, **gen_kwargs: Any
    ) -> torch.Tensor:
        """New token ids (B, T), padded after EOS; greedy unless `gen_kwargs` (of `generate`) say otherwise.

        With no `prompts`, each image gets the prompt the model was trained with (`self.prompt`)."""
        batch = self.prepare_inputs(images, self.prompt if prompts is None else prompts)
        kwargs = dict(max_new_tokens=32, do_sample=False, pad_token_id=self.pad_token_id,
                      eos_token_id=self.tokenizer.eos_token_id) | gen_kwargs
        # Given only inputs_embeds, generate returns only the new tokens; it derives position ids from the mask.
        return self.language_model.generate(
            inputs_embeds=self.embed(batch["pixel_values"], batch["input_ids"],
                                     **{k: batch[k] for k in NAFLEX_INPUTS if k in batch}),
            attention_mask=batch["attention_mask"].to(self.device),
            **kwargs,
        )

    def generate(self, images: Images, prompts: str | Sequence[str] | None = None, **gen_kwargs: Any) -> list[str]:
        """The generated text for each image (new text only, special tokens dropped)."""
        return self.tokenizer.batch_decode(self.generate_ids(images, prompts, **gen_kwargs), skip_special_tokens=True)

    def save_pretrained(self, folder: str | Path, save_vision: bool = False, save_language_model: bool = False) -> None:
        """Write the projector's weights, the config, tokenizer and preprocessor config into `folder`.

        The vision tower and the LM are referred to by name or path; they are written into
        `folder/vision` and `folder/language_model` when asked (after training them) or when
        there is no name to refer to. A relative local path is written relative to `folder`, so
        the two load from any working directory and can move together; absolute paths and hub
        names are written as they are.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.projector.state_dict().items()}
        write_safetensors(folder / PROJECTOR_WEIGHTS, state)
        vision_ref = None if save_vision else self.vision_name_or_path
        lm_ref = None if save_language_model else (self.language_model.config.name_or_path or None)
        if vision_ref is None:
            self.vision.save_pretrained(folder / "vision")
            logger.info("Wrote the vision tower to %s", folder / "vision")
        if lm_ref is None:
            self.language_model.save_pretrained(folder / "language_model")
            logger.info("Wrote the language model to %s", folder / "language_model")
        self.tokenizer.save_pretrained(folder / "tokenizer")  # it holds the added image token
        self.processor.save_pretrained(folder)
        write_json(folder / CONFIG_NAME, {
            "format_version": 1,
            "projector": self.projector.config.to_dict(),
            "vision": _reference(vision_ref, folder, self._base),  # None: in folder/vision
            "language_model": _reference(lm_ref, folder, self._base),  # None: in folder/language_model
            "image_token": self.image_token,
            "prompt": self.prompt,
        })

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> VisionLanguageModel:
        """Load a folder written by `save_pretrained` (none: the embedded emoji captioner), in eval mode (float32
        unless `dtype` says otherwise)."""
        device = as_device(device)
        folder = Path(DEFAULT_CAPTIONER if folder is None else folder)
        raw = read_json(folder, CONFIG_NAME)
        if raw is None:
            raise CheckpointError(f"No {CONFIG_NAME} in {folder}: not a folder written by "
                                  f"VisionLanguageModel.save_pretrained")
        dtype = compute_dtype(dtype, device)
        vision_ref = _resolve(raw["vision"], folder, "vision tower")
        lm_ref = _resolve(raw["language_model"], folder, "language model")
        vision = VisionTransformer.from_pretrained(vision_ref or folder / "vision", dtype, device)
        language_model = AutoModelForCausalLM.from_pretrained(lm_ref or folder / "language_model", dtype=dtype)
        if raw["language_model"] is None:
            language_model.config.name_or_path = ""  # saving again elsewhere writes it again, keeping folders whole
        projector = Projector(ProjectorConfig.from_dict(raw["projector"]))
        state, expected = load_weights([folder / PROJECTOR_WEIGHTS]), projector.state_dict()
        check_keys(state, list(expected), what="projector")
        wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                 for k, v in state.items() if v.shape != expected[k].shape]
        if wrong:
            raise CheckpointError(mismatch_message([], [], wrong, state, what="projector"))
        projector.load_state_dict(state, strict=True)
        prompt = raw.get("prompt")
        if prompt is None:  # a folder written before the prompt was saved here: training wrote it beside the model
            prompt = (read_json(folder, "training_config.json") or {}).get("prompt", "")
        model = cls(vision, projector, language_model, AutoTokenizer.from_pretrained(folder / "tokenizer"),
                    processor_from_pretrained(folder), raw["image_token"], vision_name_or_path=vision_ref,
                    prompt=prompt)
        return model.to(device=device, dtype=dtype).eval()


def _reference(name_or_path: str | os.PathLike | None, folder: Path, base: Path) -> str | None:
    """How the config in `folder` names a part it doesn't hold: a relative local path (relative to `base`, the
    working directory when the model was made or loaded) as seen from `folder`."""
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    full = base / path
    if path.is_absolute() or not full.exists():
        return str(name_or_path)  # an absolute path, or a hub name (or a path that is gone): as given
    # A link to the part stays a link (runs/latest -> step-4600); "." and ".." have no name to keep.
    path = full.resolve() if path.name in ("", "..") else full.parent.resolve() / full.name
    try:
        return Path(os.path.relpath(path, folder.resolve())).as_posix()
    except ValueError:  # on another Windows drive there is no relative path
        return str(path)


def _resolve(reference: str | None, folder: Path, part: str) -> str | None:
    """A part's name in a saved config: a path relative to `folder` where one exists there (how save_pretrained
    writes local paths), otherwise as written (a hub name or an absolute path; folders written before references
    were made relative name paths relative to the working directory).

    A relative reference stays relative, now to the working directory (which the model remembers, so a later chdir
    doesn't break it), so saving the model again elsewhere writes it relative to the new folder."""
    if reference is None or Path(reference).is_absolute():
        return reference
    local = folder / reference
    if local.exists():
        local = local.parent.resolve() / local.name
        try:
            return os.path.relpath(local)
        except ValueError:  # the working directory is on another Windows drive
            return str(local)
    if ".." in Path(reference).parts and not Path(reference).exists():  # no hub name has ".."
        raise CheckpointError(f"{folder / CONFIG_NAME} names the {part} {reference!r}, a path relative to {folder}, "
                              f"and {local} doesn't exist: put the {part} back there, or edit the config")
    return reference


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, L) counted over real tokens only, as transformers' generate derives them."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)
