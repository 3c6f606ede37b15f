"""Weak-label job: images -> embed with the M-ensemble per block -> tiled exact top-k -> pairs.

Stages: Files -> ReadParquet / ReadImages (unreadable files and rows -> failures) -> KeyBlocks
(image_id hashed into ceil(N / --block-size) blocks; a labels CSV joins here) -> GroupBlocks
-> EmbedBlock (duplicate ids -> failures; params and the jitted forward built once per worker
in setup) -> FanOut -> GroupTiles -> TileTopK -> MergeBlocks (CombinePerKey) -> FinishBlocks
-> GroupPairs -> MarkMutual -> GroupPairShards -> WritePairs `pairs-SSSSS-of-NNNNN.parquet`;
WriteSummary `summary.json`; WriteFailures `failures-SSSSS-of-NNNNN.jsonl`. The search is
neighbours.py; only forms that every runner executes the same way are used (common.py).
`--index approx` swaps FanOut .. MergeBlocks for the IVF lists of approx_search.py.
"""
import json
import math

import apache_beam as beam
import jax
import numpy as np

from rand_ensemble import paths
from rand_ensemble.data import decode, parquet
from rand_ensemble.data import sources as data_sources
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import baselines
from rand_ensemble.model import checkpoint as checkpoints
from rand_ensemble.model import devices, ensemble
from rand_ensemble.model.config import DEFAULT_CONFIG, EmbedderConfig
from rand_ensemble.pipelines import approx_search, checks, common, neighbours, schema, sources

PAIRS_PREFIX, FAILURES_PREFIX, SUMMARY_NAME = "pairs", "failures", "summary.json"
DEFAULT_BATCH = 64
DEFAULT_BLOCK = 4096
SUMMED = ("images", "labelled", "correct", "pairs", "failures", "mutual_kept",
          "mutual_labelled", "mutual_correct", "min_kept", "min_labelled", "min_correct")


class WritePairShard(beam.DoFn):
    """(block, edges) -> pairs-SSSSS-of-NNNNN.parquet (filtered, sorted) + a summary partial."""

    def __init__(self, out, num_blocks, mutual, min_score):
        self.out, self.num_blocks, self.mutual, self.min_score = out, num_blocks, mutual, min_score

    def process(self, keyed):
        import pyarrow as pa  # on the worker (DoFns are pickled)
        import pyarrow.parquet as pq
        block, edges = keyed
        threshold = None if self.min_score is None else np.float32(self.min_score)
        stats = dict.fromkeys(SUMMED[3:], 0)
        rows = []
        for _, a, b, score, rank, label_a, label_b, mutual in sorted(edges, key=lambda e: e[1:5]):
            above = threshold is None or np.float32(score) >= threshold
            if (mutual or not self.mutual) and above:
                rows.append({"image_id_a": a, "image_id_b": b, "score": score, "rank": rank})
            if rank == 1:
                labelled, correct = neighbours.agree(label_a, label_b)
                for name, kept in (("mutual", mutual), ("min", threshold is not None and above)):
                    stats[f"{name}_kept"] += kept
                    stats[f"{name}_labelled"] += kept and labelled
                    stats[f"{name}_correct"] += kept and correct
        stats["pairs"] = len(rows)
        table = pa.Table.from_pylist(rows, schema=schema.PAIRS)
        path = common.join(self.out, common.shard_name(PAIRS_PREFIX, block, self.num_blocks,
                                                       ".parquet"))
        common.write_atomically(path, lambda f: pq.write_table(table, f))
        yield stats


def sum_partials(partials, num_models):
    """Summary partials -> totals (member lists added elementwise)."""
    total = dict.fromkeys(SUMMED, 0)
    total["members_labelled"], total["members_correct"] = [0] * num_models, [0] * num_models
    for p in partials:
        for name, value in p.items():
            if name in SUMMED:
                total[name] += int(value)
            elif name == "recall":
                total[name] = value
            elif name.startswith("members_"):
                total[name] = [x + y for x, y in zip(total[name], value)]
    return total


def ratio(num, den):
    return num / den if den else None


