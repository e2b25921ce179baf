"""vlm_vision.training.augment: EmojiAugment (geometry only: colours kept) and StyleAugment (drawing-style filters).

Offline, CPU, fast.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from tests.helpers.photos import BLUE, RED, disc
from vlm_vision.training.augment import EmojiAugment, StyleAugment

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
