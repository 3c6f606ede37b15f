"""Argument checks that run before Beam is imported, so bad input fails fast with one line."""
import contextlib
import logging
import os

from rand_ensemble.data.parquet import render_shards
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.integers import parse_int


def parse_objects(text):
    """'START:STOP' -> range(START, STOP), with 0 <= START < STOP."""
    try:
        start, stop = (parse_int(part) for part in str(text).split(":"))
    except ValueError:
        raise RandEnsembleError(
            f"--objects must be START:STOP (e.g. 0:200), got {text!r}") from None
    if start < 0 or stop <= start:
        raise RandEnsembleError(f"--objects needs 0 <= START < STOP, got {text!r}")
    return range(start, stop)


def is_remote(path):
    """gs://, s3://, hdfs://... paths are checked by Beam's FileSystems, not here."""
    return "://" in str(path)


def check_renders_dir(renders):
    """A local renders folder must exist and hold renders-*.parquet (the one check,
    `data.parquet.render_shards`, which `--data renders:DIR` uses too)."""
    if not is_remote(renders):
        render_shards(renders)


def check_manifest(manifest):
    """A local manifest must be a readable file."""
    if not is_remote(manifest) and not os.path.isfile(manifest):
        raise RandEnsembleError(f"manifest not found: {manifest}")


@contextlib.contextmanager
def quiet_root_logger():
    """Swallow import-time root-logger warnings (Beam's 'apitools not found') without
    configuring logging for the rest of the run."""
    root = logging.getLogger()
    handler = None if root.handlers else logging.NullHandler()
    if handler:
        root.addHandler(handler)
    try:
        yield
    finally:
        if handler:
            root.removeHandler(handler)
