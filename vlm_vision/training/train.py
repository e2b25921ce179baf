"""Train a SigLIP DualEncoder from image-caption data: `vlm-vision train`.

    vlm-vision train --data corpus/google/captions.jsonl --out runs/emoji --steps 2000
    vlm-vision train --data mine.jsonl --init runs/emoji/model --out runs/tuned --lr 1e-4  # fine-tune
    torchrun --nproc-per-node 2 -m vlm_vision.training.train --config run.json      # DDP + distributed loss

Every field of `TrainConfig` is a flag (`--lr 3e-4`, `--no-bf16`) and a key of the
optional `--config` JSON file; flags win. Training state is saved every
`save_every` steps to OUT/checkpoints/last.pt and resumed from there, exactly:
the data order and augmentation are functions of (seed, epoch, index), so a
resumed run takes the same next step as an uninterrupted one. The result,
OUT/model/, is a transformers `SiglipModel` checkpoint. `--init MODEL`
fine-tunes a SigLIP checkpoint (the loaded model itself: its weights and whole configs, so its sizes; its
tokenizer (a --tokenizer beside it must be the same vocabulary), its preprocessing; a fresh optimizer)
instead of starting from random weights; size flags may be left out (a given one must be the checkpoint's).
A resumed run needs the same --init and the sizes it was trained at (a mismatch stops it, naming them).
`--preload` decodes the images into memory once and augments whole batches on the
training device, for small-image corpora where decoding one image at a time in
workers would starve a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from ..quiet import quiet_torchao

with quiet_torchao():  # transformers imports torchao where installed: noisy on a CPU
    from transformers import PreTrainedTokenizerBase, SiglipTextConfig, SiglipTextModel, SiglipTokenizer


from ..checkpoints import replace_atomically
from ..errors import CheckpointError
from ..model import (
    ATTN_IMPLEMENTATIONS,
    INIT_LOGIT_BIAS,
    INIT_LOGIT_SCALE,
    DualEncoder,
    ImageProcessor,
    VisionConfig,
    VisionTransformer,
    as_device,
    token_ids,
    train_tokenizer,
    use_bf16_autocast,
)
from . import losses
from .augment import EmojiAugment, StyleAugment
from .batching import epoch_batches
from .cli_config import parse_config
from .data import ImageCaptionDataset, PreloadedImageCaptionDataset, read_records

logger = logging.getLogger(__name__)


# The embedded model's sizes (data/models/siglip-emoji): what the size fields of a run without --init default to.
DEFAULT_SIZES = {"context_length": 16, "image_size": 64, "patch_size": 8, "vision_width": 192, "vision_depth": 6,
                 "vision_heads": 3, "vision_mlp": 768, "text_width": 192, "text_depth": 4, "text_heads": 3,
                 "text_mlp": 768}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Its sizes default to the embedded emoji model's (64-px images, patch 8, width 192)."""

    data: tuple[str, ...] = ()  # caption files (.csv / .jsonl) or class-per-folder roots
    template: str = "a photo of {}."  # caption of class-per-folder images
    out: str = "runs/siglip"  # output folder: checkpoints/, tokenizer/, model/
    tokenizer: str = ""  # an existing tokenizer folder (with init: its vocabulary); empty: init's, else train one
    init: str = ""  # a SiglipModel checkpoint (folder or Hub id) to fine-tune; its sizes are the run's
    vocab_size: int = 4000  # upper bound on SentencePiece pieces when training one
    # The model's sizes. Unset (None): the --init checkpoint's, else the embedded model's (DEFAULT_SIZES).
    context_length: int | None = None  # text positions; captions are padded to this length
    image_size: int | None = None
    patch_size: int | None = None
    vision_width: int | None = None  # also the embedding size both towers project to
    vision_depth: int | None = None
    vision_heads: int | None = None
    vision_mlp: int | None = None
    text_width: int | None = None
    text_depth: int | None = None
    text_heads: int | None = None
    text_mlp: int | None = None
    loss: str = "sigmoid"  # "sigmoid" (SigLIP) or "softmax" (CLIP), for comparison
    steps: int = 1000  # optimizer steps
    batch_size: int = 256  # global batch: pairs per step over all processes
    lr: float = 1e-3  # peak learning rate, after linear warmup, then cosine decay to 0
    warmup_steps: int = 100
    weight_decay: float = 0.1  # AdamW, on matrices only (not biases, norms, embeddings, t', b)
    beta2: float = 0.95  # SigLIP paper: lower beta2 stabilises sigmoid-loss training
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    bf16: bool | None = None  # bf16 autocast of the towers (losses stay fp32); unset: if the device has bf16 units
    attn_implementation: str = "auto"  # "sdpa" or "eager"; "auto": eager on CPU, where SDPA's backward is slow
    augment: bool = True  # colour-preserving crops and rotations
    style_augment: bool = False  # also StyleAugment: blur, downscale, thin outlines or median on some images
    style_p: float = 0.5  # with style_augment: the share of images that get a filter
    distinct_captions: bool = False  # keep images with the same main caption out of each other's batches
    cluster_field: str = ""  # JSONL key or CSV column (e.g. "subcategory"): batches of whole clusters (hard negatives)
    preload: bool = False  # decode every image into memory once, augment batches on the device (small-image corpora)
    workers: int = 2  # DataLoader worker processes
    seed: int = 0
    save_every: int = 200  # steps between training-state checkpoints
    device: str = "auto"  # "auto": cuda when available, else cpu

    def __post_init__(self) -> None:
        if self.loss not in ("sigmoid", "softmax"):
            raise ValueError(f"Unknown loss {self.loss!r}; use 'sigmoid' or 'softmax'")
        if self.attn_implementation not in ("auto", *ATTN_IMPLEMENTATIONS):
            raise ValueError(f"Unknown attn_implementation {self.attn_implementation!r}; use 'auto', 'sdpa' or 'eager'")
        if not self.data:
            raise ValueError("No training data: pass --data CAPTIONS.jsonl|CAPTIONS.csv|CLASS_FOLDER")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps} and {self.batch_size}")
        if not 0 <= self.style_p <= 1:
            raise ValueError(f"style_p is the share of images filtered, in [0, 1]; got {self.style_p}")
        if self.style_p != TrainConfig.style_p and not self.style_augment:
            raise ValueError(f"style_p {self.style_p} sets how many images StyleAugment filters: add --style-augment")
        if not self.init:
            for name, size in DEFAULT_SIZES.items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, size)  # frozen: set once, here
        for tower, width, heads in (("vision", self.vision_width, self.vision_heads),
                                    ("text", self.text_width, self.text_heads)):
            if width is not None and heads is not None and width % heads:
                raise ValueError(f"{tower}_width {width} must be divisible by {tower}_heads {heads}")

    def vision_config(self) -> VisionConfig:
        return VisionConfig(hidden_size=self.vision_width, intermediate_size=self.vision_mlp,
                            num_hidden_layers=self.vision_depth, num_attention_heads=self.vision_heads,
                            image_size=self.image_size, patch_size=self.patch_size)

    def text_config(self, tokenizer: SiglipTokenizer) -> SiglipTextConfig:
        return SiglipTextConfig(
            vocab_size=len(tokenizer), hidden_size=self.text_width, intermediate_size=self.text_mlp,
            num_hidden_layers=self.text_depth, num_attention_heads=self.text_heads,
            max_position_embeddings=self.context_length, projection_size=self.vision_width,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        )


