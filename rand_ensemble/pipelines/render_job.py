"""Render job: (object, view) work items -> reshuffle -> pybullet render -> Parquet + dead letters.

Stages: CreateObjects (ids from --objects, or from the manifest read and checked at launch:
a bad, undecodable or repeated line becomes a failure record there) -> Views -> Reshuffle ->
Render (one pybullet child process per worker, in setup/teardown) -> KeyRenders -> GroupRenders
-> WriteRenders `renders-SSSSS-of-NNNNN.parquet` (rows sorted by image_id); every failure goes
to `failures-SSSSS-of-NNNNN.jsonl` with its input and the error: never dropped, never fatal,
renders + failures = inputs. Only forms that every runner (Direct, portable, Dask) executes
the same way are used; see common.py.
"""
import math

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.integers import parse_int
from rand_ensemble.pipelines import checks, common, schema
from rand_ensemble.pipelines.checks import parse_objects
from rand_ensemble.pipelines.render_process import RenderProcess

RENDERS_PREFIX, FAILURES_PREFIX = "renders", "failures"
ROWS_PER_SHARD = 1000
FAILURES_PER_SHARD = 100000


def read_manifest(manifest, views, seed):
    """Manifest -> (unique object ids in file order, failure lines); one line = one input.

    Lines are decoded one by one, so one non-UTF-8 line is one failure, not a dead job; a
    repeated id is a failure naming the line that is kept (the first).
    """
    with FileSystems.open(manifest) as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):            # a byte-order mark (Notepad's UTF-8)
        data = data[3:]
    ids, first_line, failures = [], {}, []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        record = {"manifest_line": raw.decode("utf-8", "backslashreplace"), "line": number,
                  "seed": seed}
        try:
            text = raw.decode("utf-8").strip()
            if not text or text.startswith("#"):
                continue
            object_id = parse_int(text)
            if object_id < 0:
                raise RandEnsembleError(f"object id must be >= 0, got {object_id}")
            if object_id in first_line:
                raise RandEnsembleError(f"duplicate object id {object_id}: the first copy "
                                        f"(line {first_line[object_id]}) is rendered")
        except (UnicodeDecodeError, ValueError, RandEnsembleError) as e:
            failures.append(common.failure(record, "manifest", e)[1])
            continue
        first_line[object_id] = number
        ids.append(object_id)
    return ids, failures


class RenderDoFn(beam.DoFn):
    """Work item {object_id, view, seed} -> ("ok", RENDERS row) or ("failure", line)."""

    def __init__(self, hw, colour, timeout_s=30.0):
        self.hw, self.colour, self.timeout_s = hw, colour, timeout_s
        self.renderer = None

    def setup(self):
        # On the worker: the render process (pybullet) starts where the DoFn runs.
        self.renderer = RenderProcess(self.hw, self.colour, self.timeout_s)
        self.renderer.start()                             # one pybullet client per worker

    def process(self, item):
        try:
            image, camera = self.renderer.render_view(item["object_id"], item["view"], item["seed"])
            yield common.ok(schema.render_row(item["object_id"], item["view"], item["seed"],
                                              image, camera))
        except Exception as e:                            # dead letter, whatever went wrong
            yield common.failure(item, "render", e)

    def teardown(self):
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


class WriteRenderShard(beam.DoFn):
    """(shard, [RENDERS rows]) -> renders-SSSSS-of-NNNNN.parquet sorted by image_id."""

    def __init__(self, out, num_shards):
        self.out, self.num_shards = out, num_shards

    def process(self, keyed):
        import pyarrow as pa  # on the worker (DoFns are pickled)
        import pyarrow.parquet as pq
        shard, rows = keyed
        rows = sorted(rows, key=lambda r: r["image_id"])
        table = pa.Table.from_pylist(rows, schema=schema.RENDERS)
        path = common.join(self.out, common.shard_name(RENDERS_PREFIX, shard, self.num_shards,
                                                       ".parquet"))
        common.write_atomically(path, lambda f: pq.write_table(table, f))
        yield {"file": path, "rows": len(rows)}


def build(pipeline, out, views, seed, object_ids, early_failures=(), hw=32, colour="object",
          timeout_s=30.0):
    """Add the render stages to `pipeline` (the last one joins every writer)."""
    num_shards = max(1, math.ceil(len(object_ids) * views / ROWS_PER_SHARD))
    items = (pipeline
             | "CreateObjects" >> beam.Create(list(object_ids))
             | "Views" >> beam.FlatMap(
                 lambda o: [{"object_id": o, "view": v, "seed": seed} for v in range(views)])
             | "Reshuffle" >> beam.Reshuffle()
             | "Render" >> beam.ParDo(RenderDoFn(hw, colour, timeout_s)))
    renders, failures = common.split(items, "Render")
    written = (renders
               | "KeyRenders" >> beam.Map(
                   lambda r: ((r["object_id"] * views + r["view"]) % num_shards, r))
               | "GroupRenders" >> beam.GroupByKey()
               | "WriteRenders" >> beam.ParDo(WriteRenderShard(out, num_shards)))
    if early_failures:
        early = pipeline | "ManifestFailures" >> beam.Create(list(early_failures))
        failures = (failures, early) | "AllFailures" >> beam.Flatten()
    failure_shards = max(1, math.ceil(len(object_ids) * views / FAILURES_PER_SHARD))
    failed = common.write_failures(failures, out, failure_shards)
    return common.finish(pipeline, [written, failed])


def run(out, views, seed, objects=None, manifest=None, hw=32, colour="object", beam_args=(),
        overwrite=False, timeout_s=30.0):
    """Run the render job to completion -> {"renders": N, "failures": F, "out": out}."""
    if (objects is None) == (manifest is None):
        raise RandEnsembleError("give exactly one of --objects START:STOP or --manifest FILE")
    if isinstance(objects, str):
        objects = parse_objects(objects)
    if int(views) < 1:
        raise RandEnsembleError(f"--views must be >= 1, got {views}")
    if int(seed) < 0:
        raise RandEnsembleError(f"--seed must be >= 0, got {seed}")
    if not float(timeout_s) > 0:
        raise RandEnsembleError(f"--render-timeout must be > 0 seconds, got {timeout_s}")
    if int(hw) < 8:
        raise RandEnsembleError(f"--hw must be >= 8, got {hw}")
    if manifest is not None:
        common.check_path(manifest, "--manifest")
        checks.check_manifest(manifest)
        if checks.is_remote(manifest) and not FileSystems.exists(manifest):
            raise RandEnsembleError(f"manifest not found: {manifest}")
    object_ids, early_failures = (list(objects), []) if manifest is None else \
        read_manifest(manifest, int(views), int(seed))
    if not object_ids and not early_failures:
        raise RandEnsembleError(f"manifest {manifest} names no object ids (only blank or # "
                                "comment lines)")
    common.prepare_output(out, (RENDERS_PREFIX, FAILURES_PREFIX), overwrite)
    pipeline = beam.Pipeline(options=common.pipeline_options(beam_args))
    build(pipeline, out, int(views), int(seed), object_ids, early_failures, int(hw), colour,
          float(timeout_s))
    common.run_pipeline(pipeline, out, (RENDERS_PREFIX, FAILURES_PREFIX))
    return {"renders": common.count_parquet_rows(common.join(out, RENDERS_PREFIX + "-*.parquet")),
            "failures": common.count_lines(common.join(out, FAILURES_PREFIX + "-*")),
            "out": out}
