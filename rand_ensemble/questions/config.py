"""Question tower configs: the one source of truth for every tower hyperparameter.

Plain dataclasses, importable without JAX. Each field's metadata carries its command-line help
and value check, and `rand-ensemble questions train` builds its flags from these fields
(`cli.config_flags`), so nothing is copied by hand.
"""
from __future__ import annotations

import dataclasses

from rand_ensemble.options import option


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """Static hyperparameters of one tower (saved as the checkpoint's config JSON).

    margin 0.5 (not the course's 0.25): with the decision threshold fixed at 0.7, a 0.25
    margin lets duplicates settle just around 0.7; 0.5 pushes them near 0.95 while unrelated
    questions stay near 0.3 (see the README, "Question tower" for the measurements).
    """
    vocab_size: int = option(0, "vocabulary size V (set from the training vocabulary)")
    d_model: int = option(128, "embedding and LSTM width", "positive_int")
    max_len: int = option(64, "tokens kept per question (longer ones are truncated)",
                          "positive_int")
    margin: float = option(0.5, "triplet loss margin", "margin")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training defaults: sized so ~6,000 pairs train to a useful tower in minutes on 2 cores."""
    steps: int = option(1000, "Adam steps", "steps")
    batch_size: int = option(64, "duplicate pairs per step; the other pairs are the in-batch "
                                 "negatives", "positive_int")
    lr: float = option(0.01, "Adam learning rate", "learning_rate")
    seed: int = option(0, "init, split and batch order", "seed")
    valid_fraction: float = option(0.1, "pairs held out for validation and selection",
                                   "valid_fraction")
    eval_every: int = option(100, "steps between validation checks", "positive_int")
    min_count: int = option(1, "keep words seen at least this often in training",
                            "positive_int")
    threshold: float = option(0.7, "duplicate if cosine > threshold; picks the best validation "
                                   "snapshot", "threshold")
