"""Throughput of our vision tower's modes against transformers' SiglipVisionModel and ONNX Runtime, same weights,
same inputs, one process.

    python benchmarks/vision_tower.py                                  # B/16@224, batch 1 and 16, every variant
    python benchmarks/vision_tower.py --preset siglip-so400m-patch14-384 --batch-sizes 1 \\
        --variants "transformers sdpa float32" "transformers sdpa bfloat16" "ours exact auto" "ours int8"
    python benchmarks/vision_tower.py --device cuda --batch-sizes 256  # (GPU) fp32 and bf16 variants
    python benchmarks/vision_tower.py --preset siglip2-base-patch16-naflex  # SigLIP 2 NaFlex, 256 patches per image

Variants: transformers eager, SDPA and SDPA + torch.compile at float32 and bfloat16; ours exact and fast at both
dtypes, and int8; ONNX Runtime float32 and int8 (CPU). Each batch size times every variant interleaved (one call
of each in turn) so that drifts in the machine's speed touch all alike; each gets its median images/s. Printed per
variant: the ratio to transformers at its fastest dtype without compile ("vs tf") and with ("vs tf+c"); the share
of this machine's matmul roof for the dtype the variant computes in, measured in the same run at the MLP's shape;
the memory the variant added (RSS after its first call minus before it was built; CUDA: max allocated); and the
first call's seconds (compiling, exporting, quantising included).

A NaFlex preset (SigLIP 2) compares with transformers' Siglip2VisionModel on photos of four aspect ratios (3:4, 4:3,
1:1, 1:3), each cut into at most max patches (the preset's grid, 256 for B/16) and padded to it. Fixed-resolution
SigLIP 2 towers are SigLIP's architecture: their rows are the SigLIP preset of the same shape.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import platform
import time
from collections.abc import Callable

import psutil
import torch

from timing import interleaved, sync  # benchmarks/ is on sys.path when run as a script
from vlm_vision import PRESETS, VisionConfig, VisionTransformer, optimize
from vlm_vision.model import patch_grid_size
from vlm_vision.inference import OnnxVisionTower
from vlm_vision.model import auto_dtype
from vlm_vision.quiet import quiet_torchao

with quiet_torchao():  # transformers imports torchao where installed
    from transformers import Siglip2VisionConfig, Siglip2VisionModel, SiglipVisionConfig, SiglipVisionModel

PHOTO_SIZES = [(480, 640), (640, 480), (500, 500), (300, 900)]  # (height, width) of the NaFlex inputs, in turn

VARIANTS = [
    *(f"transformers {attn} {dtype}" for attn in ("eager", "sdpa", "sdpa+compile")
      for dtype in ("float32", "bfloat16")),
    *(f"ours {mode} {dtype}" for mode in ("exact", "fast") for dtype in ("float32", "bfloat16")),
    "ours int8", "onnx float32", "onnx int8",
]


def gflop_per_image(config: VisionConfig) -> float:
    """Multiply-adds x 2 of one forward pass: the encoder's matmuls and attention, and the pooling head."""
    N, D, I = config.num_patches, config.hidden_size, config.intermediate_size
    per_layer = 2 * N * (4 * D * D + 2 * D * I) + 2 * 2 * N * N * D
    patch = 2 * N * D * config.num_channels * config.patch_size ** 2
    head = 2 * (N * 2 * D * D + 3 * D * D + 2 * D * I) if config.vision_use_head else 0
    return (config.num_hidden_layers * per_layer + patch + head) / 1e9


def matmul_roofs(config: VisionConfig, device: str, min_time: float) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) by dtype of the MLP's first matmul at 16 images' tokens, (16 N x D) @ (D x I):
    a shape large enough to run near the machine's peak."""
    tokens, D, I = 16 * config.num_patches, config.hidden_size, config.intermediate_size
    x, w = torch.randn(tokens, D, device=device), torch.randn(I, D, device=device)  # nn.Linear's layout
    calls = {"float32": lambda: x @ w.T}
    xb, wb = x.bfloat16(), w.bfloat16()
    calls["bfloat16"] = lambda: xb @ wb.T
    if device == "cpu":
        xi = torch.randint(-127, 127, (tokens, D), dtype=torch.int8)
        wi = torch.randint(-127, 127, (D, I), dtype=torch.int8)
        calls["int8"] = lambda: torch._int_mm(xi, wi)
    seconds = interleaved(calls, min_time, 5, torch.device(device))
    return {name: 2 * tokens * D * I / s / 1e9 for name, s in seconds.items()}


def transformers_tower(config: VisionConfig, attn: str = "sdpa") -> torch.nn.Module:
    """transformers' model of `config`'s kind, random: SiglipVisionModel, or Siglip2VisionModel for NaFlex."""
    if config.naflex:
        return Siglip2VisionModel(Siglip2VisionConfig(**config.to_hf_dict(), attn_implementation=attn))
    return SiglipVisionModel(SiglipVisionConfig(**config.to_hf_dict(), attn_implementation=attn))