@dataclass
class TrainResult:
    model_dir: Path  # the exported SiglipModel checkpoint
    losses: dict[int, float] = field(default_factory=dict)  # step -> loss (all processes' mean)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_model(cfg: TrainConfig, tokenizer: SiglipTokenizer, init: DualEncoder | None = None) -> DualEncoder:
    """A seeded new DualEncoder of `cfg`'s sizes, or `init` (the --init checkpoint, with its weights, configs and
    preprocessing) with `tokenizer`."""
    torch.manual_seed(cfg.seed)
    if init is not None:
        model = init
        model.tokenizer = tokenizer
    else:
        init_scale = INIT_LOGIT_SCALE if cfg.loss == "sigmoid" else losses.CLIP_INIT_LOGIT_SCALE
        model = DualEncoder(
            VisionTransformer(cfg.vision_config()), SiglipTextModel(cfg.text_config(tokenizer)), tokenizer,
            ImageProcessor(size=(cfg.image_size, cfg.image_size)), init_scale, INIT_LOGIT_BIAS,
        )
    model.logit_bias.requires_grad_(cfg.loss == "sigmoid")  # the softmax loss has no bias
    return model


def set_attn_implementation(model: DualEncoder, name: str, device: torch.device) -> None:
    """Pick the kernel of both towers' self-attention (the pooling head's single query always uses SDPA).

    "auto" is eager on CPU: at 64 tokens, PyTorch's fused CPU attention backward costs a quarter of a
    training step, and the explicit softmax path trains the default model 1.30x faster
    (benchmarks/train.py). The two compute the same function, up to float rounding.
    """
    if name == "auto":
        name = "eager" if device.type == "cpu" else "sdpa"
    model.vision.set_attn_implementation(name)
    model.text.set_attn_implementation(name)


