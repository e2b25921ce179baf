"""Parity of our vision tower with transformers' SiglipVisionModel, and its behaviour."""

import pytest
import torch
from transformers import SiglipVisionModel

from tests.helpers import checkpoints
from vlm_vision import VisionConfig, VisionTransformer

FP32_ATOL = 1e-5


def run_both(hf, ours, pixels, **kwargs):
    with torch.no_grad():
        return hf(pixels, output_hidden_states=True, **kwargs), ours(pixels, output_hidden_states=True, **kwargs)


def assert_parity(a, b, atol):
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=atol, rtol=0)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=atol, rtol=0)
    assert len(b.hidden_states) == len(a.hidden_states)
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        torch.testing.assert_close(y, x, atol=atol, rtol=0, msg=lambda m: f"hidden_states[{i}]: {m}")


@pytest.fixture(scope="module")
def b16(tmp_path_factory):
    folder = tmp_path_factory.mktemp("b16")
    return checkpoints.vision_checkpoint(folder, seed=1, **checkpoints.B16), VisionTransformer.from_pretrained(folder)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_b16_parity_fp32(b16, attn):
    hf, ours = b16
    hf.set_attn_implementation(attn)
    ours.set_attn_implementation(attn)
    pixels = torch.randn(2, 3, 224, 224)
    a, b = run_both(hf, ours, pixels)
    assert b.last_hidden_state.shape == (2, 196, 768) and b.pooler_output.shape == (2, 768)
    assert len(b.hidden_states) == 13  # embeddings + 12 blocks
    # hidden_states[-1] is before the post-LayerNorm, last_hidden_state after it
    assert not torch.allclose(b.hidden_states[-1], b.last_hidden_state)
    assert_parity(a, b, FP32_ATOL)
    hf.set_attn_implementation("sdpa")
    ours.set_attn_implementation("sdpa")


@pytest.mark.parametrize("size", [(256, 256), (160, 320)])
def test_b16_interpolated_positions_parity(b16, size):
    hf, ours = b16
    a, b = run_both(hf, ours, torch.randn(1, 3, *size), interpolate_pos_encoding=True)
    assert b.last_hidden_state.shape[1] == (size[0] // 16) * (size[1] // 16)
    assert_parity(a, b, FP32_ATOL)


def test_other_resolution_without_interpolation_is_refused(b16):
    _, ours = b16
    with pytest.raises(ValueError, match=r"256x256 px but the model was trained at 224x224.*interpolate_pos_encoding"):
        ours(torch.randn(1, 3, 256, 256))


def test_so400m_shape_parity(tmp_path):
    shape = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, patch_size=14, image_size=384)
    hf = checkpoints.vision_checkpoint(tmp_path, seed=2, num_hidden_layers=2, **shape)
    ours = VisionTransformer.from_pretrained(tmp_path)
    a, b = run_both(hf, ours, torch.randn(1, 3, 384, 384))
    assert b.last_hidden_state.shape == (1, 729, 1152)  # 384 // 14 = 27 patches per side
    assert_parity(a, b, FP32_ATOL)


def test_bf16_close_to_transformers_bf16(b16):
    """bf16 has an 8-bit mantissa: we hold our bf16 tower to transformers' own bf16 error against fp32."""
    hf, ours = b16
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = hf(pixels).pooler_output
        hf_bf16 = hf.to(torch.bfloat16)(pixels).pooler_output.float()
        ours_bf16 = ours.to(torch.bfloat16)(pixels).pooler_output.float()
    hf.float(), ours.float()
    assert ours_bf16.dtype == torch.float32 and torch.isfinite(ours_bf16).all()
    hf_error = (hf_bf16 - ref).abs().max().item()
    our_error = (ours_bf16 - ref).abs().max().item()
    # Stated tolerance: within 1.5x transformers' own bf16 error, and cosine > 0.999 to fp32.
    assert our_error <= 1.5 * hf_error + 1e-3, (our_error, hf_error)
    assert torch.nn.functional.cosine_similarity(ours_bf16, ref).min() > 0.999
    torch.testing.assert_close(ours_bf16, hf_bf16, atol=0.1, rtol=0.05)


def test_fp16_runs_and_stays_close(tiny_vision):
    folder, hf = tiny_vision
    ours = VisionTransformer.from_pretrained(folder, dtype="float16")
    assert ours.dtype == torch.float16
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = ours(pixels).pooler_output
        ref = hf(pixels).pooler_output
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)


