"""Weak-label job: renders Parquet -> embed with the M-ensemble in batches -> top-k -> pairs.

Stages: ReadRenders -> DecodeImages (bad rows -> failures) -> Batch (BatchElements) -> Embed
(params and the jitted forward built once per worker in setup) -> GatherEmbeddings (all rows
to one place, sorted by image_id) -> WeakLabel (`weak_labels.weak_label_pairs` + `summarize`)
-> WritePairs `pairs-*.parquet`, WriteSummary `summary.json`, WriteFailures `failures-*.jsonl`.
The gather is single-node: memory O(N * M * E) for the embeddings plus O(N * k) for the pairs.
"""
import json

import apache_beam as beam
import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.pipelines import checks, common, schema

PAIRS_PREFIX, FAILURES_PREFIX, SUMMARY_NAME = "pairs", "failures", "summary.json"
DEFAULT_BATCH = 64


class DecodeImage(common.Partitioned):
    """RENDERS row -> (image_id, object_id, uint8 (hw, hw, 3)); wrong size or bytes -> failure."""

    def __init__(self, hw):
        self.hw = hw

    def process(self, row):
        keys = ("image_id", "object_id", "view", "seed", "height", "width")
        record = {k: row.get(k) for k in keys}
        try:
            h, w, data = row["height"], row["width"], row["image"]
            if (h, w) != (self.hw, self.hw):
                raise RandEnsembleError(f"image is {h}x{w}, the embedder needs {self.hw}x{self.hw}")
            if data is None or len(data) != h * w * 3:
                raise RandEnsembleError(
                    f"image has {0 if data is None else len(data)} bytes, expected {h * w * 3}")
            if row["image_id"] is None or row["object_id"] is None:
                raise RandEnsembleError("image_id and object_id must be present")
            image = np.frombuffer(data, np.uint8).reshape(h, w, 3)
            yield row["image_id"], int(row["object_id"]), image
        except Exception as e:
            yield self.failure(record, "decode", e)


class EmbedBatch(beam.DoFn):
    """[(image_id, object_id, image)] -> (image_id, object_id, float32 (M*E,)) each.

    One `ensemble.embed` call per batch: embed pads a batch to `batch_size`, so one compiled
    shape serves every batch and the numbers do not depend on how the runner cut the batches.
    """

    def __init__(self, seed, num_models, batch_size=DEFAULT_BATCH):
        self.seed, self.num_models, self.batch_size = seed, num_models, batch_size

    def setup(self):
        import jax
        from rand_ensemble import ensemble
        self._embed = ensemble.embed
        self.params = ensemble.init_ensemble(jax.random.PRNGKey(self.seed), self.num_models)

    def process(self, batch):
        images = np.stack([image for _, _, image in batch])          # (B, H, W, 3) uint8
        emb = self._embed(self.params, images, batch_size=self.batch_size)   # (M, B, E)
        rows = emb.transpose(1, 0, 2).reshape(len(batch), -1)        # (B, M*E)
        for (image_id, object_id, _), row in zip(batch, rows):
            yield image_id, object_id, row


