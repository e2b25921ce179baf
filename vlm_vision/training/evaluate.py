"""Zero-shot classification and text-to-image retrieval metrics for a DualEncoder.

    vlm-vision eval --model default --data data/emoji-eval/twitter/captions.jsonl \\
        --classes data/emoji-eval/labels.txt
    vlm-vision eval ... --by subcategory   # also top-1/top-5 per group of a JSONL key or CSV column

Class embeddings average the normalised text embeddings of several prompt
templates and renormalise, as open_clip's `build_zero_shot_classifier` does.
SigLIP's scale and bias are monotonic, so ranking by cosine similarity ranks by
logit too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ImageLoadError
from ..model import DualEncoder, fill_template

# Prompts for the embedded emoji model; "{}" is the class name. It was trained on bare names, and
# prompts it never saw hurt: averaging five templates ("an emoji of {}." ...) gives 23.3% top-1 on the
# held-out subset where the bare name gives 45.3%. Models trained on prompts want theirs here.
EMOJI_TEMPLATES = ("{}",)


@dataclass
class GroupAccuracy:
    images: int
    top1: float
    top5: float
    top5_misses: int  # images whose true class is not among the 5 best


@dataclass
class ZeroShotResult:
    top1: float  # share of images whose true class ranks first
    top5: float
    text_to_image_r1: float  # share of class prompts whose image ranks in the top 1 / 5 / 10
    text_to_image_r5: float
    text_to_image_r10: float
    num_images: int
    num_classes: int
    groups: dict[str, GroupAccuracy] | None = None  # per group of images, when asked for


def class_embeddings(model: DualEncoder, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(C, D) normalised mean of each class's normalised template embeddings."""
    if not templates:
        raise ValueError("Give at least one prompt template, e.g. '{}' or 'a photo of {}.'")
    filled = [fill_template(template, class_names) for template in templates]  # (T, C)
    prompts = [prompt for per_class in zip(*filled) for prompt in per_class]  # class by class: (C, T)
    per_prompt = model.encode_texts(prompts).view(len(class_names), len(templates), -1)  # (C, T, D)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


