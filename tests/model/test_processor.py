"""Image loading and preprocessing: exact parity with transformers' SiglipImageProcessorPil.

Every image is a real file written into tmp_path (seeded gradients, noise and
shapes), in a format that keeps its PIL mode, at awkward sizes. Offline, CPU, fast.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from transformers import AutoImageProcessor, SiglipImageProcessorPil

from tests.helpers.images import KINDS, SIZES, photo, to_8bit_gray, write_image
from vlm_vision.errors import CheckpointError, ImageLoadError
from vlm_vision.model.processor import DRAFT_SCALE, ImageProcessor, convert_to_rgb, draft_scale, load_image, open_image

def hf_pixels(hf: SiglipImageProcessorPil, images) -> torch.Tensor:
    return hf(images=images, return_tensors="pt").pixel_values


@pytest.fixture(scope="module")
def hf_default() -> SiglipImageProcessorPil:
    return SiglipImageProcessorPil()


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> ImageProcessor:
    """Our processor, read from the config transformers writes for its SigLIP defaults."""
    folder = tmp_path_factory.mktemp("hf_config")
    SiglipImageProcessorPil().save_pretrained(folder)
    processor = ImageProcessor.from_pretrained(folder)
    assert processor == ImageProcessor()
    return processor


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_transformers_for_every_mode_and_size(tmp_path, ours, hf_default, kind, width, height):
    path = write_image(tmp_path, kind, width, height)
    opened = ImageOps.exif_transpose(Image.open(path))
    assert opened.mode == KINDS[kind]
    assert ("transparency" in opened.info) == ("transparency" in kind)
    hf_input = to_8bit_gray(opened) if opened.mode == "I;16" else opened
    expected = hf_pixels(hf_default, hf_input)

    from_path = ours(path)
    from_pil = ours(opened)

    assert from_path.shape == (1, 3, 224, 224) and from_path.dtype == torch.float32
    assert torch.equal(from_path, expected)
    assert torch.equal(from_pil, expected)
    assert torch.equal(torch.from_numpy(ours.preprocess(load_image(path))), expected[0])


def test_one_pixel_values_by_hand(tmp_path, ours):
    """A 1x1 image resizes to a constant; each channel is (v / 255 - 0.5) / 0.5 in float32."""
    path = tmp_path / "pixel.png"
    Image.new("RGB", (1, 1), (255, 0, 128)).save(path)
    out = ours(path)[0]
    for channel, value in enumerate((255, 0, 128)):
        expected = (np.float32(value * (1 / 255)) - np.float32(0.5)) / np.float32(0.5)
        assert torch.all(out[channel] == torch.tensor(expected))
    assert out[0, 0, 0].item() == 1.0 and out[1, 0, 0].item() == -1.0


def test_transparency_is_composited_onto_white(tmp_path):
    image = Image.new("RGBA", (4, 2), (10, 20, 30, 255))
    image.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent: white
    image.putpixel((1, 0), (0, 0, 0, 128))  # half transparent black: mid grey
    rgb = np.asarray(load_image(image))
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [127, 127, 127]
    assert rgb[1, 1].tolist() == [10, 20, 30]


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, ours, hf_default):
    """PIL clips I;16 at 255 (a 16-bit photo turns white); we scale to 8 bits, deviating from transformers."""
    values = np.array([[0, 128, 129, 32768], [65535, 257 * 100, 1000, 65406]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    assert np.asarray(image.convert("RGB"))[0, 3, 0] == 255  # PIL saturates: the reason for the deviation
    gray = np.asarray(load_image(image))[..., 0]
    assert gray.tolist() == [[0, 0, 1, 128], [255, 100, 4, 254]]
    assert torch.equal(ours(image), hf_pixels(hf_default, to_8bit_gray(image)))


def test_32_bit_and_float_modes_follow_transformers(ours, hf_default):
    """Modes I and F carry no bit depth, so like transformers (and PIL) we clip them to [0, 255]."""
    values = np.array([[0, 100, 255, 256, 60000]])
    for image in (Image.fromarray(values.astype(np.int32)), Image.fromarray(values.astype(np.float32))):
        assert image.mode in ("I", "F")
        assert np.asarray(load_image(image))[0, :, 0].tolist() == [0, 100, 255, 255, 255]
        assert torch.equal(ours(image), hf_pixels(hf_default, image))


def test_16_bit_transparency_becomes_white():
    values = np.array([[0, 5000, 60000]], dtype=np.uint16)
    image = Image.fromarray(values)
    image.info["transparency"] = 5000
    assert np.asarray(load_image(image))[0, :, 0].tolist() == [0, 255, 233]


EXIF_ORIENTATION = 0x0112
# What each orientation tag asks for, written out independently of ImageOps.exif_transpose.
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", sorted(TRANSPOSE))
def test_exif_orientation_is_applied(tmp_path, ours, hf_default, orientation):
    path = tmp_path / f"exif{orientation}.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    photo(40, 20, seed=orientation).save(path, "JPEG", exif=exif, quality=95)

    loaded = load_image(path)
    assert loaded.size == ((20, 40) if orientation >= 5 else (40, 20))
    raw = Image.open(path)
    assert raw.size == (40, 20)
    assert np.array_equal(np.asarray(loaded), np.asarray(raw.transpose(TRANSPOSE[orientation])))
    assert load_image(raw).size == (40, 20)  # PIL images are taken as they are
    assert torch.equal(ours(path), hf_pixels(hf_default, ImageOps.exif_transpose(Image.open(path))))


def test_draft_scale_divides_both_sides_and_keeps_min_side():
    assert draft_scale((4000, 3000), 672) == 4  # 1/8 would leave 375 < 672
    assert draft_scale((4032, 3024), 192) == 8
    assert draft_scale((4000, 2250), 672) == 2  # 2250 is not a multiple of 4
    assert draft_scale((1001, 1000), 10) == 1  # an odd side would end in a partial pixel
    assert draft_scale((600, 400), 672) == 1


def resized_difference(a: Image.Image, b: Image.Image, size: int = 64) -> np.ndarray:
    """|a - b| per value of the two images resized by the processor, as int."""
    processor = ImageProcessor(size=(size, size))
    return np.abs(processor.resized(convert_to_rgb(a)).astype(int) - processor.resized(convert_to_rgb(b)).astype(int))


@pytest.mark.parametrize("orientation", [1, 6])
def test_draft_min_side_decodes_a_large_jpeg_reduced_and_close_to_the_full_decode(tmp_path, orientation):
    path = tmp_path / "big.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    photo(1600, 1200, seed=3).save(path, "JPEG", exif=exif, quality=90)

    full, reduced = open_image(path), open_image(path, draft_min_side=192)
    turned = orientation == 6
    assert full.size == ((1200, 1600) if turned else (1600, 1200))
    assert reduced.size == ((300, 400) if turned else (400, 300))  # 1/4: 1/8 would leave 150 < 192
    assert reduced.info[DRAFT_SCALE] == 4 and DRAFT_SCALE not in full.info
    difference = resized_difference(full, reduced)
    assert difference.mean() < 0.5 and difference.max() <= 4, (difference.mean(), difference.max())


def save_progressive(image: Image.Image, path: Path) -> None:
    image.save(path, "JPEG", progressive=True)


def save_mpo(image: Image.Image, path: Path) -> None:  # a camera's multi-picture file: the first frame is read
    image.save(path, "MPO", save_all=True, append_images=[image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])


@pytest.mark.parametrize("kind", ["L", "CMYK", "progressive", "MPO"])
def test_draft_min_side_reduces_every_kind_of_jpeg(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    image = photo(1600, 1200, seed=5)
    if kind in ("L", "CMYK"):
        image.convert(kind).save(path, "JPEG", quality=90)
    else:
        {"progressive": save_progressive, "MPO": save_mpo}[kind](image, path)

    full, reduced = open_image(path), open_image(path, draft_min_side=192)
    assert reduced.size == (400, 300) and reduced.info[DRAFT_SCALE] == 4 and reduced.mode == full.mode
    assert resized_difference(full, reduced).mean() < 0.5


def test_draft_min_side_leaves_other_formats_and_sides_it_cant_divide_alone(tmp_path):
    png, odd = tmp_path / "big.png", tmp_path / "odd.jpg"
    photo(1600, 1200).save(png)
    photo(1601, 1200).save(odd, "JPEG")
    for path in (png, odd):
        image = open_image(path, draft_min_side=192)
        with Image.open(path) as raw:
            assert image.size == raw.size and DRAFT_SCALE not in image.info


def test_max_pixels_counts_the_files_size_not_the_reduced_decode(tmp_path):
    path = tmp_path / "big.jpg"
    photo(1600, 1200).save(path, "JPEG")
    with pytest.raises(ImageLoadError, match="1600x1200 = 1920000 pixels exceeds max_pixels=1000000"):
        open_image(path, max_pixels=1_000_000, draft_min_side=192)  # reduced, it would be 400x300


def test_batch_of_paths_and_pil_images(tmp_path, ours, hf_default):
    paths = [write_image(tmp_path, kind, 225, 223, seed) for seed, kind in enumerate(["RGB.jpg", "RGBA.png", "P.gif"])]
    pil = photo(3, 517, seed=9)
    batch = ours([*paths, pil])
    expected = hf_pixels(hf_default, [ImageOps.exif_transpose(Image.open(p)) for p in paths] + [pil])
    assert batch.shape == (4, 3, 224, 224)
    assert torch.equal(batch, expected)
    assert torch.equal(ours(tuple(paths)), expected[:3])


def test_non_default_config_round_trips_through_transformers(tmp_path):
    ours = ImageProcessor(
        size=(384, 256),  # non-square, so a height/width swap shows
        resample=int(Image.Resampling.BILINEAR),
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
    )
    file = ours.save_pretrained(tmp_path / "config")
    assert json.loads(file.read_text()) == ours.to_dict()
    hf = SiglipImageProcessorPil.from_pretrained(file.parent)
    assert hf.size == {"height": 384, "width": 256}
    assert int(hf.resample) == int(Image.Resampling.BILINEAR)
    assert tuple(hf.image_mean) == ours.image_mean and tuple(hf.image_std) == ours.image_std
    assert hf.rescale_factor == ours.rescale_factor
    assert json.loads(json.dumps(hf.to_dict())) == ours.to_dict()
    assert json.loads(json.dumps(AutoImageProcessor.from_pretrained(file.parent).to_dict())) == ours.to_dict()
    assert ImageProcessor.from_pretrained(file.parent) == ours
    assert ImageProcessor.from_pretrained(file) == ours  # a file path: its folder is read

    for kind, (width, height) in [("RGB.jpg", (1000, 700)), ("LA.png", (3, 517)), ("CMYK.jpg", (225, 223))]:
        path = write_image(tmp_path, kind, width, height)
        out = ours(path)
        assert out.shape == (1, 3, 384, 256)
        assert torch.equal(out, hf_pixels(hf, ImageOps.exif_transpose(Image.open(path))))


def test_switched_off_steps_match_transformers(tmp_path):
    ours = ImageProcessor(do_normalize=False, do_resize=False)
    hf = SiglipImageProcessorPil(do_normalize=False, do_resize=False)
    image = photo(31, 17)
    out = ours(image)
    assert out.shape == (1, 3, 17, 31)
    assert torch.equal(out, hf_pixels(hf, image))
    assert out.min() >= 0 and out.max() <= 1


def test_hub_style_config_keys(tmp_path):
    config = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": 384, "width": 384},
        "do_center_crop": False,  # off, so harmless
    }
    assert ImageProcessor.from_dict(config) == ImageProcessor(size=(384, 384))


@pytest.mark.parametrize(
    "config,match",
    [
        ({"size": {"shortest_edge": 224}}, "'size'"),
        ({"size": 224}, "'size'"),
        ({"do_center_crop": True, "crop_size": {"height": 200, "width": 200}}, "do_center_crop"),
        ({"resample": 42}, "42"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
    ],
)
def test_unsupported_config_raises(config, match):
    with pytest.raises(ValueError, match=match):
        ImageProcessor.from_dict(config)


def test_missing_preprocessor_config(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"No preprocessor_config\.json in .*ImageProcessor\(\)"):
        ImageProcessor.from_pretrained(tmp_path)


def valid_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    photo(120, 90).save(buffer, fmt)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid-header PNG whose IHDR claims width x height pixels (no pixel data needed to open it)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # chunk type + 13 bytes of header data
    assert ihdr[:4] == b"IHDR"
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def check_load_error(path: Path, match: str, chained: bool = True, **kwargs) -> None:
    """load_image raises ImageLoadError naming the file, chained to PIL's error where PIL found the problem."""
    with pytest.raises(ImageLoadError, match=match) as error:
        load_image(path, **kwargs)
    assert str(path) in str(error.value)
    assert (error.value.__cause__ is not None) == chained


