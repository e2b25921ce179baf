"""Training throughput, and loss-only cost of the sigmoid vs the softmax loss.

    python benchmarks/train.py                 # both parts
    python benchmarks/train.py --part step     # training samples/s: ours vs transformers' SiglipModel
    python benchmarks/train.py --part loss --batch-sizes 1024 4096 16384
    python benchmarks/train.py --part data --data /work/corpus/google/captions.jsonl --workers 1

Part "step": one optimizer step (forward, loss, backward, AdamW) of the default
training config (TrainConfig's defaults: the embedded model's sizes) on random
64-px images, for our DualEncoder and for transformers' SiglipModel with the
same weights and the same loss; prints samples/s and the ratio, with PyTorch's
fused attention (sdpa) in both and with the eager path in both, all four interleaved.

Part "data": the input pipeline alone, batches of --batch-size for the model's
device: images decoded and augmented one at a time with PIL in DataLoader workers
(`ImageCaptionDataset`) vs decoded once and augmented a batch at a time with
torch (`--preload`, `PreloadedImageCaptionDataset`); prints batches/s, samples/s
and the ratio. Without --data it writes 2,048 64-px PNGs of discs to a
temporary folder.

Part "loss": the loss alone (forward + backward on random normalised
embeddings, D = 192) at each batch size, each in a fresh subprocess so that its
peak resident memory (ru_maxrss) is its own; prints milliseconds and MiB above
the process's baseline, and the softmax/sigmoid ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from timing import interleaved  # benchmarks/ is on sys.path when run as a script


def time_loss(name: str, batch: int, dim: int, repeats: int) -> tuple[float, float]:
    """(median ms, peak MiB above baseline) of forward + backward of one loss."""
    from vlm_vision.training import losses

    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=-1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=-1).requires_grad_()
    scale = torch.tensor([losses.INIT_LOGIT_SCALE], requires_grad=True)
    bias = torch.tensor([losses.INIT_LOGIT_BIAS], requires_grad=True)
    baseline = _reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if name == "sigmoid":
            loss = losses.sigmoid_loss(image, text, scale, bias)
        else:
            loss = losses.softmax_loss(image, text, scale)
        loss.backward()
        times.append(time.perf_counter() - start)
        image.grad = text.grad = scale.grad = bias.grad = None
    return statistics.median(times) * 1000, (_status_kib("VmHWM") - baseline) / 1024


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> int:
    """Reset the peak resident size (VmHWM) to the current one (Linux >= 4.0) and return it in KiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


def loss_part(batch_sizes: list[int], dim: int, repeats: int) -> None:
    print("| batch | sigmoid ms | softmax ms | ms ratio softmax/sigmoid | sigmoid peak MiB | softmax peak MiB |")
    print("|---|---|---|---|---|---|")
    for batch in batch_sizes:
        row = {}
        for name in ("sigmoid", "softmax"):
            done = subprocess.run([sys.executable, __file__, "--one-loss", name, str(batch), str(dim), str(repeats)],
                                  capture_output=True, text=True, check=True)
            row[name] = [float(x) for x in done.stdout.split()]
        (s_ms, s_mib), (x_ms, x_mib) = row["sigmoid"], row["softmax"]
        print(f"| {batch} | {s_ms:.1f} | {x_ms:.1f} | {x_ms / s_ms:.2f} | {s_mib:.0f} | {x_mib:.0f} |", flush=True)


def default_training_setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """(our DualEncoder in TrainConfig's default sizes, random pixels, random token ids) of one default batch."""
    from vlm_vision.training.train import TrainConfig, build_model

    class _Tokenizer:  # the step benchmarks feed token ids directly; only the size matters
        pad_token_id, eos_token_id = 0, 1

        def __len__(self) -> int:
            return 4000

    cfg = TrainConfig(data=("unused",))
    pixels = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size)
    ids = torch.randint(2, 4000, (cfg.batch_size, cfg.context_length))
    return build_model(cfg, _Tokenizer()).train(), pixels, ids