def build_optimizer(model: DualEncoder, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "embed" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-6,
    )


def contrastive_loss(cfg: TrainConfig, model: DualEncoder, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if cfg.loss == "sigmoid":
        fn = losses.distributed_sigmoid_loss if distributed else losses.sigmoid_loss
        return fn(image, text, model.logit_scale, model.logit_bias)
    if distributed:
        image, text = losses.gather_with_grad(image), losses.gather_with_grad(text)
    return losses.softmax_loss(image, text, model.logit_scale)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, parameters: Iterable[torch.Tensor],
                   grad_clip: float) -> None:
    """One update: gradients of `loss`, clipped to global norm `grad_clip` (0: not clipped), then a step of both."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    scheduler.step()


def save_atomically(obj: object, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda f: torch.save(obj, f))


def load_tokenizer(cfg: TrainConfig, captions: list[str], rank: int) -> SiglipTokenizer:
    folder = Path(cfg.tokenizer or Path(cfg.out) / "tokenizer")
    if not cfg.tokenizer and rank == 0 and not (folder / "spiece.model").is_file():
        train_tokenizer(captions, folder, vocab_size=cfg.vocab_size, max_length=cfg.context_length)
    if dist.is_initialized():
        dist.barrier()  # the other processes wait for rank 0's tokenizer
    return SiglipTokenizer.from_pretrained(folder, model_max_length=cfg.context_length)


# The size flags and the config fields they set: --init reads them all (a head count changes no tensor's shape).
_VISION_FLAGS = {"vision_width": "hidden_size", "vision_mlp": "intermediate_size", "vision_depth": "num_hidden_layers",
                 "vision_heads": "num_attention_heads", "image_size": "image_size", "patch_size": "patch_size"}
_TEXT_FLAGS = {"text_width": "hidden_size", "text_mlp": "intermediate_size", "text_depth": "num_hidden_layers",
               "text_heads": "num_attention_heads", "context_length": "max_position_embeddings"}


def load_init(cfg: TrainConfig) -> tuple[TrainConfig, DualEncoder]:
    """(the run's config with the --init checkpoint's sizes, the checkpoint: a full SigLIP).

    Size fields left unset take the checkpoint's values; one set to another value is a CheckpointError naming it.
    """
    source = DualEncoder.from_pretrained(cfg.init)
    sizes = {flag: getattr(config, field)
             for config, flags in ((source.vision.config, _VISION_FLAGS), (source.text.config, _TEXT_FLAGS))
             for flag, field in flags.items()}
    differ = [f"--{flag.replace('_', '-')} {getattr(cfg, flag)} (checkpoint: {size})"
              for flag, size in sizes.items() if getattr(cfg, flag) not in (None, size)]
    if differ:
        raise CheckpointError(f"--init {cfg.init}: this run's sizes are not the checkpoint's; leave the size flags "
                              f"(and --config keys) out to take the checkpoint's (as in its config.json): "
                              + ", ".join(differ))
    return dataclasses.replace(cfg, **sizes), source


def check_vocabulary(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase,
                     init_tokenizer: PreTrainedTokenizerBase) -> None:
    """--tokenizer with --init must be the checkpoint's vocabulary, piece for piece: its token embeddings are
    indexed by it. Sizes alone can't tell: two SentencePiece runs capped at the same --vocab-size have equal sizes."""
    ours, theirs = tokenizer.get_vocab(), init_tokenizer.get_vocab()
    if ours != theirs:
        moved = sum(ours.get(piece) != index for piece, index in theirs.items())
        raise CheckpointError(
            f"--tokenizer {cfg.tokenizer} is not the vocabulary of --init {cfg.init} ({len(ours)} tokens vs "
            f"{len(theirs)}, {moved} of the checkpoint's missing or at other ids), and the checkpoint's token "
            f"embeddings are indexed by its own: drop --tokenizer to use the checkpoint's")