def summary_of(t, num_models, seed, top_k, mutual, min_score, block_size, checkpoint=None,
               index="exact", index_params=None, embedder=None, pixels=None, num_devices=1,
               num_processes=1, signal=None, mirror=False):
    """Totals -> the summary.json dict (the fields of weak_labels.summarize, plus the job's;
    `embedder`: the members' config dict; `pixels`: the pixel baseline mined with, if any;
    the devices and processes of the launching run, `devices.describe`; `signal`: a
    checkpoint's signal member {kind, weight}, if it keeps one; `mirror`: its rows are
    mirror-averaged, recorded only when true)."""
    n = t["images"]
    summary = {"num_images": n, "num_pairs": t["pairs"], "num_failures": t["failures"],
               "num_models": num_models, "seed": seed, "top_k": top_k, "precision": None,
               "per_model_precision": None, "block_size": block_size, "checkpoint": checkpoint,
               "embedder": embedder, "num_devices": num_devices,
               "num_processes": num_processes}
    if pixels is not None:                  # the members' jobs keep their summary's bytes
        summary["pixels"] = pixels
    if signal is not None:
        summary["signal"] = signal
    if mirror:
        summary["mirror"] = True
    if index != "exact":                    # the exact job's summary keeps its fields
        summary.update(index=index, index_params=index_params, recall=t.get("recall"))
    if n < 2:
        return summary
    members = [ratio(c, d) for c, d in zip(t["members_correct"], t["members_labelled"])]
    members = None if None in members else members

    def filtered(name):
        return {"coverage": t[f"{name}_kept"] / n, "num_images": t[f"{name}_kept"],
                "precision": ratio(t[f"{name}_correct"], t[f"{name}_labelled"])}

    summary.update({
        "top_k": min(top_k, n - 1), "precision": ratio(t["correct"], t["labelled"]),
        "per_model_precision": members,
        "mean_member_precision": None if members is None else float(np.mean(members)),
        "best_member_precision": None if members is None else float(np.max(members)),
        "mutual": filtered("mutual"),
        "min_score": None if min_score is None else
        dict(filtered("min"), threshold=float(min_score)),
        "filters": {"mutual": bool(mutual), "min_score": min_score}})
    return summary


class WriteSummary(beam.DoFn):
    """(0, partials) -> summary.json."""

    def __init__(self, out, settings):
        self.out, self.settings = out, settings

    def process(self, keyed):
        summary = summary_of(sum_partials(keyed[1], self.settings["num_models"]), **self.settings)
        path = common.join(self.out, SUMMARY_NAME)
        common.write_atomically(path, lambda f: f.write(common.dumps(summary).encode()))
        yield {"file": path, "rows": 1}


def check_render_sizes(renders, input_hw):
    """Every image size in a local render folder must fit the params by the size rule
    (`decode.check_fits`, as in every other command): a 64x64 net is refused for 32x32
    renders before the job starts."""
    table = parquet.read_columns(parquet.render_shards(renders), ["height", "width"])
    sizes = {(h, w) for h, w in zip(table["height"], table["width"]) if h is not None and w}
    for h, w in sorted(sizes):          # rows without a size become failure rows in the job
        decode.check_fits(h, w, input_hw, f"the images in {renders}")


def exact_parts(blocks, num_blocks, top_k, num_models, evaluate, member_dim=None):
    """The exact tiles (neighbours.py): embedded blocks -> (block, merged top-k lists)."""
    parts = (blocks
             | "FanOut" >> beam.FlatMap(neighbours.fan_out, num_blocks)
             | "GroupTiles" >> beam.GroupByKey()
             | "TileTopK" >> beam.ParDo(neighbours.TileTopK(num_blocks, top_k, num_models,
                                                            evaluate, member_dim)))
    markers = blocks | "BlockIds" >> beam.Map(lambda b: (b[0], ("block", b[1], b[2])))
    return ((parts, markers) | "AllParts" >> beam.Flatten()
            | "MergeBlocks" >> beam.CombinePerKey(neighbours.MergeBlock(top_k)))


