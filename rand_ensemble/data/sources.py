"""Every data source behind one call: `load_dataset(spec)` -> Dataset (what `--data SPEC` runs).

    ds = load_dataset("idx:/data/fashion-mnist:test", hw=32, channels=3, require_labels=True)
    ds.images.shape      # (10000, 32, 32, 3) uint8: 28x28 grey padded to 32, repeated to RGB

The spec grammar is data/spec.py's; the kinds and their readers:
  renders  render job shards, labels = object ids        data/parquet.py
  images   image files by glob, labels from a CSV         data/image_files.py
  folder   class folders ROOT/CLASS/**/FILE               data/image_files.py
  parquet  encoded, raw or Hugging Face image tables      data/parquet.py
  npy/npz  NumPy arrays                                   data/arrays.py
  idx      the MNIST family's IDX files                   data/arrays.py
Decoding, channels and the size rule are data/decode.py's; ids, labels and the CSV parser are
data/labels.py's; ordering and failure rows are data/dataset.py's. Errors are one-line
RandEnsembleErrors; item problems are failure rows in `Dataset.failures`.
"""
from __future__ import annotations

import dataclasses
import os

from rand_ensemble.data import arrays, decode, image_files, parquet
from rand_ensemble.data.dataset import Dataset, finish
from rand_ensemble.data.spec import SPEC_HELP, Source, parse_spec  # noqa: F401  (re-exported)
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory


def _read(source: Source, hw: int | None):
    """(Raw, split, labels CSV or None) for a parsed source."""
    kind, path, split, options = source.kind, source.path, source.split, dict(source.options)
    if kind == "renders":
        return parquet.load_renders(path, split, hw), split, options.get("labels")
    if kind == "images":
        return image_files.load_images(path, split, hw), split, options.get("labels")
    if kind == "folder":
        return image_files.load_folder(path, split, hw), split, None
    if kind == "parquet":
        return parquet.load_parquet(parquet.parquet_paths(path, split), options, hw), split, None
    if kind == "npy":
        return arrays.load_npy(path), None, options.get("labels")
    if kind == "npz":
        return arrays.load_npz(path, split, options), split, None
    raw, split = arrays.load_idx(path, split, options.get("labels"))
    return raw, split, None


def load(source: Source, *, hw: int | None = None) -> Dataset:
    """Read a data source into a Dataset.

    Args:
      source: a parsed data spec (`parse_spec` or `source_of`, once, where the spec comes in).
      hw: fit every image to (hw, hw) by the size rule (data/decode.py); None keeps the
        source's size, which must then be one size.
    Returns:
      Dataset with images uint8 (N, H, W, C), C as the source holds them (1 or 3).
    """
    if hw is not None and (isinstance(hw, bool) or not isinstance(hw, int) or hw < 1):
        raise RandEnsembleError(f"image side must be a positive integer, got {hw!r}")
    what = source.spec or source.path
    try:
        raw, split, labels_csv = _read(source, hw)
        ds = finish(raw, what, split=split, source=what, labels_csv=labels_csv, hw=hw)
    except OSError as e:
        name = f" {e.filename}" if e.filename else ""
        raise RandEnsembleError(f"cannot read {what}:{name} {e.strerror or e}") from None
    except MemoryError:
        raise RandEnsembleError(f"{what} does not fit in memory") from None
    limit = source.option("limit")
    return ds if limit is None or int(limit) >= len(ds) else ds.subset(range(int(limit)))


def input_paths(source: Source) -> list[str]:
    """The files a parsed spec reads (images, labels, shards), listed without reading them, and
    the data folder itself for folder sources (renders, class folders, Parquet or IDX folders):
    what a command passes to `paths.plan_outputs`, so no output overwrites its data or lands
    inside its data folder. A glob protects the files it matches, not their folder."""
    kind, path, split = source.kind, source.path, source.split
    extra = [source.option("labels")] if kind in ("renders", "images", "npy") else []
    try:
        if kind == "renders":
            files = parquet.render_shards(os.path.join(path, split) if split else path)
        elif kind == "images":
            base, ids = image_files.list_glob(os.path.join(path, split) if split else path)
            ids = image_files.walk(base, []) if ids is None else ids
            files = [os.path.join(base, i) for i in ids]
        elif kind == "folder":
            root = os.path.join(path, split) if split else path
            files = [os.path.join(root, i) for i in image_files.walk(root, [])]
        elif kind == "parquet":
            files = parquet.parquet_paths(path, split)
        elif kind == "idx":
            files = list(arrays.idx_files(path, split, source.option("labels"))[:2])
        else:
            files = [path]
    except OSError as e:
        raise RandEnsembleError(f"cannot list {source.spec or path}: {e.strerror or e}") from None
    folder = [path] if kind != "images" and os.path.isdir(path) else []
    return [f for f in files + extra + folder if f and f != "none"]


def load_dataset(spec: str | Source, *, hw: int | None = None, channels: int | None = None,
                 require_labels: bool = False) -> Dataset:
    """What `--data SPEC` does: read, fit to the embedder's input, check labels.

    Args:
      spec: the data spec (see SPEC_HELP), parsed here, or a Source a command parsed already
        (it also listed the source's `input_paths`).
      hw: the embedder's input side (size rule), or None to keep the source's size.
      channels: 3 (grey repeated) or 1 (RGB to luma), or None to keep the source's.
      require_labels: an unlabelled source is an error (evaluation needs labels).
    Returns:
      Dataset: images uint8 (N, hw, hw, channels); failure rows in `failures`.
    """
    if channels not in (None, 1, 3):
        raise RandEnsembleError(f"channels must be 1 or 3, got {channels!r}")
    ds = load(spec if isinstance(spec, Source) else parse_spec(spec), hw=hw)
    if require_labels and not ds.has_labels:
        raise RandEnsembleError(f"{ds.source} has no labels; give them (a labels CSV, class "
                                "folders or a label column) or use a command that needs none")
    if channels is not None and ds.images.shape[3] != channels:
        n, h, w, _ = ds.images.shape
        check_memory(n * h * w * channels, f"{ds.source} as {channels}-channel images")
        ds = dataclasses.replace(ds, images=decode.convert_channels(ds.images, channels))
    return ds


def source_of(data: str | None = None, renders: str | None = None, images: str | None = None,
              labels: str | None = None) -> Source:
    """The one Source a command reads: `--data SPEC`, or the older flags as aliases
    (`--renders DIR` = renders:DIR, `--images GLOB [--labels CSV]` = images:GLOB?labels=CSV)."""
    given = [f for f, v in (("--data", data), ("--renders", renders), ("--images", images)) if v]
    if len(given) != 1:
        raise RandEnsembleError("give exactly one of --data SPEC, --renders DIR or --images GLOB"
                                + (f" (got {', '.join(given)})" if given else ""))
    if labels is not None and images is None:
        raise RandEnsembleError("--labels goes with --images; with --data name the CSV in the "
                                "spec (?labels=CSV)")
    if data is not None:
        return parse_spec(data)
    if renders is not None:
        return Source("renders", renders, None, (), f"renders:{renders}")
    options = (("labels", labels),) if labels is not None else ()
    return Source("images", images, None, options,
                  f"images:{images}" + (f"?labels={labels}" if labels else ""))


def embedder_input(config) -> dict:
    """load_dataset's hw and channels for an EmbedderConfig: its input side and channels
    (`in_channels` where the config has it, else RGB)."""
    return {"hw": config.input_hw, "channels": getattr(config, "in_channels", 3)}