def init_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device), joining torchrun's process group when launched by it (nccl on GPU, else gloo)."""
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    return rank, world, as_device(device)  # a device this machine lacks stops the run here, before any data is read


def train(cfg: TrainConfig, progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Run (or resume) training and export OUT/model. Works alone and under torchrun.

    `stop_at` ends this run after that step with a checkpoint, for time-boxed jobs;
    the next call resumes there. The model is exported only once `cfg.steps` is reached.
    """
    rank, world, device = init_distributed(cfg.device)
    cfg = dataclasses.replace(cfg, bf16=use_bf16_autocast(cfg.bf16, device))  # decided once, saved with the run
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({world})")
    out = Path(cfg.out)
    checkpoint = out / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, map_location=device, weights_only=True) if checkpoint.is_file() else None
    for key in ("init", "tokenizer"):  # a resumed run's vocabulary and weights must be the ones it started with
        if state is not None and state["config"].get(key, "") != getattr(cfg, key):
            raise ValueError(f"{checkpoint} was trained with --{key} {state['config'].get(key, '')!r}, this run "
                             f"has {getattr(cfg, key)!r}: resume with the same --{key}, or pass a new --out")
    pretrained = None
    if cfg.init:  # before reading the data: a wrong --init fails at once
        cfg, pretrained = load_init(cfg)
    if state is not None:  # the saved weights fit only the sizes they were trained at
        differ = [f"--{name.replace('_', '-')} {state['config'][name]} (this run: {getattr(cfg, name)})"
                  for name in DEFAULT_SIZES if state["config"].get(name, getattr(cfg, name)) != getattr(cfg, name)]
        if differ:
            fix = "--init's sizes have changed since: pass a new --out" if cfg.init else \
                "resume with those size flags, or pass a new --out"
            raise ValueError(f"{checkpoint} was trained with " + ", ".join(differ) + f": {fix}")
    records = [r for source in cfg.data
               for r in read_records(source, template=cfg.template, cluster_field=cfg.cluster_field or None)]
    if pretrained is not None and not cfg.tokenizer:  # its own: its token embeddings are indexed by that vocabulary
        tokenizer = pretrained.tokenizer
    else:
        tokenizer = load_tokenizer(cfg, [c for r in records for c in r.captions], rank)
        if pretrained is not None:
            check_vocabulary(cfg, tokenizer, pretrained.tokenizer)
    model = build_model(cfg, tokenizer, init=pretrained)  # a resumed run restores its own weights below
    model = model.to(device).train()
    set_attn_implementation(model, cfg.attn_implementation, device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))

    step, result = 0, TrainResult(model_dir=out / "model")
    config_dict = dataclasses.asdict(cfg) | {"data": list(cfg.data)}  # as saved: plain lists, loadable weights_only
    if state is not None:
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
        if defaults | state["config"] != config_dict:  # fields added since the checkpoint count as their defaults
            logger.warning("Resuming %s with a changed config", checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, result.losses = state["step"], state["losses"]
        for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            # The saved rate was the old schedule's; with a changed --steps the next step takes the new one's.
            group["lr"] = base_lr * factor(step)
        logger.info("Resumed from %s at step %d", checkpoint, step)

    ddp = DistributedDataParallel(model) if world > 1 else model
    augment = EmojiAugment() if cfg.augment else None
    dataset_class = PreloadedImageCaptionDataset if cfg.preload else ImageCaptionDataset
    style = StyleAugment(p=cfg.style_p) if cfg.style_augment else None
    dataset = dataset_class(records, model.processor, augment=augment, seed=cfg.seed, style=style)
    per_epoch = len(records) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(records)} training pairs can't fill one batch of {cfg.batch_size}")
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or rank != 0, unit="step", dynamic_ncols=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    started, samples = time.perf_counter(), 0
    last = min(cfg.steps, stop_at or cfg.steps)
    if step < last:
        # Cluster batches keep a caption's images apart too: runs of a cluster would put them side by side.
        groups = [r.caption for r in records] if cfg.distinct_captions or cfg.cluster_field else None
        clusters = [r.cluster for r in records] if cfg.cluster_field else None
        tokenize = functools.partial(token_ids, tokenizer, context_length=cfg.context_length)
        for inputs, input_ids in process_batches(dataset, len(records), cfg.batch_size, cfg.seed, step, rank,
                                                 world, cfg.workers, groups, tokenize, clusters):
            with autocast:
                image, text = ddp(dataset.pixels(inputs, device), input_ids.to(device))
            loss = contrastive_loss(cfg, model, image.float(), text.float())
            optimizer_step(loss, optimizer, scheduler, model.parameters(), cfg.grad_clip)
            step += 1
            samples += cfg.batch_size
            value = loss.detach()
            if world > 1:
                dist.all_reduce(value, op=dist.ReduceOp.AVG)
            result.losses[step] = value.item()
            bar.update(1)
            bar.set_postfix(loss=f"{value.item():.4f}", t=f"{model.logit_scale.exp().item():.2f}",
                            b=f"{model.logit_bias.item():.2f}",
                            samples_s=f"{samples / (time.perf_counter() - started):.0f}")
            if rank == 0 and (step % cfg.save_every == 0 or step == last):
                save_atomically({
                    "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "losses": result.losses, "config": config_dict,
                }, checkpoint)
            if step >= last:
                break
    bar.close()
    if rank == 0 and step == cfg.steps:
        model.save_pretrained(result.model_dir)
    if dist.is_initialized():
        dist.barrier()
    return result


def process_batches(dataset: ImageCaptionDataset, num_records: int, batch_size: int, seed: int, step: int,
                    rank: int, world: int, workers: int,
                    groups: Sequence[Hashable] | None = None,
                    tokenize: Callable[[list[str]], torch.Tensor] | None = None,
                    clusters: Sequence[Hashable] | None = None,
                    ) -> Iterator[tuple[Any, list[str] | torch.Tensor]]:
    """This process's share of every global batch from `step` on, epoch after epoch, without end.

    Each batch is (inputs, captions), or (inputs, token ids) with `tokenize`: then the workers
    tokenize too, off the training loop's critical path. `dataset.pixels(inputs, device)` makes
    the model's input of them (for an ImageCaptionDataset, `inputs` are the pixels already).

    The batches of an epoch depend only on (seed, epoch), so a run resumed at `step` sees exactly
    the batches an uninterrupted run would have.
    """
    per_epoch = num_records // batch_size
    local = batch_size // world

    def batches() -> Iterator[list[tuple[int, int]]]:
        epoch, offset = divmod(step, per_epoch)
        while True:
            for batch in epoch_batches(num_records, batch_size, seed, epoch, groups, clusters)[offset:]:
                yield [(epoch, index) for index in batch[rank * local: (rank + 1) * local]]
            epoch, offset = epoch + 1, 0

    # One DataLoader for the whole run: its workers live on across epochs (each item names its epoch),
    # which matters when an epoch is a handful of big batches.
    yield from DataLoader(dataset, batch_sampler=batches(), num_workers=workers,
                          collate_fn=functools.partial(_collate, tokenize=tokenize))


def _collate(items: list[tuple[Any, str]],
             tokenize: Callable[[list[str]], torch.Tensor] | None = None) -> tuple[Any, Any]:
    """(the items' first parts collated: pixels, or (indices, thetas, styles) when preloaded; captions or token ids)."""
    captions = [caption for _, caption in items]
    return default_collate([inputs for inputs, _ in items]), tokenize(captions) if tokenize else captions


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, int | None]:
    """(TrainConfig from an optional JSON --config file overridden by flags named after its fields, --stop-at)."""
    return parse_config(TrainConfig, argv, "vlm-vision train", __doc__)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, stop_at = parse_args(argv)
    finish(train(cfg, stop_at=stop_at).model_dir)
    return 0


def finish(model_dir: Path) -> None:
    """End a training entry point: say where the model is (once, from rank 0) and leave the process group."""
    if (not dist.is_initialized() or dist.get_rank() == 0) and model_dir.is_dir():
        print(f"model saved to {model_dir}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
