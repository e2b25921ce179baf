"""Image-caption datasets that users bring: CSV, JSONL or a class-per-folder tree.

`read_records` turns any of the three layouts into a list of `CaptionRecord`s and
fails early, naming the file and line, on what would otherwise break training
hours later (a missing column, an empty caption, images that aren't there).
`ImageCaptionDataset` serves `(pixels, caption)` pairs for a DataLoader. Every
random choice it makes (which caption, which augmentation) comes from a
generator seeded by `(seed, epoch, index)`, so a resumed run sees exactly the
data it would have seen, whatever the number of DataLoader workers.
`PreloadedImageCaptionDataset` makes the same draws for a corpus decoded into
memory once, and augments a whole batch at a time on the model's device. The
augmentations themselves are in `augment`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..model import ImageProcessor, fill_template, load_image
from .augment import Augment, EmojiAugment, StyleAugment, affine_warp

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of {}."
# File suffixes taken as images in a class-per-folder tree (compared in lower case).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_MISSING_SHOWN = 5  # how many missing image paths a MissingImagesError message lists


class MissingImagesError(FileNotFoundError):
    """Images referenced by a CSV or JSONL file are not on disk; `.missing` lists all of them."""

    def __init__(self, message: str, missing: list[Path]) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class CaptionRecord:
    """One image and what it shows: a main caption, optional alternative captions, an optional class label."""

    path: Path  # the image file
    caption: str  # the main caption (the first of `captions`)
    label: str | None = None  # class name, for zero-shot evaluation and per-class statistics
    alt_captions: tuple[str, ...] = ()  # more captions of the same image; training draws one per epoch
    cluster: str | None = None  # what it looks like (e.g. its emoji subcategory): training can batch clusters

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "alt_captions", tuple(self.alt_captions))
        for caption in self.captions:
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"Captions must be non-empty strings, got {caption!r} for {self.path}")

    @property
    def captions(self) -> tuple[str, ...]:
        """All captions of the image, the main one first."""
        return (self.caption, *self.alt_captions)


# ---------------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------------


def read_records(source: str | os.PathLike, template: str = DEFAULT_TEMPLATE,
                 cluster_field: str | None = None) -> list[CaptionRecord]:
    """Read a dataset from a `.csv` file, a `.jsonl` file or a class-per-folder tree.

    - CSV: header with `path` and `caption` columns (`label` used if present, other columns
      ignored); one record per row, so an image listed on several rows is seen once per row.
    - JSONL: one object per line with `path` and either `caption` (a string) or `captions`
      (a non-empty list of strings: one record per image, the first caption is the main one;
      the dataset draws one of them per epoch), and an optional `label`.
    - Folder: `root/<class>/**/*.png|jpg|...`; the class name with `_` and `-` turned into
      spaces is the label, and `template` with the label in its `{}` the caption. `template` is used only here.

    `cluster_field` names a JSONL key or CSV column that every record must fill: its value becomes the
    record's `cluster` (a folder dataset has none to give).

    Relative paths in CSV and JSONL files are relative to the file's folder. Raises ValueError
    (file and line named) for malformed rows, MissingImagesError when referenced images are
    absent, and ValueError for a dataset with no images.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"Dataset source {str(source)!r} doesn't exist: give a .csv, a .jsonl or a folder")
    if source.is_dir():
        if cluster_field:
            raise ValueError(f"cluster_field {cluster_field!r} names a column of a .csv or .jsonl dataset; "
                             f"{str(source)!r} is a folder: list its images in a .jsonl file with that key")
        records = _read_folder(source, template)
    elif source.suffix.lower() == ".csv":
        records = _read_csv(source, cluster_field)
    elif source.suffix.lower() == ".jsonl":
        records = _read_jsonl(source, cluster_field)
    else:
        raise ValueError(
            f"Unsupported dataset source {str(source)!r}: give a .csv file, a .jsonl file, "
            f"or a folder with one subfolder of images per class"
        )
    if not records and source.is_dir():
        raise ValueError(f"Dataset folder {str(source)!r} has no class folders of images: put each class's images "
                         f"in a subfolder named after it ({source / 'red_apple' / '1.png'}), or list them in a "
                         f".jsonl or .csv file")
    if not records:
        raise ValueError(f"Dataset {str(source)!r} has no images: a dataset needs at least one record")
    if not source.is_dir():
        _check_images_exist(records, source)
    logger.info("Read %d records from %s", len(records), source)
    return records


