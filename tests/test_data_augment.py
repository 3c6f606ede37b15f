"""Augmentations: identity at scale 1, flips reverse columns, crops match a numpy bilinear
loop, one key gives one view."""
import jax
import numpy as np
import pytest

from rand_ensemble.data import augment

RNG = np.random.default_rng(0)
IMAGE = RNG.random((8, 12, 3)).astype(np.float32)     # non-square: rows and columns differ


def numpy_crop_resize(image, y0, x0, ch, cw):
    """Bilinear resampling by loops: output pixel centre -> source coordinate, 4 taps."""
    h, w, _ = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        sy = min(max(y0 + (y + 0.5) * ch / h - 0.5, 0.0), h - 1.0)
        for x in range(w):
            sx = min(max(x0 + (x + 0.5) * cw / w - 0.5, 0.0), w - 1.0)
            iy, ix = int(np.floor(sy)), int(np.floor(sx))
            fy, fx = sy - iy, sx - ix
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    if wy * wx > 0:
                        out[y, x] += wy * wx * image[min(iy + dy, h - 1), min(ix + dx, w - 1)]
    return out


def test_scale_one_without_flip_is_the_identity():
    for k in range(3):
        out = augment.augment(jax.random.PRNGKey(k), IMAGE, crop_scale=(1.0, 1.0), flip=False,
                              ratio=(1.0, 1.0))
        np.testing.assert_allclose(np.asarray(out), IMAGE, atol=1e-6)


def test_flip_reverses_columns_about_half_the_time():
    flipped = 0
    for k in range(40):
        out = np.asarray(augment.augment(jax.random.PRNGKey(k), IMAGE, crop_scale=(1.0, 1.0),
                                         flip=True, ratio=(1.0, 1.0)))
        if np.allclose(out, IMAGE[:, ::-1], atol=1e-6):
            flipped += 1
        else:
            np.testing.assert_allclose(out, IMAGE, atol=1e-6)
    assert 8 <= flipped <= 32


@pytest.mark.parametrize("box", [(1.0, 2.0, 5.0, 7.0), (0.3, 4.7, 6.5, 3.2), (0, 0, 8, 12)])
def test_crop_resize_matches_a_numpy_bilinear_loop(box):
    ours = np.asarray(augment.crop_resize(IMAGE, *box))
    np.testing.assert_allclose(ours, numpy_crop_resize(IMAGE, *box), atol=1e-5)
    mirrored = np.asarray(augment.crop_resize(IMAGE, *box, flip=True))
    np.testing.assert_allclose(mirrored, ours[:, ::-1], atol=1e-6)


def test_same_key_same_view_other_key_other_view():
    a = augment.augment(jax.random.PRNGKey(3), IMAGE)
    b = augment.augment(jax.random.PRNGKey(3), IMAGE)
    c = augment.augment(jax.random.PRNGKey(4), IMAGE)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert a.shape == IMAGE.shape and float(a.min()) >= 0 and float(a.max()) <= 1 + 1e-6


def test_batch_uses_one_key_per_image_and_jitter_stays_in_range():
    images = np.stack([IMAGE, IMAGE])
    out = np.asarray(augment.augment_batch(jax.random.PRNGKey(0), images, colour_jitter=0.5))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    for i in range(2):
        one = augment.augment(keys[i], IMAGE, colour_jitter=0.5)
        np.testing.assert_allclose(out[i], np.asarray(one), atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0
    plain = np.asarray(augment.augment(keys[0], IMAGE))
    assert not np.allclose(out[0], plain)                       # jitter changed the colours


def test_greyscale_images_keep_one_channel_and_match_the_loop():
    grey = IMAGE[..., :1]                                            # (8, 12, 1)
    view = augment.augment(jax.random.PRNGKey(5), grey, crop_scale=(0.5, 0.9), flip=False)
    assert view.shape == grey.shape
    box = augment._crop_box(jax.random.split(jax.random.PRNGKey(5), 3)[0], 8, 12, (0.5, 0.9),
                            augment.DEFAULT_RATIO)
    np.testing.assert_allclose(np.asarray(view),
                               numpy_crop_resize(grey, *map(float, box)), atol=1e-5)
