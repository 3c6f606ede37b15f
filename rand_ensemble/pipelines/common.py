"""Shared job plumbing: pipeline options, output folders, counting what a job wrote."""
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from rand_ensemble.errors import RandEnsembleError


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


def prepare_output(folder, prefixes, overwrite):
    """Refuse to mix with an earlier run's shards (or delete them when `overwrite`)."""
    stale = [p for prefix in prefixes for p in matching(join(folder, prefix + "*"))]
    if stale and not overwrite:
        raise RandEnsembleError(
            f"{folder} already holds {len(stale)} output file(s) such as {stale[0]}; "
            "choose an empty folder or pass --overwrite")
    if stale:
        FileSystems.delete(stale)
    if "://" not in folder and not FileSystems.exists(folder):
        FileSystems.mkdirs(folder)


def count_parquet_rows(pattern):
    """Total rows over Parquet files matching `pattern` (reads footers only)."""
    import pyarrow.parquet as pq
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


class Partitioned(beam.DoFn):
    """Base DoFn that sends a record that raises to the "failures" tagged output."""
    FAILURES = "failures"

    def failure(self, record, stage, error):
        from rand_ensemble.pipelines.schema import failure_line
        return beam.pvalue.TaggedOutput(self.FAILURES, failure_line(record, stage, error))
