"""The label-free recipe chosen from the data: what `rand-ensemble train --data ANY` runs.

    policy = input_policy(dataset.images)                    # channels and net input from the data
    choice = choose(pool, arch, seed)                # signal, flips, crops, optimiser
    recipe, pairs = choice.recipe, choice.pairs  # then trainer.train_embedder

No label is read anywhere here (`run_train` drops them before this module sees the data). The
choices are made on a seeded split of the TRAINING images into screening and held-out images,
the way a supervised recipe is chosen on validation data, with label-free criteria instead of
labels (`evaluate.label_free`):

1. Signals. Every label-free signal (`mining.SIGNAL_KINDS`: raw pixels, PCA pixels, HOG, a
   random ensemble of the net being trained) is fitted on the screening images and scored on
   the held-out ones:
   - corroboration: the share of its rank-1 pairs that the best signal of the OTHER view
     (intensity: raw, PCA, random nets; gradients: HOG) ranks among its 10 nearest;
   - instance recall: how often a cropped copy of a held-out image (area 70-100%) finds the
     image itself as its nearest neighbour: invariance to a nuisance and discrimination at once.
   The signal mined is the one with the highest instance recall among those whose
   corroboration reaches GATE (at least half their pairs confirmed by independent evidence);
   when none does (the views disagree on what is similar, as on the project's cluttered
   renders), no pairs are mined and the recipe is augmentation alone (`RECIPES["renders"]`:
   SimCLR's crops down to 20% of the area and flips).
2. Flips are used where they keep neighbours: the signal's 10 nearest of a mirrored image
   overlap those of the image at least FLIP_KEEP times as much as those of the 70-100% crop do
   (clothes: yes; digits and letters: no).
   Where they are used, the model is also mirror-averaged (`checkpoint.Model.mirror`): it
   embeds an image as the mean of its rows and its mirror image's, the invariance the test
   found, made exact at no training cost.
3. Crops and optimiser (signal path): one member per variant of `VARIANTS` is trained briefly
   on the screening images' pairs and scored by held-out partner recall@10 of the signal's
   pairs (`label_free.partner_recall`); the best variant is the recipe.
The measurements behind each constant are in the docs ("Choosing the recipe without labels").
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rand_ensemble.data import augment
from rand_ensemble.data.dataset import Dataset
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import label_free, neighbours
from rand_ensemble.learn import mining
from rand_ensemble.learn.config import LearnConfig
from rand_ensemble.learn.trainer import train_embedder
from rand_ensemble.model import ensemble
from rand_ensemble.model.config import EmbedderConfig

GATE = 0.5                 # min share of a signal's rank-1 pairs the other view confirms
FLIP_KEEP = 0.5            # flips on iff their neighbour overlap >= this x the crop's
CRITERION_CROP = (0.7, 1.0)    # the nuisance the signals are scored against (area kept)
DEPTH = 10                 # neighbour-list depth of the criteria
HELDOUT_FRACTION = 0.1     # of the training images, seeded
HELDOUT_RANGE = (200, 2000)
MIN_IMAGES = 2 * HELDOUT_RANGE[0]   # fewer: no choice is made (augmentation alone)
MAX_SCREENING = 10000      # signals are fitted and variants trained on at most this many
SCREEN_STEPS = 300
TOP_K = 3                  # pairs per image: each image and its 3 nearest under the signal
SMALL_SIDE = 24            # images below this side keep their size (a SAME-padded net)
NET_SIDE = 32              # the blog net's input, for everything larger
# The signal path's base recipe and its screened variants (crop area kept; AdamW lr and
# NT-Xent temperature). Members and steps: see `final_config`.
SIGNAL_BASE = dict(signal="weak+augment", pair_fraction=1.0, batch_size=128)
VARIANTS = {
    "crop 0.5, lr 3e-3, T 0.1": dict(crop_scale_min=0.5, lr=3e-3, temperature=0.1),
    "crop 0.8, lr 3e-3, T 0.1": dict(crop_scale_min=0.8, lr=3e-3, temperature=0.1),
    "crop 0.5, lr 1e-3, T 0.2": dict(crop_scale_min=0.5, lr=1e-3, temperature=0.2),
    "crop 0.8, lr 1e-3, T 0.2": dict(crop_scale_min=0.8, lr=1e-3, temperature=0.2),
}
SIGNAL_MEMBERS = 8
# The mined signal is kept in the model as one more voter (descriptors only: a random
# ensemble signal is not kept), weighing as much as the members together: a pair scores
# (mean member cosine + SIGNAL_WEIGHT x the signal's cosine) / (1 + SIGNAL_WEIGHT). The members
# learn where the descriptor errs and the two err differently (docs: +0.016 P@1 over HOG and
# +0.013 over the members on Fashion-MNIST).
KEEPABLE = ("raw", "pca", "hog")
SIGNAL_WEIGHT = 1.0
EPOCHS = 4                  # passes over the images (6: +3 min on Fashion-MNIST; see docs)
STEPS_RANGE = (1000, 3000)


def input_policy(images: np.ndarray) -> dict:
    """The net's input from the images themselves: uint8 (N, H, W, C) -> arch flags.

    Greyscale (one channel, or three equal ones) stays one channel; images of side >= 24 go to
    the blog net's 32 x 32 input (padded, or resized and centre-cropped); smaller ones keep
    their side, with SAME padding and a global mean pool so the four stride-2 convs fit.
    """
    n, h, w, c = images.shape
    grey = c == 1 or _all_grey(images)
    flags = {"family": "blog", "in_channels": 1 if grey else 3}
    side = max(h, w)
    if side < SMALL_SIDE:
        flags.update(input_hw=side, padding="SAME", pool="mean")
    return flags


def _all_grey(images, chunk: int = 4096) -> bool:
    """Are the three channels equal in every image? (N, H, W, 3) uint8 -> bool."""
    return all(np.array_equal(images[i:i + chunk, ..., 0], images[i:i + chunk, ..., 1])
               and np.array_equal(images[i:i + chunk, ..., 0], images[i:i + chunk, ..., 2])
               for i in range(0, len(images), chunk))


def split_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of N training rows: (screening rows, held-out rows), each sorted; the
    held-out share is HELDOUT_FRACTION within HELDOUT_RANGE, screening at most MAX_SCREENING."""
    lo, hi = HELDOUT_RANGE
    held = int(min(hi, max(lo, round(HELDOUT_FRACTION * n))))
    if n < 2 * held:
        raise RandEnsembleError(f"choosing a recipe needs at least {2 * lo} training images, "
                                f"got {n}; name a recipe (--recipe) or its flags")
    order = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(order[held:held + MAX_SCREENING]), np.sort(order[:held])


