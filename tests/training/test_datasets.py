"""The caption datasets: ImageCaptionDataset (decoded with PIL per item) and PreloadedImageCaptionDataset (decoded
once, augmented a batch at a time with torch), and that both draw the same items.

Every image is a real PNG written into tmp_path. Offline, CPU, fast.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.helpers.photos import BLUE, RED, disc, png
from vlm_vision.errors import ImageLoadError
from vlm_vision.model.processor import ImageProcessor
from vlm_vision.training.augment import EmojiAugment, StyleAugment, affine_warp
from vlm_vision.training.data import CaptionRecord, ImageCaptionDataset, PreloadedImageCaptionDataset, item_rng

# ---------------------------------------------------------------------------------------------------------------
# ImageCaptionDataset
# ---------------------------------------------------------------------------------------------------------------


def test_dataset_pixels_equal_the_processor(tmp_path):
    rgba = Image.new("RGBA", (37, 23), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((3, 2, 30, 20), fill=(200, 30, 60, 180))
    rgba.save(tmp_path / "a.png")
    path = png(tmp_path / "b.png", BLUE, (50, 70))
    records = [CaptionRecord(tmp_path / "a.png", "a"), CaptionRecord(path, "b")]
    for processor in (ImageProcessor(), ImageProcessor(size=(32, 48))):
        dataset = ImageCaptionDataset(records, processor)
        for i, record in enumerate(records):
            pixels, caption = dataset[i]
            assert pixels.dtype == torch.float32 and caption == record.caption
            assert torch.equal(pixels, processor(record.path)[0])


def test_caption_choice_is_reproducible_and_varies_across_epochs(tmp_path):
    path = png(tmp_path / "a.png")
    captions = tuple(f"caption {k}" for k in range(6))
    records = [CaptionRecord(path, captions[0], None, captions[1:]) for _ in range(30)]

    def draws(seed: int, epoch: int) -> list[str]:
        dataset = ImageCaptionDataset(records, seed=seed)  # a fresh object: as after a restart
        dataset.set_epoch(epoch)
        return [dataset.caption_for(i) for i in range(len(records))]

    assert draws(0, 3) == draws(0, 3)
    assert draws(0, 3) != draws(0, 4)
    assert draws(0, 3) != draws(1, 3)
    assert set(draws(0, 3)) == set(captions)  # every caption gets drawn
    dataset = ImageCaptionDataset(records, seed=0)
    dataset.set_epoch(3)
    assert [dataset[i][1] for i in (0, 5)] == [draws(0, 3)[0], draws(0, 3)[5]]
    assert [dataset[4, i][1] for i in (0, 5)] == [draws(0, 4)[0], draws(0, 4)[5]]
    assert dataset.caption_for(-1) == dataset.caption_for(len(records) - 1)
    single = ImageCaptionDataset([CaptionRecord(path, "only")])
    for epoch in range(3):
        single.set_epoch(epoch)
        assert single.caption_for(0) == "only"


def test_augmented_items_are_reproducible_per_seed_epoch_index(tmp_path):
    records = [CaptionRecord(png(tmp_path / f"{i}.png", size=(40, 40)), "x") for i in range(3)]

    def item(epoch: int, index: int) -> torch.Tensor:
        dataset = ImageCaptionDataset(records, ImageProcessor(size=(32, 32)), EmojiAugment(), seed=7)
        dataset.set_epoch(epoch)
        return dataset[index][0]

    assert torch.equal(item(1, 2), item(1, 2))
    assert not torch.equal(item(1, 2), item(2, 2))
    assert not torch.equal(item(1, 0), item(1, 2))  # the same picture, augmented differently
    # dataset[epoch, index] (how the trainer's long-lived workers ask) is item `index` of that epoch.
    dataset = ImageCaptionDataset(records, ImageProcessor(size=(32, 32)), EmojiAugment(), seed=7)
    assert torch.equal(dataset[1, 2][0], item(1, 2)) and torch.equal(dataset[2, 2][0], item(2, 2))
    assert dataset.epoch == 0


def test_dataset_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dataset = ImageCaptionDataset([CaptionRecord(tmp_path / "bad.png", "x")])
    with pytest.raises(ImageLoadError, match=r"bad\.png"):
        dataset[0]
    with pytest.raises(IndexError, match="index 1 out of range for a dataset of 1 records"):
        dataset[1]
    with pytest.raises(ValueError, match="epoch must be a non-negative int"):
        dataset.set_epoch(-1)
    with pytest.raises(ValueError, match="needs at least one record"):
        ImageCaptionDataset([])
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        ImageCaptionDataset(dataset.records, seed=-2)


# ---------------------------------------------------------------------------------------------------------------
# PreloadedImageCaptionDataset: the same items, augmented a batch at a time with torch
# ---------------------------------------------------------------------------------------------------------------


def emoji_like_records(folder: Path, count: int = 12) -> list[CaptionRecord]:
    """Discs and rings of different colours on transparent backgrounds, 64 px: small artwork like the emoji corpus."""
    rng = np.random.default_rng(0)
    records = []
    for k in range(count):
        image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.integers(4, 20, 2)
        ImageDraw.Draw(image).ellipse((x, y, x + 40, y + 40), fill=(*colour, 255), outline=(0, 0, 0, 255), width=3)
        image.save(folder / f"{k}.png")
        records.append(CaptionRecord(folder / f"{k}.png", f"disc {k}", None, (f"round {k}",)))
    return records


def collated_inputs(dataset: PreloadedImageCaptionDataset, epoch: int, indices: list[int]):
    return torch.utils.data.default_collate([dataset[epoch, i][0] for i in indices])


def test_preloaded_items_draw_what_the_pil_dataset_draws(tmp_path):
    records = emoji_like_records(tmp_path)
    processor = ImageProcessor(size=(64, 64))
    pil = ImageCaptionDataset(records, processor, EmojiAugment(), seed=3)
    preloaded = PreloadedImageCaptionDataset(records, processor, EmojiAugment(), seed=3)
    assert preloaded.images.dtype == torch.uint8 and preloaded.images.shape == (12, 3, 64, 64)
    indices = list(range(12))
    for epoch in (0, 5):
        assert [preloaded[epoch, i][1] for i in indices] == [pil[epoch, i][1] for i in indices]  # same captions
        torch_pixels = preloaded.pixels(collated_inputs(preloaded, epoch, indices), "cpu")
        pil_pixels = torch.stack([pil[epoch, i][0] for i in indices])
        assert torch_pixels.dtype == torch.float32 and torch_pixels.shape == pil_pixels.shape
        # The same crops and rotations: only bicubic kernels (PIL a=-0.5, torch a=-0.75) and rounding differ,
        # along edges; a different draw would put discs elsewhere (mean difference ~0.2).
        difference = (torch_pixels - pil_pixels).abs()
        assert difference.mean() < 0.01 and (difference > 0.1).float().mean() < 0.02
    other_epoch = preloaded.pixels(collated_inputs(preloaded, 6, indices), "cpu")
    assert (other_epoch - torch_pixels).abs().mean() > 0.05


def test_preloaded_without_augment_equals_the_processor_and_warp_keeps_colour(tmp_path):
    records = emoji_like_records(tmp_path, count=4)
    processor = ImageProcessor(size=(48, 48))  # resized once, when preloaded
    preloaded = PreloadedImageCaptionDataset(records, processor)
    pixels = preloaded.pixels(collated_inputs(preloaded, 0, [3, 1]), "cpu")
    assert torch.equal(pixels, processor([records[3].path, records[1].path]))
    # Rotations and crops add no colour: a red disc stays red, white and blends of the two, as with PIL.
    red = torch.from_numpy(np.asarray(disc(RED)).transpose(2, 0, 1).copy())[None].repeat(8, 1, 1, 1)
    thetas = torch.stack([EmojiAugment().theta(64, 64, random.Random(s)) for s in range(8)])
    out = affine_warp(red, thetas, (255, 255, 255)).int()
    assert out.dtype == torch.int32 and (out[:, 0] == 255).all() and (out[:, 1] == out[:, 2]).all()
    assert not torch.equal(out[0], out[1])
    still = EmojiAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0).theta(64, 64, random.Random(0))
    torch.testing.assert_close(still, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    assert torch.equal(affine_warp(red[:1], still[None], (255, 255, 255)), red[:1])


def test_preloaded_workers_get_draws_without_images(tmp_path):
    """What a spawned DataLoader worker receives: no pixels (228 MB for the emoji set), the same items."""
    preloaded = PreloadedImageCaptionDataset(emoji_like_records(tmp_path, count=3), ImageProcessor(size=(64, 64)),
                                             EmojiAugment(), seed=1)
    worker = pickle.loads(pickle.dumps(preloaded))
    assert not hasattr(worker, "images") and worker.image_size == (64, 64)
    for index in range(3):
        (i, theta, style), caption = worker[2, index]
        (j, expected_theta, expected_style), expected_caption = preloaded[2, index]
        assert (i, caption) == (j, expected_caption) and torch.equal(theta, expected_theta)
        assert torch.equal(style, expected_style)


def test_preloaded_rejects_what_it_cannot_batch(tmp_path):
    records = emoji_like_records(tmp_path, count=2)
    with pytest.raises(TypeError, match="augments with an EmojiAugment, got function"):
        PreloadedImageCaptionDataset(records, augment=lambda image, rng: image)
    with pytest.raises(ValueError, match=r"EmojiAugment\(size=\(32, 32\)\) differs from the processor's size"):
        PreloadedImageCaptionDataset(records, ImageProcessor(size=(64, 64)), EmojiAugment(size=(32, 32)))
    Image.new("RGB", (40, 64), "white").save(records[1].path)
    with pytest.raises(ValueError, match=r"1\.png is 40x64, .*0\.png 64x64: preloading without resizing"):
        PreloadedImageCaptionDataset(records, ImageProcessor(do_resize=False))


def test_datasets_filter_each_item_by_its_own_draw(tmp_path):
    """Decoded and preloaded datasets draw the same filters per (seed, epoch, index) and give equal pixels."""
    records = emoji_like_records(tmp_path, count=8)
    processor, style = ImageProcessor(size=(64, 64)), StyleAugment(p=1)
    pil = ImageCaptionDataset(records, processor, seed=3, style=style)
    preloaded = PreloadedImageCaptionDataset(records, processor, seed=3, style=style)
    plain = PreloadedImageCaptionDataset(records, processor, seed=3)
    indices = list(range(8))
    for epoch in (0, 1):
        inputs = collated_inputs(preloaded, epoch, indices)
        expected = torch.tensor([style.draw(item_rng(3, epoch, i, stream=2)) for i in indices])
        assert torch.equal(inputs[2], expected) and (inputs[2][:, 0] > 0).all()
        filtered = preloaded.pixels(inputs, "cpu")
        torch.testing.assert_close(filtered, torch.stack([pil[epoch, i][0] for i in indices]), atol=0, rtol=0)
        unfiltered = plain.pixels(collated_inputs(plain, epoch, indices), "cpu")
        assert not torch.equal(filtered, unfiltered)
    assert torch.equal(collated_inputs(plain, 0, indices)[2], torch.tensor([StyleAugment.NONE] * 8))
