"""The image trainer's recipe: every hyperparameter of `learn.train_embedder` in one frozen
dataclass, importable without JAX (the CLI builds `rand-ensemble train`'s flags from it).

The field defaults are the best label-free recipe measured (README, "Learning from the weak
labels"): an ensemble of 4 members trained together on augmentation only (random resized crop
+ flip, no colour jitter), NT-Xent at T = 0.2, AdamW 1e-3 with warm-up and cosine decay,
1,000 steps of 128 images per member (about 7 minutes on 2 cores). Recipes measured on other
data (Fashion-MNIST) are named in `RECIPES` (`LearnConfig.recipe(name)`), each with the
architecture it was measured with in `RECIPE_EMBEDDERS`.
"""
from __future__ import annotations

import dataclasses

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.learn.signals import SIGNALS
from rand_ensemble.options import option

LOSSES = ("ntxent", "batch_hard")
PRECISIONS = ("float32", "bf16")        # the keys of model.nn.COMPUTE_DTYPES (no JAX here)
# Fields added after checkpoints recorded recipes: left out of `to_dict` at their defaults, so
# a recipe that does not use them writes the same bytes as before.
_OMITTED_AT_DEFAULT = ("precision",)


@dataclasses.dataclass(frozen=True)
class LearnConfig:
    """Every training hyperparameter, with the best label-free recipe as defaults (measured in
    the README, "Training an embedder"); `rand-ensemble train` builds its flags from these."""
    signal: str = option("augment", "training signal", choices=SIGNALS)
    members: int = option(4, "M members trained together in one jitted step (each its own "
                                 "init, batch order and augmentation)", "positive_int")
    steps: int = option(1000, "optimizer steps", "steps")
    batch_size: int = option(128, "positive pairs per step (the rest of the batch are the "
                                  "negatives)", "positive_int")
    lr: float = option(1e-3, "AdamW peak learning rate", "learning_rate")
    weight_decay: float = option(1e-4, "AdamW weight decay", "non_negative_float")
    warmup: int = option(100, "linear warm-up steps (at most half the steps), then cosine "
                              "decay to lr / 100", "non_negative_int")
    loss: str = option("ntxent", "loss: ntxent (NT-Xent) or batch_hard (batch-hard triplet)",
                       choices=LOSSES)
    temperature: float = option(0.2, "NT-Xent temperature", "positive_float")
    margin: float = option(0.25, "batch-hard triplet margin", "margin")
    crop_scale_min: float = option(0.2, "smallest area fraction kept by the random resized "
                                        "crop", "fraction")
    flip: bool = option(True, "random horizontal flips")
    colour_jitter: float = option(0.0, "brightness/contrast/saturation jitter strength; off "
                                       "because colour is the object cue in the renders "
                                       "(jitter dropped held-out P@1 from ~0.53 to ~0.05)",
                                  "unit_interval")
    pair_fraction: float = option(0.25, "weak+augment / remine: fraction of each batch whose "
                                        "positive is a weak or re-mined pair", "unit_interval")
    mutual: bool = option(False, "weak pairs: keep mutual neighbours only")
    min_score: float = option(-1.0, "weak pairs: keep score >= this", "threshold")
    top_fraction: float = option(1.0, "weak pairs: keep this best-scoring fraction",
                                 "fraction")
    remine_every: int = option(250, "remine: steps between re-mining nearest neighbours "
                                    "(checkpoints then fall on multiples of it)",
                               "positive_int")
    seed: int = option(0, "init, batch order and augmentations", "seed")
    checkpoint_every: int = option(100, "steps between atomic checkpoints", "positive_int")
    log_every: int = option(50, "steps between log rows (loss, embedding spread)",
                            "positive_int")
    min_spread: float = option(1e-3, "stop if the embedding spread (mean coordinate std on "
                                     "a fixed probe batch) falls below this: collapse",
                               "non_negative_float")
    bias: bool = option(True, "zero-initialised biases on every layer")
    precision: str = option("float32", "operands of the training step's convolutions: float32, "
                                       "or bf16 (bfloat16 operands with float32 sums; "
                                       "parameters, optimizer state and evaluation stay "
                                       "float32)", choices=PRECISIONS)

    def __post_init__(self):
        if self.signal not in SIGNALS:
            raise RandEnsembleError(f"signal must be one of {SIGNALS}, got "
                                    f"{self.signal!r}")
        if self.loss not in LOSSES:
            raise RandEnsembleError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise RandEnsembleError(f"precision must be one of {PRECISIONS}, got "
                                    f"{self.precision!r}")
        for name in ("members", "steps", "batch_size", "remine_every", "checkpoint_every",
                     "log_every"):
            if isinstance(getattr(self, name), bool) or int(getattr(self, name)) < 1:
                raise RandEnsembleError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise RandEnsembleError("batch_size must be >= 2 (the other pairs are negatives)")

    def to_dict(self) -> dict:
        """JSON-ready form (stored in checkpoints); fields of `_OMITTED_AT_DEFAULT` only when
        set."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in _OMITTED_AT_DEFAULT or v != getattr(LearnConfig, k)}

    @classmethod
    def recipe(cls, name: str, **overrides) -> "LearnConfig":
        """The named recipe `RECIPES[name]` with fields replaced by `overrides`; its
        architecture flags are `RECIPE_EMBEDDERS[name]`."""
        if name not in RECIPES:
            raise RandEnsembleError(f"unknown recipe {name!r}; one of {sorted(RECIPES)}")
        return cls(**{**RECIPES[name], **overrides})

    def augment_options(self) -> dict:
        """Keyword arguments of `augment.augment`."""
        return {"crop_scale": (self.crop_scale_min, 1.0), "flip": self.flip,
                "colour_jitter": self.colour_jitter}


# Named recipes per dataset: LearnConfig field values (the rest at their defaults), and the
# architecture flags (`model.config.from_flags`: a family and fields) each was measured with
# (RECIPE_EMBEDDERS; `train --recipe` and the study use them unless flags say otherwise).
RECIPES = {
    # The renders (README, "Learning from the weak labels"): the field defaults, the blog net.
    "renders": {},
    # Fashion-MNIST (28 x 28 greyscale photos; README "Real data: Fashion-MNIST", measured on
    # the full 60,000 / 10,000 splits). The blog net with biases on 32 x 32 x 1 (padded),
    # weak+augment with pair_fraction 1: every positive is a weak pair, each training image and
    # one of its 3 nearest training images under the half-whitened PCA of HOG descriptors
    # (`weak-labels --pixels hog --top-k 3`, RECIPE_PAIRS; 143,572 pairs, precision 0.873,
    # measured and never used), both sides augmented; crops keep 50-100% of the area (clothes
    # fill the frame), flips on; AdamW 3e-3 and NT-Xent at T = 0.1 (1e-3 / 0.2, the renders'
    # values, left the oracle at 0.82 P@1; these reach 0.896 at 3,000 steps and 0.908 at 6,000).
    # EIGHT members trained in one jitted step and scored as an ensemble (summed cosines): one
    # member 0.845, 8 reach 0.858 [0.851, 0.864] (2 seeds, 0.858 each; raw pixels 0.815, PCA
    # pixels 0.835, HOG itself 0.856); 3,000 steps of 8 members take 10-10.5 minutes on 2 cores
    # plus 43 s of mining. Earlier pair sources, half of the positives: HOG rank-1 0.847, PCA
    # pixels 0.837, a random 8-member ensemble 0.828. pair_fraction, top_k, the crop range and
    # the optimiser are what scripts/select_recipe.py picks WITHOUT labels (held-out partner
    # recall@10 of one member per variant; README, "Choosing the recipe without labels").
    "fashion-mnist": dict(signal="weak+augment", members=8, steps=3000, batch_size=128,
                          lr=3e-3, temperature=0.1, crop_scale_min=0.5, flip=True,
                          pair_fraction=1.0),
}
RECIPE_EMBEDDERS = {"renders": {"family": "blog"},
                    "fashion-mnist": {"family": "blog", "in_channels": 1}}
# Where each recipe's weak pairs come from: the `rand-ensemble weak-labels` flags that mine them
# on the training images (each image's `top_k` nearest, default 1; no labels), given to
# `train --pairs`; None: the recipe needs no pairs. The study mines the same pairs in-process.
RECIPE_PAIRS = {"renders": None, "fashion-mnist": {"pixels": "hog", "top_k": 3}}
