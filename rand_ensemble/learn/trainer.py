"""Training image embedders without labels: M members in one jitted step, with the project's one
loop (`loop.fit`: optax, progress bar, atomic checkpoints, exact resume).

The step is written for ONE member (`make_member_step`) and batched over params, optimizer
states, keys and batches in one jit (`ensemble.over_members`: vmap, or on CPU the same maths as a
lax.map over members): every member has its own init, batch order
and augmentations, and a trained ensemble of M costs at most M single nets. Which rows
form the positive pairs is the signal's business (`signals.py`); the pool's object ids are
used only by the oracle (and to report the precision of weak pairs).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rand_ensemble.data import augment
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import neighbours
from rand_ensemble.learn import loop, losses, signals
from rand_ensemble.learn.config import LOSSES, LearnConfig  # noqa: F401 (re-exported)
from rand_ensemble.learn.signals import SIGNALS, load_pairs  # noqa: F401 (re-exported)
from rand_ensemble.model import devices, ensemble, nn
from rand_ensemble.model.embedder import EmbedderConfig, apply_embedder, init_embedder

PROBE_SIZE = 256          # fixed pool images whose embedding spread is logged


def make_optimizer(recipe: LearnConfig) -> optax.GradientTransformation:
    """AdamW for ONE member: linear warm-up to recipe.lr, then cosine decay to 1% at
    recipe.steps."""
    warmup = min(recipe.warmup, recipe.steps // 2)
    schedule = optax.warmup_cosine_decay_schedule(0.0, recipe.lr, warmup, recipe.steps,
                                                  recipe.lr * 0.01)
    return optax.adamw(schedule, weight_decay=recipe.weight_decay)


def make_member_step(arch: EmbedderConfig, recipe: LearnConfig,
                     optimizer: optax.GradientTransformation, conv: Callable = nn.conv):
    """The update of ONE member: (params, opt_state, key (2,), anchors (B,), positives (B,),
    images (N, H, W, C) uint8, groups (N,)) -> (params, opt_state, loss).

    Views of anchors[i] and positives[i] form pair i (augmented unless the signal is `weak`);
    two pairs whose rows share a group (the same image, or for the oracle the same object)
    are not used as each other's negatives.
    """
    augmented = signals.AUGMENTED[recipe.signal]
    options = recipe.augment_options()

    def views(key, images, rows):
        x = images[rows].astype(jnp.float32) / 255.0                  # (B, H, W, C)
        return augment.augment_batch(key, x, **options) if augmented else x

    def loss_fn(params, key, anchors, positives, images, groups):
        k1, k2 = jax.random.split(key)
        b = anchors.shape[0]
        x = jnp.concatenate([views(k1, images, anchors), views(k2, images, positives)])
        z = apply_embedder(params, x, arch, conv=conv)                # (2B, E) unit rows
        if recipe.loss == "batch_hard":
            return losses.batch_hard_triplet_loss(z[:b], z[b:], recipe.margin)
        ga, gp = groups[anchors], groups[positives]                   # (B,) each
        same = ((ga[:, None] == ga[None, :]) | (ga[:, None] == gp[None, :])
                | (gp[:, None] == ga[None, :]) | (gp[:, None] == gp[None, :]))  # (B, B)
        return losses.nt_xent(z[:b], z[b:], recipe.temperature, negative_mask=same)

    return loop.update_step(loss_fn, optimizer)


# Fields the compiled step does not depend on: reset before caching, so runs that differ only
# in them (other seeds, pair filters, checkpoint cadence) share one compiled step.
_NOT_IN_STEP = ("members", "seed", "checkpoint_every", "log_every", "min_spread", "mutual",
                "min_score", "top_fraction", "remine_every", "pair_fraction", "bias")


@functools.lru_cache(maxsize=8)
def compiled_step(arch: EmbedderConfig, recipe: LearnConfig, conv: Callable = nn.conv):
    """The M-member step (`ensemble.over_members` of `make_member_step`), built once per recipe."""
    recipe = dataclasses.replace(recipe, **{f: getattr(LearnConfig, f) for f in _NOT_IN_STEP})
    return ensemble.over_members(make_member_step(arch, recipe, make_optimizer(recipe), conv),
                                 num_shared=2)


def embedding_spread(params: dict, images, arch: EmbedderConfig) -> dict:
    """Collapse check on a probe batch: (N, H, W, C) -> {"spread": min over members of the
    mean coordinate std across images, "mean_cos": mean pairwise cosine, over members}."""
    emb = ensemble.embed(params, images, arch)                        # (M, N, E)
    spread = emb.std(axis=1).mean(axis=1)                             # (M,)
    n = emb.shape[1]
    cos = (np.einsum("mne,mke->m", emb, emb) - np.einsum("mne,mne->m", emb, emb)) / (n * (n - 1))
    return {"spread": float(spread.min()), "mean_cos": float(cos.mean())}


class Remining:
    """remine: every R steps, each member's nearest pool neighbour under its current net
    becomes the positive of a `pair_fraction` of each batch's rows (before that: augmentation)."""

    def __init__(self, images, labels, arch, recipe, log):
        self.images, self.labels, self.arch, self.log = images, labels, arch, log
        self.every = recipe.remine_every
        self.rows = int(round(recipe.pair_fraction * recipe.batch_size))
        self.table = None                                             # (M, N) neighbour rows

    def positives(self, params, step, anchors, positives):
        """(M, B) positives for `step`, re-mining first when step - 1 is a multiple of R."""
        if step > 1 and (step - 1) % self.every == 0:
            emb = ensemble.embed(params, self.images, self.arch)     # (M, N, E)
            self.table = neighbours.member_top_k(emb, 1)[0][:, :, 0]          # (M, N)
            if self.log is not None and self.labels is not None:
                precision = np.mean(self.labels[self.table] == self.labels)
                self.log(f"re-mined neighbours at step {step - 1}: rank-1 precision "
                         f"{precision:.3f} (evaluation only)")
        if self.table is None:
            return positives
        out = positives.copy()
        out[:, :self.rows] = np.take_along_axis(self.table, anchors[:, :self.rows].astype(
            np.int64), axis=1)
        return out


