"""data/decode.py: the image policy, case by case, against hand-computed pixels."""
import io

import numpy as np
import pytest
from PIL import Image

from rand_ensemble.data import decode
from rand_ensemble.errors import RandEnsembleError


def encode(im, fmt="PNG", **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_grey_stays_one_channel():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = decode.decode_bytes(encode(Image.fromarray(grey, "L")))
    assert out.shape == (3, 4, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], grey)


def test_bilevel_is_grey_0_or_255():
    im = Image.new("1", (2, 1))
    im.putpixel((1, 0), 1)
    np.testing.assert_array_equal(decode.decode_bytes(encode(im))[..., 0], [[0, 255]])


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 25600, 65535, 1000]], np.uint16)
    out = decode.decode_bytes(encode(Image.fromarray(values)))
    np.testing.assert_array_equal(out[..., 0], values >> 8)      # 0, 100, 255, 3
    assert out.shape == (1, 4, 1)


def test_sixteen_bit_dark_photo_is_not_white():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 20000, (8, 8)).astype(np.uint16)
    out = decode.decode_bytes(encode(Image.fromarray(values)))
    assert out.max() < 80


def test_palette_goes_through_rgb():
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.putpixel((1, 0), 1)
    out = decode.decode_bytes(encode(im))
    np.testing.assert_array_equal(out, [[[0, 0, 0], [10, 200, 30]]])


def test_palette_transparency_is_composited_on_black():
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 1
    out = decode.decode_bytes(encode(im, transparency=1))
    np.testing.assert_array_equal(out, np.zeros((1, 2, 3)))


def test_rgba_composited_on_black():
    im = Image.new("RGBA", (1, 1), (200, 100, 51, 128))
    out = decode.decode_bytes(encode(im))
    expected = [(c * 128 + 127) // 255 for c in (200, 100, 51)]   # 100, 50, 26
    np.testing.assert_array_equal(out[0, 0], expected)


def test_grey_alpha_composited_and_stays_grey():
    im = Image.new("LA", (1, 1), (255, 0))
    out = decode.decode_bytes(encode(im))
    assert out.shape == (1, 1, 1) and out[0, 0, 0] == 0


def test_cmyk_to_rgb_as_pillow_converts():
    im = Image.new("CMYK", (2, 2), (10, 20, 30, 40))
    out = decode.decode_bytes(encode(im, "TIFF"))
    np.testing.assert_array_equal(out[0, 0], im.convert("RGB").getpixel((0, 0)))
    assert out.shape == (2, 2, 3)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decode.decode_bytes(data)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])


def test_float_mode_and_garbage_are_errors():
    with pytest.raises(RandEnsembleError, match="floating-point"):
        decode.decode_bytes(encode(Image.new("F", (2, 2)), "TIFF"))
    with pytest.raises(Exception):
        decode.decode_bytes(b"not an image")
    with pytest.raises(RandEnsembleError, match="empty"):
        decode.decode_bytes(b"")


def test_from_array_dtype_rule():
    np.testing.assert_array_equal(decode.from_array(np.array([0, 511, 65535], np.uint16)),
                                  [0, 1, 255])
    np.testing.assert_array_equal(decode.from_array(np.array([0.0, 0.5, 1.0])), [0, 128, 255])
    with pytest.raises(RandEnsembleError, match=r"\[0, 1\]"):
        decode.from_array(np.array([0.0, 1.5]))
    np.testing.assert_array_equal(decode.from_array(np.array([0, 7, 255], np.int64)), [0, 7, 255])
    for wide in ([-1, 3], [0, 256]):                      # wide ints are 8-bit values, checked
        with pytest.raises(RandEnsembleError, match="outside 0..255"):
            decode.from_array(np.array(wide))
    with pytest.raises(RandEnsembleError, match="dtype"):
        decode.from_array(np.array(["a"]))


def test_fit_pads_centred_with_zeros():
    image = np.full((28, 28, 1), 7, np.uint8)
    out = decode.fit(image, 32)
    assert out.shape == (32, 32, 1)
    assert (out[2:30, 2:30] == 7).all() and out.sum() == 7 * 28 * 28
    odd = decode.fit(np.ones((5, 4, 1), np.uint8), 6)           # odd pixel to bottom/right
    np.testing.assert_array_equal(np.argwhere(odd[..., 0])[[0, -1]], [[0, 1], [4, 4]])


def test_fit_refuses_padding_into_a_mostly_blank_input():
    """32x32 images for a net made for 64x64: padding would leave 3/4 of its input blank."""
    with pytest.raises(RandEnsembleError, match="the image is 32x32: .*fill at least 75%.*"
                                                "--input-hw 32 with --padding SAME"):
        decode.fit(np.ones((32, 32, 3), np.uint8), 64)
    with pytest.raises(RandEnsembleError, match="the images are 20x23: .*fill at least 75%"):
        decode.to_input(np.ones((2, 20, 23, 1), np.uint8), 32, 3)
    assert decode.to_input(np.ones((2, 24, 20, 1), np.uint8), 32, 3).shape == (2, 32, 32, 3)


def test_fit_resizes_shorter_side_then_crops_centre():
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 2, (64, 1))[..., None]   # value = 2 * x
    out = decode.fit(ramp, 32)
    assert out.shape == (32, 32, 1)
    # a linear ramp halved: interior pixel x' is the mean of source columns 2x', 2x' + 1
    np.testing.assert_allclose(out[10, 4:28, 0], 4 * np.arange(4, 28) + 1, atol=1)
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = 255                                         # the centre third is white
    cropped = decode.fit(wide, 16)
    assert cropped.shape == (16, 16, 3) and cropped[:, 1:-1].min() == 255   # edges blend


def test_to_input_channels():
    rgb = np.array([[[[10, 200, 30], [255, 255, 255]]]], np.uint8)      # (1, 1, 2, 3)
    grey = decode.to_input(rgb, 2, 1)
    pillow = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    np.testing.assert_array_equal(grey[0, 0:1, :, 0], pillow)        # padded below
    assert grey.shape == (1, 2, 2, 1) and not grey[0, 1].any()
    back = decode.to_input(np.full((2, 3, 3, 1), 9, np.uint8), 3, 3)
    assert back.shape == (2, 3, 3, 3) and (back == 9).all()


def test_to_input_padding_fast_path_equals_per_image_fit():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 5, 7, 1)).astype(np.uint8)
    fast = decode.to_input(images, 9, 3)
    slow = np.stack([np.repeat(decode.fit(im, 9), 3, axis=-1) for im in images])
    np.testing.assert_array_equal(fast, slow)


def test_stack_promotes_grey_and_refuses_mixed_sizes():
    out = decode.stack([np.full((2, 2, 1), 5, np.uint8), np.zeros((2, 2, 3), np.uint8)], "x")
    assert out.shape == (2, 2, 2, 3) and (out[0] == 5).all()
    with pytest.raises(RandEnsembleError, match="several sizes"):
        decode.stack([np.zeros((2, 2, 1), np.uint8), np.zeros((3, 2, 1), np.uint8)], "x")
