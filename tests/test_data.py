"""Datasets (CSV, JSONL, class folders), the caption datasets (decoded or preloaded) and vlm_vision.augment.

Every image is a real PNG written into tmp_path. Offline, CPU, fast. The emoji corpus is tested
in test_emoji.py.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from vlm_vision.augment import EmojiAugment, StyleAugment, affine_warp
from vlm_vision.data import (
    CaptionRecord,
    ImageCaptionDataset,
    MissingImagesError,
    PreloadedImageCaptionDataset,
    item_rng,
    read_records,
)
from vlm_vision.errors import ImageLoadError
from vlm_vision.processor import ImageProcessor, load_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def png(path: Path, colour: tuple[int, int, int] = RED, size: tuple[int, int] = (16, 12)) -> Path:
    """A small RGB PNG of one colour with a dark square in it, at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((2, 2, 5, 5), fill=(10, 20, 30))
    image.save(path)
    return path


def disc(colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    """A disc of one colour on a transparent background, loaded as the dataset loads it (white behind)."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 8, size - 9, size - 9), fill=(*colour, 255))
    return load_image(image)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# read_records: CSV
# ---------------------------------------------------------------------------------------------------------------


def test_csv_relative_absolute_label_and_extra_columns(tmp_path):
    a = png(tmp_path / "a.png")
    b = png(tmp_path / "sub" / "b.png")
    elsewhere = png(tmp_path / "other" / "c.png")
    file = write(
        tmp_path / "train.csv",
        f"path,caption,label,notes\na.png,a red square,square,x\nsub/b.png, two words ,,\n{elsewhere},c,,\n",
    )
    assert read_records(file) == [
        CaptionRecord(a, "a red square", "square"),
        CaptionRecord(b, "two words", None),
        CaptionRecord(elsewhere, "c", None),
    ]


def test_csv_without_label_column_and_with_byte_order_mark(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "t.csv").write_bytes("\ufeffcaption,path\nhello,a.png\n".encode())
    (record,) = read_records(tmp_path / "t.csv")
    assert (record.path, record.caption, record.label) == (tmp_path / "a.png", "hello", None)
    assert record.captions == ("hello",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,caption\na.png,x\n", r"t\.csv:1: missing column\(s\) path; the header must name 'path'"),
        ("path,text\na.png,x\n", r"t\.csv:1: missing column\(s\) caption"),
        ("", r"t\.csv:1: missing column\(s\) path, caption"),
        ("path,caption\na.png,ok\na.png,  \n", r"t\.csv:3: empty 'caption' for 'a\.png'"),
        ("path,caption\na.png,ok\n,x\n", r"t\.csv:3: empty 'path'"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, text, message):
    png(tmp_path / "a.png")
    with pytest.raises(ValueError, match=message):
        read_records(write(tmp_path / "t.csv", text))


# ---------------------------------------------------------------------------------------------------------------
# read_records: JSONL
# ---------------------------------------------------------------------------------------------------------------


def test_jsonl_caption_or_captions_list_and_label(tmp_path):
    a, b = png(tmp_path / "a.png"), png(tmp_path / "img" / "b.png")
    lines = [
        {"path": "a.png", "caption": "one caption"},
        {"path": "img/b.png", "captions": ["first", " second "], "label": "bee", "extra": 1},
    ]
    file = write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    one, many = read_records(file)
    assert one == CaptionRecord(a, "one caption")
    assert many == CaptionRecord(b, "first", "bee", ("second",))
    assert many.captions == ("first", "second")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"d\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"d\.jsonl:2: expected a JSON object, got list"),
        ('{"caption": "x"}', r"d\.jsonl:2: missing or empty 'path'"),
        ('{"path": "a.png"}', r"d\.jsonl:2: give either 'caption' .* found neither"),
        ('{"path": "a.png", "caption": "x", "captions": ["y"]}', r"d\.jsonl:2: give either .* not both"),
        ('{"path": "a.png", "captions": []}', r"d\.jsonl:2: 'captions' must be a non-empty list"),
        ('{"path": "a.png", "captions": "x"}', r"d\.jsonl:2: 'captions' must be a non-empty list"),
        ('{"path": "a.png", "captions": ["x", " "]}', r"d\.jsonl:2: empty caption ' ' for 'a\.png'"),
        ('{"path": "a.png", "caption": ""}', r"d\.jsonl:2: empty caption '' for 'a\.png'"),
        ('{"path": "a.png", "caption": "x", "label": 3}', r"d\.jsonl:2: 'label' must be a non-empty string"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    png(tmp_path / "a.png")
    file = write(tmp_path / "d.jsonl", '{"path": "a.png", "caption": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_records(file)


def test_cluster_field_from_jsonl_and_csv_and_its_errors(tmp_path):
    a, b = png(tmp_path / "a.png"), png(tmp_path / "b.png")
    jsonl = write(tmp_path / "d.jsonl", json.dumps({"path": "a.png", "caption": "x", "subcategory": " face "}) + "\n"
                  + json.dumps({"path": "b.png", "caption": "y", "subcategory": 7}) + "\n")
    assert [r.cluster for r in read_records(jsonl, cluster_field="subcategory")] == ["face", "7"]
    assert [r.cluster for r in read_records(jsonl)] == [None, None]  # read only when asked for
    csv_file = write(tmp_path / "d.csv", "path,caption,group\na.png,x,hands\nb.png,y,faces\n")
    assert read_records(csv_file, cluster_field="group") == [CaptionRecord(a, "x", cluster="hands"),
                                                            CaptionRecord(b, "y", cluster="faces")]

    with pytest.raises(ValueError, match=r"d\.csv:1: missing column\(s\) kind; .*, and 'kind' for the cluster field"):
        read_records(csv_file, cluster_field="kind")
    blank = write(tmp_path / "blank.csv", "path,caption,group\na.png,x, \n")
    with pytest.raises(ValueError, match=r"blank\.csv:2: 'group' must be a non-empty string or a whole number"):
        read_records(blank, cluster_field="group")
    for value in ("missing", None, True, ["face"]):
        item = {"path": "a.png", "caption": "x"} | ({} if value == "missing" else {"subcategory": value})
        bad = write(tmp_path / "bad.jsonl", json.dumps(item) + "\n")
        with pytest.raises(ValueError, match=r"bad\.jsonl:1: 'subcategory' must be a non-empty string or a whole"):
            read_records(bad, cluster_field="subcategory")
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    png(tmp_path / "folder" / "cat" / "c.png")
    with pytest.raises(ValueError, match=r"names a column of a \.csv or \.jsonl dataset; .* is a folder"):
        read_records(tmp_path / "folder", cluster_field="subcategory")


# ---------------------------------------------------------------------------------------------------------------
# read_records: class folders, and errors common to all sources
# ---------------------------------------------------------------------------------------------------------------


def test_class_folders(tmp_path, caplog):
    root = tmp_path / "root"
    apple = png(root / "red_apple" / "1.png")
    heart_jpg = png(root / "blue-heart" / "x.JPG")
    heart_deep = png(root / "blue-heart" / "more" / "y.webp")
    write(root / "blue-heart" / "notes.txt", "not an image")
    png(root / ".cache" / "z.png")  # hidden folders are not classes
    png(root / "red_apple" / ".ipynb_checkpoints" / "c.png")  # nor data inside a class
    (root / "empty_class").mkdir()
    png(root / "stray.png")  # not inside a class folder
    with caplog.at_level(logging.INFO, logger="vlm_vision.data"):
        records = read_records(root)
    assert records == [
        CaptionRecord(heart_deep, "a photo of blue heart.", "blue heart"),  # sorted by path: more/ < x.JPG
        CaptionRecord(heart_jpg, "a photo of blue heart.", "blue heart"),
        CaptionRecord(apple, "a photo of red apple.", "red apple"),
    ]
    assert "Skipped 1 non-image file(s)" in caplog.text
    assert "Skipped class folder" in caplog.text and "empty_class" in caplog.text
    assert "Skipped 1 image(s) directly in" in caplog.text
    assert read_records(root, template="an emoji of {}")[0].caption == "an emoji of blue heart"
    with pytest.raises(ValueError, match=r"template must contain '\{\}'"):
        read_records(root, template="an emoji")


def test_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"doesn't exist: give a \.csv, a \.jsonl or a folder"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"Unsupported dataset source .*give a \.csv file"):
        read_records(write(tmp_path / "d.json", "{}"))
    with pytest.raises(ValueError, match=r"has no images: a dataset needs at least one record"):
        read_records(write(tmp_path / "e.csv", "path,caption\n"))
    with pytest.raises(ValueError, match=r"has no images"):
        read_records(write(tmp_path / "e.jsonl", "\n"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"has no images"):
        read_records(tmp_path / "empty")


def test_missing_images_are_counted_and_the_first_few_shown(tmp_path):
    png(tmp_path / "here.png")
    rows = ["here.png,ok"] + [f"gone{i}.png,x" for i in range(7)]
    file = write(tmp_path / "t.csv", "path,caption\n" + "\n".join(rows) + "\n")
    with pytest.raises(MissingImagesError) as info:
        read_records(file)
    message = str(info.value)
    assert message.startswith(f"7 of 8 images referenced by {file} are missing")
    assert all(f"gone{i}.png" in message for i in range(5)) and "gone5.png" not in message
    assert "... and 2 more" in message
    assert isinstance(info.value, FileNotFoundError) and len(info.value.missing) == 7


def test_caption_record_rejects_empty_captions(tmp_path):
    with pytest.raises(ValueError, match="Captions must be non-empty strings"):
        CaptionRecord(tmp_path / "a.png", "ok", None, ("",))


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


# ---------------------------------------------------------------------------------------------------------------
# EmojiAugment
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("colour", "full", "mixed"), [(RED, 0, (1, 2)), (BLUE, 2, (0, 1))])
def test_augment_keeps_colour(colour, full, mixed):
    image = disc(colour)
    for seed in range(20):
        out = np.asarray(EmojiAugment(seed=seed)(image)).astype(int)  # (H, W, 3)
        # Every pixel is the colour, white, or a blend of the two: no hue or saturation change.
        assert (out[..., full] == 255).all()
        assert (out[..., mixed[0]] == out[..., mixed[1]]).all()
        assert (out == colour).all(-1).mean() > 0.25  # and much of the disc stays exactly that colour


def test_augment_is_deterministic_and_sized():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))  # 40 wide
    a, b = EmojiAugment(seed=1)(image), EmojiAugment(seed=1)(image)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and a.size == (40, 30)
    assert not np.array_equal(np.asarray(a), np.asarray(EmojiAugment(seed=2)(image)))
    augment = EmojiAugment()
    assert np.array_equal(np.asarray(augment(image, random.Random(5))), np.asarray(augment(image, random.Random(5))))
    assert EmojiAugment(size=(24, 32), seed=0)(image).size == (32, 24)  # size is (height, width)


def test_augment_without_randomness_is_the_identity_and_flips_are_exact_mirrors():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    still = EmojiAugment(scale=(1.0, 1.0), ratio=(40 / 30, 40 / 30), degrees=0)
    assert np.array_equal(np.asarray(still(image)), np.asarray(image))
    flipping = EmojiAugment(scale=(1.0, 1.0), ratio=(40 / 30, 40 / 30), degrees=0, flip=True)
    outcomes = {np.asarray(flipping(image, random.Random(s))).tobytes() for s in range(20)}
    assert outcomes == {np.asarray(image).tobytes(), np.asarray(ImageOps.mirror(image)).tobytes()}


def test_augment_rejects_bad_settings_and_modes():
    with pytest.raises(ValueError, match="scale must be"):
        EmojiAugment(scale=(0.5, 1.2))
    with pytest.raises(ValueError, match="ratio must be"):
        EmojiAugment(ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="degrees must be in"):
        EmojiAugment(degrees=200)
    with pytest.raises(ValueError, match="size must be None or"):
        EmojiAugment(size=(0, 10))
    with pytest.raises(ValueError, match="expects an RGB image, got mode 'RGBA'"):
        EmojiAugment()(Image.new("RGBA", (8, 8)))


# ---------------------------------------------------------------------------------------------------------------
# StyleAugment: colour-keeping filters against line work and shading
# ---------------------------------------------------------------------------------------------------------------

FILTERS = range(1, len(StyleAugment.FILTERS))  # every filter but "none"


def as_batch(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())[None]


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_style_filters_keep_flat_colour_and_wash_out_thin_dark_lines(strength):
    style = StyleAugment()
    flat = as_batch(Image.new("RGB", (64, 64), (200, 30, 60)))
    for kind in FILTERS:
        assert torch.equal(style.apply(flat, [(kind, strength)]), flat), StyleAugment.FILTERS[kind]
    # A red disc with a 2-px black outline, like OpenMoji's: the filters change the outline (the median keeps
    # 2-px lines, which are edges to it), never the disc's middle.
    outlined = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(outlined).ellipse((8, 8, 56, 56), fill=RED, outline="black", width=2)
    outlined = as_batch(outlined)
    outline = (outlined.int().sum(1) == 0)[0]  # (H, W) black pixels
    for kind in FILTERS:
        out = style.apply(outlined, [(kind, strength)])
        assert out.dtype == torch.uint8 and torch.equal(out[0, :, 28:36, 28:36], outlined[0, :, 28:36, 28:36])
        if StyleAugment.FILTERS[kind] != "median":
            assert out[0, :, outline].float().mean() > 20, StyleAugment.FILTERS[kind]  # the outline got lighter
    thin = style.apply(outlined, [(StyleAugment.FILTERS.index("thin_lines"), strength)])
    assert thin.int().sum(1).min() > 0  # a 3x3 maximum leaves no black pixel of a 2-px line
    hairline = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(hairline).line((4, 30, 60, 30), fill="black", width=1)
    assert (style.apply(as_batch(hairline), [(StyleAugment.FILTERS.index("median"), strength)]) == 255).all()
    # Strength moves blur and downscale from weak to strong; the filtered copy is new, the input untouched.
    blur, downscale = StyleAugment.FILTERS.index("blur"), StyleAugment.FILTERS.index("downscale")
    for kind in (blur, downscale):
        weak, strong = (style.apply(outlined, [(kind, s)]).float() for s in (0.0, 1.0))
        assert (strong - outlined).abs().mean() > (weak - outlined).abs().mean() > 0
    assert outlined[0, :, outline].sum() == 0


def test_style_draws_are_reproducible_and_cover_every_filter():
    draws = [StyleAugment().draw(random.Random(seed)) for seed in range(400)]
    assert draws == [StyleAugment().draw(random.Random(seed)) for seed in range(400)]
    kinds = [kind for kind, _ in draws]
    assert 0.4 < kinds.count(0) / 400 < 0.6 and set(kinds) == set(range(len(StyleAugment.FILTERS)))
    assert all(0 <= strength < 1 for _, strength in draws)
    assert {StyleAugment(p=0).draw(random.Random(s)) for s in range(50)} == {StyleAugment.NONE}
    assert all(StyleAugment(p=1).draw(random.Random(s))[0] > 0 for s in range(50))
    # The PIL path is apply on a batch of one.
    image = disc(RED)
    for seed in range(8):
        expected = StyleAugment(p=1).apply(as_batch(image), [StyleAugment(p=1).draw(random.Random(seed))])
        assert torch.equal(as_batch(StyleAugment(p=1)(image, random.Random(seed))), expected)


def test_style_augment_rejects_bad_settings_and_images():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        StyleAugment(p=1.5)
    with pytest.raises(ValueError, match="blur_sigma must be positive"):
        StyleAugment(blur_sigma=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"downscale must be fractions in \(0, 1\]"):
        StyleAugment(downscale=(0.5, 0.0))
    with pytest.raises(ValueError, match="expects an RGB image, got mode 'RGBA': load it with load_image"):
        StyleAugment()(Image.new("RGBA", (8, 8)), random.Random(0))


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
