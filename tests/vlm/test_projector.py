"""Projectors: shapes and token counts, pixel shuffle against a hand-written layout and
transformers' Idefics3, weight names shared with transformers, and feature selection."""

import math

import pytest
import torch
from transformers import Idefics3Config, LlavaConfig
from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from tests.helpers.checkpoints import TINY_VISION
from vlm_vision import VisionConfig, VisionTransformer
from vlm_vision.vlm.projector import Projector, ProjectorConfig, pixel_shuffle, select_features


def unshuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """Inverse of pixel_shuffle: (B, S / r^2, D * r^2) -> (B, S, D), written independently of it."""
    B, T, C = x.shape
    g, D = math.isqrt(T), C // (r * r)
    out = torch.empty(B, g * r, g * r, D, dtype=x.dtype)
    for t in range(T):
        bi, bj = divmod(t, g)  # block row, block column
        for k in range(r * r):
            di, dj = divmod(k, r)  # row and column inside the block
            out[:, bi * r + di, bj * r + dj] = x[:, t, k * D:(k + 1) * D]
    return out.reshape(B, g * r * g * r, D)


@pytest.mark.parametrize("kind, feature, tokens", [
    ("linear", "patch", 16), ("mlp2x_gelu", "patch", 16), ("pixel_shuffle", "patch", 4),
    ("linear", "pooled", 1), ("mlp2x_gelu", "pooled", 1),
])
def test_output_shape_and_token_count(kind, feature, tokens):
    config = ProjectorConfig(kind=kind, vision_dim=12, lm_dim=20, feature=feature)
    projector = Projector(config)
    x = torch.randn(3, 16 if feature == "patch" else 1, 12)
    assert projector(x).shape == (3, tokens, 20)
    assert config.num_image_tokens(16) == tokens


def test_token_counts_of_published_designs():
    so400m = 27 * 27  # So400m/14 at 384 px
    assert ProjectorConfig(kind="linear", vision_dim=1152, lm_dim=2048).num_image_tokens(256) == 256  # PaliGemma 224
    assert ProjectorConfig(kind="mlp2x_gelu", vision_dim=1024, lm_dim=4096).num_image_tokens(576) == 576  # LLaVA-1.5
    assert ProjectorConfig(kind="pixel_shuffle", vision_dim=1152, lm_dim=4096,
                           shuffle_factor=3).num_image_tokens(so400m) == 81  # 27x27 -> 9x9
    with pytest.raises(ValueError, match="divisible by 2"):
        ProjectorConfig(kind="pixel_shuffle", vision_dim=1152, lm_dim=4096).num_image_tokens(so400m)


def test_pixel_shuffle_layout_on_a_known_tensor():
    # A 4x4 grid of 1-channel tokens numbered row-major: token (i, j) holds 4i + j.
    x = torch.arange(16.0).reshape(1, 16, 1)
    expected = torch.tensor([[
        [0, 1, 4, 5],  # block (0, 0): rows 0-1, columns 0-1, each block row-major
        [2, 3, 6, 7],  # block (0, 1)
        [8, 9, 12, 13],  # block (1, 0)
        [10, 11, 14, 15],  # block (1, 1)
    ]], dtype=torch.float32)
    torch.testing.assert_close(pixel_shuffle(x, 2), expected, rtol=0, atol=0)


def test_pixel_shuffle_keeps_channels_together_and_matches_idefics3():
    D = 3
    x = torch.arange(2 * 36 * D, dtype=torch.float32).reshape(2, 36, D)  # 6x6 grid, D channels
    out = pixel_shuffle(x, 2)
    assert out.shape == (2, 9, 4 * D)
    # token 1 is block (0, 1): grid tokens 2, 3 (row 0) then 8, 9 (row 1), each with its D channels in order
    torch.testing.assert_close(out[0, 1], torch.cat([x[0, 2], x[0, 3], x[0, 8], x[0, 9]]), rtol=0, atol=0)
    for r in (2, 3):
        reference = Idefics3Connector.pixel_shuffle(None, x, r)  # doesn't use self
        torch.testing.assert_close(pixel_shuffle(x, r), reference, rtol=0, atol=0)
        torch.testing.assert_close(unshuffle(pixel_shuffle(x, r), r), x, rtol=0, atol=0)


