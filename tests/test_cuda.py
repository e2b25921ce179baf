"""The same parity and products on a CUDA GPU; skipped where there is none (CI has none).

Run on a GPU machine with `pytest tests/test_cuda.py`. TF32 is off for the fp32
checks, so both models do true fp32 matrix products and the CPU tolerance holds
up to the GPU's different summation order.
"""

import pytest
import torch
from torch.utils.data import default_collate
from transformers import SiglipModel

from tests.helpers import checkpoints
from tests.helpers.photos import SAMPLES
from vlm_vision import VisionTransformer
from vlm_vision.checkpoints import DEFAULT_MODEL
from vlm_vision.model.dual_encoder import DualEncoder
from vlm_vision.model.processor import ImageProcessor
from vlm_vision.training.augment import EmojiAugment
from vlm_vision.training.data import CaptionRecord, PreloadedImageCaptionDataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_FP32_ATOL = 1e-4  # CPU parity is 1e-5; GPU kernels sum in other orders (measured on an H200: see the note)


@pytest.fixture(autouse=True)
def _no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(scope="module")
def b16(tmp_path_factory):
    folder = tmp_path_factory.mktemp("b16")
    hf = checkpoints.vision_checkpoint(folder, seed=1, **checkpoints.B16).cuda().eval()
    return hf, VisionTransformer.from_pretrained(folder, device="cuda")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@torch.no_grad()
def test_b16_parity_fp32_on_cuda(b16, attn):
    hf, ours = b16
    hf.set_attn_implementation(attn)
    ours.set_attn_implementation(attn)
    pixels = torch.randn(4, 3, 224, 224, device="cuda")
    a, b = hf(pixels, output_hidden_states=True), ours(pixels, output_hidden_states=True)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=GPU_FP32_ATOL, rtol=0)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=GPU_FP32_ATOL, rtol=0)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(y, x, atol=GPU_FP32_ATOL, rtol=0)
    cpu = ours.cpu()(pixels.cpu()).pooler_output  # and the GPU agrees with the CPU
    ours.cuda()
    torch.testing.assert_close(b.pooler_output.cpu(), cpu, atol=1e-3, rtol=0)


@torch.no_grad()
def test_bf16_on_cuda_close_to_transformers_bf16(b16):
    hf, ours = b16
    pixels = torch.randn(8, 3, 224, 224, device="cuda")
    ref = hf(pixels).pooler_output
    hf_bf16 = hf.to(torch.bfloat16)(pixels).pooler_output.float()
    ours_bf16 = ours.to(torch.bfloat16)(pixels).pooler_output.float()
    hf.float(), ours.float()
    hf_error, our_error = (hf_bf16 - ref).abs().max().item(), (ours_bf16 - ref).abs().max().item()
    assert our_error <= 1.5 * hf_error, (our_error, hf_error)
    assert torch.nn.functional.cosine_similarity(ours_bf16, ref).min() > 0.999


@torch.no_grad()
def test_dual_encoder_logits_on_cuda_match_transformers(tiny_siglip):
    folder, _ = tiny_siglip
    hf = SiglipModel.from_pretrained(folder).cuda().eval()
    ours = DualEncoder.from_pretrained(folder, device="cuda")
    pixels = torch.randn(3, 3, ours.vision.config.image_size, ours.vision.config.image_size)
    texts = ["a red circle", "a blue square", "green"]
    ids = ours.tokenize(texts)
    expected = hf(pixel_values=pixels.cuda(), input_ids=ids.cuda()).logits_per_image.cpu()
    torch.testing.assert_close(ours.logits(pixels, texts), expected, atol=1e-4, rtol=0)


def test_photo_index_builds_on_cuda_with_the_cpu_vectors(tmp_path):
    from vlm_vision.index import PhotoIndex

    vectors = {}
    for device in ("cpu", "cuda"):
        # float32 on both: "auto" would be bf16 on a GPU and, by CPU, either (device parity, not precision)
        with PhotoIndex(tmp_path / f"{device}.db", DEFAULT_MODEL, device=device, dtype="float32",
                        create=True) as index:
            assert index.build([SAMPLES], workers=2).encoded == 12
            assert index.search("red apple", k=3)[0].path.endswith("red_apple.png")
            vectors[device] = index.db.vectors()[1]
    torch.testing.assert_close(torch.from_numpy(vectors["cuda"]), torch.from_numpy(vectors["cpu"]), atol=1e-4,
                               rtol=0)


def test_preloaded_batches_augment_on_cuda_as_on_cpu():
    """`--preload` warps batches on the GPU: the same pixels as on the CPU, up to one uint8 level of rounding."""
    records = [CaptionRecord(path, path.stem.replace("_", " ")) for path in sorted(SAMPLES.glob("*.png"))]
    dataset = PreloadedImageCaptionDataset(records, ImageProcessor(size=(64, 64)), EmojiAugment(), seed=0)
    inputs = default_collate([dataset[3, i][0] for i in range(len(records))])
    on_gpu, on_cpu = dataset.pixels(inputs, "cuda"), dataset.pixels(inputs, "cpu")
    assert on_gpu.is_cuda and on_gpu.dtype == torch.float32
    difference = (on_gpu.cpu() - on_cpu).abs()
    assert difference.max() <= 2 / 255 + 1e-6 and difference.mean() < 1e-3