def model_inputs(config: VisionConfig, batch_size: int, device: str) -> dict[str, torch.Tensor]:
    """Random pixel values (B, 3, H, W); for NaFlex, patches of PHOTO_SIZES-shaped photos with mask and shapes."""
    if not config.naflex:
        return {"pixel_values": torch.randn(batch_size, 3, config.image_size, config.image_size, device=device)}
    p, N = config.patch_size, config.num_patches
    grids = [patch_grid_size(*PHOTO_SIZES[i % len(PHOTO_SIZES)], p, N) for i in range(batch_size)]
    shapes = torch.tensor([(h // p, w // p) for h, w in grids], device=device)
    mask = (torch.arange(N, device=device) < shapes.prod(-1, keepdim=True)).to(torch.int32)
    patches = torch.randn(batch_size, N, config.num_channels * p * p, device=device) * mask[..., None]
    return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}


def build(variant: str, hf_state: dict, config: VisionConfig, device: str, inputs: dict[str, torch.Tensor]
          ) -> Callable[[], object]:
    """A no-argument call running `variant` on `inputs`; built and called once (the first call) here."""
    kind, *rest = variant.split()
    if kind == "transformers":
        attn, dtype = rest
        model = transformers_tower(config, attn.split("+")[0])
        model.load_state_dict(hf_state)
        model = model.eval().to(device=device, dtype=getattr(torch, dtype))
        if attn.endswith("+compile"):
            model = torch.compile(model, options={"freezing": True} if device == "cpu" else None)
        cast = inputs | {"pixel_values": inputs["pixel_values"].to(getattr(torch, dtype))}
        return lambda: model(**cast)
    own = {k: v.clone() for k, v in hf_state.items()}  # not transformers' tensors: its memory counts
    tower = VisionTransformer.from_hf_state_dict(own, config).eval().to(device)
    if kind == "onnx":
        onnx = OnnxVisionTower.from_tower(tower, int8=rest[0] == "int8")
        return lambda: onnx(**inputs)
    mode, dtype = (rest + ["float32"])[:2]
    tower.to(getattr(torch, dtype))
    optimize(tower, mode)
    cast = inputs | {"pixel_values": inputs["pixel_values"].to(tower.dtype)}
    return lambda: tower(**cast)


def release_memory() -> None:
    """Free garbage and hand glibc's freed pages back, so that RSS before a build is what is alive."""
    gc.collect()
    if platform.system() == "Linux":
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def computes_in(variant: str) -> str:
    return "int8" if variant.endswith("int8") else variant.split()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="siglip-base-patch16-224", choices=sorted(PRESETS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS, metavar="VARIANT",
                        help="any of: " + "; ".join(VARIANTS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ONNX Runtime and int8 rows: CPU only)")
    parser.add_argument("--min-time", type=float, default=20.0, help="seconds of timed runs per batch size")
    parser.add_argument("--min-runs", type=int, default=3, help="timed runs per variant and batch size, at least")
    args = parser.parse_args()

    config = PRESETS[args.preset]
    torch.manual_seed(0)
    hf_state = transformers_tower(config).state_dict()
    variants = [v for v in args.variants if args.device == "cpu" or not v.startswith(("onnx", "ours int8"))]
    flops = gflop_per_image(config)
    process = psutil.Process()
    roofs = matmul_roofs(config, args.device, min_time=5)
    print(f"# {args.preset} ({flops:.1f} GFLOP/image), torch {torch.__version__}, {cpu_description()}, "
          f"{torch.get_num_threads()} threads, device {args.device}; auto dtype here: {auto_dtype(args.device)}")
    for batch_size in args.batch_sizes:
        inputs = model_inputs(config, batch_size, args.device)
        first_call, memory = {}, {}
        calls = {}  # the previous batch size's models go before these are built
        for variant in variants:
            release_memory()
            before = process.memory_info().rss
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with torch.inference_mode():
                call = build(variant, hf_state, config, args.device, inputs)
                call()
            sync(torch.device(args.device))
            first_call[variant] = time.perf_counter() - start
            memory[variant] = (torch.cuda.max_memory_allocated() if args.device == "cuda"
                               else process.memory_info().rss - before) / 2**20
            calls[variant] = call
        with torch.inference_mode():
            seconds = interleaved(calls, args.min_time, args.min_runs, torch.device(args.device), warmup=1)
        rate = {v: batch_size / s for v, s in seconds.items()}
        tf = max((r for v, r in rate.items() if v.startswith("transformers") and "compile" not in v), default=None)
        tfc = max((r for v, r in rate.items() if v.startswith("transformers")), default=None)
        print(f"\nbatch {batch_size}; matmul roofs: " + ", ".join(f"{k} {v:.0f}" for k, v in roofs.items())
              + " G(FL)OP/s (roof share: the variant's FLOP/s over its dtype's roof)")
        print("| variant | img/s | vs tf | vs tf+c | roof share | memory MiB | first call s |")
        print("|---|---|---|---|---|---|---|")
        for variant in variants:
            roof = roofs.get(computes_in(variant))
            share = f"{rate[variant] * flops / roof:.2f}" if roof else "-"
            ratio = f"{rate[variant] / tf:.2f}" if tf else "-"
            ratio_c = f"{rate[variant] / tfc:.2f}" if tfc else "-"
            print(f"| {variant} | {rate[variant]:.2f} | {ratio} | {ratio_c} | {share} | {memory[variant]:.0f} | "
                  f"{first_call[variant]:.1f} |", flush=True)


def cpu_description() -> str:
    """The CPU model and the capabilities that decide precision and int8 speed."""
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = {"AVX-512 BF16": torch.cpu._is_avx512_bf16_supported(), "AMX": torch.cpu._is_amx_tile_supported(),
             "VNNI": torch.cpu._is_vnni_supported()}
    return (f"{name} ({torch.backends.cpu.get_cpu_capability()}; "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()) + ")")


if __name__ == "__main__":
    main()
