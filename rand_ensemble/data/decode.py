"""The image policy: encoded bytes or arrays -> uint8 (H, W, C), C = 1 (grey) or 3 (RGB).

Decoding (Pillow), in this order:
  - animated images (GIF, APNG, WebP, multi-page TIFF): the first frame only;
  - EXIF orientation is applied (the image as a viewer shows it);
  - modes: '1' and 'L' -> grey; 'I;16*' (16-bit grey PNG/TIFF) -> grey by value >> 8 (scaled,
    never clipped: a 16-bit image does not decode almost white); 'I' (32-bit) -> the same if its
    values lie in 0..65535, else an error; 'F' (float) -> an error; 'P' (palette) -> via RGBA
    (or RGB without transparency); 'CMYK', 'YCbCr', 'LAB', 'HSV' -> RGB by Pillow's conversion;
  - alpha ('LA', 'RGBA', 'PA', ...): composited on black, c * a / 255 rounded (black is the
    padding colour too), then dropped;
  - greyscale stays 1 channel: the dataset keeps what the file holds.
Arrays (.npy, .npz, IDX, Parquet pixel lists) follow the same rules by dtype, never by value:
uint8 as is; uint16 >> 8 (16-bit); other integer dtypes hold 8-bit values stored wide (int64
lists, int32 arrays) and must lie in 0..255; float in [0, 1] -> round(x * 255); anything else
is an error. (N, H, W) is grey; C = 2 / 4 is grey / RGB plus alpha, composited as above.

Size rule (`fit`), the only way images of several sizes reach one array: an image no larger
than hw x hw is padded centred with zeros (Fashion-MNIST's 28 -> 32; the odd pixel goes to the
bottom / right); a larger one (either side above hw) is resized, keeping its aspect, so that
its shorter side is hw, then centre-cropped. Resizing is Pillow's BILINEAR, which is
antialiased when shrinking (it averages over the source area). Padding is a margin, not a
rescale: an image whose sides are both below 3/4 of hw (`MIN_PAD_FILL`, e.g. 32x32 renders
for a net made for 64x64) is an error (`check_fits`), since most of the net's input would be
blank and its scores meaningless; use params made for that size.

Channels (`to_input`): grey -> RGB repeats the channel; RGB -> grey is ITU-R 601 luma
(L = 0.299 R + 0.587 G + 0.114 B, Pillow's integer formula, so it equals `convert("L")`).
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory

_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGB")


def decode_bytes(data: bytes, hw: int | None = None) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, C), C in {1, 3}; fitted to (hw, hw) if hw is given.

    Raises on undecodable data, decompression bombs and unsupported modes (callers make those
    failure rows).
    """
    if not data:
        raise RandEnsembleError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)                                   # animated: the first frame
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:                            # broken EXIF: keep the pixels as stored
                pass
            pixels = from_pil(im)
    return pixels if hw is None else fit(pixels, hw)


