"""1-of-10 test-set files (N, 11, H, W, 3): loading with validation (never unpickles), atomic
saving, and making one from any labelled dataset (`make_test_set`, `rand-ensemble
make-test-set`) or by rendering (`run_render_test_set`)."""
import gzip
import os

import numpy as np

from rand_ensemble import fileio
from rand_ensemble.data import sources
from rand_ensemble.data.decode import convert_channels
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate.one_of_ten import CANDIDATES, EXAMPLE_SIZE
from rand_ensemble.limits import check_memory, check_work, render_seconds

_VALIDATE_BYTES = 1 << 26  # values checked at a time, so memmaps stay streamed


def load_test_set(path, mmap=True):
    """Load and validate a test set: .npy / .npy.gz -> (N, 11, H, W, 3) float in [0, 1] or uint8.

    The header is read and checked first (shape, dtype, size against the file and against
    available memory), so a bad or huge file fails before anything large is read. Plain .npy
    files are memory-mapped (read-only) when `mmap` is true; .npy.gz is decompressed.
    """
    path = fileio.check_input_file(path, "test set")
    gz = path.endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            shape, dtype, order, offset = _read_header(f, path)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if not gz and os.path.getsize(path) != offset + nbytes:
                raise RandEnsembleError(f"{path}: the header declares {tuple(shape)} {dtype}, "
                                        f"but the file holds {os.path.getsize(path) - offset} "
                                        f"bytes of data, not {nbytes}")
            if gz or not mmap:
                check_memory(nbytes, f"test set {path} {tuple(shape)} {dtype}")
                array = _read_data(f, shape, dtype, order, nbytes, path)
        if not gz and mmap:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
    except RandEnsembleError:
        raise
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise RandEnsembleError(
            f"cannot read {path} as a .npy array: {fileio.first_line(e)}") from None
    validate_test_set(array, path)
    return array


def _read_header(f, path):
    """The .npy header: -> (shape, dtype, order, data offset), checked against the test-set
    contract before any data is read."""
    if f.read(6) != b"\x93NUMPY":
        raise RandEnsembleError(f"cannot read {path}: not a .npy file (bad header)")
    f.seek(0)
    shape, fortran, dtype = fileio.read_npy_header(f, f"cannot read {path}")
    if dtype.hasobject:
        raise RandEnsembleError(
            f"{path} holds a pickled object array; only numeric arrays are accepted")
    _check_layout(shape, dtype, path)
    return shape, dtype, "F" if fortran else "C", f.tell()


def _read_data(f, shape, dtype, order, nbytes, path):
    """The array data after the header, read into one buffer of exactly nbytes."""
    raw = np.empty(nbytes, np.uint8)
    if f.readinto(memoryview(raw)) != nbytes:
        raise RandEnsembleError(f"{path} is truncated: the header declares {tuple(shape)} {dtype}")
    if f.read(1):                              # reading to the end also checks a .gz's CRC
        raise RandEnsembleError(f"{path} has data after the {tuple(shape)} array it declares")
    return raw.view(dtype).reshape(shape, order=order)


