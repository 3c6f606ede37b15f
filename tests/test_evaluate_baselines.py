"""evaluate/baselines.py: pixel rows and the PCA-whitening map against numpy SVD."""
import numpy as np
import pytest

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import baselines


def _rows(n, d, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.1, d)     # distinct variances


def test_pixel_rows_are_unit_flattened_pixels():
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3, 2)).astype(np.uint8)
    rows = baselines.pixel_rows(images)
    for i in range(5):
        flat = images[i].astype(np.float64).ravel()
        np.testing.assert_allclose(rows[i], flat / np.sqrt(np.sum(flat ** 2)), rtol=1e-6)
    with pytest.raises(RandEnsembleError, match="uint8"):
        baselines.pixel_rows(images.astype(np.float32))


@pytest.mark.parametrize("n", [60, 8])             # tall rows (covariance), wide rows (Gram)
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_pca_matches_svd(power, n):
    train, test, dims = _rows(n, 12, 1), _rows(9, 12, 2), 5
    fitted = baselines.fit_pca(train, dims, power)
    np.testing.assert_allclose(fitted["components"].T @ fitted["components"], np.eye(dims),
                               atol=1e-10)
    mean = train.mean(0)
    _, sv, vt = np.linalg.svd(train - mean, full_matrices=False)
    expected = (test - mean) @ vt[:dims].T * (sv[:dims] ** 2 / (n - 1)) ** (-power / 2)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = baselines.apply_pca(fitted, test)
    assert got.shape == (9, dims) and got.dtype == np.float32
    # components are defined up to sign: compare the cosine matrices
    np.testing.assert_allclose(got @ got.T, expected @ expected.T, atol=1e-5)


def test_full_whitening_gives_unit_variance():
    train = _rows(200, 6, 3)
    fitted = baselines.fit_pca(train, 6, 1.0)
    white = (train - fitted["mean"]) @ fitted["components"] * fitted["scale"]
    np.testing.assert_allclose(np.cov(white.T), np.eye(6), atol=1e-8)


def test_default_dims_are_capped_by_the_rows():
    assert baselines.fit_pca(_rows(300, 250, 0))["components"].shape == (250, 200)
    assert baselines.fit_pca(_rows(30, 250, 0))["components"].shape == (250, 29)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(RandEnsembleError, match="dims"):
        baselines.fit_pca(_rows(10, 4, 0), dims=5)
    with pytest.raises(RandEnsembleError, match="power"):
        baselines.fit_pca(_rows(10, 4, 0), dims=2, power=2.0)
    with pytest.raises(RandEnsembleError, match="width"):
        baselines.apply_pca(baselines.fit_pca(_rows(10, 4, 0), 2), _rows(3, 5, 0))


def test_fit_baseline_embeds_as_its_kind():
    """fit_baseline + pixel_embedding: raw gives the unit pixel rows, pca the fitted map's rows
    (checked against fit_pca / apply_pca on the same rows); too few images or an unknown kind
    are one-line errors."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (12, 4, 4, 1), dtype=np.uint8)
    flat = images.reshape(12, -1).astype(np.float64)
    raw = baselines.pixel_embedding(baselines.fit_baseline("raw", images[:0]), images)
    assert np.allclose(raw, flat / np.linalg.norm(flat, axis=1, keepdims=True), atol=1e-6)
    pca = baselines.pixel_embedding(baselines.fit_baseline("pca", images[:8]), images)
    assert pca.shape == (12, 7)                               # min(200, 8 - 1, 16)
    fitted = baselines.fit_pca(baselines.pixel_rows(images[:8]))
    assert np.allclose(pca, baselines.apply_pca(fitted, baselines.pixel_rows(images)))
    with pytest.raises(RandEnsembleError, match="at least 3 images"):
        baselines.fit_baseline("pca", images[:2])
    with pytest.raises(RandEnsembleError, match="one of"):
        baselines.fit_baseline("lda", images)


def _hog_loop(image, cell, bins):
    """HOG of one (H, W) grey image in [0, 1] by plain loops, as the docstring defines it."""
    h, w = image.shape
    cells = np.zeros((h // cell, w // cell, bins))
    for y in range(h // cell * cell):
        for x in range(w // cell * cell):
            gx = image[y, x + 1] - image[y, x - 1] if 0 < x < w - 1 else 0.0
            gy = image[y + 1, x] - image[y - 1, x] if 0 < y < h - 1 else 0.0
            angle = np.arctan2(gy, gx) % (2 * np.pi)
            position = angle / (2 * np.pi) * bins
            low = int(np.floor(position)) % bins
            share = position - np.floor(position)
            cells[y // cell, x // cell, low] += np.hypot(gx, gy) * (1 - share)
            cells[y // cell, x // cell, (low + 1) % bins] += np.hypot(gx, gy) * share
    blocks = []
    for i in range(h // cell - 1):
        for j in range(w // cell - 1):
            block = cells[i:i + 2, j:j + 2].ravel()
            blocks.append(block / np.sqrt(np.sum(block ** 2) + 1e-6))
    row = np.concatenate(blocks)
    return row / np.linalg.norm(row)


def test_hog_rows_match_a_loop_over_pixels():
    """hog_rows (vectorised, chunked) against the loop above on RGB (via luma) and grey images
    whose sides are not multiples of the cell; baseline "hog" is fit_pca of those rows."""
    from rand_ensemble.data.decode import luma
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (5, 13, 10, 3), dtype=np.uint8)
    got = baselines.hog_rows(rgb, cell=4, bins=6, chunk=2)
    assert got.shape == (5, 2 * 1 * 4 * 6)
    grey = luma(rgb)[..., 0] / 255.0
    for k in range(5):
        assert np.allclose(got[k], _hog_loop(grey[k], 4, 6), atol=1e-5)
    images = rng.integers(0, 256, (9, 12, 12, 1), dtype=np.uint8)
    got = baselines.hog_rows(images, cell=3, bins=12)
    for k in range(9):
        assert np.allclose(got[k], _hog_loop(images[k, ..., 0] / 255.0, 3, 12), atol=1e-5)
    fitted = baselines.fit_baseline("hog", images)
    assert np.allclose(baselines.pixel_embedding(fitted, images[:3]), baselines.apply_pca(
        fitted, baselines.hog_rows(images[:3])), atol=1e-6)
    with pytest.raises(RandEnsembleError, match="at least 8 x 8"):
        baselines.hog_rows(images[:, :7, :7])
