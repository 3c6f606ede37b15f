"""Training-free pixel baselines a learned embedding must beat: raw and PCA-whitened pixels.

    rows = pixel_rows(train.images)                          # (N, H*W*C) unit rows
    pca = fit_pca(rows, dims=200, power=0.5)                 # fitted on the TRAINING split only
    emb = apply_pca(pca, pixel_rows(test.images))            # (N, 200) unit rows

PCA pixels: centre on the training mean, project on the top `dims` principal components of the
training split, scale component i by eigenvalue_i ** (-power / 2), unit-normalise. power = 0 is
plain centred PCA, 1 full whitening (every component unit variance), 0.5 "half whitening"
(components scaled by 1 / sqrt(std)). No labels are used: the fit sees unlabelled training
images only. Measured on Fashion-MNIST (README "Real data"): cosine on raw pixels gives held-out
P@1 0.815, centred PCA-200 0.822, half-whitened PCA-200 0.834, fully whitened lower.
"""
from __future__ import annotations

import functools

import numpy as np

from rand_ensemble.data.decode import convert_channels
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory

PCA_DIMS = 200               # the study's PCA baseline: 200 components, half-whitened
PCA_POWER = 0.5


def _unit(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float32 unit rows (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pixel_rows(images) -> np.ndarray:
    """Flattened pixels as unit rows: (N, H, W, C) uint8 -> (N, H*W*C) float32."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise RandEnsembleError(f"pixel baselines need (N, H, W, C) uint8 images, got "
                                f"{images.shape} {images.dtype}")
    return _unit(images.reshape(len(images), -1).astype(np.float32) / 255.0)


def fit_pca(rows, dims: int | None = None, power: float = PCA_POWER) -> dict:
    """Fit the PCA-whitening map on (N, D) training rows (no labels).

    The eigenvectors come from the smaller of the D x D covariance and the N x N Gram matrix,
    so wide rows (large images, D >> N) cost min(N, D)^2 memory, checked before the fit.

    Args:
      rows: (N, D) float rows (e.g. `pixel_rows` of the training split), N >= 2.
      dims: components kept, 1 <= dims <= min(N - 1, D); None: min(PCA_DIMS, N - 1, D).
      power: whitening strength in [0, 1]: component i is scaled by eigenvalue_i ** (-power/2).
    Returns:
      {"mean": (D,), "components": (D, dims) orthonormal columns, largest variance first,
       "scale": (dims,)} float64 arrays.
    """
    x = np.asarray(rows)
    if x.ndim != 2 or len(x) < 2:
        raise RandEnsembleError(f"fit_pca needs (N, D) rows with N >= 2, got {x.shape}")
    n, d = x.shape
    dims = min(PCA_DIMS, n - 1, d) if dims is None else dims
    if not 1 <= dims <= min(n - 1, d) or not 0.0 <= power <= 1.0:
        raise RandEnsembleError(f"PCA dims must lie in [1, {min(n - 1, d)}] and "
                                f"power in [0, 1], got dims={dims}, power={power}")
    check_memory(8 * (2 * n * d + 3 * min(n, d) ** 2), f"a PCA of {n} rows of {d} values")
    mean = x.mean(axis=0, dtype=np.float64)                           # (D,)
    centred = x - mean                                                # (N, D) float64
    if d <= n:
        eigval, eigvec = np.linalg.eigh(centred.T @ centred)          # (D,), (D, D) ascending
    else:
        eigval, eigvec = np.linalg.eigh(centred @ centred.T)          # (N,), (N, N) ascending
    order = np.argsort(eigval)[::-1][:dims]
    eigval = np.maximum(eigval[order], eigval[order][0] * 1e-12)      # rank-deficient pools
    components = eigvec[:, order]
    if d > n:                            # Gram eigenvectors u -> covariance ones C^T u / |.|
        components = centred.T @ components / np.sqrt(eigval)
    return {"mean": mean, "components": components,
            "scale": (eigval / (n - 1)) ** (-power / 2)}


def apply_pca(pca: dict, rows) -> np.ndarray:
    """Rows through a fitted PCA-whitening map: (N, D) -> (N, dims) float32 unit rows."""
    x = np.asarray(rows, np.float64)
    if x.ndim != 2 or x.shape[1] != pca["mean"].shape[0]:
        raise RandEnsembleError(f"rows of width {pca['mean'].shape[0]} expected, got {x.shape}")
    return _unit((x - pca["mean"]) @ pca["components"] * pca["scale"])


PIXEL_BASELINES = ("raw", "pca", "hog")
HOG_CELL, HOG_BINS = 4, 12   # 4 x 4-pixel cells, 12 signed orientation bins, 2 x 2-cell blocks


def hog_rows(images, cell: int = HOG_CELL, bins: int = HOG_BINS,
             chunk: int = 2048) -> np.ndarray:
    """Histograms of oriented gradients (Dalal & Triggs), a hand-made label-free descriptor:
    (N, H, W, C) uint8 -> (N, (H//cell - 1) * (W//cell - 1) * 4 * bins) float32 unit rows.

    Grey in [0, 1] (RGB through `data.decode.luma`); gradients by
    centred differences (0 on the border rows / columns); each pixel votes its gradient
    magnitude into the two nearest of `bins` signed orientation bins over [0, 2 pi) (linear
    weights); votes are summed over cell x cell cells; every 2 x 2 block of cells (stride one
    cell) is L2-normalised (eps 1e-6 under the root) and the blocks are concatenated. One
    jitted XLA program per chunk of `chunk` images (about 6x numpy's time on 2 cores).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise RandEnsembleError(f"HOG needs (N, H, W, C) uint8 images, got {images.shape} "
                                f"{images.dtype}")
    n, h, w = images.shape[:3]
    ch, cw = h // cell, w // cell
    if ch < 2 or cw < 2:
        raise RandEnsembleError(f"HOG needs images of at least {2 * cell} x {2 * cell} "
                                f"pixels, got {h} x {w}")
    out = np.empty((n, (ch - 1) * (cw - 1) * 4 * bins), np.float32)
    for start in range(0, n, chunk):
        grey = convert_channels(images[start:start + chunk], 1)[..., 0]   # (B, H, W) uint8
        part = len(grey)
        if part < chunk and n > chunk:                     # one compiled shape for every chunk
            grey = np.concatenate([grey, np.zeros((chunk - part, h, w), np.uint8)])
        out[start:start + part] = np.asarray(_hog_program(cell, bins)(grey))[:part]
    return _unit(out)


@functools.cache
def _hog_program(cell: int, bins: int):
    """The jitted HOG of one chunk: (B, H, W) uint8 -> (B, blocks * 4 * bins) float32
    block-normalised (not unit), for `cell` and `bins`."""
    import jax  # JAX off the CLI's start-up path: cli/types reads PIXEL_BASELINES from here
    import jax.numpy as jnp

    def hog(grey):
        grey = grey.astype(jnp.float32) / 255.0
        b, h, w = grey.shape
        ch, cw = h // cell, w // cell
        zero_col, zero_row = jnp.zeros((b, h, 1)), jnp.zeros((b, 1, w))
        gx = jnp.concatenate([zero_col, grey[:, :, 2:] - grey[:, :, :-2], zero_col], axis=2)
        gy = jnp.concatenate([zero_row, grey[:, 2:] - grey[:, :-2], zero_row], axis=1)
        magnitude = jnp.hypot(gx, gy)
        position = jnp.mod(jnp.arctan2(gy, gx), 2 * np.pi) / (2 * np.pi) * bins
        low = jnp.floor(position).astype(jnp.int32) % bins
        upper = position - jnp.floor(position)               # the next bin's share
        votes = (magnitude[..., None]
                 * ((low[..., None] == jnp.arange(bins)) * (1 - upper)[..., None]
                    + ((low[..., None] + 1) % bins == jnp.arange(bins)) * upper[..., None]))
        cells = votes[:, :ch * cell, :cw * cell].reshape(b, ch, cell, cw, cell, bins).sum(
            (2, 4))                                          # (B, ch, cw, bins)
        blocks = jnp.concatenate([cells[:, :-1, :-1], cells[:, :-1, 1:], cells[:, 1:, :-1],
                                  cells[:, 1:, 1:]], axis=-1)    # (B, ch-1, cw-1, 4 * bins)
        blocks = blocks / jnp.sqrt((blocks ** 2).sum(-1, keepdims=True) + 1e-6)
        return blocks.reshape(b, -1)
    return jax.jit(hog)


def fit_baseline(kind: str, images, where: str = "the pool") -> dict:
    """A pixel baseline ready to embed (`pixel_embedding`), fitted on unlabelled images.

    Args:
      kind: "raw" (cosine of the flattened pixels; nothing to fit), "pca" (`fit_pca` with
        its defaults on `pixel_rows(images)`) or "hog" (`fit_pca` with its defaults on
        `hog_rows(images)`: half-whitened top 200 components of the HOG descriptors).
      images: (N, H, W, C) uint8, the images the PCA is fitted on (ignored for "raw").
      where: names the images in the error when there are too few to fit on.
    Returns:
      {"kind": kind, and for "pca" the `fit_pca` arrays}: plain numpy, so it pickles (the
      weak-label job ships it to its workers).
    """
    if kind not in PIXEL_BASELINES:
        raise RandEnsembleError(f"pixel baseline must be one of {PIXEL_BASELINES}, got {kind!r}")
    if kind == "raw":
        return {"kind": "raw"}
    if len(images) < 3:
        raise RandEnsembleError(f"--pixels {kind} needs at least 3 images to fit on, {where} "
                                f"has {len(images)}")
    return {"kind": kind, **fit_pca(_descriptor_rows(kind, images))}


def pixel_embedding(baseline: dict, images) -> np.ndarray:
    """Images through a fitted pixel baseline (`fit_baseline`): (N, H, W, C) uint8 ->
    (N, D) float32 unit rows (D = H*W*C for raw, the PCA's dims for pca and hog)."""
    rows = _descriptor_rows(baseline["kind"], images)
    return rows if baseline["kind"] == "raw" else apply_pca(baseline, rows)


def model_embedders(model, batch_size: int | None = None):
    """A params file's model (`checkpoint.Model`) as the functions every command scores it by:
    -> (members: images (..., H, W, C) -> (M, ..., E) float32 unit rows, signal: uint8
    (N, H, W, C) -> (N, D) float32 unit rows, or None where the model keeps no signal member),
    both averaged over each image and its mirror where `model.mirror` (`ensemble.mirror_mean`).
    """
    from rand_ensemble.model import ensemble  # JAX off the CLI's start-up path, as in _hog_program

    kwargs = {} if batch_size is None else {"batch_size": batch_size}

    def members(images):
        return ensemble.embed(model.params, images, model.config, **kwargs)

    signal = None if model.signal is None else functools.partial(pixel_embedding, model.signal)
    if not model.mirror:
        return members, signal
    return (functools.partial(ensemble.mirror_mean, members),
            None if signal is None else functools.partial(ensemble.mirror_mean, signal))


def _descriptor_rows(kind, images):
    """The unit rows a baseline starts from: HOG descriptors for hog, pixels otherwise."""
    return hog_rows(images) if kind == "hog" else pixel_rows(images)