def sigmoid_step(model: torch.nn.Module, pixels: torch.Tensor, ids: torch.Tensor,
                 bf16: bool = True) -> Callable[[], None]:
    """One optimizer step of our model (forward under autocast or not, sigmoid loss, backward, AdamW)."""
    from vlm_vision.training import losses
    from vlm_vision.training.train import TrainConfig, build_optimizer

    optimizer = build_optimizer(model, TrainConfig(data=("unused",)))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            image, text = model(pixels, ids)
        loss = losses.sigmoid_loss(image, text, model.logit_scale, model.logit_bias)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def step_part(min_time: float) -> None:
    from transformers import SiglipConfig, SiglipModel

    from vlm_vision.checkpoints.convert import ours_to_hf
    from vlm_vision.training.train import set_attn_implementation

    ours, pixels, ids = default_training_setup()
    hf = SiglipModel(SiglipConfig(vision_config=ours.vision.config.to_hf_dict(),
                                  text_config=ours.text.config.to_dict())).train()
    hf.vision_model.load_state_dict(ours_to_hf(ours.vision.state_dict(), ours.vision.config))
    hf.text_model.load_state_dict(ours.text.state_dict())
    batch = len(pixels)
    ours_step = sigmoid_step(ours, pixels, ids)

    def hf_step(optimizer=torch.optim.AdamW(hf.parameters(), lr=1e-3)) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = hf(input_ids=ids, pixel_values=pixels, return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()

    def with_kernel(step: Callable[[], None], kernel: str) -> Callable[[], None]:
        def run() -> None:
            set_attn_implementation(ours, kernel, torch.device("cpu"))
            hf.set_attn_implementation(kernel)
            step()
        return run

    # All four interleaved, so that a drift in the machine's speed touches each alike.
    steps = {(name, kernel): with_kernel(step, kernel) for kernel in ("sdpa", "eager")
             for name, step in (("ours", ours_step), ("transformers", hf_step))}
    sps = {key: batch / seconds for key, seconds in interleaved(steps, min_time, warmup=1).items()}
    for kernel in ("sdpa", "eager"):
        ours_sps, hf_sps = sps["ours", kernel], sps["transformers", kernel]
        print(f"| default config (D 192, 64 px, batch {batch}, bf16 autocast), attention {kernel} | "
              f"{ours_sps:.1f} | {hf_sps:.1f} | {ours_sps / hf_sps:.3f} |")
    print(f"\nours, eager / sdpa attention: {sps['ours', 'eager'] / sps['ours', 'sdpa']:.2f}x "
          f"(TrainConfig.attn_implementation 'auto' picks eager on CPU)")


def data_part(data: str | None, batch: int, workers: int, min_time: float, device: str) -> None:
    import functools
    import itertools
    import tempfile
    from pathlib import Path

    from PIL import Image, ImageDraw

    from vlm_vision.training.augment import EmojiAugment
    from vlm_vision.training.data import CaptionRecord, ImageCaptionDataset, PreloadedImageCaptionDataset, read_records
    from vlm_vision.model.processor import ImageProcessor
    from vlm_vision.training.train import process_batches

    with tempfile.TemporaryDirectory() as folder:
        if data:
            records = read_records(data)
        else:
            records = []
            for k in range(2048):
                image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
                ImageDraw.Draw(image).ellipse((k % 20, k % 13, 40 + k % 20, 40 + k % 13),
                                              fill=(k % 256, 255 - k % 256, (7 * k) % 256, 255))
                image.save(Path(folder) / f"{k}.png")
                records.append(CaptionRecord(Path(folder) / f"{k}.png", f"disc {k}"))
        processor = ImageProcessor(size=(64, 64))
        rates = {}
        for name, dataset_class in (("decoded", ImageCaptionDataset), ("preloaded", PreloadedImageCaptionDataset)):
            started = time.perf_counter()
            dataset = dataset_class(records, processor, EmojiAugment(), seed=0)
            setup = time.perf_counter() - started
            batches = process_batches(dataset, len(records), batch, seed=0, step=0, rank=0, world=1,
                                      workers=workers)
            pixels = functools.partial(dataset.pixels, device=device)
            for inputs, _ in itertools.islice(batches, 2):  # warm-up: worker start
                pixels(inputs)
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < min_time or count < 3:
                inputs, _ = next(batches)
                out = pixels(inputs)
                count += 1
            if out.is_cuda:
                torch.cuda.synchronize()
            rates[name] = count / (time.perf_counter() - started)
            print(f"| {name} | {setup:.1f} | {rates[name]:.2f} | {rates[name] * batch:.0f} |")
        print(f"preloaded / decoded: {rates['preloaded'] / rates['decoded']:.2f}x "
              f"({len(records)} images, batch {batch}, {workers} worker(s), device {device})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one-loss":
        name, batch, dim, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(*time_loss(name, batch, dim, repeats))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["step", "loss", "data", "both"], default="both",
                        help="both: step and loss")
    parser.add_argument("--data", help="part data: a caption file or class folder (default: generated discs)")
    parser.add_argument("--batch-size", type=int, default=256, help="part data")
    parser.add_argument("--workers", type=int, default=1, help="part data: DataLoader workers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="part data")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=30.0)
    args = parser.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("step", "both"):
        print("| what | ours samples/s | transformers samples/s | ratio |")
        print("|---|---|---|---|")
        step_part(args.min_time)
    if args.part in ("loss", "both"):
        loss_part(args.batch_sizes, args.dim, args.repeats)
    if args.part == "data":
        print("| input pipeline | set-up s | batches/s | samples/s |")
        print("|---|---|---|---|")
        data_part(args.data, args.batch_size, args.workers, args.min_time, args.device)


if __name__ == "__main__":
    main()
