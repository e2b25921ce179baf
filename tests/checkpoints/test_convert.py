"""The pure state-dict conversion, on its own: exact round trips and strict, named errors."""

import pytest
import torch

from tests.helpers import checkpoints
from vlm_vision import CheckpointError, VisionConfig, VisionTransformer
from vlm_vision.checkpoints.convert import hf_to_ours, ours_to_hf, vision_keys_only

CONFIG = VisionConfig(**checkpoints.TINY_VISION)


def our_shapes(config: VisionConfig) -> dict[str, torch.Size]:
    """Our parameter shapes, from a model on the meta device (no memory, no init), as the model passes them."""
    with torch.device("meta"):
        model = VisionTransformer(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def to_ours(state: dict[str, torch.Tensor], config: VisionConfig = CONFIG) -> dict[str, torch.Tensor]:
    return hf_to_ours(state, config, our_shapes(config))


@pytest.fixture(scope="module")
def hf_state(tmp_path_factory):
    model = checkpoints.vision_checkpoint(tmp_path_factory.mktemp("convert"))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_round_trip_is_exact(hf_state):
    ours = to_ours(hf_state)
    assert {k: v.shape for k, v in ours.items()} == our_shapes(CONFIG)
    back = ours_to_hf(ours, CONFIG)
    assert back.keys() == hf_state.keys()
    for key, tensor in hf_state.items():
        assert torch.equal(back[key], tensor), key


def test_fused_tensors_are_concatenations(hf_state):
    ours = to_ours(hf_state)
    qkv = torch.cat([hf_state[f"encoder.layers.1.self_attn.{n}_proj.weight"] for n in "qkv"])
    assert torch.equal(ours["blocks.1.attn.qkv.weight"], qkv)
    in_proj = hf_state["head.attention.in_proj_weight"]
    assert torch.equal(ours["head.q.weight"], in_proj[:64])
    assert torch.equal(ours["head.kv.weight"], in_proj[64:])
    # split pieces own their storage, so safetensors can save them
    assert ours["head.q.weight"].untyped_storage().data_ptr() != ours["head.kv.weight"].untyped_storage().data_ptr()


def test_prefixed_and_full_siglip_states_are_accepted(hf_state):
    prefixed = {f"vision_model.{k}": v for k, v in hf_state.items()}
    full = prefixed | {"text_model.embeddings.token_embedding.weight": torch.zeros(3, 2),
                       "logit_scale": torch.zeros(1), "logit_bias": torch.zeros(1)}
    assert vision_keys_only(full).keys() == hf_state.keys()
    for key, tensor in to_ours(full).items():
        assert torch.equal(tensor, to_ours(hf_state)[key])


def test_missing_keys_are_named(hf_state):
    state = dict(hf_state)
    del state["encoder.layers.1.mlp.fc2.weight"], state["post_layernorm.bias"]
    with pytest.raises(CheckpointError, match=r"missing \(2\): encoder.layers.1.mlp.fc2.weight, post_layernorm.bias"):
        to_ours(state)


def test_unexpected_keys_are_named(hf_state):
    state = hf_state | {"encoder.layers.2.mlp.fc1.weight": torch.zeros(128, 64)}
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): encoder.layers.2.mlp.fc1.weight"):
        to_ours(state)


def test_wrong_shapes_are_named(hf_state):
    state = hf_state | {"encoder.layers.0.mlp.fc1.weight": torch.zeros(100, 64)}
    with pytest.raises(CheckpointError, match=r"(?s)wrong shape.*encoder.layers.0.mlp.fc1.weight: "
                                              r"checkpoint \(100, 64\) vs model \(128, 64\).*may not be the one"):
        to_ours(state)
    state = hf_state | {"encoder.layers.0.self_attn.k_proj.weight": torch.zeros(64, 32)}
    with pytest.raises(CheckpointError, match=r"wrong shape.*k_proj.weight: checkpoint \(64, 32\) vs model \(64, 64\)"):
        to_ours(state)


def test_many_keys_are_summarised(hf_state):
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): .* and \d+ more"):
        to_ours({})


@pytest.mark.parametrize("key, what", [
    ("vision_model.embeddings.class_embedding", "a CLIP vision tower"),
    ("cls_token", "a ViT"),
    ("visual.transformer.resblocks.0.attn.in_proj_weight", "an open_clip checkpoint"),
    ("embeddings.token_embedding.weight", "a text tower"),
])
def test_foreign_architectures_are_recognised(key, what):
    with pytest.raises(CheckpointError, match=f"(?s)It looks like {what}.*not SigLIP"):
        to_ours({key: torch.zeros(2, 2)})


def test_headless_config(hf_state):
    headless = VisionConfig(**checkpoints.TINY_VISION, vision_use_head=False)
    body = {k: v for k, v in hf_state.items() if not k.startswith("head.")}
    assert not any(k.startswith("head.") for k in to_ours(body, headless))
    with pytest.raises(CheckpointError, match=r"unexpected \(\d+\): head\."):
        to_ours(hf_state, headless)
    with pytest.raises(CheckpointError, match="set vision_use_head=False"):
        to_ours(body)


def test_ours_to_hf_is_strict_too(hf_state):
    ours = to_ours(hf_state)
    del ours["norm.weight"]
    with pytest.raises(CheckpointError, match=r"missing \(1\): norm.weight"):
        ours_to_hf(ours, CONFIG)
