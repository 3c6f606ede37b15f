"""Sharded exact neighbour search of the weak-label job: no worker holds all N embeddings.

Images are hashed into `num_blocks` blocks by image_id. EmbedBlock embeds one block (rows
sorted by id, duplicates dropped); FanOut sends it to the tiles (a, b), a <= b, it belongs
to; TileTopK computes one tile's similarities once and yields a partial top-k for both
blocks; MergeBlock (a CombineFn, so runners that lift combiners merge before the shuffle)
folds the partials of a query block. Ties go to the smaller image_id, which is the lower index
of `evaluate.neighbours.top_k` on rows sorted by id, so results equal the brute force.
A second pass keyed by the unordered pair marks mutual neighbours. Memory per worker: two
blocks (2 * B * D floats), one (B, B) tile and a (B, k) accumulator, whatever N is.
"""
import functools

import apache_beam as beam
import jax
import numpy as np

from rand_ensemble.data import decode
from rand_ensemble.evaluate import baselines
from rand_ensemble.evaluate import neighbours as engine
from rand_ensemble.model import checkpoint, ensemble
from rand_ensemble.model.embedder import EmbedderConfig
from rand_ensemble.pipelines import common

ENSEMBLE = "ens"                    # channel of the ensemble top-k; members are channels 0..M-1


class EmbedBlock(beam.DoFn):
    """(block, records) -> ok (block, ids (n,), labels (n,) object, float32 (n, M*E)) + failures.

    The records' RGB images go to the members' `in_channels` here (grey: luma, which gives
    a greyscale source's own pixels back, as `data.sources.load_dataset(channels=1)` would).
    With `pixels` (a fitted `evaluate.baselines.fit_baseline`, one "member"), the rows are that
    training-free pixel embedding (n, D) of the converted images instead of the members'; with
    a trained model's `signal` member, the model's rows (`engine.model_rows`: the members'
    columns first, then the signal's).

    The copy of a repeated image_id with the smallest source (file, row) is kept; each other
    copy is a failure row, so a duplicated shard cannot pair an image with itself.
    With `table` (`shared_rows`: the rows the processes of a run embedded together), the
    block's rows are looked up by image id instead.
    """

    def __init__(self, seed, num_models, batch_size, config, params=None, pixels=None,
                 table=None, signal=None, mirror=False):
        self.seed, self.num_models, self.batch_size = seed, num_models, batch_size
        self.config_dict = config           # EmbedderConfig.to_dict() of the members
        self.trained = params               # trained params numpy tree (M, ...), or None:
                                            # M random members from PRNGKey(seed)
        self.pixels = pixels                # a fitted pixel baseline instead of members
        self.table = table                  # {"ids": sorted (N,), "rows": (N, M*E)} or None
        self.signal = signal                # a trained model's signal member, or None
        self.mirror = mirror                # its rows are mirror-averaged (Model.mirror)

    def setup(self):
        # On the worker, once per DoFn instance: the DoFn is pickled without JAX state.
        self.config = EmbedderConfig.from_dict(self.config_dict)
        if self.table is not None:
            table = self.table
            self._rows = None
            self._lookup = lambda ids: table["rows"][np.searchsorted(table["ids"], ids)]
            return
        if self.pixels is not None:
            self._rows = functools.partial(baselines.pixel_embedding, self.pixels)
            return
        params = self.trained if self.trained is not None else ensemble.init_ensemble(
            jax.random.PRNGKey(self.seed), self.num_models, self.config)
        model = checkpoint.Model(params, self.config, self.signal, self.mirror)
        self._rows = functools.partial(member_rows, model, self.batch_size)  # (n, M*E [+ D])

    def process(self, keyed):
        block, records = keyed
        labels, copies = {}, {}
        for kind, image_id, label, image, source in sorted(records, key=lambda r: r[4]):
            if kind == "label":
                labels.setdefault(image_id, label)
            else:
                copies.setdefault(image_id, []).append((source, label, image))
        ids = sorted(copies)
        for image_id in ids:
            kept = copies[image_id][0][0]
            for source, _, _ in copies[image_id][1:]:
                yield common.failure({"image_id": image_id, "file": source[0], "row": source[1]},
                                     "duplicate", f"duplicate image_id {image_id!r}: the copy "
                                     f"in {kept[0]} row {kept[1]} is kept")
        if not ids:
            return
        images = np.stack([copies[i][0][2] for i in ids])                   # (n, H, W, 3)
        images = decode.convert_channels(images, self.config.in_channels)   # (n, H, W, C)
        flat = self._rows(images) if self._rows else self._lookup(ids)     # (n, M*E)
        kept_labels = np.empty(len(ids), object)                         # (n,) any hashable
        kept_labels[:] = [labels.get(i, copies[i][0][1]) for i in ids]
        yield common.ok((block, np.array(ids), kept_labels, flat))