def augmented(images: np.ndarray, seed: int, crop: tuple = CRITERION_CROP) -> np.ndarray:
    """One seeded random resized crop of each image (area in `crop`): uint8 -> uint8, same
    shape; the same seed gives the same views."""
    out = np.empty_like(images)
    for start in range(0, len(images), 1024):
        x = jnp.asarray(images[start:start + 1024], jnp.float32) / 255.0
        key = jax.random.fold_in(jax.random.PRNGKey(seed), start)
        view = augment.augment_batch(key, x, crop_scale=crop, flip=False)
        out[start:start + 1024] = np.asarray(jnp.clip(jnp.round(view * 255.0), 0, 255))
    return out


@dataclasses.dataclass
class SignalScores:
    """A signal's label-free scores on the held-out images (see the module docstring)."""
    instance_recall: float
    corroboration: float            # by the best signal of the other view
    flip_overlap: float             # 10-NN overlap of mirrored images with the originals'
    crop_overlap: float             # the same for the criterion's crop
    seconds: float = 0.0

    def row(self) -> dict:
        """JSON-ready, without the timing."""
        return {k: round(v, 4) for k, v in dataclasses.asdict(self).items() if k != "seconds"}


def score_signals(screening: np.ndarray, heldout: np.ndarray, arch: EmbedderConfig,
                  seed: int, log: Callable | None = None,
                  done: Callable = lambda: None) -> dict:
    """Every signal fitted on `screening` (N_s, H, W, C) and scored on `heldout` (N_h, ...):
    -> {kind: SignalScores} (no labels)."""
    cropped = augmented(heldout, seed)
    tables, scores = {}, {}
    for kind in mining.SIGNAL_KINDS:
        start = time.perf_counter()
        fitted = mining.fit_signal(kind, screening, arch, seed)
        found = _transform_overlaps(fitted, heldout, seed, cropped, tables)
        scores[kind] = SignalScores(**found, corroboration=0.0,
                                    seconds=time.perf_counter() - start)
        if log is not None:
            log(f"  signal {kind}: instance recall {scores[kind].instance_recall:.3f}")
        done()
    for kind, s in scores.items():
        others = [t for t in mining.SIGNAL_KINDS if mining.VIEWS[t] != mining.VIEWS[kind]]
        s.corroboration = max(label_free.corroboration(tables[kind], tables[t], DEPTH)
                              for t in others)
    return scores


