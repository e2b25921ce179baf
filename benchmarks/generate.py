"""Latency of `VisionLanguageModel.generate` with one image: first token, tokens/s, and where the time goes.

    python benchmarks/generate.py                          # the shipped emoji captioner, and a bigger random VLM
    python benchmarks/generate.py --configs captioner --dtypes float32 bfloat16 --device cpu

Rows:
- "captioner": data/models/emoji-captioner (SigLIP 64 px, 64 image tokens, a 4-layer Llama of width 192).
- "b16+135m": random weights of a realistic small VLM: SigLIP B/16@224 (196 image tokens), the
  mlp2x_gelu projector, and a Llama shaped like SmolLM2-135M (30 layers, width 576, vocabulary 49,152).

Per row, interleaved run by run and reported as medians: the vision tower + projector alone
(`image_features`), `generate_ids` with 1 new token (time to first token: tokenising, the
tower, the projector and the LM's prefill), and `generate_ids` with N new tokens (EOS
suppressed, so every run makes N). Decode tokens/s is (N - 1) / (t_N - t_1).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from timing import interleaved  # benchmarks/ is on sys.path when run as a script
from vlm_vision import PRESETS, ImageProcessor, Projector, ProjectorConfig, VisionLanguageModel, VisionTransformer

ROOT = Path(__file__).resolve().parents[1]
CAPTIONER = ROOT / "data" / "models" / "emoji-captioner"
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)


def build(name: str) -> tuple[VisionLanguageModel, str]:
    """(model, prompt) of a row."""
    if name == "captioner":
        model = VisionLanguageModel.from_pretrained(CAPTIONER)
        return model, model.prompt
    if name != "b16+135m":
        raise ValueError(f"Unknown config {name!r}; use 'captioner' or 'b16+135m'")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(CAPTIONER / "tokenizer")  # any tokenizer with <image>: ids < 49,152
    vision = VisionTransformer(PRESETS["siglip-base-patch16-224"])
    lm = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    projector = Projector(ProjectorConfig(kind="mlp2x_gelu", vision_dim=768, lm_dim=576))
    model = VisionLanguageModel(vision, projector, lm, tokenizer, ImageProcessor(size=(224, 224)))
    return model.eval(), "<image> name:"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["captioner", "b16+135m"])
    parser.add_argument("--image", type=Path, default=ROOT / "data" / "samples" / "red_apple.png")
    parser.add_argument("--new-tokens", type=int, default=32, help="N: tokens of the long generation")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda too when present)")
    parser.add_argument("--min-time", type=float, default=10.0, help="seconds of timed runs per row")
    parser.add_argument("--min-runs", type=int, default=5, help="timed runs of each call per row, at least")
    args = parser.parse_args()

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    n = args.new_tokens
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, one image ({args.image.name}), greedy, N = {n}")
    print("| model | device | dtype | image tokens | input tokens | vision+projector ms | first token ms "
          "| vision share of first token | decode tokens/s | N-token generate ms | vision share of N tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        model, prompt = build(name)
        for device_name in devices:
            device = torch.device(device_name)
            for dtype_name in args.dtypes:
                model.to(device=device, dtype=getattr(torch, dtype_name))
                pixels = model.processor([args.image]).to(device)  # (1, 3, H, W)
                input_tokens = model.prepare_inputs(pixels, prompt)["input_ids"].shape[1]
                with torch.inference_mode():
                    seconds = interleaved({
                        "vision": lambda: model.image_features(pixels),
                        "first": lambda: model.generate_ids(pixels, prompt, max_new_tokens=1, min_new_tokens=1),
                        "all": lambda: model.generate_ids(pixels, prompt, max_new_tokens=n, min_new_tokens=n),
                    }, args.min_time, args.min_runs, device)
                vision, first, total = seconds["vision"], seconds["first"], seconds["all"]
                print(f"| {name} | {device_name} | {dtype_name} | {model.num_image_tokens} | {input_tokens} | "
                      f"{vision * 1e3:.1f} | {first * 1e3:.1f} | {vision / first:.0%} | {(n - 1) / (total - first):.0f}"
                      f" | {total * 1e3:.0f} | {vision / total:.0%} |", flush=True)


if __name__ == "__main__":
    main()
