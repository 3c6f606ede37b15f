"""Shared job plumbing, in forms every runner executes the same way.

Beam 2.77's DaskRunner computes only the last node of the graph, drops what `finish_bundle`
emits, gives every consumer every tagged output and cannot translate `Read`; Beam's file sinks
and `BatchElements` rely on those. So the jobs use only Create, ParDo (Map/FlatMap),
GroupByKey, CombinePerKey (= GroupByKey + ParDo there) and Flatten: a record is a
`(tag, value)` tuple split with `split`, files are read by DoFns from paths, every shard is
written by a DoFn after a GroupByKey under a deterministic name (temp + rename, so a retried
bundle rewrites the same bytes), and `finish` joins every writer into one last node.
"""
import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import uuid

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineState

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError, Terminated
from rand_ensemble.pipelines.schema import failure_line

OK, FAILURE = "ok", "failure"


def pipeline_options(beam_args):
    """PipelineOptions from pass-through argv; the DirectRunner unless --runner says otherwise."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
    return options


def join(folder, name):
    """Path join that works for local folders and gs:// / s3:// prefixes."""
    return FileSystems.join(folder, name)


def matching(pattern):
    """Paths matching a glob (local or remote), sorted."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def stable_hash(text):
    """A 63-bit hash of a string that is the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(str(text).encode(), digest_size=8).digest(), "big") >> 1


def shard_name(prefix, index, count, suffix):
    """Deterministic shard file name: prefix-00003-of-00010.suffix."""
    return f"{prefix}-{index:05d}-of-{count:05d}{suffix}"


def ok(value):
    """A record for the main output."""
    return (OK, value)


def failure(record, stage, error):
    """A dead-letter record: the input, where it failed, and the error, as one JSON line."""
    return (FAILURE, failure_line(record, stage, error))


def split(pcoll, label):
    """(tag, value) records -> (main values, failure lines), split explicitly (no with_outputs)."""
    main = pcoll | f"{label}Ok" >> beam.FlatMap(lambda r: [r[1]] if r[0] == OK else [])
    bad = pcoll | f"{label}Failed" >> beam.FlatMap(lambda r: [r[1]] if r[0] == FAILURE else [])
    return main, bad


def write_atomically(path, write):
    """Write a file through `write(fileobj)` under a temp name, then rename it onto `path`."""
    if "://" not in path:
        with fileio.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                write(f)
        return
    folder, base = path.rsplit("/", 1)
    tmp = f"{folder}/.{base}.{uuid.uuid4().hex}.tmp"
    with FileSystems.create(tmp) as f:
        write(f)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


class WriteFailureShard(beam.DoFn):
    """(shard, [json lines]) -> failures-SSSSS-of-NNNNN.jsonl, lines sorted; -> what was written."""

    def __init__(self, out, num_shards):
        self.out, self.num_shards = out, num_shards

    def process(self, keyed):
        shard, lines = keyed
        lines = sorted(lines)
        path = join(self.out, shard_name("failures", shard, self.num_shards, ".jsonl"))
        write_atomically(path, lambda f: f.write("".join(x + "\n" for x in lines).encode()))
        yield {"file": path, "rows": len(lines), "failures": len(lines)}


def write_failures(failures, out, num_shards):
    """Failure lines -> sharded, sorted JSONL files; returns the per-file records."""
    return (failures
            | "KeyFailures" >> beam.Map(lambda line: (stable_hash(line) % num_shards, line))
            | "GroupFailures" >> beam.GroupByKey()
            | "WriteFailures" >> beam.ParDo(WriteFailureShard(out, num_shards)))


def finish(pipeline, written):
    """Join every writer's output into one last node (the DaskRunner computes only that)."""
    return (tuple(written) | "AllWritten" >> beam.Flatten()
            | "KeyWritten" >> beam.Map(lambda w: (0, w))
            | "GroupWritten" >> beam.GroupByKey()
            | "Done" >> beam.FlatMap(lambda kv: []))


def check_path(path, what):
    """A path's scheme must be one Beam knows (gs:// needs apache-beam[gcp], and so on)."""
    try:
        FileSystems.get_filesystem(str(path))
    except ValueError as e:
        raise RandEnsembleError(f"{what} {path}: {' '.join(str(e).split())}") from None


def prepare_output(folder, prefixes, overwrite):
    """Check the output folder; refuse to mix with an earlier run (or delete it on `overwrite`)."""
    check_path(folder, "--out")
    if "://" not in folder and os.path.exists(folder) and not os.path.isdir(folder):
        raise RandEnsembleError(f"--out {folder} exists and is not a folder")
    stale = [p for prefix in prefixes for p in matching(join(folder, prefix + "*"))]
    if stale and not overwrite:
        raise RandEnsembleError(
            f"{folder} already holds {len(stale)} output file(s) such as {stale[0]}; "
            "choose an empty folder or pass --overwrite")
    if stale:
        FileSystems.delete(stale)
    if "://" not in folder and not FileSystems.exists(folder):
        FileSystems.mkdirs(folder)


def remove_temporaries(folder, prefixes):
    """Delete temp files a stopped job may leave (ours: .PREFIX*.tmp; Beam's beam-temp-*)."""
    patterns = [join(folder, f".{p}*") for p in prefixes] + [join(folder, "beam-temp-*")]
    with contextlib.suppress(Exception):
        leftovers = [p for pattern in patterns for p in matching(pattern)]
        if leftovers:
            FileSystems.delete(leftovers)


@contextlib.contextmanager
def sigint_noted():
    """Record Ctrl-C and SIGTERM while a job runs (runners re-wrap KeyboardInterrupt, e.g. as a
    RuntimeError) -> the list of signals seen."""
    noted = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def handler(signum, frame):
        noted.append(signum)
        logging.disable(logging.CRITICAL)       # the runner logs the interrupt as an error
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield noted
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if noted:
            logging.disable(logging.NOTSET)


def run_pipeline(pipeline, out, prefixes):
    """Run to completion; on Ctrl-C or SIGTERM cancel the job, remove temp files, raise
    KeyboardInterrupt (errors.Terminated for SIGTERM)."""
    result = state = None
    with sigint_noted() as interrupted:
        try:
            result = pipeline.run()
            state = result.wait_until_finish()
        except BaseException:
            if not interrupted:
                raise
            if result is not None:
                with contextlib.suppress(Exception):
                    result.cancel()
            remove_temporaries(out, prefixes)
            raise (Terminated() if signal.SIGTERM in interrupted else KeyboardInterrupt()) \
                from None
        finally:
            client = getattr(result, "client", None)      # the DaskRunner leaves its open
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
    if state not in (None, PipelineState.DONE):
        raise RandEnsembleError(f"the Beam job ended in state {state}")


def count_parquet_rows(pattern):
    """Total rows over Parquet files matching `pattern` (reads footers only)."""
    total = 0
    for path in matching(pattern):
        with FileSystems.open(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def count_lines(pattern):
    """Non-empty lines over the text files matching `pattern`."""
    total = 0
    for path in matching(pattern):
        with FileSystems.open(path) as f:
            total += sum(1 for line in f if line.strip())
    return total


def dumps(obj):
    """Canonical JSON text (sorted keys), for files whose bytes must not depend on the runner."""
    return json.dumps(obj, indent=2, sort_keys=True)