def member_rows(model, batch_size, images) -> np.ndarray:
    """The rows a `checkpoint.Model`'s members (and its signal member, if any) give images:
    (n, H, W, C) at the members' channels -> (n, M*E [+ D]) float32 (`engine.model_rows`),
    mirror-averaged where the model is (`baselines.model_embedders`)."""
    members, signal_rows = baselines.model_embedders(model, batch_size)
    emb = np.asarray(members(images))
    if model.signal is None:
        return engine.model_rows(emb)
    return engine.model_rows(emb, signal_rows(images), model.signal["weight"])


def shared_rows(dataset, model, batch_size) -> dict:
    """EmbedBlock's rows of a whole loaded dataset under a `checkpoint.Model` (`member_rows`),
    embedded by every process of a run together (members split over all their devices; every
    process must call it) -> {"ids": sorted (N,), "rows": (N, M*E [+ D]) float32}, what
    EmbedBlock's `table` takes."""
    order = np.argsort(dataset.ids, kind="stable")
    images = decode.convert_channels(dataset.images[order], model.config.in_channels)
    return {"ids": np.asarray(dataset.ids)[order],
            "rows": member_rows(model, batch_size, images)}


def fan_out(block, num_blocks):
    """Block record -> (tile key, record) for every tile (min(a, j), max(a, j)) it is part of."""
    a = block[0]
    for j in range(num_blocks):
        yield min(a, j) * num_blocks + max(a, j), block


class TileTopK(beam.DoFn):
    """(tile, [one or two blocks]) -> (query block, ("part", {channel: (ids, scores, labels)}))."""

    def __init__(self, num_blocks, top_k, num_models, evaluate, member_dim=None):
        self.num_blocks, self.top_k = num_blocks, top_k
        self.num_models, self.evaluate = num_models, evaluate
        self.member_dim = member_dim        # E (None: the rows are the members' alone)

    def channels(self, x, y, diagonal):
        """[(channel, tile_top_k result)]: the ensemble's top-k, each member's top-1 (the
        first M * E columns: a signal member's columns follow them)."""
        out = [(ENSEMBLE, engine.tile_top_k(x, y, self.top_k, diagonal))]
        if self.evaluate:
            e = self.member_dim or x.shape[1] // self.num_models
            out += [(m, engine.tile_top_k(x[:, m * e:(m + 1) * e], y[:, m * e:(m + 1) * e],
                                               1, diagonal)) for m in range(self.num_models)]
        return out

    def process(self, keyed):
        tile, blocks = keyed
        a, b = divmod(tile, self.num_blocks)
        blocks = sorted(blocks, key=lambda r: r[0])
        if a == b:
            blocks = blocks * 2
        if len(blocks) != 2:                    # the other block got no images
            return
        (_, ids_a, lab_a, x), (_, ids_b, lab_b, y) = blocks
        rows, cols = {}, {}
        for channel, ((ia, sa), (ib, sb)) in self.channels(x, y, a == b):
            rows[channel] = (ids_b[ia], sa, lab_b[ia])
            cols[channel] = (ids_a[ib], sb, lab_a[ib])
        yield a, ("part", rows)
        if a != b:
            yield b, ("part", cols)