def _resolve(path_text: str, base: Path) -> Path:
    """A path from a dataset file: absolute as given, relative to the dataset file's folder otherwise."""
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else base / path


def _cluster(value: object, cluster_field: str | None, where: str) -> str | None:
    """The record's cluster: its `cluster_field` value, a non-empty string or whole number (every record needs one)."""
    if not cluster_field:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(f"{where}: {cluster_field!r} must be a non-empty string or a whole number for every record "
                         f"(it names the record's cluster or group), got {value!r}")
    return str(value).strip()


def _read_csv(file: Path, cluster_field: str | None = None) -> list[CaptionRecord]:
    # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark.
    with open(file, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [name for name in ("path", "caption", cluster_field) if name and name not in columns]
        if missing:
            extra = f", and {cluster_field!r} for the cluster field" if cluster_field else ""
            raise ValueError(
                f"{file}:1: missing column(s) {', '.join(missing)}; the header must name 'path' and "
                f"'caption' (and optionally 'label'){extra}, found {columns}"
            )
        records = []
        for row in reader:
            where = f"{file}:{reader.line_num}"
            path_text = (row.get("path") or "").strip()
            caption = (row.get("caption") or "").strip()
            if not path_text:
                raise ValueError(f"{where}: empty 'path'; every row needs an image path")
            if not caption:
                raise ValueError(f"{where}: empty 'caption' for {path_text!r}; every image needs a caption")
            label = (row.get("label") or "").strip() or None
            cluster = _cluster(row.get(cluster_field), cluster_field, where)
            records.append(CaptionRecord(_resolve(path_text, file.parent), caption, label, cluster=cluster))
    return records


def _read_jsonl(file: Path, cluster_field: str | None = None) -> list[CaptionRecord]:
    records = []
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) carry no record
            where = f"{file}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from e
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
            record = _record_from_json(item, file.parent, where)
            if cluster_field:
                record = replace(record, cluster=_cluster(item.get(cluster_field), cluster_field, where))
            records.append(record)
    return records


def _record_from_json(item: dict[str, Any], base: Path, where: str) -> CaptionRecord:
    """One CaptionRecord from a JSONL object; `where` ("file:line") prefixes every error."""
    path_text = item.get("path")
    if not isinstance(path_text, str) or not path_text.strip():
        raise ValueError(f"{where}: missing or empty 'path'; every line needs an image path")
    has_one, has_many = "caption" in item, "captions" in item
    if has_one == has_many:
        raise ValueError(
            f"{where}: give either 'caption' (a string) or 'captions' (a list of strings), "
            f"{'not both' if has_one else 'found neither'}"
        )
    captions = [item["caption"]] if has_one else item["captions"]
    if not isinstance(captions, list) or not captions:
        raise ValueError(f"{where}: 'captions' must be a non-empty list of strings, got {captions!r}")
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{where}: empty caption {caption!r} for {path_text!r}; captions must be non-empty text")
    label = item.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"{where}: 'label' must be a non-empty string or absent, got {label!r}")
    captions = [c.strip() for c in captions]
    return CaptionRecord(_resolve(path_text, base), captions[0], label and label.strip(), tuple(captions[1:]))


def class_caption_text(folder_name: str) -> str:
    """The readable class name of a folder: `red_apple` and `red-apple` become `red apple`."""
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split())