def test_pixel_shuffle_rejects_grids_it_cannot_split():
    with pytest.raises(ValueError, match="15 tokens is not a square"):
        pixel_shuffle(torch.zeros(1, 15, 4), 2)
    with pytest.raises(ValueError, match="divisible by 2; the grid is 5x5"):
        pixel_shuffle(torch.zeros(1, 25, 4), 2)


def test_weights_map_one_to_one_onto_transformers_projectors():
    text = {"model_type": "llama", "hidden_size": 20, "num_attention_heads": 2}  # only its width matters here
    llava = LlavaMultiModalProjector(LlavaConfig(vision_config={"model_type": "siglip_vision_model", "hidden_size": 12},
                                                 text_config=text, projector_hidden_act="gelu"))
    ours = Projector(ProjectorConfig(kind="mlp2x_gelu", vision_dim=12, lm_dim=20))
    ours.load_state_dict(llava.state_dict(), strict=True)
    x = torch.randn(2, 16, 12)
    torch.testing.assert_close(ours(x), llava(x), rtol=0, atol=0)

    connector = Idefics3Connector(Idefics3Config(vision_config={"hidden_size": 12}, text_config=text, scale_factor=2))
    ours = Projector(ProjectorConfig(kind="pixel_shuffle", vision_dim=12, lm_dim=20, bias=False))
    ours.load_state_dict({k.removeprefix("modality_projection."): v for k, v in connector.state_dict().items()},
                         strict=True)
    torch.testing.assert_close(ours(x), connector(x), rtol=0, atol=0)

    linear = Projector(ProjectorConfig(kind="linear", vision_dim=12, lm_dim=20))
    assert sorted(linear.state_dict()) == ["linear.bias", "linear.weight"]  # PaliGemmaMultiModalProjector's names


def test_scale_by_sqrt_lm_dim_divides_the_output():
    plain = Projector(ProjectorConfig(kind="linear", vision_dim=12, lm_dim=16))
    scaled = Projector(ProjectorConfig(kind="linear", vision_dim=12, lm_dim=16, scale_by_sqrt_lm_dim=True))
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 12)
    torch.testing.assert_close(scaled(x), plain(x) / 4.0)


def test_select_features_picks_the_right_tensors():
    torch.manual_seed(0)
    tower = VisionTransformer(VisionConfig(**(TINY_VISION | dict(num_hidden_layers=3)))).eval()
    outputs = []
    for block in tower.blocks:
        block.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    out = tower(torch.randn(2, 3, 32, 32), output_hidden_states=True)

    def select(**kw):
        return select_features(out, ProjectorConfig(kind="linear", vision_dim=64, lm_dim=8, **kw))

    assert select() is out.last_hidden_state
    torch.testing.assert_close(select(), tower.norm(outputs[-1]))  # -1 is after the post-LayerNorm
    torch.testing.assert_close(select(feature_layer=-2), outputs[-2], rtol=0, atol=0)  # second-to-last block, pre-LN
    torch.testing.assert_close(select(feature_layer=0), out.hidden_states[0])  # the embeddings
    torch.testing.assert_close(select(feature_layer=3), outputs[-1], rtol=0, atol=0)  # last block, pre-LN
    assert select(feature="pooled").shape == (2, 1, 64)
    torch.testing.assert_close(select(feature="pooled")[:, 0], out.pooler_output, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out of range for a tower with 3 blocks"):
        select(feature_layer=-5)
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        select_features(tower(torch.randn(1, 3, 32, 32)), ProjectorConfig("linear", 64, 8, feature_layer=-2))


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="Unknown projector type: 'qformer'"):
        ProjectorConfig(kind="qformer", vision_dim=8, lm_dim=8)
    with pytest.raises(ValueError, match="no token grid"):
        ProjectorConfig(kind="pixel_shuffle", vision_dim=8, lm_dim=8, feature="pooled")
    with pytest.raises(ValueError, match="feature_layer must stay -1"):
        ProjectorConfig(kind="linear", vision_dim=8, lm_dim=8, feature="pooled", feature_layer=-2)
    config = ProjectorConfig(kind="pixel_shuffle", vision_dim=8, lm_dim=16, shuffle_factor=3, bias=False)
    assert ProjectorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"Unknown ProjectorConfig keys \['hidden_act'\]"):
        ProjectorConfig.from_dict(config.to_dict() | {"hidden_act": "gelu"})