def _transform_overlaps(fitted: dict, heldout, seed: int, cropped=None,
                        tables: dict | None = None) -> dict:
    """A fitted signal on held-out images, cropped copies and mirrored ones: -> instance
    recall and the 10-NN overlaps of the copies with the originals (`tables[kind]` gets the
    originals' neighbour table)."""
    cropped = augmented(heldout, seed) if cropped is None else cropped
    rows = mining.signal_rows(fitted, heldout)
    table, _ = neighbours.top_k(rows, DEPTH)
    if tables is not None:
        tables[fitted["kind"]] = table
    crop_rows = mining.signal_rows(fitted, cropped)
    crop_near, _ = neighbours.top_k(crop_rows, DEPTH, gallery=rows)
    flip_near, _ = neighbours.top_k(mining.signal_rows(fitted, heldout[:, :, ::-1]), DEPTH,
                                    gallery=rows)
    return {"instance_recall": label_free.instance_recall(rows, crop_rows),
            "flip_overlap": label_free.neighbour_overlap(table, flip_near, DEPTH),
            "crop_overlap": label_free.neighbour_overlap(table, crop_near, DEPTH)}


def choose_signal(scores: dict) -> str | None:
    """The signal to mine: the highest instance recall among those corroborated by the other
    view (>= GATE; ties: SIGNAL_KINDS order), or None (augmentation alone)."""
    eligible = [k for k in mining.SIGNAL_KINDS if scores[k].corroboration >= GATE]
    return max(eligible, key=lambda k: scores[k].instance_recall, default=None)


def flips_keep_neighbours(s: SignalScores) -> bool:
    """Mirroring keeps the neighbours as well as a mild crop does (FLIP_KEEP of it)."""
    return s.flip_overlap >= FLIP_KEEP * s.crop_overlap


def final_steps(n: int, batch_size: int) -> int:
    """EPOCHS passes over N images, rounded up to 250 steps, within STEPS_RANGE."""
    steps = 250 * math.ceil(EPOCHS * n / batch_size / 250)
    return int(min(STEPS_RANGE[1], max(STEPS_RANGE[0], steps)))


@dataclasses.dataclass
class Choice:
    """What `choose` decided: the recipe, the pairs it trains on, the record of why, and the
    signal the pairs came from (a fitted descriptor the model may keep as one more voter)."""
    recipe: LearnConfig
    pairs: np.ndarray | None          # (P, 2) pool rows, or None (augmentation alone)
    record: dict                      # JSON-ready, reproducible: the criteria's tables
    seconds: dict                     # wall time per stage (kept apart from the record)
    signal: dict | None = None        # `model.checkpoint.Model.signal` form, weight SIGNAL_WEIGHT
    mirror: bool = False              # mirror-average the model (flips chosen by the test)


def choose(pool: Dataset, arch: EmbedderConfig, overrides: dict | None = None,
           seed: int = 0, progress: bool = False, log: Callable | None = None,
           screen_steps: int = SCREEN_STEPS) -> Choice:
    """The label-free recipe for `pool`: signal, pairs, flips, crops and optimiser.

    Args:
      pool: the training images (uint8 (N, H, W, C) at the net's input); labels, if any, are
        never read.
      arch: the net being trained (the random-ensemble signal uses it).
      overrides: LearnConfig fields the user fixed (they win over every choice).
      seed: the split, the signals' random members, the crops and the screening runs.
      progress: a progress bar over the stages. log: where lines go (None: silent).
      screen_steps: steps of each screened variant (the choice's time scales with it).
    Returns:
      a Choice; its record holds the split sizes, every signal's scores, the signal chosen,
      the flip test and the screened variants' partner recall.
    """
    overrides = dict(overrides or {})
    if len(pool) < MIN_IMAGES:
        return Choice(LearnConfig.recipe("renders", **{"seed": seed, **overrides}), None,
                      {"signal": None, "reason": f"{len(pool)} images are too few to choose "
                       f"on (< {MIN_IMAGES}): augmentation alone, the renders recipe"}, {})
    images = pool.images
    screen_rows, held_rows = split_rows(len(pool), seed)
    seconds, record = {}, {"screening_images": int(len(screen_rows)),
                           "heldout_images": int(len(held_rows)), "gate": GATE,
                           "flip_keep": FLIP_KEEP, "criterion_crop": list(CRITERION_CROP)}
    bar = tqdm(total=len(mining.SIGNAL_KINDS) + len(VARIANTS) + 1, disable=not progress,
               desc="choosing the recipe", unit="stage", dynamic_ncols=True)
    start = time.perf_counter()
    scores = score_signals(images[screen_rows], images[held_rows], arch, seed,
                           log, bar.update)
    seconds["signals"] = time.perf_counter() - start
    signal = choose_signal(scores)
    record["signals"] = {k: s.row() for k, s in scores.items()}
    record["signal"] = signal
    if log:
        log("  corroboration: " + ", ".join(f"{k} {s.corroboration:.3f}"
                                            for k, s in scores.items()) + f" (gate {GATE})")
    if signal is None:                         # no view agrees with another: augmentation
        bar.close()
        record["reason"] = (f"no signal's rank-1 pairs are corroborated by the other view "
                            f"(best {max(s.corroboration for s in scores.values()):.3f} < "
                            f"{GATE}): augmentation alone, the renders recipe")
        if log:
            log(f"  {record['reason']}")
        return Choice(LearnConfig.recipe("renders", **{"seed": seed, **overrides}), None,
                      record, seconds)
    flips = overrides.get("flip", flips_keep_neighbours(scores[signal]))
    record["flip"] = bool(flips)
    fitted = mining.fit_signal(signal, images[screen_rows], arch, seed)
    start = time.perf_counter()
    variants = screen_variants(pool, screen_rows, held_rows, fitted, arch,
                               {**overrides, "flip": flips, "seed": seed}, screen_steps,
                               bar.update)
    seconds["variants"] = time.perf_counter() - start
    best = max(variants, key=lambda name: variants[name])       # first listed on ties
    record["variants"] = {name: round(v, 4) for name, v in variants.items()}
    record["variant"] = best
    if log:
        log(f"  chose signal {signal}, flips {'on' if flips else 'off'}, variant {best} "
            f"(held-out partner recall@10 {variants[best]:.3f}; others "
            + ", ".join(f"{v:.3f}" for n, v in variants.items() if n != best) + ")")
    start = time.perf_counter()
    pairs, _, _ = mining.mine_pairs(mining.signal_rows(fitted, images), TOP_K)
    seconds["mining"] = time.perf_counter() - start
    bar.update()
    bar.close()
    record["pairs"] = {"top_k": TOP_K, "num_pairs": int(len(pairs))}
    fields = {**SIGNAL_BASE, **VARIANTS[best], "flip": flips, "seed": seed,
              "members": SIGNAL_MEMBERS, "steps": final_steps(len(pool), 128)}
    kept = None if signal not in KEEPABLE else {**fitted, "weight": SIGNAL_WEIGHT}
    recipe = LearnConfig(**{**fields, **overrides})
    return Choice(recipe, pairs, record, seconds, kept, mirror=recipe.flip)