def _read_folder(root: Path, template: str) -> list[CaptionRecord]:
    fill_template(template, [], slot="the class name")  # checked before the folders are read
    records = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = class_caption_text(class_dir.name)
        files = sorted(
            p for p in class_dir.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )  # hidden files and folders (.DS_Store, .ipynb_checkpoints/) are not data
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) < len(files):
            logger.info(
                "Skipped %d non-image file(s) in %s (image suffixes: %s)",
                len(files) - len(images), class_dir, ", ".join(sorted(IMAGE_SUFFIXES)),
            )
        if not images:
            logger.warning("Skipped class folder %s: it has no image files", class_dir)
        caption = fill_template(template, [label])[0]
        records += [CaptionRecord(path, caption, label) for path in images]
    stray = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        logger.warning("Skipped %d image(s) directly in %s: images must be inside a class folder", len(stray), root)
    return records


def _check_images_exist(records: Sequence[CaptionRecord], source: Path) -> None:
    missing = sorted({r.path for r in records if not r.path.is_file()})
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:MAX_MISSING_SHOWN])
        more = f"\n  ... and {len(missing) - MAX_MISSING_SHOWN} more" if len(missing) > MAX_MISSING_SHOWN else ""
        raise MissingImagesError(
            f"{len(missing)} of {len(records)} images referenced by {source} are missing "
            f"(relative paths are taken from {source.parent}):\n  {shown}{more}",
            missing,
        )


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


def item_rng(seed: int, epoch: int, index: int, stream: int) -> random.Random:
    """A generator that depends only on (seed, epoch, index, stream): the same on resume and in any worker.

    Separate streams keep the caption draw and the augmentation independent, so adding a
    caption to a record doesn't change how its image is augmented.
    """
    state = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(2, dtype=np.uint64)
    return random.Random(int(state[0]) << 64 | int(state[1]))


class ImageCaptionDataset(Dataset):
    """(pixels (3, H, W) float32, caption) pairs from CaptionRecords, reproducible per (seed, epoch, index).

    Call `set_epoch(epoch)` before each epoch, or index with `dataset[epoch, index]` (what the
    trainer's sampler does, so that its DataLoader workers outlive an epoch), so that records
    with several captions show a different one each epoch. Images that can't be decoded raise
    `ImageLoadError` naming the file; the training loop decides whether to skip them.
    `style`, when given, filters each image after `augment` (see StyleAugment).
    """

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        processor: ImageProcessor | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        style: StyleAugment | None = None,
    ) -> None:
        if len(records) == 0:
            raise ValueError("ImageCaptionDataset needs at least one record; read_records(...) gives a list of them")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.records = list(records)
        self.processor = processor if processor is not None else ImageProcessor()
        self.augment = augment
        self.style = style
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose captions and augmentations the next items use."""
        if epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def caption_for(self, index: int, epoch: int | None = None) -> str:
        """The caption item `index` gets in `epoch` (default: the current one), without loading the image."""
        index = self._check_index(index)
        captions = self.records[index].captions
        if len(captions) == 1:
            return captions[0]
        return item_rng(self.seed, self.epoch if epoch is None else epoch, index, stream=0).choice(captions)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, str]:
        """Item `index` of the current epoch, or of another one as `dataset[epoch, index]`."""
        epoch, index = self._epoch_index(index)
        image = load_image(self.records[index].path)  # RGB, transparency composited onto white
        if self.augment is not None:
            image = self.augment(image, item_rng(self.seed, epoch, index, stream=1))
        if self.style is not None:
            image = self.style(image, item_rng(self.seed, epoch, index, stream=2))
        pixels = torch.from_numpy(self.processor.preprocess(image))  # (3, H, W) float32
        return pixels, self.caption_for(index, epoch)

    def pixels(self, inputs: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """The model's input from the first part of a collated batch: here the pixels already, moved to `device`."""
        return inputs.to(device)

    def _epoch_index(self, key: int | tuple[int, int]) -> tuple[int, int]:
        """(epoch, non-negative index) of `dataset[index]` (the current epoch) or `dataset[epoch, index]`."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        return epoch, self._check_index(index)

    def _check_index(self, index: int) -> int:
        """A non-negative index (so that -1 and len-1 draw the same randomness), or IndexError."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} records")
        return index % len(self)