def from_pil(im) -> np.ndarray:
    """A loaded Pillow image -> uint8 (H, W, C), C in {1, 3} (module policy)."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L"), np.uint8)[..., None]
    if mode == "L":
        return np.asarray(im, np.uint8)[..., None]
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise RandEnsembleError("32-bit integer image with values outside 0..65535")
        return from_array(values.astype(np.uint16), "grey image")[..., None]
    if mode == "F":
        raise RandEnsembleError("floating-point images (mode F) are not supported")
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("LA", "La", "RGBA", "RGBa"):
        im = im.convert("LA" if mode.startswith("L") else "RGBA")
        return composite(np.asarray(im, np.uint8))
    if mode in _TO_RGB:
        return np.asarray(im.convert("RGB"), np.uint8)
    raise RandEnsembleError(f"unsupported image mode {mode}")


def composite(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., 2 or 4) grey/RGB plus alpha -> (..., 1 or 3) on black: round(c * a / 255)."""
    colour, alpha = pixels[..., :-1].astype(np.uint32), pixels[..., -1:].astype(np.uint32)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def from_array(array: np.ndarray, what: str = "images") -> np.ndarray:
    """Pixel values -> uint8 by the module's dtype rule; (..., 2 / 4) channels lose alpha."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        out = array
    elif array.dtype == np.uint16:
        out = (array >> 8).astype(np.uint8)
    elif array.dtype.kind in "iu":                     # 8-bit values stored wide
        if array.size and (array.min() < 0 or array.max() > 255):
            raise RandEnsembleError(f"{what}: {array.dtype} values outside 0..255; store "
                                    "uint8 (or uint16 for 16-bit pixels)")
        out = array.astype(np.uint8)
    elif array.dtype.kind == "f":
        if array.size and not (np.all(np.isfinite(array)) and array.min() >= 0
                               and array.max() <= 1):
            finite = array[np.isfinite(array)]
            found = f"[{finite.min()!s}, {finite.max()!s}]" if finite.size else "no finite value"
            raise RandEnsembleError(f"{what}: float pixels must lie in [0, 1], found {found}"
                                    + ("" if finite.size == array.size else " and NaN/inf"))
        out = np.rint(array * 255.0).astype(np.uint8)
    else:
        raise RandEnsembleError(f"{what}: pixels of dtype {array.dtype} are not supported; "
                                "use uint8, uint16 or float in [0, 1]")
    return composite(out) if out.ndim >= 3 and out.shape[-1] in (2, 4) else out


MIN_PAD_FILL = 0.75      # a padded image must fill at least this fraction of the input's side


def check_fits(h: int, w: int, hw: int, what: str = "the images") -> None:
    """Refuse h x w images that the size rule would pad into mostly blank hw x hw inputs."""
    if h <= hw and w <= hw and max(h, w) < MIN_PAD_FILL * hw:
        raise RandEnsembleError(
            f"the net takes {hw}x{hw} images but {what} {'is' if what == 'the image' else 'are'} "
            f"{h}x{w}: padding would leave most of its input blank (images must fill at least "
            f"{MIN_PAD_FILL:.0%} of its side); use params made for this size, or --input-hw "
            f"{max(h, w)} with --padding SAME --pool mean as `train` picks for small images")


def fit(image: np.ndarray, hw: int) -> np.ndarray:
    """uint8 (H, W, C) -> (hw, hw, C) by the size rule: pad centred, or resize then crop."""
    h, w, c = image.shape
    if (h, w) == (hw, hw):
        return image
    check_fits(h, w, hw, "the image")
    if h <= hw and w <= hw:
        out = np.zeros((hw, hw, c), np.uint8)
        top, left = (hw - h) // 2, (hw - w) // 2
        out[top:top + h, left:left + w] = image
        return out
    scale = hw / min(h, w)
    nh, nw = max(hw, round(h * scale)), max(hw, round(w * scale))
    im = Image.fromarray(image[..., 0] if c == 1 else image, "L" if c == 1 else "RGB")
    resized = np.asarray(im.resize((nw, nh), Image.BILINEAR), np.uint8)
    top, left = (nh - hw) // 2, (nw - hw) // 2
    return resized[top:top + hw, left:left + hw].reshape(hw, hw, c)


def luma(images: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB -> (..., 1) ITU-R 601 luma, Pillow's rounding."""
    rgb = images.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., None]


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (..., C) -> (..., channels): grey repeated to RGB, RGB to luma."""
    c = images.shape[-1]
    if channels not in (1, 3):
        raise RandEnsembleError(f"channels must be 1 or 3, got {channels}")
    if c == channels:
        return images
    return np.repeat(images, 3, axis=-1) if c == 1 else luma(images)


def to_input(images: np.ndarray, hw: int, channels: int = 3) -> np.ndarray:
    """The embedder's input: uint8 (N, H, W, C) -> (N, hw, hw, channels), size rule and channels.

    Args:
      images: uint8 (N, H, W, C), C in {1, 3} (a Dataset's images).
      hw: the embedder's input side.
      channels: 3 (RGB) or 1 (grey).
    Returns:
      uint8 (N, hw, hw, channels); the input itself when nothing changes.
    """
    n, h, w, c = images.shape
    if (h, w, c) == (hw, hw, channels):
        return images
    check_fits(h, w, hw)
    check_memory(n * hw * hw * channels, f"{n:,} images at {hw}x{hw}x{channels}")
    if h <= hw and w <= hw:                              # padding only: one slice for all
        out = np.zeros((n, hw, hw, channels), np.uint8)
        top, left = (hw - h) // 2, (hw - w) // 2
        out[:, top:top + h, left:left + w] = convert_channels(images, channels)
        return out
    out = np.empty((n, hw, hw, channels), np.uint8)
    for i in range(n):
        out[i] = convert_channels(fit(images[i], hw), channels)
    return out


class SizesDiffer(RandEnsembleError):
    """Images of several sizes where one size was needed (no input side was given to fit them
    to): callers that can choose a side catch it."""


def stack(images: list, what: str) -> np.ndarray:
    """Equal-size uint8 (H, W, C) images -> (N, H, W, C); grey promoted to RGB if any is RGB."""
    if not images:
        raise RandEnsembleError(f"{what}: no images")
    sizes = sorted({im.shape[:2] for im in images})
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sizes[:4])
        raise SizesDiffer(f"{what}: images of several sizes ({shown}"
                                f"{', ...' if len(sizes) > 4 else ''}); give the input side "
                                "(hw) so that the size rule fits them")
    c = max(im.shape[2] for im in images)
    h, w = sizes[0]
    check_memory(len(images) * h * w * c, f"{what}: {len(images):,} images of {h}x{w}x{c}")
    out = np.empty((len(images), h, w, c), np.uint8)
    for i, im in enumerate(images):
        out[i] = convert_channels(im, c)
    return out
