"""Data specs: one string names a source, as `--data SPEC` takes it.

    SPEC    = [KIND ":"] PATH [":" SPLIT] ["?" NAME "=" VALUE ("&" NAME "=" VALUE)*]

    idx:/data/fashion-mnist:train        Fashion-MNIST's train split (t10k-* is 'test')
    /data/fashion-mnist:test             the same, kind detected
    folder:/data/pets                    class folders: pets/CLASS/**/FILE, labels = CLASS
    images:/x/**/*.png?labels=l.csv      a glob of image files, labels from a CSV
    renders:out/renders                  the render job's renders-*.parquet shards
    parquet:hf/data:train                Parquet of encoded images (Hugging Face layout)
    npz:d.npz?images=x&labels=y          arrays in an .npz; npy:x.npy for images only

KIND is one of KINDS; without it the kind is detected from PATH: a glob (a `*`, `?` or `[`
in a path that does not exist literally) -> images; a folder holding renders-*.parquet ->
renders, *-idx?-ubyte[.gz] files -> idx, *.parquet (at the top or one level down) -> parquet,
anything else -> folder; a file by its name: .npy, .npz, .parquet, *-idx?-ubyte[.gz], or an
image extension (-> images, one file).

SPLIT is letters, digits, '_', '.', '-' after the last ':'; it is split off only when the whole
PATH:SPLIT is not an existing path. Its meaning: idx -> the file prefix (train, or test =
t10k); parquet -> the files named SPLIT-* or SPLIT.* or under a folder SPLIT (the Hugging Face
layout data/train-00000-of-00001.parquet; a folder of several such splits needs one, as idx
does); folder, renders -> the subfolder PATH/SPLIT; images
-> the subfolder PATH/SPLIT when PATH is a folder (a glob says its folders itself); npz -> the
keys x_SPLIT / y_SPLIT (Keras' mnist.npz); npy -> not allowed.

Options start at the last '?' that is followed by NAME=VALUE pairs, so a glob's '?' wildcard
stays in the path; values are percent-decoded (write '&' as %26). Allowed names per kind are
in OPTIONS (plus COMMON_OPTIONS); relative paths in values are relative to the working folder, like PATH. Every kind
takes `limit=N` (N >= 1): keep the first N rows of the dataset in its id order (row order for
arrays and IDX, whose ids are row numbers), for quick looks and tests; the whole source is
still read and its failure rows kept.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import urllib.parse

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.integers import parse_int

OPTIONS = {
    "renders": {"labels": "a labels CSV (image_id,label) replacing the object ids"},
    "images": {"labels": "a labels CSV (image_id,label); ids are paths below the glob's folder"},
    "folder": {},
    "parquet": {"images": "image column (default image)", "labels": "label column (default "
                "label, else object_id; 'none' for no labels)", "ids": "id column (default "
                "image_id, else id; else row numbers)"},
    "npy": {"labels": "a labels CSV keyed by row number"},
    "npz": {"images": "images key (default images, else x)", "labels": "labels key (default "
            "labels, else y; 'none' for no labels)", "ids": "ids key (default ids, if present)"},
    "idx": {"labels": "the labels IDX file when PATH is an images file ('none' for no labels)"},
}
COMMON_OPTIONS = {"limit": "keep the first N rows in id order (row order for arrays)"}
KINDS = tuple(OPTIONS)
SPEC_HELP = ("[KIND:]PATH[:SPLIT][?NAME=VALUE&...], KIND one of " + ", ".join(KINDS)
             + " (detected when left out); e.g. idx:/data/fashion-mnist:test, folder:pets, "
             "'images:photos/**/*.jpg?labels=labels.csv', parquet:hf/data:train, "
             "npz:d.npz?images=x&labels=y; ?limit=N keeps the first N rows")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm")
IDX_NAME = re.compile(r".*-idx[1-4]-ubyte(\.gz)?\Z")
_SPLIT = re.compile(r"(.+):([A-Za-z0-9_.-]+)\Z")
_QUERY = re.compile(r"[A-Za-z_]+=[^&]*(&[A-Za-z_]+=[^&]*)*\Z")


@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed spec: kind, path, split (or None), options ((name, value) pairs), the text."""
    kind: str
    path: str
    split: str | None = None
    options: tuple = ()
    spec: str = ""

    def option(self, name: str, default=None):
        """An option's value, or `default`."""
        return dict(self.options).get(name, default)