class PreloadedImageCaptionDataset(ImageCaptionDataset):
    """An ImageCaptionDataset decoded into memory once, whose augmentation runs a batch at a time on the model's device.

    For corpora of small images that fit in memory (the emoji corpus: 18,593 images of 64 px,
    228 MB as uint8), where decoding and augmenting one PIL image at a time in DataLoader
    workers bounds a GPU's throughput. Items are `((index, theta), caption)`, cheap for a
    worker to make; `pixels` turns a collated batch of `(indices, thetas)` into the model's input.
    Images are resized to the model's size first, then augmented there. The random draws are
    ImageCaptionDataset's for the same (seed, epoch, index), so where a file has the model's
    aspect ratio (the emoji corpus: the model's size) both pick the same crops and rotations;
    pixels differ slightly along edges (torch's bicubic kernel is not PIL's). Each process
    (each DDP rank) holds its own copy of the images; DataLoader workers get none.
    """

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        processor: ImageProcessor | None = None,
        augment: EmojiAugment | None = None,
        seed: int = 0,
        style: StyleAugment | None = None,
    ) -> None:
        if augment is not None and not isinstance(augment, EmojiAugment):
            raise TypeError(f"PreloadedImageCaptionDataset augments with an EmojiAugment, got {type(augment).__name__}")
        super().__init__(records, processor, augment, seed, style)
        if augment is not None and augment.size not in (None, self.processor.size):
            raise ValueError(f"EmojiAugment(size={augment.size}) differs from the processor's size "
                             f"{self.processor.size}; preloaded images are augmented at the processor's size")
        self.images = self._decode()  # (N, 3, H, W) uint8
        self.image_size = tuple(self.images.shape[-2:])  # (H, W), which the workers need without the images
        logger.info("Decoded %d images into memory (%.0f MB of uint8 %s)", len(self.images),
                    self.images.numel() / 1e6, tuple(self.images.shape[1:]))

    def _decode(self) -> torch.Tensor:
        first = self.processor.resized(load_image(self.records[0].path))
        images = torch.empty((len(self.records), *first.shape), dtype=torch.uint8)
        for i, record in enumerate(self.records):
            pixels = first if i == 0 else self.processor.resized(load_image(record.path))
            if pixels.shape != first.shape:  # only without resizing: then every file must have one size
                raise ValueError(
                    f"{record.path} is {pixels.shape[2]}x{pixels.shape[1]}, {self.records[0].path} "
                    f"{first.shape[2]}x{first.shape[1]}: preloading without resizing (do_resize=False) "
                    f"needs images of one size; resize them or turn do_resize on"
                )
            images[i] = torch.from_numpy(pixels)
        return images

    def __getstate__(self) -> dict[str, Any]:
        """What pickling sends to a spawned DataLoader worker: everything but the images, which it never reads."""
        return {key: value for key, value in self.__dict__.items() if key != "images"}

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[tuple[int, torch.Tensor, torch.Tensor], str]:
        """`((index, theta, style), caption)` of item `index` in this epoch (or in another: `dataset[epoch, index]`)."""
        epoch, index = self._epoch_index(index)
        if self.augment is None:
            theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # the identity map
        else:
            height, width = self.image_size
            theta = self.augment.theta(height, width, item_rng(self.seed, epoch, index, stream=1))
        style = StyleAugment.NONE
        if self.style is not None:
            style = self.style.draw(item_rng(self.seed, epoch, index, stream=2))
        return (index, theta, torch.tensor(style)), self.caption_for(index, epoch)

    def pixels(self, inputs: tuple[torch.Tensor, ...], device: torch.device | str) -> torch.Tensor:
        """Float32 pixels (B, 3, H, W) on `device` for a batch: indices (B,), thetas (B, 2, 3), styles (B, 2)."""
        indices, thetas, styles = inputs
        images = self.images[indices].to(device)  # (B, 3, H, W) uint8
        if self.augment is not None:
            images = affine_warp(images, thetas.to(device), self.augment.fill)
        if self.style is not None:
            images = self.style.apply(images, styles.tolist())
        return self.processor.normalize(images)