def build(pipeline, out, num_models, seed, num_blocks, renders=None, images=None, labels=None,
          top_k=1, mutual=False, min_score=None, batch_size=DEFAULT_BATCH,
          block_size=DEFAULT_BLOCK, evaluate=True, model=None, checkpoint=None, dataset=None,
          index="exact", index_params=None, recall_sample=0, embedder=None, pixels=None,
          table=None):
    """Add the weak-label stages to `pipeline` (the last one joins every writer).

    model: None for M random members from PRNGKey(seed) of the architecture `embedder` (an
    `EmbedderConfig.to_dict()`; None: the blog net), else a trained model
    (`model.checkpoint.Model`: params (M, ...), config, signal member, mirror flag) read from
    the params file `checkpoint` (`rand-ensemble train`). dataset: a loaded
    `data.dataset.Dataset` instead of renders / images. index: "exact" (tiles) or "approx"
    (IVF lists, `approx_search.py`, with index_params and `recall_sample` queries).
    pixels: a fitted `evaluate.baselines.fit_baseline` embeds instead of members (num_models
    1; `embedder` then only fits the images: input_hw, in_channels). table: the dataset's
    rows embedded beforehand by the processes of a run (`neighbours.shared_rows`).
    """
    config = members_config(model, embedder)
    records = sources.images_pcoll(pipeline, renders, images, labels, config["input_hw"],
                                   dataset)
    inputs, read_failures = common.split(records, "Read")
    embedded = (inputs
                | "KeyBlocks" >> beam.Map(lambda r: (common.stable_hash(r[1]) % num_blocks, r))
                | "GroupBlocks" >> beam.GroupByKey()
                | "EmbedBlocks" >> beam.ParDo(neighbours.EmbedBlock(
                    seed, num_models, batch_size, config,
                    params=None if model is None else model.params, pixels=pixels, table=table,
                    signal=None if model is None else model.signal,
                    mirror=model is not None and model.mirror)))
    blocks, embed_failures = common.split(embedded, "Embed")
    recall = None
    if index == "approx":
        parts, recall = approx_search.search(pipeline, blocks, num_blocks, top_k, index_params,
                                             seed, recall_sample)
    else:
        parts = exact_parts(blocks, num_blocks, top_k, num_models, evaluate,
                            None if pixels is not None else config["embedding_dim"])
    signal = None if model is None else model.signal
    block_stats, pair_stats = write_pairs(parts, out, num_blocks, num_models, mutual, min_score,
                                          None if signal is None else 1)
    failures = (read_failures, embed_failures) | "AllFailures" >> beam.Flatten()
    failed = common.write_failures(failures, out, max(1, num_blocks // 16))
    settings = {"num_models": num_models, "seed": None if model else seed, "top_k": top_k,
                "mutual": mutual, "min_score": min_score, "block_size": block_size,
                "checkpoint": checkpoint, "index": index,
                "index_params": index_params, "embedder": config, **devices.describe()}
    if pixels is not None:
        settings.update(seed=None, pixels=pixels["kind"])
    if signal is not None:
        settings["signal"] = {"kind": signal["kind"], "weight": signal["weight"]}
    if model is not None and model.mirror:
        settings["mirror"] = True
    stats = [block_stats, pair_stats, failed] + ([recall] if recall is not None else [])
    summary = write_summary(pipeline, stats, out, settings)
    return common.finish(pipeline, [pair_stats, failed, summary])


def write_pairs(parts, out, num_blocks, num_models, mutual, min_score, divisor=None):
    """(block, merged top-k lists) -> the pair shards written: -> (the blocks' summary
    partials, the shards' summary partials); scores are similarities / `divisor` (default M)."""
    finished = parts | "FinishBlocks" >> beam.FlatMap(neighbours.finish_block, num_models,
                                                      divisor)
    block_stats = finished | "BlockStats" >> beam.FlatMap(
        lambda r: [r[1]] if r[0] == "summary" else [])
    pair_stats = (finished
                  | "Edges" >> beam.FlatMap(lambda r: [r[1:]] if r[0] == "edge" else [])
                  | "GroupPairs" >> beam.GroupByKey()
                  | "MarkMutual" >> beam.FlatMap(neighbours.mark_mutual)
                  | "GroupPairShards" >> beam.GroupByKey()
                  | "WritePairs" >> beam.ParDo(WritePairShard(out, num_blocks, mutual, min_score)))
    return block_stats, pair_stats


def write_summary(pipeline, stats, out, settings):
    """Every summary partial (and one empty, so an empty job still writes one) ->
    summary.json: -> the written file's row."""
    return ((pipeline | "SummarySeed" >> beam.Create([{}]), *stats)
            | "AllStats" >> beam.Flatten()
            | "KeyStats" >> beam.Map(lambda p: (0, p))
            | "GroupStats" >> beam.GroupByKey()
            | "WriteSummary" >> beam.ParDo(WriteSummary(out, settings)))


def _shared_table(dataset, pixels, model, num_models, seed, embedder, batch_size):
    """The processes of a run embed the --data pool together (`neighbours.shared_rows`)."""
    if dataset is None or pixels is not None:
        raise RandEnsembleError("weak-labels over several processes needs --data SPEC (e.g. "
                                "renders:DIR) and --models or --checkpoint: the processes "
                                "embed the pool together, then process 0 mines it")
    if model is None:
        config = EmbedderConfig.from_dict(members_config(None, embedder))
        params = ensemble.init_ensemble(jax.random.PRNGKey(seed), num_models, config)
        model = checkpoints.Model(params, config)
    return neighbours.shared_rows(dataset, model, batch_size)


def members_config(model, embedder=None):
    """The members' config dict (the job's records are fitted to its input_hw): the trained
    model's (`Model` or None), or the random members' (`embedder`; None: the blog net)."""
    if model is not None:
        return model.config.to_dict()
    return EmbedderConfig.from_dict(embedder).to_dict() if embedder else DEFAULT_CONFIG.to_dict()


def check_arguments(out, renders, images, data, labels, num_models, top_k, batch_size, seed,
                    block_size):
    """The job's arguments, before anything runs: one source, counts >= 1, inputs that exist
    (local render folders by the one render-folder check, remote ones by listing)."""
    if out is None:
        raise RandEnsembleError("--out is required")
    if sum(x is not None for x in (renders, images, data)) != 1:
        raise RandEnsembleError("give exactly one of --data SPEC, --renders DIR or --images GLOB")
    if data is not None and labels is not None:
        raise RandEnsembleError("--labels goes with --renders or --images; with --data name "
                                "the CSV in the spec (?labels=CSV)")
    if int(num_models) < 1:
        raise RandEnsembleError(f"--models must be >= 1, got {num_models}")
    if int(top_k) < 1 or int(batch_size) < 1 or int(seed) < 0 or int(block_size) < 1:
        raise RandEnsembleError("--top-k, --batch-size and --block-size must be >= 1, --seed >= 0")
    for path, what in ((renders, "--renders"), (images, "--images"), (labels, "--labels")):
        if path is not None:
            common.check_path(path, what)
    if renders is not None:
        checks.check_renders_dir(renders)
        if checks.is_remote(renders) and not common.matching(
                common.join(renders, "renders-*.parquet")):
            raise RandEnsembleError(f"no renders-*.parquet files in {renders}")
    elif images is not None and not (common.matching(images) if images.endswith(".parquet")
                                     else sources.glob_images(images)):
        raise RandEnsembleError(f"no files match --images {images}")
    if labels is not None and not common.FileSystems.exists(labels):
        raise RandEnsembleError(f"labels file not found: {labels}")


def check_members(checkpoint, embedder, pixels, data):
    """What embeds: a checkpoint, random members (architecture flags) or a pixel baseline,
    never two of them; the fitted baselines need the whole pool as --data."""
    if checkpoint is not None and embedder is not None:
        raise RandEnsembleError("architecture flags go with --models; the checkpoint's file "
                                "decides the architecture")
    if pixels is not None and (checkpoint is not None or
                               pixels not in baselines.PIXEL_BASELINES):
        raise RandEnsembleError(f"--pixels is one of {baselines.PIXEL_BASELINES}, and goes "
                                "without --checkpoint")
    if pixels not in (None, "raw") and data is None:
        raise RandEnsembleError(f"--pixels {pixels} fits its components on the whole pool "
                                "before the job starts: give the pool as --data SPEC (e.g. "
                                "renders:DIR or images:GLOB)")


def fit_pixels(pixels, embedder, hw, dataset, source):
    """The pixel baseline `pixels`, fitted (`baselines.fit_baseline`) on the --data pool's
    images at the architecture's channels: raw fits nothing, pca / hog fit the pool."""
    channels = EmbedderConfig.from_dict(members_config(None, embedder)).in_channels
    pool = np.zeros((0, hw, hw, 3), np.uint8) if dataset is None else dataset.images
    return baselines.fit_baseline(pixels, decode.convert_channels(pool, channels),
                                  None if source is None else source.spec)


def run(renders=None, out=None, num_models=10, seed=0, top_k=1, mutual=False, min_score=None,
        batch_size=DEFAULT_BATCH, beam_args=(), overwrite=False, images=None, labels=None,
        block_size=DEFAULT_BLOCK, checkpoint=None, data=None, index="exact", recall_sample=0,
        nprobe=None, embedder=None, pixels=None):
    """Run the weak-label job to completion -> the summary dict (also in out/summary.json).

    Args:
      renders: the render job's output folder, or None when `images` is given.
      out: output folder (local or gs://...): pairs-*.parquet, summary.json, failures-*.jsonl.
      num_models, seed: the ensemble (M members from PRNGKey(seed)).
      embedder: the random members' architecture, an `EmbedderConfig.to_dict()` (None: the
        blog net); built by each worker, which embeds at its input_hw and in_channels.
      checkpoint: a trained ensemble's .npz (`rand-ensemble train`) instead of random members;
        read here, so workers need no access to the file; a signal member it keeps embeds
        with the members (the model's rows).
      top_k, mutual, min_score: the neighbours kept as pairs.
      images: a recursive glob of PNG/JPEG files, or a .parquet of (image_id, image bytes).
      data: a local data spec parsed by the caller (a `data.spec.Source`), read here by
        `load_dataset` at the embedder's input and handed to the job as records (its labels,
        if any, give the precision); renders / images also read remote (gs://) paths.
      labels: optional CSV image_id,label, used only for the precision figures.
      block_size: rows per neighbour-search block (a worker holds two blocks and a tile).
      index: "exact" (the tiled search) or "approx" (IVF lists, needs faiss: the 'approx'
        extra); nprobe: lists a query searches (approx). recall_sample: with approx, this many
        queries are checked against the exact search (recall@1, @10 in the summary).
    Returns:
      the summary dict.
    """
    check_arguments(out, renders, images, data, labels, num_models, top_k, batch_size, seed,
                    block_size)
    check_members(checkpoint, embedder, pixels, data)
    model = None
    if checkpoint is not None:
        model = checkpoints.load_model(checkpoint)
        num_models = ensemble.num_models(model.params)
    hw = members_config(model, embedder)["input_hw"]
    if (model or embedder) and renders is not None and not checks.is_remote(renders):
        check_render_sizes(renders, hw)
    dataset = None
    if data is not None:
        dataset = data_sources.load_dataset(data, hw=hw, channels=3)
    table = None
    if devices.describe()["num_processes"] > 1:     # embed together, then process 0 mines
        table = _shared_table(dataset, pixels, model, num_models, seed, embedder, batch_size)
        devices.leave()
        if not paths.is_writer():
            return {"num_images": len(dataset), "written_by": 0}
    fitted = None
    if pixels is not None:
        num_models = 1
        fitted = fit_pixels(pixels, embedder, hw, dataset, data)
    prefixes = (PAIRS_PREFIX, FAILURES_PREFIX, SUMMARY_NAME)
    common.prepare_output(out, prefixes, overwrite)
    num_inputs = sources.count_inputs(renders, images, dataset)
    num_blocks = max(1, math.ceil(num_inputs / int(block_size)))
    index_params = approx_search.approx_settings(index, num_inputs, nprobe, recall_sample)
    pipeline = beam.Pipeline(options=common.pipeline_options(beam_args))
    build(pipeline, out, int(num_models), int(seed), num_blocks, renders, images, labels,
          int(top_k), bool(mutual), None if min_score is None else float(min_score),
          int(batch_size), int(block_size), model=model, checkpoint=checkpoint, dataset=dataset,
          embedder=embedder,
          evaluate=renders is not None or labels is not None
          or (dataset is not None and dataset.has_labels),
          index=index, index_params=index_params, recall_sample=int(recall_sample),
          pixels=fitted, table=table)
    common.run_pipeline(pipeline, out, prefixes)
    with common.FileSystems.open(common.join(out, SUMMARY_NAME)) as f:
        return json.loads(f.read())
