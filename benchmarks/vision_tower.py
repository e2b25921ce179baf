"""Throughput of our vision tower against transformers' SiglipVisionModel, same weights, same process.

    python benchmarks/vision_tower.py                      # B/16@224, batch 1 and 16, fp32 and bf16
    python benchmarks/vision_tower.py --batch-sizes 64 --dtypes bfloat16 --device cuda

Each row times both models interleaved (ours, theirs, ours, ...) so that
frequency scaling and background load hit both alike, and reports the median
images/s of each and their ratio (ours / transformers; > 1 means we are faster).
"""

from __future__ import annotations

import argparse
import platform

import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from timing import interleaved  # benchmarks/ is on sys.path when run as a script
from vlm_vision import PRESETS, VisionTransformer


def build_pair(preset: str, attn: str) -> tuple[SiglipVisionModel, VisionTransformer]:
    config = PRESETS[preset]
    hf = SiglipVisionModel(SiglipVisionConfig(**config.to_hf_dict(), attn_implementation=attn)).eval()
    ours = VisionTransformer.from_hf_state_dict(hf.state_dict(), config).eval()
    ours.set_attn_implementation(attn)
    return hf, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="siglip-base-patch16-224", choices=sorted(PRESETS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda too when present)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--min-time", type=float, default=20.0, help="seconds of timed runs per row (both models)")
    parser.add_argument("--min-runs", type=int, default=7, help="timed runs per model and row, at least")
    args = parser.parse_args()

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.manual_seed(0)
    hf, ours = build_pair(args.preset, args.attn)
    size = PRESETS[args.preset].image_size
    print(f"# {args.preset}, attention={args.attn}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print("| device | dtype | batch | ours img/s | transformers img/s | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            hf.to(device=device, dtype=dtype)
            ours.to(device=device, dtype=dtype)
            for batch in args.batch_sizes:
                pixels = torch.randn(batch, 3, size, size, device=device)
                with torch.inference_mode():
                    diff = (ours(pixels).pooler_output.float() - hf(pixels).pooler_output.float()).abs().max().item()
                with torch.inference_mode():
                    seconds = interleaved({"ours": lambda: ours(pixels), "hf": lambda: hf(pixels)}, args.min_time,
                                          args.min_runs, pixels.device)
                ours_ips, hf_ips = batch / seconds["ours"], batch / seconds["hf"]
                print(f"| {device} | {dtype_name} | {batch} | {ours_ips:.2f} | {hf_ips:.2f} | "
                      f"{ours_ips / hf_ips:.3f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
