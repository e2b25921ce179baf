"""Does "auto" pick the faster precision on this machine? bf16 against fp32, interleaved, for what users run.

    python benchmarks/precision.py                  # about 2 minutes on 2 cores
    python benchmarks/precision.py --min-time 20

Rows, each in bf16 and in fp32 on the same weights and inputs:
- training step of the default config (the embedded model's sizes, 64 px, batch 256, eager attention as
  TrainConfig's "auto" picks on CPU): forward under autocast, sigmoid loss, backward, AdamW;
- the embedded model's image encoder (weights in the dtype, as `dtype=` loads them), batch 256;
- a B/16@224 vision tower (random weights), batch 16.
Each row prints samples/s in both, the bf16/fp32 ratio, what `auto` picks here and whether that is the faster.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import torch

from timing import interleaved  # benchmarks/ is on sys.path when run as a script
from vlm_vision import PRESETS, VisionTransformer
from vlm_vision.checkpoints import DEFAULT_MODEL
from vlm_vision.model import auto_dtype, native_bf16


def cpu_line() -> str:
    name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                platform.processor()) if platform.system() == "Linux" else platform.processor()
    return (f"{name}, {torch.backends.cpu.get_cpu_capability()}, AVX-512 BF16 "
            f"{torch.cpu._is_avx512_bf16_supported()}, AMX {torch.cpu._is_amx_tile_supported()}, "
            f"VNNI {torch.cpu._is_vnni_supported()}; torch {torch.__version__}, {torch.get_num_threads()} threads")


def training_steps() -> tuple[int, dict[str, Callable[[], None]]]:
    from train import default_training_setup, sigmoid_step  # benchmarks/train.py

    from vlm_vision.training.train import set_attn_implementation

    model, pixels, ids = default_training_setup()
    set_attn_implementation(model, "eager", torch.device("cpu"))
    return len(pixels), {"bf16": sigmoid_step(model, pixels, ids, bf16=True),
                         "fp32": sigmoid_step(model, pixels, ids, bf16=False)}


def encoders(make: Callable[[], VisionTransformer], batch: int) -> dict[str, Callable[[], None]]:
    runs = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        model = make().to(dtype).eval()
        size = model.config.image_size
        pixels = torch.randn(batch, 3, size, size)

        def run(model=model, pixels=pixels) -> None:
            with torch.inference_mode():
                model(pixels)
        runs[name] = run
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-time", type=float, default=15.0, help="seconds per row, at least 3 runs of each")
    args = parser.parse_args()
    torch.manual_seed(0)
    picks = "bf16" if auto_dtype("cpu") == torch.bfloat16 else "fp32"
    print(f"# {cpu_line()}\n# native bf16: {native_bf16('cpu')}, so auto picks {picks}\n")
    print("| what | bf16 samples/s | fp32 samples/s | bf16 / fp32 | auto picks | auto is the faster |")
    print("|---|---|---|---|---|---|")
    batch, steps = training_steps()
    rows = [("training step, default config (D 192, 64 px), batch 256", batch, steps),
            ("embedded model's image encoder (64 px), batch 256", 256,
             encoders(lambda: VisionTransformer.from_pretrained(DEFAULT_MODEL), 256)),
            ("B/16@224 vision tower (random weights), batch 16", 16,
             encoders(lambda: VisionTransformer(PRESETS["siglip-base-patch16-224"]), 16))]
    for what, batch, runs in rows:
        seconds = interleaved(runs, args.min_time, warmup=1)
        rate = {name: batch / s for name, s in seconds.items()}
        faster = max(rate, key=rate.get)
        print(f"| {what} | {rate['bf16']:.1f} | {rate['fp32']:.1f} | {rate['bf16'] / rate['fp32']:.2f} | {picks} | "
              f"{'yes' if faster == picks else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
