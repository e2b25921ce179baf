"""Teach a language model to see: `vlm-vision train-projector`.

examples:
    # stage 1 (LLaVA-1.5 pre-training): vision tower and LM frozen, the projector learns from image-caption pairs
    vlm-vision train-projector --data captions.jsonl --lm HuggingFaceTB/SmolLM2-135M --out runs/s1
    # stage 2: start from stage 1 and train the LM too, at its own (lower) learning rate
    vlm-vision train-projector --data captions.jsonl --init runs/s1/model --train-lm --out runs/s2
    # a tiny LM from scratch (a JSON of LlamaConfig fields), with a BPE tokenizer trained on the captions
    vlm-vision train-projector --data captions.jsonl --lm-config tiny_llama.json --train-lm --lr 2e-3
    torchrun --nproc-per-node 2 -m vlm_vision.vlm.train --config run.json      # DDP
    vlm-vision train-projector evaluate runs/s2/model --data held_out.jsonl  # exact match, token accuracy

The vision tower (`--vision`, default the embedded SigLIP) always stays frozen. A
training sequence is `prompt` (its `<image>` expanded to the projector's tokens)
followed by the caption and EOS; the loss is cross-entropy on the caption and EOS
only. Flags, the `--config` JSON, checkpoints (OUT/checkpoints/last.pt, resumed
exactly) and torchrun work as in `vlm-vision train`. The result, OUT/model,
is a `VisionLanguageModel.save_pretrained` folder, with the training config beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from ..checkpoints import DEFAULT_MODEL_NAME, resolve_checkpoint, write_json
from ..model import VisionTransformer, load_processor, use_bf16_autocast
from ..training import (
    CaptionRecord,
    EmojiAugment,
    ImageCaptionDataset,
    finish,
    init_distributed,
    lr_factor,
    optimizer_step,
    parse_config,
    process_batches,
    read_records,
    save_atomically,
)
from .model import IGNORE_INDEX, VisionLanguageModel
from .projector import FEATURE_TYPES, PROJECTOR_TYPES, Projector, ProjectorConfig

logger = logging.getLogger(__name__)

TRAINING_CONFIG = "training_config.json"  # written beside the model: how it was trained, and its prompt
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")  # of a tokenizer trained for an LM built from --lm-config


@dataclass(frozen=True)
class ProjectorTrainConfig:
    """One run. Learning rates and schedule follow LLaVA-1.5 (scripts/v1_5/pretrain.sh and finetune.sh);
    the batch and step counts are scaled down for a CPU."""

    data: tuple[str, ...] = ()  # caption files (.csv / .jsonl) or class-per-folder roots
    template: str = "{}"  # caption of class-per-folder images
    captions: str = "all"  # "all": one of each image's captions per epoch; "first": its main caption only
    prompt: str = "<image> name:"  # text before the caption; its <image> becomes the image tokens
    out: str = "runs/vlm"  # output folder: checkpoints/, tokenizer/ (with --lm-config), model/
    vision: str = ""  # SigLIP checkpoint (folder or Hub id) of the frozen tower; empty: the embedded default
    lm: str = ""  # a transformers causal LM, folder or Hub id (its own tokenizer comes with it)
    lm_config: str = ""  # or a JSON file of config fields (model_type defaults to "llama") to train from scratch
    init: str = ""  # or a VisionLanguageModel folder to start from (stage 2 after stage 1): tower, projector, LM
    vocab_size: int = 1000  # upper bound on BPE tokens of the tokenizer trained for --lm-config
    projector: str = "mlp2x_gelu"  # one of PROJECTOR_TYPES (LLaVA-1.5: mlp2x_gelu)
    feature: str = "patch"  # "patch": the tower's tokens; "pooled": its attention-pool vector as one token
    feature_layer: int = -1  # -1: last_hidden_state (post-LN); LLaVA reads -2 (pre-LN, second-to-last block)
    train_lm: bool = False  # stage 2: train the LM too, at lm_lr
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # global batch over all processes (LLaVA-1.5: 256 in stage 1, 128 in stage 2)
    lr: float = 1e-3  # projector's peak learning rate (LLaVA-1.5 stage 1: 1e-3)
    lm_lr: float = 2e-5  # the LM's, with --train-lm (LLaVA-1.5 stage 2: 2e-5)
    warmup_steps: int = 30  # linear warmup, then cosine decay to 0 (LLaVA-1.5: warmup ratio 0.03)
    weight_decay: float = 0.0  # AdamW, on matrices only (LLaVA-1.5: 0)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    bf16: bool | None = None  # bf16 autocast (the loss stays fp32); unset: where the device has bf16 units
    augment: bool = True  # colour-preserving crops and rotations (EmojiAugment)
    workers: int = 2  # DataLoader worker processes
    seed: int = 0
    save_every: int = 200  # steps between training-state checkpoints
    save_vision: bool = False  # write the tower into OUT/model/vision (a self-contained folder) instead of its name
    device: str = "auto"  # "auto": cuda when available, else cpu

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("No training data: pass --data CAPTIONS.jsonl|CAPTIONS.csv|CLASS_FOLDER")
        sources = [name for name in ("lm", "lm_config", "init") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(f"Give exactly one language model: --lm NAME_OR_PATH, --lm-config JSON or --init "
                             f"FOLDER; got {', '.join('--' + s.replace('_', '-') for s in sources) or 'none'}")
        if self.init:
            given = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self)
                     if f.name in ("vision", "projector", "feature", "feature_layer")
                     and getattr(self, f.name) != f.default]
            if given:
                raise ValueError(f"--init {self.init} brings its own vision tower and projector; drop {given}")
        if self.projector not in PROJECTOR_TYPES:
            raise ValueError(f"Unknown projector type: {self.projector!r}; choose from {PROJECTOR_TYPES}")
        if self.feature not in FEATURE_TYPES:
            raise ValueError(f"Unknown projector feature: {self.feature!r}; choose from {FEATURE_TYPES}")
        if self.captions not in ("all", "first"):
            raise ValueError(f"Unknown captions choice: {self.captions!r}; use 'all' or 'first'")
        if self.prompt.count("<image>") > 1:
            raise ValueError(f"The prompt takes at most one <image>; got {self.prompt!r}")


@dataclass
class ProjectorTrainResult:
    model_dir: Path  # the exported VisionLanguageModel folder (written once cfg.steps is reached)
    model: VisionLanguageModel  # the model as trained, in memory
    losses: dict[int, float] = field(default_factory=dict)  # step -> loss (over all processes)


# ---------------------------------------------------------------------------------------------------------------
# Building the model
# ---------------------------------------------------------------------------------------------------------------


def train_lm_tokenizer(texts: Sequence[str], folder: str | Path, vocab_size: int = 1000,
                       image_token: str = "<image>") -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer for a new LM on `texts` and save it in `folder`; reload with AutoTokenizer.

    Text round-trips exactly (case, punctuation and spaces kept: the model must write names
    as they are), so decoded generations compare with captions by `==`. Spaces become "▁"
    (Metaspace) and punctuation is split off, so "worker:" shares "▁worker". Every character
    of `texts` is in the alphabet; BOS is prepended, as Llama's tokenizer does.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("No text to train a tokenizer on")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    alphabet = sorted({c for t in texts for c in t if not c.isspace()})
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                                       initial_alphabet=alphabet, show_progress=False))
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", clean_up_tokenization_spaces=False)
    tokenizer.add_tokens([image_token], special_tokens=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def new_language_model(config_file: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int) -> torch.nn.Module:
    """A randomly initialised causal LM from a JSON of config fields, sized to `tokenizer`."""
    fields_ = json.loads(Path(config_file).read_text())
    taken = sorted({"vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"} & set(fields_))
    if taken:
        raise ValueError(f"{config_file}: {taken} come from the tokenizer trained on the captions; remove them")
    config = AutoConfig.for_model(fields_.pop("model_type", "llama"), **fields_, vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def build_model(cfg: ProjectorTrainConfig, records: Sequence[CaptionRecord], rank: int = 0) -> VisionLanguageModel:
    """The model at step 0: from --init, or the tower + a new projector + the LM (loaded or new)."""
    if cfg.init:
        model = VisionLanguageModel.from_pretrained(cfg.init)
        model.prompt = cfg.prompt  # the prompt this run trains it with, saved with it
        return model
    vision_name = cfg.vision or DEFAULT_MODEL_NAME  # recorded by name: a path would tie the VLM to this install
    vision = VisionTransformer.from_pretrained(vision_name)
    processor = load_processor(resolve_checkpoint(vision_name), vision.config)
    if cfg.lm:
        tokenizer = AutoTokenizer.from_pretrained(cfg.lm)
        language_model = AutoModelForCausalLM.from_pretrained(cfg.lm, dtype=torch.float32)
    else:
        folder = Path(cfg.out) / "tokenizer"
        if rank == 0 and not (folder / "tokenizer.json").is_file():
            texts = [c for r in records for c in r.captions] + [cfg.prompt.replace("<image>", " ")]
            train_lm_tokenizer(texts, folder, cfg.vocab_size)
        if dist.is_initialized():
            dist.barrier()  # the other processes wait for rank 0's tokenizer
        tokenizer = AutoTokenizer.from_pretrained(folder)  # from disk always, so a resumed run tokenizes alike
        language_model = new_language_model(cfg.lm_config, tokenizer, cfg.seed)
    torch.manual_seed(cfg.seed)
    projector = Projector(ProjectorConfig(kind=cfg.projector, vision_dim=vision.config.hidden_size,
                                          lm_dim=language_model.get_input_embeddings().embedding_dim,
                                          feature=cfg.feature, feature_layer=cfg.feature_layer))
    return VisionLanguageModel(vision, projector, language_model, tokenizer, processor,
                               vision_name_or_path=vision_name, prompt=cfg.prompt)


def build_optimizer(model: VisionLanguageModel, cfg: ProjectorTrainConfig) -> torch.optim.AdamW:
    """AdamW over the projector (at lr) and, with --train-lm, the LM (at lm_lr); decay on matrices only."""
    parts = [(model.projector, cfg.lr)] + ([(model.language_model, cfg.lm_lr)] if cfg.train_lm else [])
    groups = []
    for module, lr in parts:
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
        groups += [{"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.999))


def trained_parts(model: VisionLanguageModel, cfg: ProjectorTrainConfig) -> dict[str, torch.nn.Module]:
    """The modules a checkpoint must hold: the projector, and the LM when it trains or was built at random."""
    parts = {"projector": model.projector}
    if cfg.train_lm or cfg.lm_config:
        parts["language_model"] = model.language_model
    return parts


# ---------------------------------------------------------------------------------------------------------------
# Loss and evaluation
# ---------------------------------------------------------------------------------------------------------------


def caption_token_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, correct argmax predictions, count) over the labelled next tokens.

    Position t predicts token t + 1, as in transformers' causal-LM loss; the sum (not the
    mean) lets processes of different token counts combine into the global mean exactly.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)  # (B, L - 1, V), (B, L - 1)
    scored = labels != IGNORE_INDEX
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & scored).sum()
    return loss, correct, scored.sum()


@dataclass(frozen=True)
class CaptionEval:
    num_images: int
    exact_match: float  # greedy generation == the main caption
    token_accuracy: float  # teacher-forced next-token accuracy on the caption's tokens and EOS
    examples: tuple[tuple[str, str], ...] = ()  # (expected, generated) of the first images


@torch.inference_mode()
def evaluate_captions(model: VisionLanguageModel, records: Sequence[CaptionRecord], prompt: str,
                      batch_size: int = 64, max_new_tokens: int = 24, num_examples: int = 10) -> CaptionEval:
    """Exact match and token accuracy of `model` on each record's main caption (its name, for emoji)."""
    exact, correct, count, examples = 0, 0, 0, []
    for start in range(0, len(records), batch_size):
        chunk = records[start: start + batch_size]
        names = [r.caption for r in chunk]
        pixels = model.processor([r.path for r in chunk])  # (B, 3, H, W)
        batch = model.prepare_inputs(pixels, prompt, names)
        labels = batch.pop("labels")
        _, right, scored = caption_token_stats(model(**batch).logits, labels)
        correct, count = correct + right.item(), count + scored.item()
        generated = [g.strip() for g in model.generate(pixels, prompt, max_new_tokens=max_new_tokens)]
        exact += sum(g == name for g, name in zip(generated, names))
        examples += list(zip(names, generated))[: max(0, num_examples - len(examples))]
    return CaptionEval(len(records), exact / len(records), correct / count, tuple(examples))


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def load_records(cfg: ProjectorTrainConfig) -> list[CaptionRecord]:
    records = [r for source in cfg.data for r in read_records(source, template=cfg.template)]
    if cfg.captions == "first":
        records = [dataclasses.replace(r, alt_captions=()) for r in records]
    return records


