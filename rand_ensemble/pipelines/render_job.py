"""Render job: (object, view) work items -> reshuffle -> pybullet render -> Parquet + dead letters.

Stages: CreateWorkItems (or ReadManifest + ParseManifest) -> Reshuffle -> Render (one pybullet
client per worker, in setup/teardown) -> WriteRenders `renders-*.parquet`; anything that fails
(an id with no URDF, a render that raises, a bad manifest line) goes to WriteFailures
`failures-*.jsonl` with its input and the error: never dropped, never fatal.
"""
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.pipelines import checks, common, schema
from rand_ensemble.pipelines.checks import parse_objects

RENDERS_PREFIX, FAILURES_PREFIX = "renders", "failures"


class ParseManifestLine(common.Partitioned):
    """One manifest line (an object id) -> `views` work items; a non-integer line is a failure."""

    def __init__(self, views, seed):
        self.views, self.seed = views, seed

    def process(self, line):
        text = line.strip()
        if not text or text.startswith("#"):
            return
        try:
            object_id = int(text)
        except ValueError as e:
            yield self.failure({"manifest_line": line, "seed": self.seed}, "manifest", e)
            return
        for view in range(self.views):
            yield {"object_id": object_id, "view": view, "seed": self.seed}


class RenderDoFn(common.Partitioned):
    """Work item {object_id, view, seed} -> one RENDERS row, or a failure record."""

    def __init__(self, hw, colour, timeout_s=30.0):
        self.hw, self.colour, self.timeout_s = hw, colour, timeout_s
        self.renderer = None

    def setup(self):
        from rand_ensemble.pipelines.render_process import RenderProcess
        self.renderer = RenderProcess(self.hw, self.colour, self.timeout_s)
        self.renderer.start()                             # one pybullet client per worker

    def process(self, item):
        try:
            image, camera = self.renderer.render_view(item["object_id"], item["view"], item["seed"])
            yield schema.render_row(item["object_id"], item["view"], item["seed"], image, camera)
        except Exception as e:                            # dead letter, whatever went wrong
            yield self.failure(item, "render", e)

    def teardown(self):
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


def build(pipeline, out, views, seed, hw=32, colour="object", objects=None, manifest=None,
          timeout_s=30.0):
    """Add the render stages to `pipeline`; returns the (renders, failures) PCollections."""
    if manifest is not None:
        parsed = (pipeline
                  | "ReadManifest" >> beam.io.ReadFromText(manifest)
                  | "ParseManifest" >> beam.ParDo(ParseManifestLine(views, seed)).with_outputs(
                      common.Partitioned.FAILURES, main="items"))
        items, early_failures = parsed.items, parsed.failures
    else:
        work = [{"object_id": o, "view": v, "seed": seed} for o in objects for v in range(views)]
        items = pipeline | "CreateWorkItems" >> beam.Create(work)
        early_failures = pipeline | "NoManifestFailures" >> beam.Create([])
    rendered = (items
                | "Reshuffle" >> beam.Reshuffle()
                | "Render" >> beam.ParDo(RenderDoFn(hw, colour, timeout_s)).with_outputs(
                    common.Partitioned.FAILURES, main="renders"))
    rendered.renders | "WriteRenders" >> beam.io.WriteToParquet(
        common.join(out, RENDERS_PREFIX), schema.RENDERS, file_name_suffix=".parquet")
    failures = (early_failures, rendered.failures) | "AllFailures" >> beam.Flatten()
    failures | "WriteFailures" >> beam.io.WriteToText(
        common.join(out, FAILURES_PREFIX), file_name_suffix=".jsonl")
    return rendered.renders, failures


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
        checks.check_manifest(manifest)
        if checks.is_remote(manifest) and not FileSystems.exists(manifest):
            raise RandEnsembleError(f"manifest not found: {manifest}")
    common.prepare_output(out, (RENDERS_PREFIX, FAILURES_PREFIX), overwrite)
    options = common.pipeline_options(beam_args)
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, out, int(views), int(seed), int(hw), colour, objects, manifest,
              float(timeout_s))
    return {"renders": common.count_parquet_rows(common.join(out, RENDERS_PREFIX + "-*.parquet")),
            "failures": common.count_lines(common.join(out, FAILURES_PREFIX + "-*")),
            "out": out}
