"""Pure state-dict conversion between transformers' SigLIP vision keys and ours.

Ours differ from transformers' in three places, each written in `key_groups`:
q/k/v are one fused `qkv` projection; the pooling head's `nn.MultiheadAttention`
`in_proj` is split into the probe's `q` and the tokens' `kv`; and names follow
timm (`blocks`, `norm1`, `patch_embed`). A group concatenates its source
tensors along dim 0 and splits them into its destination tensors, so one
mechanism serves both directions.

Loading is strict: missing, unexpected and wrong-shape keys are all named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from ..errors import CheckpointError

if TYPE_CHECKING:  # conversion reads the config's sizes; it never builds the model
    from ..model import VisionConfig

# Prefixes of a full `SiglipModel` checkpoint that belong to other parts of it.
_NON_VISION_PREFIXES = ("text_model.", "logit_scale", "logit_bias")
_VISION_PREFIX = "vision_model."
VISION_TOWER = "SigLIP vision tower"

_PATCH_EMBEDDING = "embeddings.patch_embedding.weight"  # 4-D convolution (SigLIP), or 2-D linear (NaFlex)

# Tell-tale keys of architectures people mistake for SigLIP.
_FOREIGN_MARKERS = {
    "class_embedding": "a CLIP vision tower (it has a class token; SigLIP has none)",
    "pre_layrnorm": "a CLIP vision tower",
    "cls_token": "a ViT (it has a class token; SigLIP has none)",
    "visual.": "an open_clip checkpoint (convert it to transformers' format first)",
    "token_embedding": "a text tower, which has no vision weights",
}


def key_groups(config: VisionConfig) -> list[tuple[list[str], list[str]]]:
    """(transformers keys, our keys) pairs; each side is concatenated along dim 0."""
    groups: list[tuple[list[str], list[str]]] = [
        (["embeddings.patch_embedding.weight"], ["patch_embed.weight"]),
        (["embeddings.patch_embedding.bias"], ["patch_embed.bias"]),
        (["embeddings.position_embedding.weight"], ["pos_embed"]),
    ]
    for i in range(config.num_hidden_layers):
        hf, ours = f"encoder.layers.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            groups += [
                ([f"{hf}self_attn.{n}_proj.{p}" for n in "qkv"], [f"{ours}attn.qkv.{p}"]),
                ([f"{hf}self_attn.out_proj.{p}"], [f"{ours}attn.proj.{p}"]),
                ([f"{hf}layer_norm1.{p}"], [f"{ours}norm1.{p}"]),
                ([f"{hf}layer_norm2.{p}"], [f"{ours}norm2.{p}"]),
                ([f"{hf}mlp.fc1.{p}"], [f"{ours}mlp.fc1.{p}"]),
                ([f"{hf}mlp.fc2.{p}"], [f"{ours}mlp.fc2.{p}"]),
            ]
    groups += [(["post_layernorm.weight"], ["norm.weight"]), (["post_layernorm.bias"], ["norm.bias"])]
    if config.vision_use_head:
        groups.append((["head.probe"], ["head.probe"]))
        for p in ("weight", "bias"):
            groups += [
                ([f"head.attention.in_proj_{p}"], [f"head.q.{p}", f"head.kv.{p}"]),
                ([f"head.attention.out_proj.{p}"], [f"head.proj.{p}"]),
                ([f"head.layernorm.{p}"], [f"head.norm.{p}"]),
                ([f"head.mlp.fc1.{p}"], [f"head.mlp.fc1.{p}"]),
                ([f"head.mlp.fc2.{p}"], [f"head.mlp.fc2.{p}"]),
            ]
    return groups


def vision_keys_only(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision tower's tensors of a checkpoint, with any `vision_model.` prefix removed.

    Accepts a `SiglipVisionModel` checkpoint (bare keys in transformers 5, prefixed
    in 4.x) and a full `SiglipModel` checkpoint, whose text tower and logit
    scale/bias are set aside. Anything else stays in and is reported as unexpected.
    """
    if not any(k.startswith(_VISION_PREFIX) for k in state):
        return dict(state)
    return {
        k.removeprefix(_VISION_PREFIX): v
        for k, v in state.items()
        if not k.startswith(_NON_VISION_PREFIXES)
    }