def validate_test_set(array, name="test set"):
    """Check rank, 11 images per example, 3 channels, dtype, finiteness and [0, 1] range."""
    if array.dtype == object:
        raise RandEnsembleError(f"{name} holds Python objects; expected numbers")
    _check_layout(array.shape, array.dtype, name)
    n = array.shape[0]
    if array.dtype == np.uint8:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise RandEnsembleError(f"{name} must be uint8 or float in [0, 1], got dtype {array.dtype}")
    step = max(1, _VALIDATE_BYTES // max(1, array[:1].size))
    for start in range(0, n, step):
        part = np.asarray(array[start:start + step])
        if not np.all(np.isfinite(part)):
            bad = start + int(np.argwhere(~np.isfinite(part))[0][0])
            raise RandEnsembleError(f"{name} has NaN or infinite values (first in example {bad})")
        lo, hi = part.min(), part.max()
        if lo < 0.0 or hi > 1.0:             # shown at the dtype's shortest exact digits
            raise RandEnsembleError(
                f"{name} float values must lie in [0, 1], found [{lo!s}, {hi!s}]; "
                "scale 0..255 data by 1/255 or save it as uint8")


def _check_layout(shape, dtype, name):
    """(N, 11, H, W, 3) with N, H, W >= 1, uint8 or float: checked from a header or an array."""
    if len(shape) != 5:
        raise RandEnsembleError(
            f"{name} must be shaped (N, 11, H, W, 3), got {len(shape)}-d {tuple(shape)}")
    n, k, h, w, c = shape
    if n < 1:
        raise RandEnsembleError(f"{name} has no examples")
    if k != EXAMPLE_SIZE:
        raise RandEnsembleError(
            f"{name} must have 11 images per example (anchor, positive, 9 negatives), got {k}")
    if c != 3:
        raise RandEnsembleError(f"{name} images must have 3 channels (RGB), got {c}")
    if h < 1 or w < 1:
        raise RandEnsembleError(f"{name} images are {h}x{w}; they need at least one pixel")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise RandEnsembleError(f"{name} must be uint8 or float in [0, 1], got dtype {dtype}")


def object_ids_path(test_set_path):
    """The sidecar file with object ids (N, 11) for a rendered test set: X.npy -> X.ids.npy."""
    base = os.fspath(test_set_path)
    for ext in (".npy.gz", ".npy"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base + ".ids.npy"


def save_test_set(path, images, object_ids):
    """Write uint8 images (N, 11, H, W, 3) to `path` and ids (N, 11) beside it, as one unit."""
    fileio.write_outputs(test_set_writers(path, images, object_ids))


def test_set_writers(path, images, object_ids) -> dict:
    """{path: writer} of a test set and its ids sidecar (int32 (N, 11)), for write_outputs."""
    ids = np.asarray(object_ids)
    if ids.size and (ids.min() < np.iinfo(np.int32).min or ids.max() > np.iinfo(np.int32).max):
        raise RandEnsembleError("test-set ids must fit in int32")
    return {path: fileio.npy_writer(images),
            object_ids_path(path): fileio.npy_writer(ids.astype(np.int32))}


def plan_test_set(labels, examples: int, seed: int) -> np.ndarray:
    """The rows of a 1-of-10 test set drawn from labelled rows: (N,) labels -> (N_examples, 11).

    Per example: a class with at least two rows, two distinct rows of it (anchor, positive),
    then 9 other classes, distinct, and one row of each (the negatives). Deterministic in
    (labels, examples, seed). Fewer than 10 classes, or no class with two rows, is an error.
    """
    labels = np.asarray(labels)
    if isinstance(examples, bool) or not isinstance(examples, (int, np.integer)) or examples < 1:
        raise RandEnsembleError(f"examples must be a positive integer, got {examples!r}")
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)   # rows per class
    if len(groups) < CANDIDATES:
        raise RandEnsembleError(f"a 1-of-10 test set needs at least {CANDIDATES} classes (the "
                                f"positive's and 9 negatives'), the data has {len(groups)}")
    anchors = [k for k, g in enumerate(groups) if len(g) >= 2]
    if not anchors:
        raise RandEnsembleError("a 1-of-10 test set needs a class with at least 2 images "
                                "(anchor and positive); every class has one")
    rng = np.random.default_rng(seed)
    rows = np.empty((examples, EXAMPLE_SIZE), np.int64)
    for i in range(examples):
        c = anchors[rng.integers(len(anchors))]
        rows[i, :2] = rng.choice(groups[c], 2, replace=False)            # anchor, positive
        others = rng.choice(len(groups) - 1, CANDIDATES - 1, replace=False)
        others += others >= c                                            # every class but c
        rows[i, 2:] = [groups[k][rng.integers(len(groups[k]))] for k in others]
    return rows


def make_test_set(dataset, examples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A blog-style 1-of-10 test set from a labelled dataset (`plan_test_set` picks the rows).

    Args:
      dataset: a labelled `data.dataset.Dataset`, images uint8 (N, H, W, 1 or 3).
      examples: how many examples; seed: the draw.
    Returns:
      (images uint8 (examples, 11, H, W, 3): anchor, positive, 9 negatives, grey repeated to
      RGB; labels int64 (examples, 11): the dataset's label codes of those images).
    """
    if dataset.labels is None:
        raise RandEnsembleError(f"{dataset.source} has no labels; a test set needs classes")
    if isinstance(examples, (int, np.integer)) and not isinstance(examples, bool):
        # before the draw: a huge --examples is refused, not looped over and then refused
        pixels = int(np.prod(dataset.images.shape[1:3]))
        check_memory(int(examples) * EXAMPLE_SIZE * (pixels * 3 + 16),
                     f"{examples} examples of {dataset.images.shape[1]}x{dataset.images.shape[2]}")
    rows = plan_test_set(dataset.labels, examples, seed)
    images = convert_channels(dataset.images[rows], 3)                  # (N, 11, H, W, 3)
    return images, dataset.labels[rows]


def run_make_test_set(data: str, out: str, examples: int, seed: int = 0, hw: int = 32,
                      failures: str | None = None) -> None:
    """`rand-ensemble make-test-set`: a 1-of-10 test set from any labelled dataset -> uint8
    (N, 11, hw, hw, 3) at `out` (.npy) and the images' label codes (N, 11) beside it, as one
    unit (`eval --test-set` reads it); `failures`: the data's failure rows (.jsonl)."""

    if not out.endswith(".npy"):
        raise RandEnsembleError(f"--out must be a .npy path, got {out!r}")
    source = sources.parse_spec(data)
    fileio.plan_outputs([out, object_ids_path(out)] + ([failures] if failures else []),
                        inputs=sources.input_paths(source))
    dataset = sources.load_dataset(source, hw=hw, channels=3, require_labels=True)
    images, labels = make_test_set(dataset, examples, seed)
    writers = test_set_writers(out, images, labels)
    if failures:
        writers[failures] = fileio.jsonl_writer(dataset.failures)
    fileio.write_outputs(writers)
    print(f"wrote {out} {images.shape} uint8 and {object_ids_path(out)} {labels.shape} label "
          f"codes, from {len(dataset)} images of {dataset.source}"
          + (f"; {len(dataset.failures)} failure row(s)" if dataset.failures else ""))


def run_render_test_set(out: str, examples: int, seed: int = 0, hw: int = 32,
                        colour: str = "object", allow_long: bool = False) -> None:
    """`rand-ensemble render-test-set`: render N examples with pybullet -> uint8
    (N, 11, hw, hw, 3) at `out` (.npy) and the object ids (N, 11) beside it, as one unit."""
    from rand_ensemble.data import render  # pybullet: only when rendering

    if not out.endswith(".npy"):
        raise RandEnsembleError(f"--out must be a .npy path, got {out!r}")
    fileio.plan_outputs([out, object_ids_path(out)])
    check_memory(test_set_bytes(examples, hw), f"--examples {examples} at --hw {hw}")
    check_work(render_seconds(examples * EXAMPLE_SIZE, hw),
               f"rendering --examples {examples} at --hw {hw}", allow_long)
    images, ids = render.render_test_set(examples, seed, hw=hw, colour=colour, progress=True)
    save_test_set(out, images, ids)
    print(f"wrote {out} {images.shape} uint8 and {object_ids_path(out)} {ids.shape} object ids")


def test_set_bytes(examples, hw):
    """Memory a rendered test set of N examples at hw x hw holds: images and object ids."""
    return int(examples) * EXAMPLE_SIZE * (int(hw) * int(hw) * 3 + 4)


def cached_test_set(examples, seed, hw=32, colour="object", cache_dir=None, allow_long=False):
    """Render a test set once and reuse it: -> (path, uint8 (N, 11, hw, hw, 3))."""
    from rand_ensemble.data import render  # pybullet: only when rendering

    path = cache_path(examples, seed, hw, colour, cache_dir)
    if os.path.exists(path) and os.path.exists(object_ids_path(path)):
        try:
            return path, load_cached(path, examples, hw)
        except RandEnsembleError:
            pass                                             # a damaged cache is re-rendered
    fileio.plan_outputs([path, object_ids_path(path)])
    check_memory(test_set_bytes(examples, hw), f"--examples {examples}")
    check_work(render_seconds(examples * EXAMPLE_SIZE, hw), f"rendering --examples {examples}",
               allow_long)
    print(f"rendering {examples} examples x 11 views with pybullet (cached at {path})")
    images, ids = render.render_test_set(examples, seed, hw=hw, colour=colour, progress=True)
    save_test_set(path, images, ids)
    return path, images


def load_cached(path, examples, hw):
    """A cached render, only if it is what its name says: uint8 (examples, 11, hw, hw, 3) with
    integer object ids (examples, 11) beside it; anything else (another size or side, floats, a
    broken ids file) raises RandEnsembleError, so the caller renders it again."""
    images = load_test_set(path, mmap=False)
    want = (int(examples), EXAMPLE_SIZE, int(hw), int(hw), 3)
    if images.shape != want or images.dtype != np.uint8:
        raise RandEnsembleError(f"cached {path} holds {images.dtype} {images.shape}, not "
                                f"uint8 {want}")
    ids_path = fileio.check_input_file(object_ids_path(path), "cached object ids")
    try:
        ids = np.load(ids_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise RandEnsembleError(f"cannot read {ids_path}: {fileio.first_line(e)}") from None
    if ids.shape != want[:2] or ids.dtype.kind not in "iu":
        raise RandEnsembleError(f"cached {ids_path} holds {ids.dtype} {ids.shape}, not "
                                f"integers {want[:2]}")
    return images


# Part of the cache name: bump it whenever render.py's default images change (r2: the fast path
# with 2x oversampling), so a test set cached by an older renderer is not reused.
RENDER_GENERATION = "r2"


def cache_path(examples, seed, hw=32, colour="object", cache_dir=None):
    """Where `cached_test_set` keeps a rendered test set."""
    cache_dir = cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rand_ensemble")
    name = f"test_set_n{examples}_s{seed}_hw{hw}_{colour}_{RENDER_GENERATION}.npy"
    return os.path.join(cache_dir, name)