def test_sdpa_and_eager_agree_and_attentions_match_transformers(tiny_vision):
    folder, hf = tiny_vision
    ours = VisionTransformer.from_pretrained(folder)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fused = ours(pixels, output_hidden_states=True)
        ours.set_attn_implementation("eager")
        eager = ours(pixels, output_hidden_states=True, output_attentions=True)
        hf.set_attn_implementation("eager")
        ref = hf(pixels, output_attentions=True)
        hf.set_attn_implementation("sdpa")
    assert_parity(fused, eager, FP32_ATOL)
    assert len(eager.attentions) == 2
    for ours_w, hf_w in zip(eager.attentions, ref.attentions):
        assert ours_w.shape == (3, 4, 16, 16)
        torch.testing.assert_close(ours_w, hf_w, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours_w.sum(-1), torch.ones(3, 4, 16))
    head = eager.head_attention
    assert head.shape == (3, 4, 1, 16)
    torch.testing.assert_close(head.sum(-1), torch.ones(3, 4, 1))
    # fused attention returns no weights unless asked for
    assert fused.attentions is None and fused.head_attention is None


def test_head_attention_matches_multihead_attention(tiny_vision):
    folder, hf = tiny_vision
    ours = VisionTransformer.from_pretrained(folder)
    tokens = torch.randn(2, 16, 64)
    with torch.no_grad():
        probe = hf.head.probe.repeat(2, 1, 1)
        _, ref = hf.head.attention(probe, tokens, tokens, average_attn_weights=False)
        _, weights = ours.head(tokens, return_weights=True)
    torch.testing.assert_close(weights, ref, atol=1e-6, rtol=0)


def test_every_parameter_gets_a_gradient(tiny_vision):
    ours = VisionTransformer.from_pretrained(tiny_vision[0]).train()
    out = ours(torch.randn(2, 3, 32, 32))
    (out.pooler_output.square().sum() + out.last_hidden_state.square().sum()).backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_random_init_is_sane():
    config = VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          image_size=32, patch_size=8)
    model = VisionTransformer(config)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.pos_embed.std().item() == pytest.approx(64 ** -0.5, rel=0.2)
    assert torch.equal(model.norm.weight, torch.ones(64))
    out = model(torch.randn(2, 3, 32, 32)).pooler_output
    assert torch.isfinite(out).all() and out.std() > 0


def test_save_pretrained_round_trips_both_ways(tiny_vision, tmp_path):
    folder, hf = tiny_vision
    ours = VisionTransformer.from_pretrained(folder)
    ours.save_pretrained(tmp_path / "ours")
    reloaded_hf = SiglipVisionModel.from_pretrained(tmp_path / "ours").eval()
    reloaded_ours = VisionTransformer.from_pretrained(tmp_path / "ours")
    for name, tensor in hf.state_dict().items():
        assert torch.equal(reloaded_hf.state_dict()[name], tensor), name
    for name, tensor in ours.state_dict().items():
        assert torch.equal(reloaded_ours.state_dict()[name], tensor), name
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded_hf(pixels).pooler_output, hf(pixels).pooler_output)


def test_dtype_and_device_arguments(tiny_vision):
    model = VisionTransformer.from_pretrained(tiny_vision[0], dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and not model.training
    # float pixels are cast to the weights' dtype, as transformers does
    assert model(torch.randn(1, 3, 32, 32)).pooler_output.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'float13'"):
        VisionTransformer.from_pretrained(tiny_vision[0], dtype="float13")


def test_bad_pixel_shape_is_explained(tiny_vision):
    model = VisionTransformer.from_pretrained(tiny_vision[0])
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 3, H, W\); got \(3, 32, 32\).*ImageProcessor"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="Unknown attention implementation 'flash'"):
        model.set_attn_implementation("flash")


def test_the_head_attention_alone_keeps_the_blocks_fused(tiny_vision):
    from vlm_vision import VisionTransformer

    tower = VisionTransformer.from_pretrained(tiny_vision[0])
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        everything = tower(pixels, output_attentions=True)
        head_only = tower(pixels, output_head_attention=True)
    assert head_only.attentions is None and head_only.head_attention.shape == (2, 4, 1, 16)
    assert torch.allclose(head_only.head_attention, everything.head_attention, atol=1e-6)
    assert torch.allclose(head_only.pooler_output, tower(pixels).pooler_output, atol=1e-5)  # eager head vs SDPA