def parse_spec(spec: str) -> Source:
    """Parse a data spec (module docstring) -> Source; bad specs raise one-line errors."""
    if not isinstance(spec, str) or not spec.strip() or "\0" in spec:
        raise RandEnsembleError(f"bad data spec {spec!r}: expected [KIND:]PATH[:SPLIT][?OPTIONS]")
    rest, options = _split_options(spec)
    kind, colon, tail = rest.partition(":")
    if colon and kind in KINDS:
        rest = tail
    else:
        kind = None
    if not rest:
        raise RandEnsembleError(f"bad data spec {spec!r}: no path")
    rest = os.path.expanduser(rest)
    split = None
    match = _SPLIT.match(rest)
    if match and not os.path.lexists(rest):
        rest, split = match.groups()
    kind = kind or detect_kind(rest, split, spec)
    _check_options(kind, options, spec)
    if split is not None and (kind == "npy" or kind == "images" and has_magic(rest)):
        raise RandEnsembleError(f"data spec {spec!r}: no split for {kind} "
                                f"{'files' if kind == 'npy' else 'globs; name it in the glob'}")
    return Source(kind, rest, split, options, spec)


def _split_options(spec: str) -> tuple[str, tuple]:
    """'PATH?a=1&b=2' -> ('PATH', (('a', '1'), ('b', '2'))); a '?' wildcard stays in PATH."""
    at = spec.rfind("?")
    if at < 0 or not _QUERY.match(spec[at + 1:]):
        return spec, ()
    pairs = [p.split("=", 1) for p in spec[at + 1:].split("&")]
    return spec[:at], tuple((k, urllib.parse.unquote(v)) for k, v in pairs)


def _check_options(kind: str, options: tuple, spec: str) -> None:
    """Every option is allowed for the kind and given once."""
    names = [k for k, _ in options]
    for name in names:
        if name not in OPTIONS[kind] and name not in COMMON_OPTIONS:
            allowed = ", ".join([*OPTIONS[kind], *COMMON_OPTIONS])
            raise RandEnsembleError(f"data spec {spec!r}: unknown option {name!r} for {kind} "
                                    f"(allowed: {allowed})")
        if names.count(name) > 1:
            raise RandEnsembleError(f"data spec {spec!r}: option {name!r} given twice")
    limit = dict(options).get("limit")
    if limit is not None and not _positive(limit):
        raise RandEnsembleError(f"data spec {spec!r}: limit must be a positive integer, got "
                                f"{limit!r}")


def _positive(text: str) -> bool:
    """Whether `text` is an integer >= 1 by the one integer rule (`integers.parse_int`)."""
    try:
        return parse_int(text) >= 1
    except ValueError:
        return False


def has_magic(path: str) -> bool:
    """Whether `path` has glob wildcards."""
    return glob.has_magic(path)


def detect_kind(path: str, split: str | None, spec: str) -> str:
    """The kind a path looks like (module docstring); an unknown one is an error."""
    if has_magic(path) and not os.path.lexists(path):
        return "images"
    if os.path.isdir(path):
        return _folder_kind(path, split)
    if os.path.lexists(path):
        name = os.path.basename(path).lower()
        for ext, kind in ((".npy", "npy"), (".npz", "npz"), (".parquet", "parquet")):
            if name.endswith(ext):
                return kind
        if IDX_NAME.match(name):
            return "idx"
        if name.endswith(IMAGE_EXTENSIONS):
            return "images"
        raise RandEnsembleError(f"data spec {spec!r}: cannot tell what {path} holds; write "
                                f"KIND:PATH with KIND one of {', '.join(KINDS)}")
    raise RandEnsembleError(f"data not found: {path}")


def _folder_kind(path: str, split: str | None) -> str:
    """renders / idx / parquet / folder for a folder (and its SPLIT subfolder)."""
    base = glob.escape(path)
    sub = os.path.join(base, glob.escape(split)) if split else base
    if glob.glob(os.path.join(sub, "renders-*.parquet")):
        return "renders"
    try:
        names = os.listdir(path)
    except OSError as e:
        raise RandEnsembleError(f"cannot list data folder {path}: {e.strerror}") from None
    if any(IDX_NAME.match(n.lower()) for n in names):
        return "idx"
    if glob.glob(os.path.join(base, "*.parquet")) or glob.glob(os.path.join(base, "*",
                                                                              "*.parquet")):
        return "parquet"
    return "folder"