def train(cfg: ProjectorTrainConfig, progress: bool = True, stop_at: int | None = None) -> ProjectorTrainResult:
    """Run (or resume) training and export OUT/model. Works alone and under torchrun.

    `stop_at` ends this run after that step with a checkpoint; the next call resumes there.
    """
    rank, world, device = init_distributed(cfg.device)
    cfg = dataclasses.replace(cfg, bf16=use_bf16_autocast(cfg.bf16, device))  # decided once, saved with the run
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({world})")
    out = Path(cfg.out)
    records = load_records(cfg)
    per_epoch = len(records) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(records)} training pairs can't fill one batch of {cfg.batch_size}")
    model = build_model(cfg, records, rank).to(device)
    model.freeze(vision=True, language_model=not cfg.train_lm)
    model.train()
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))

    step, result = 0, ProjectorTrainResult(model_dir=out / "model", model=model)
    checkpoint = out / "checkpoints" / "last.pt"
    config_dict = dataclasses.asdict(cfg) | {"data": list(cfg.data)}  # as saved: plain lists, loadable weights_only
    parts = trained_parts(model, cfg)
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["config"] != config_dict:
            logger.warning("Resuming %s with a changed config", checkpoint)
        for name, module in parts.items():
            module.load_state_dict(state["model"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])  # dropout, in LMs that have it
        step, result.losses = state["step"], state["losses"]
        logger.info("Resumed from %s at step %d", checkpoint, step)

    # DDP all-reduces the gradients of trainable parameters only: after its first broadcast the frozen tower
    # costs no communication.
    ddp = DistributedDataParallel(model) if world > 1 else model
    dataset = ImageCaptionDataset(records, model.processor, augment=EmojiAugment() if cfg.augment else None,
                                  seed=cfg.seed)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or rank != 0, unit="step", dynamic_ncols=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    started, samples = time.perf_counter(), 0
    last = min(cfg.steps, stop_at or cfg.steps)
    if step < last:
        for pixels, captions in process_batches(dataset, len(records), cfg.batch_size, cfg.seed, step, rank,
                                                world, cfg.workers):
            batch = model.prepare_inputs(pixels, cfg.prompt, captions)
            labels = batch.pop("labels").to(device)
            count = (labels[:, 1:] != IGNORE_INDEX).sum()  # this process's caption tokens
            if world > 1:
                dist.all_reduce(count)  # the global batch's: every process divides by it
            with autocast:
                logits = ddp(**batch).logits  # (B, L, V)
            loss_sum, _, _ = caption_token_stats(logits, labels)
            # DDP averages gradients over processes, so each scales by `world`: the result is the global mean.
            loss = loss_sum * world / count
            optimizer_step(loss, optimizer, scheduler, [p for p in model.parameters() if p.requires_grad],
                           cfg.grad_clip)
            step += 1
            samples += cfg.batch_size
            value = loss_sum.detach()
            if world > 1:
                dist.all_reduce(value)
            result.losses[step] = (value / count).item()
            bar.update(1)
            bar.set_postfix(loss=f"{result.losses[step]:.4f}",
                            samples_s=f"{samples / (time.perf_counter() - started):.0f}")
            if rank == 0 and (step % cfg.save_every == 0 or step == last):
                save_atomically({
                    "step": step, "model": {name: m.state_dict() for name, m in parts.items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(), "losses": result.losses, "config": config_dict,
                }, checkpoint)
            if step >= last:
                break
    bar.close()
    model.eval()
    if rank == 0 and step == cfg.steps:
        model.save_pretrained(result.model_dir, save_vision=cfg.save_vision, save_language_model=cfg.train_lm)
        write_json(result.model_dir / TRAINING_CONFIG, config_dict)
    if dist.is_initialized():
        dist.barrier()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[ProjectorTrainConfig, int | None]:
    """(ProjectorTrainConfig from an optional JSON --config file overridden by flags, --stop-at)."""
    return parse_config(ProjectorTrainConfig, argv, "vlm-vision train-projector", __doc__)


def evaluate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vlm-vision train-projector evaluate",
        description="Exact match (greedy generation == the main caption) and teacher-forced token accuracy.",
        epilog="example:\n  vlm-vision train-projector evaluate data/models/emoji-captioner \\\n"
               "      --data data/emoji-eval/twitter/captions.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a VisionLanguageModel folder")
    parser.add_argument("--data", nargs="+", required=True, help="caption files (.csv / .jsonl) or class folders")
    parser.add_argument("--prompt", help="default: the prompt the model was trained with")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--examples", type=int, default=10, help="print this many (expected, generated) pairs")
    args = parser.parse_args(argv)
    model = VisionLanguageModel.from_pretrained(args.model)
    records = [r for source in args.data for r in read_records(source, template="{}")][: args.limit]
    started = time.perf_counter()
    result = evaluate_captions(model, records, args.prompt or model.prompt, args.batch_size,
                               num_examples=args.examples)
    for expected, generated in result.examples:
        print(f"{'=' if expected == generated else 'x'} {expected!r} -> {generated!r}")
    print(f"{result.num_images} images: exact match {result.exact_match:.2%}, token accuracy "
          f"{result.token_accuracy:.2%} ({time.perf_counter() - started:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        return evaluate_main(argv[1:])
    cfg, stop_at = parse_args(argv)
    finish(train(cfg, stop_at=stop_at).model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