class WeakLabel(beam.DoFn):
    """All (image_id, object_id, row) -> pair rows, plus the summary JSON as a tagged output."""
    SUMMARY = "summary"

    def __init__(self, num_models, seed, top_k, mutual, min_score):
        self.num_models, self.seed = num_models, seed
        self.top_k, self.mutual, self.min_score = top_k, mutual, min_score

    def process(self, gathered, num_failures):
        from rand_ensemble import weak_labels
        gathered = sorted(gathered, key=lambda r: r[0])              # worker-count independent
        n = len(gathered)
        summary = {"num_images": n, "num_pairs": 0, "num_failures": int(num_failures),
                   "num_models": self.num_models, "seed": self.seed, "top_k": self.top_k,
                   "precision": None, "per_model_precision": None}
        k = min(self.top_k, n - 1)
        if k >= 1:
            ids = np.array([r[0] for r in gathered])
            objects = np.array([r[1] for r in gathered])
            flat = np.stack([r[2] for r in gathered])                # (N, M*E)
            emb = flat.reshape(n, self.num_models, -1).transpose(1, 0, 2)   # (M, N, E)
            pairs = weak_labels.weak_label_pairs(emb, ids, k, self.mutual, self.min_score)
            summary.update(weak_labels.summarize(emb, objects, k, self.mutual, self.min_score))
            summary["seed"] = self.seed
            for a, b, s, r in zip(pairs["image_id_a"], pairs["image_id_b"],
                                  pairs["score"].tolist(), pairs["rank"].tolist()):
                yield {"image_id_a": a, "image_id_b": b, "score": s, "rank": r}
        yield beam.pvalue.TaggedOutput(self.SUMMARY, json.dumps(summary, indent=2, sort_keys=True))


def build(pipeline, renders, out, num_models, seed, top_k=1, mutual=False, min_score=None,
          batch_size=DEFAULT_BATCH):
    """Add the weak-label stages to `pipeline`; returns the pairs PCollection."""
    from rand_ensemble.ensemble import DEFAULT_CONFIG
    decoded = (pipeline
               | "ReadRenders" >> beam.io.ReadFromParquet(
                   common.join(renders, "renders-*.parquet"), columns=schema.RENDER_INPUT_COLUMNS)
               | "DecodeImages" >> beam.ParDo(DecodeImage(DEFAULT_CONFIG.input_hw)).with_outputs(
                   common.Partitioned.FAILURES, main="images"))
    num_failures = decoded.failures | "CountFailures" >> beam.combiners.Count.Globally()
    labelled = (decoded.images
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
                | "Embed" >> beam.ParDo(EmbedBatch(seed, num_models, batch_size))
                | "GatherEmbeddings" >> beam.combiners.ToList()
                | "WeakLabel" >> beam.ParDo(
                    WeakLabel(num_models, seed, top_k, mutual, min_score),
                    beam.pvalue.AsSingleton(num_failures)).with_outputs(
                        WeakLabel.SUMMARY, main="pairs"))
    labelled.pairs | "WritePairs" >> beam.io.WriteToParquet(
        common.join(out, PAIRS_PREFIX), schema.PAIRS, file_name_suffix=".parquet")
    labelled.summary | "WriteSummary" >> beam.io.WriteToText(
        common.join(out, SUMMARY_NAME), num_shards=1, shard_name_template="")
    decoded.failures | "WriteFailures" >> beam.io.WriteToText(
        common.join(out, FAILURES_PREFIX), file_name_suffix=".jsonl")
    return labelled.pairs


def run(renders, out, num_models, seed, top_k=1, mutual=False, min_score=None,
        batch_size=DEFAULT_BATCH, beam_args=(), overwrite=False):
    """Run the weak-label job to completion -> the summary dict (also in out/summary.json)."""
    if int(num_models) < 1:
        raise RandEnsembleError(f"--models must be >= 1, got {num_models}")
    if int(top_k) < 1 or int(batch_size) < 1 or int(seed) < 0:
        raise RandEnsembleError("--top-k and --batch-size must be >= 1, --seed >= 0")
    checks.check_renders_dir(renders)
    if not common.matching(common.join(renders, "renders-*.parquet")):
        raise RandEnsembleError(f"no renders-*.parquet files in {renders}")
    common.prepare_output(out, (PAIRS_PREFIX, FAILURES_PREFIX, SUMMARY_NAME), overwrite)
    with beam.Pipeline(options=common.pipeline_options(beam_args)) as pipeline:
        build(pipeline, renders, out, int(num_models), int(seed), int(top_k), bool(mutual),
              None if min_score is None else float(min_score), int(batch_size))
    with common.FileSystems.open(common.join(out, SUMMARY_NAME)) as f:
        return json.loads(f.read())