def _regroup(tensors: list[torch.Tensor], sizes: list[int]) -> tuple[torch.Tensor, ...]:
    whole = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
    # clone the pieces so no two parameters share storage (safetensors refuses shared tensors)
    return (whole,) if len(sizes) == 1 else tuple(t.clone() for t in whole.split(sizes, dim=0))


def hf_to_ours(
    state: Mapping[str, torch.Tensor], config: VisionConfig, expected: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Map a transformers SigLIP vision state dict (optionally `vision_model.`-prefixed) to ours.

    `expected` holds our parameter shapes (`{k: v.shape for k, v in model.state_dict().items()}`, from a
    meta-device model). Raises CheckpointError naming every missing, unexpected and wrong-shape key.
    """
    state = vision_keys_only(state)
    groups = key_groups(config)
    check_keys(state, [k for hf, _ in groups for k in hf])
    out: dict[str, torch.Tensor] = {}
    wrong: list[str] = []
    for hf, ours in groups:
        sizes = [expected[k][0] for k in ours]
        want = (sum(sizes) // len(hf), *expected[ours[0]][1:])  # each source's shape; q, k, v are equal thirds
        bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {want}" for k in hf if tuple(state[k].shape) != want]
        if bad:
            wrong += bad
            continue
        out.update(zip(ours, _regroup([state[k] for k in hf], sizes)))
    if wrong:
        raise CheckpointError(mismatch_message([], [], wrong, state, config))
    return out


def ours_to_hf(state: Mapping[str, torch.Tensor], config: VisionConfig) -> dict[str, torch.Tensor]:
    """Map our state dict to transformers' `SiglipVisionModel` keys (no prefix)."""
    groups = key_groups(config)
    check_keys(state, [k for _, ours in groups for k in ours])
    out: dict[str, torch.Tensor] = {}
    for hf, ours in groups:
        sources = [state[k] for k in ours]
        total = sum(s.shape[0] for s in sources)
        out.update(zip(hf, _regroup(sources, [total // len(hf)] * len(hf))))  # q, k, v are equal thirds
    return {k: v.contiguous() for k, v in out.items()}


def check_keys(state: Mapping[str, torch.Tensor], wanted: list[str], what: str = VISION_TOWER) -> None:
    """Raise CheckpointError naming the `wanted` keys missing from `state` and the ones it has beyond them."""
    missing = [k for k in wanted if k not in state]
    unexpected = sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise CheckpointError(mismatch_message(missing, unexpected, [], state, what=what))


def mismatch_message(
    missing: list[str],
    unexpected: list[str],
    wrong_shape: list[str],
    state: Mapping[str, torch.Tensor],
    config: VisionConfig | None = None,
    what: str = VISION_TOWER,
    show: int = 10,
) -> str:
    """What doesn't match, at most `show` keys per kind, and the likely cause."""
    def listing(title: str, keys: list[str]) -> str:
        more = f" ... and {len(keys) - show} more" if len(keys) > show else ""
        return f"\n  {title} ({len(keys)}): {', '.join(keys[:show])}{more}"

    text = f"Checkpoint does not match the {what}:"
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            text += listing(title, keys)
    markers = _FOREIGN_MARKERS if what == VISION_TOWER else {}
    foreign = [arch for marker, arch in markers.items() if any(marker in k for k in state)]
    patch_embedding = state.get(_PATCH_EMBEDDING)
    if foreign:
        text += f"\nIt looks like {foreign[0]}, not SigLIP."
    elif config is not None and patch_embedding is not None and (patch_embedding.ndim == 2) != config.naflex:
        found, wanted = ("a SigLIP 2 NaFlex tower (model_type 'siglip2': a linear patch embedding)",
                         "a fixed-resolution one") if patch_embedding.ndim == 2 else (
                         "a fixed-resolution SigLIP tower (model_type 'siglip': a convolutional patch embedding)",
                         "a NaFlex one")
        text += f"\nThese weights are {found}, but the config describes {wanted}: load it with its own config.json."
    elif wrong_shape and config is not None:
        text += f"\nThe config ({config}) may not be the one these weights were trained with."
    elif missing and not unexpected and any(k.startswith("head.") for k in missing):
        text += "\nFor a tower without the pooling head, set vision_use_head=False in its config."
    return text