def recall_at(scores: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Share of rows whose target column is among the row's k highest scores."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (R, k)
    return (top == targets[:, None]).any(dim=1).float().mean().item()


def zero_shot(model: DualEncoder, images: Sequence[str | Path], labels: Sequence[str],
              class_names: Sequence[str] | None = None, templates: Sequence[str] = EMOJI_TEMPLATES,
              batch_size: int = 256, groups: Sequence[str] | None = None) -> ZeroShotResult:
    """Classify `images` among `class_names` (default: the distinct `labels`) and retrieve images by class prompt.

    With `groups` (one name per image, e.g. its emoji subcategory), `result.groups` also gives top-1/top-5 per
    group (`group_accuracy`).
    """
    class_names, targets = class_targets(labels, class_names)
    image_emb = model.encode_images(list(images), batch_size=batch_size)  # (N, D)
    return metrics(image_emb, class_embeddings(model, class_names, templates), targets, groups)


def class_targets(labels: Sequence[str], class_names: Sequence[str] | None = None) -> tuple[list[str], torch.Tensor]:
    """(class names, each label's class index); class names default to the distinct labels in order."""
    if not labels:
        raise ValueError("Need at least one labelled image")
    class_names = list(dict.fromkeys(labels)) if class_names is None else list(class_names)
    index = {name: i for i, name in enumerate(class_names)}
    missing = sorted(set(labels) - set(index))
    if missing:
        raise ValueError(f"{len(missing)} labels are not among the class names, e.g. {missing[:5]}")
    return class_names, torch.tensor([index[label] for label in labels])


def group_accuracy(scores: torch.Tensor, targets: torch.Tensor, groups: Sequence[str]) -> dict[str, GroupAccuracy]:
    """Top-1/top-5 of the images (rows of `scores`, (N, C)) in each group, most top-5 misses first."""
    if len(groups) != len(targets):
        raise ValueError(f"{len(groups)} group names but {len(targets)} images")
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices  # (N, 5), ranked as recall_at ranks
    hit1, hit5 = (top[:, 0] == targets).tolist(), (top == targets[:, None]).any(dim=1).tolist()
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    found = {group: GroupAccuracy(len(rows), sum(hit1[i] for i in rows) / len(rows),
                                  sum(hit5[i] for i in rows) / len(rows), sum(not hit5[i] for i in rows))
             for group, rows in members.items()}
    return dict(sorted(found.items(), key=lambda item: (-item[1].top5_misses, item[0])))


def metrics(image_emb: torch.Tensor, class_emb: torch.Tensor, targets: torch.Tensor,
            groups: Sequence[str] | None = None) -> ZeroShotResult:
    """Top-1/5 of images (N, D) among classes (C, D), and text-to-image recall; per group of images too when
    `groups` names one for each (`group_accuracy`).

    Text-to-image recall uses one image per class (the first image of each class),
    so it is well defined when classes have several images.
    """
    if len(image_emb) != len(targets):
        raise ValueError(f"{len(image_emb)} image embeddings but {len(targets)} targets")
    scores = image_emb @ class_emb.T  # (N, C)
    first: dict[int, int] = {}
    for i, c in enumerate(targets.tolist()):
        first.setdefault(c, i)
    queried = torch.tensor(sorted(first))  # classes that have an image
    image_of = torch.tensor([first[c] for c in queried.tolist()])
    text_scores = class_emb[queried] @ image_emb[image_of].T  # (Q, Q): class prompts against one image each
    diagonal = torch.arange(len(queried))
    return ZeroShotResult(
        top1=recall_at(scores, targets, 1), top5=recall_at(scores, targets, 5),
        text_to_image_r1=recall_at(text_scores, diagonal, 1), text_to_image_r5=recall_at(text_scores, diagonal, 5),
        text_to_image_r10=recall_at(text_scores, diagonal, 10),
        num_images=len(image_emb), num_classes=len(class_emb),
        groups=None if groups is None else group_accuracy(scores, targets, groups),
    )


def main(argv: list[str] | None = None) -> int:
    from .data import read_records

    parser = argparse.ArgumentParser(
        prog="vlm-vision eval", description="Zero-shot top-1/top-5 and text-to-image recall.",
        epilog="examples:\n"
               "  vlm-vision eval --model runs/emoji/model --data CORPUS/twitter/captions.jsonl\n"
               "  vlm-vision eval --model default "
               "--data data/emoji-eval/twitter/captions.jsonl --classes data/emoji-eval/labels.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SigLIP checkpoint folder or Hub id")
    parser.add_argument("--data", required=True, nargs="+", help="caption files (.jsonl/.csv) or class folders")
    parser.add_argument("--classes", type=Path, default=None,
                        help="text file with one class name per line (default: the distinct labels of --data)")
    parser.add_argument("--templates", nargs="+", default=list(EMOJI_TEMPLATES), help="prompts with {}")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--by", metavar="FIELD", default=None,
                        help="also top-1/top-5 per value of this JSONL key or CSV column (e.g. subcategory)")
    args = parser.parse_args(argv)
    try:
        records = [r for source in args.data for r in read_records(source, cluster_field=args.by)]
    except (ValueError, OSError) as e:  # a missing file or --by field, a bad line: say which and stop
        parser.error(str(e))
    records = [r for r in records if r.label is not None][: args.limit]
    if not records:
        print("error: no labelled images in --data", file=sys.stderr)
        return 2
    try:
        classes = None
        if args.classes:
            classes = [line.strip() for line in args.classes.read_text(encoding="utf-8").splitlines() if line.strip()]
        for template in args.templates:
            fill_template(template, [])  # before the model loads
        model = DualEncoder.from_pretrained(args.model)
        result = zero_shot(model, [r.path for r in records], [r.label for r in records], class_names=classes,
                           templates=args.templates, groups=[r.cluster for r in records] if args.by else None)
    except (CheckpointError, ImageLoadError, ValueError, OSError) as e:  # a checkpoint, a class list, a template
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result)))
        return 0
    for name, value in asdict(result).items():
        if name != "groups":
            print(f"{name:>18}: {value:.4f}" if isinstance(value, float) else f"{name:>18}: {value}")
    if result.groups:
        width = max(len(args.by), *(len(group) for group in result.groups))
        print(f"\n{args.by:<{width}}  images   top-1   top-5  top-5 misses")
        for group, acc in result.groups.items():
            print(f"{group:<{width}}  {acc.images:6d}  {acc.top1:6.1%}  {acc.top5:6.1%}  {acc.top5_misses:12d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