class BlockMerge(beam.CombineFn):
    """A query block's ("block", ids, labels) marker and keyed partial top-k lists -> {"block":
    (ids, labels), "parts": {key: merged top-k}}; subclasses say how a value splits into keyed
    parts (`parts_of`) and how many neighbours a key keeps (`k_of`). Merging in any grouping
    gives one pass's result (`engine.merge_top_k` orders by score, then key)."""

    def parts_of(self, value):
        raise NotImplementedError

    def k_of(self, key):
        raise NotImplementedError

    def create_accumulator(self):
        return {"block": None, "parts": {}}

    def add_input(self, acc, value):
        if value[0] == "block":
            acc["block"] = value[1:]
            return acc
        for key, part in self.parts_of(value):
            self._fold(acc, key, part)
        return acc

    def _fold(self, acc, key, part):
        prev = acc["parts"].get(key)
        merged = engine.merge_top_k([part] if prev is None else [prev, part], self.k_of(key))
        if merged is not None:
            acc["parts"][key] = merged

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            if acc["block"] is not None:
                out["block"] = acc["block"]
            for key, part in acc["parts"].items():
                self._fold(out, key, part)
        return out

    def extract_output(self, acc):
        return acc


class MergeBlock(BlockMerge):
    """("block", ids, labels) and ("part", {channel: list}) of one query block -> merged top-k
    lists per channel (the ensemble keeps top_k, each member its rank 1)."""

    def __init__(self, top_k):
        self.top_k = top_k

    def parts_of(self, value):
        return value[1].items()

    def k_of(self, channel):
        return self.top_k if channel == ENSEMBLE else 1


def agree(a, b):
    """(labelled, correct): both labels known, and equal."""
    labelled = a is not None and b is not None
    return labelled, labelled and a == b


def finish_block(keyed, num_models, divisor=None):
    """(block, merged) -> summary partial + ("edge", pair key, edge) for every neighbour; a
    pair's score is its row similarity / `divisor` (default M: the mean member cosine; 1 for a
    model with a signal member, whose rows score a weighted mean already)."""
    block, acc = keyed
    ids, labels = acc["block"]
    stats = {"images": len(ids), "labelled": 0, "correct": 0,
             "members_labelled": [0] * num_models, "members_correct": [0] * num_models}
    ens = acc["parts"].get(ENSEMBLE)
    if ens is None:                              # a pool of one image: no neighbours
        yield ("summary", stats)
        return
    scores = ens[1] / np.float32(divisor or num_models)                      # (A, k)
    for i, image_id in enumerate(ids):
        labelled, correct = agree(labels[i], ens[2][i, 0])
        stats["labelled"] += labelled
        stats["correct"] += correct
        for m in range(num_models):
            member = acc["parts"].get(m)
            if member is not None:
                labelled, correct = agree(labels[i], member[2][i, 0])
                stats["members_labelled"][m] += labelled
                stats["members_correct"][m] += correct
        for r in range(ens[0].shape[1]):
            if not np.isfinite(scores[i, r]):    # an approximate list shorter than k
                continue
            other = str(ens[0][i, r])
            edge = (block, image_id, other, float(scores[i, r]), r + 1, labels[i], ens[2][i, r])
            yield ("edge", common.stable_hash("\0".join(sorted((image_id, other)))), edge)
    yield ("summary", stats)


def mark_mutual(keyed):
    """(pair key, edges) -> (query block, edge + (mutual,)): mutual = the reverse edge exists."""
    _, edges = keyed
    present = {(e[1], e[2]) for e in edges}
    for e in edges:
        yield e[0], e + ((e[2], e[1]) in present,)