def screen_variants(pool: Dataset, screen_rows, held_rows, fitted: dict,
                    arch: EmbedderConfig, fixed: dict, steps: int = SCREEN_STEPS,
                    done: Callable = lambda: None) -> dict:
    """One member per variant, `steps` steps on the screening images' pairs, scored by
    held-out partner recall@10 of the signal's pairs: -> {variant name: recall@10}."""
    screening = pool.subset(screen_rows)
    pairs, _, _ = mining.mine_pairs(mining.signal_rows(fitted, screening.images), TOP_K)
    held = pool.images[held_rows]
    validation = label_free.validation_pairs(mining.signal_rows(fitted, held))
    out = {}
    for name, variant in VARIANTS.items():
        recipe = LearnConfig(**{**SIGNAL_BASE, **variant, **fixed, "members": 1,
                                "steps": steps, "log_every": steps,
                                "checkpoint_every": steps})
        params, trained, _ = train_embedder(screening, recipe, pairs, progress=False, log=None,
                                            arch=arch)
        emb = ensemble.embed(params, held, trained)                    # (1, N_h, E)
        out[name] = label_free.partner_recall(emb, validation, ks=(DEPTH,))[f"recall@{DEPTH}"]
        done()
    return out


def with_pairs(pool: Dataset, arch: EmbedderConfig, overrides: dict | None = None,
               seed: int = 0) -> Choice:
    """The signal path's recipe for pairs the user mined (`--pairs DIR`): the first variant,
    flips where HOG's neighbours keep under them (the flip test; on fewer than MIN_IMAGES
    images flips stay on). No screening: the pairs are not this module's to score."""
    overrides = dict(overrides or {})
    record = {"signal": "given pairs", "variant": next(iter(VARIANTS))}
    flips = overrides.get("flip")
    if flips is None and len(pool) >= MIN_IMAGES:
        screen_rows, held_rows = split_rows(len(pool), seed)
        fitted = mining.fit_signal("hog", pool.images[screen_rows], arch, seed)
        held = pool.images[held_rows]
        scores = _transform_overlaps(fitted, held, seed)
        record["hog"] = {k: round(v, 4) for k, v in scores.items()}
        flips = scores["flip_overlap"] >= FLIP_KEEP * scores["crop_overlap"]
    record["flip"] = bool(True if flips is None else flips)
    fields = {**SIGNAL_BASE, **VARIANTS[record["variant"]], "flip": record["flip"],
              "seed": seed, "members": SIGNAL_MEMBERS, "steps": final_steps(len(pool), 128)}
    recipe = LearnConfig(**{**fields, **overrides})
    return Choice(recipe, None, record, {}, mirror=recipe.flip)