def test_missing_file(tmp_path):
    check_load_error(tmp_path / "nope.jpg", "no such file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    check_load_error(path, r"empty \(0 bytes\)", chained=False)


def test_directory(tmp_path):
    check_load_error(tmp_path, "directory")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    check_load_error(path, "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_file(tmp_path, fmt):
    data = valid_bytes(fmt)
    path = tmp_path / f"half.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    check_load_error(path, "truncated or corrupt")


def test_decompression_bomb_over_max_pixels(tmp_path):
    path = tmp_path / "big.png"
    photo(100, 100).save(path)
    match = r"decompression bomb: 100x100 = 10000 pixels exceeds max_pixels=5000"
    check_load_error(path, match, chained=False, max_pixels=5000)
    assert load_image(path, max_pixels=10_000).size == (100, 100)  # the bound is inclusive, as in PIL


def test_decompression_bomb_between_pil_limits_raises_without_warning(tmp_path):
    """10000x10000 is over PIL's warning limit but under its error limit: our check raises, PIL's warning is muted."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming_size(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageLoadError, match="decompression bomb: 10000x10000"):
            load_image(path)


def test_decompression_bomb_refused_by_pil(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming_size(20_000, 20_000))
    check_load_error(path, "decompression bomb", max_pixels=None)


def test_unconvertible_mode():
    with pytest.raises(ValueError, match="mode 'La'"):
        convert_to_rgb(Image.new("La", (2, 2)))


def test_bad_calls(ours):
    with pytest.raises(ValueError, match="No images"):
        ours([])
    with pytest.raises(TypeError, match="ndarray"):
        ours(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB image, got mode 'L'"):
        ours.preprocess(Image.new("L", (4, 4)))


def test_without_rgb_conversion_only_rgb_is_accepted(tmp_path, hf_default):
    ours = ImageProcessor(do_convert_rgb=False)
    image = photo(50, 30)
    assert torch.equal(ours(image), hf_pixels(hf_default, image))
    with pytest.raises(ValueError, match="mode 'L'"):
        ours(image.convert("L"))