def train_embedder(pool, recipe: LearnConfig = LearnConfig(), pairs: np.ndarray | None = None,
                   checkpoint: str | None = None, resume: bool = False, progress: bool = True,
                   log: Callable | None = print, score_fn: Callable | None = None,
                   arch: EmbedderConfig | None = None) -> tuple[dict, EmbedderConfig, dict]:
    """Train recipe.members embedders on a pool of images with recipe.signal, in one vmapped step.

    Args:
      pool: a `data.dataset.Dataset` (uint8 images (N, H, W, C) at the embedder's input;
        labels (object ids for renders) only for the oracle and evaluation lines).
      recipe: the recipe (signal, members, steps, optimizer, loss, augmentations, ...).
      pairs: (P, 2) int pool rows of weak pairs (`signals.load_pairs`); weak signals only.
      checkpoint: path of the training-state .npz, written atomically every
        recipe.checkpoint_every steps (None: no checkpoints).
      resume: continue from `checkpoint` if it exists (same settings and data required); the
        final params equal those of an uninterrupted run.
      progress: show a progress bar.
      log: where log rows go (None: silent).
      score_fn: optional score_fn(params) -> dict of metrics added to every log row.
      arch: the architecture (default: the blog net, with biases per recipe.bias).
    Returns:
      (params with a leading M on every leaf, EmbedderConfig, report): the report holds the
      history (loss, spread, mean_cos, score_fn's metrics per log row), sizes and timings.
    """
    arch = arch or EmbedderConfig(bias=recipe.bias)
    pairs = _check_inputs(pool, recipe, pairs, arch)
    batches = signals.Batches(recipe.signal, len(pool), recipe.members, recipe.batch_size,
                              recipe.seed, pairs, recipe.pair_fraction, pool.labels)
    optimizer = make_optimizer(recipe)
    remining = (Remining(pool.images, pool.labels, arch, recipe, log)
                if recipe.signal == "remine" else None)
    step_fn = _step_fn(pool, recipe, arch, remining)
    scores = _score_fn(pool, recipe, arch, score_fn)
    params = ensemble.init_members(init_embedder, jax.random.PRNGKey(recipe.seed),
                                   recipe.members, arch)
    opt_state = ensemble.over_members(optimizer.init, how="vmap")(params)   # (M, ...) state
    every = recipe.checkpoint_every
    if remining is not None:   # resume must re-mine from the params the full run mined from
        every = -(-every // recipe.remine_every) * recipe.remine_every
    ckpt = None if checkpoint is None else loop.Checkpointing(
        checkpoint, every, resume, _run_meta(pool, recipe, pairs, arch))
    start = time.perf_counter()
    params, history = loop.fit(None, params, iter(batches), recipe.steps, None,
                               step_fn=step_fn, opt_state=opt_state, eval_every=recipe.log_every,
                               score_fn=scores, checkpoint=ckpt, progress=progress, log=log)
    seconds = time.perf_counter() - start
    report = {"history": history, "signal": recipe.signal, "members": recipe.members,
              "num_images": len(pool), "num_pairs": 0 if pairs is None else len(pairs),
              "seconds": seconds}
    if pairs is not None and pool.labels is not None:                 # evaluation only
        report["pair_precision"] = float(np.mean(pool.labels[pairs[:, 0]]
                                                 == pool.labels[pairs[:, 1]]))
    return devices.to_host(params), arch, report


def _step_fn(pool, recipe, arch, remining):
    """fit's step: (params, opt_state, i, keys, anchors, positives) -> the compiled M-member
    step on the pool (on device once), with re-mined positives for `remine`."""
    step = compiled_step(arch, recipe, ensemble.member_conv(recipe.precision))
    images, groups = devices.replicated((pool.images, np.asarray(
        pool.labels if recipe.signal == "oracle" else np.arange(len(pool)), np.int32)))

    def step_fn(params, opt_state, i, keys, anchors, positives):
        if remining is not None:
            positives = remining.positives(params, i, anchors, positives)
        return step(params, opt_state, keys, anchors, positives, images, groups)
    return step_fn


def _score_fn(pool, recipe, arch, score_fn):
    """fit's score_fn: the spread on a fixed probe batch (collapse stops training), then the
    caller's metrics."""
    probe = pool.images[np.sort(np.random.default_rng(recipe.seed).permutation(len(pool))
                                [:PROBE_SIZE])]

    def scores(params):
        row = embedding_spread(params, probe, arch)
        if row["spread"] < recipe.min_spread:
            raise RandEnsembleError(
                f"embeddings collapsed: spread {row['spread']:.2g} < min_spread "
                f"{recipe.min_spread} on a fixed probe batch (every image maps to about the same "
                f"point); lower the learning rate, raise the temperature or change the signal")
        return {**row, **(score_fn(params) if score_fn is not None else {})}
    return scores


def pairs_for(recipe: LearnConfig, pairs_dir: str, pool) -> np.ndarray:
    """The weak-label job's pairs filtered by recipe.mutual / min_score / top_fraction: (P, 2)."""
    return load_pairs(pairs_dir, pool, recipe.mutual,
                      None if recipe.min_score <= -1.0 else recipe.min_score, recipe.top_fraction)


def _check_inputs(pool, recipe, pairs, arch):
    """Validate the pool size against the architecture and pairs against the signal."""
    h, w, c = pool.images.shape[1:4]
    if (h, w, c) != (arch.input_hw, arch.input_hw, arch.in_channels):
        raise RandEnsembleError(f"pool images are {h}x{w}x{c}, the embedder needs "
                                f"{arch.input_hw}x{arch.input_hw}x{arch.in_channels}")
    if recipe.signal == "oracle" and pool.labels is None:
        raise RandEnsembleError("signal oracle needs labels (object ids); the data has none")
    weak = recipe.signal in ("weak", "weak+augment")
    if weak and pairs is None:
        raise RandEnsembleError(f"signal {recipe.signal} needs weak-label pairs (--pairs DIR)")
    if not weak and pairs is not None:
        raise RandEnsembleError(f"pairs are used by the weak signals only, not {recipe.signal}")
    if pairs is None:
        return None
    pairs = np.asarray(pairs, np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) < 1:
        raise RandEnsembleError(f"pairs must be shaped (P, 2) with P >= 1, got {pairs.shape}")
    if pairs.min() < 0 or pairs.max() >= len(pool):
        raise RandEnsembleError(f"pairs name rows outside the pool of {len(pool)} images")
    return pairs


def _run_meta(pool, recipe, pairs, arch):
    """What a resumed run must share with the checkpoint: recipe, architecture and data."""
    digest = hashlib.sha256("\n".join(pool.ids).encode())
    digest.update(pool.images.tobytes())
    if pairs is not None:
        digest.update(np.ascontiguousarray(pairs, np.int64).tobytes())
    return {"learn": recipe.to_dict(), "embedder": arch.to_dict(), "data": digest.hexdigest()}
