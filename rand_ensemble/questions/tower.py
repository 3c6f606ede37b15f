"""The question tower: Serial[Embedding LSTM Mean Normalize], shared by both questions of a pair
(a Parallel of ONE tower object), its training loss, M random towers, and its checkpoint.

A checkpoint is a folder: params.npz (the project's one codec, `fileio.save_tree`), vocab.txt
and config.json (the TowerConfig fields plus what the trainer adds).
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp

from rand_ensemble.model import ensemble
from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.learn.losses import triplet_loss
from rand_ensemble.questions import layers, text
from rand_ensemble.questions.config import TowerConfig

PARAMS_FILE, VOCAB_FILE, CONFIG_FILE = "params.npz", "vocab.txt", "config.json"
MAX_SIZE = 1 << 24            # largest vocabulary, width or length a stored config may name
MAX_CONFIG_BYTES = 1 << 20    # config.json is a few hundred bytes; more is not a checkpoint


def question_tower(cfg: TowerConfig) -> layers.Serial:
    """One tower: (B, T) ids -> (B, D) unit vectors."""
    return layers.Serial(layers.Embedding(cfg.vocab_size, cfg.d_model), layers.LSTM(cfg.d_model),
                         layers.Mean(), layers.Normalize(), name="tower")


def siamese(cfg: TowerConfig) -> layers.Parallel:
    """Both questions through ONE tower: ((B, T1), (B, T2)) -> ((B, D), (B, D))."""
    tower = question_tower(cfg)
    return layers.Parallel(tower, tower, name="siamese")


@functools.partial(jax.jit, static_argnums=1)
def init_params(key: jax.Array, cfg: TowerConfig) -> dict:
    """Params of the Siamese model: {"tower": {"embedding": {"table": (V, D)}, "lstm": {...}}}."""
    return siamese(cfg).init(key, ((-1, 1), (-1, 1)))[1]


def params_shapes(cfg: TowerConfig) -> dict:
    """The params tree as ShapeDtypeStructs (no compute); used to check checkpoints."""
    return jax.eval_shape(lambda k: init_params(k, cfg), jax.random.key(0))


def pair_loss(cfg: TowerConfig):
    """loss(params, q1 (B, T1), q2 (B, T2)) -> scalar triplet loss of the Siamese model."""
    model = siamese(cfg)

    def loss(params, q1, q2):
        v1, v2 = model.apply(params, (q1, q2))  # (B, D) each
        return triplet_loss(v1, v2, cfg.margin)

    return loss


def init_towers(key: jax.Array, num_models: int, cfg: TowerConfig) -> dict:
    """M independent random Siamese params (ensemble.init_members): every leaf gains a leading M."""
    return ensemble.init_members(init_params, key, num_models, cfg)


def embed_members(params: dict, ids: jax.Array, cfg: TowerConfig) -> jax.Array:
    """Embed with every member: params with leading M, (B, T) ids -> (M, B, D), unit rows."""
    tower = question_tower(cfg)
    return jax.vmap(lambda p: tower.apply(p["tower"], ids))(params)


def checkpoint_writers(directory: str, params: dict, vocab: text.Vocab, cfg: TowerConfig,
                       extra: dict | None = None) -> dict:
    """{path: writer} for params.npz, vocab.txt and config.json (written later, as a unit)."""
    return {os.path.join(directory, PARAMS_FILE): fileio.tree_writer(jax.device_get(params)),
            os.path.join(directory, VOCAB_FILE): vocab.writer(),
            os.path.join(directory, CONFIG_FILE): fileio.json_writer(
                {**dataclasses.asdict(cfg), **(extra or {})})}


def save(directory: str, params: dict, vocab: text.Vocab, cfg: TowerConfig,
         extra: dict | None = None) -> None:
    """Write params.npz, vocab.txt and config.json (TowerConfig fields + extra) into directory,
    all three or none."""
    fileio.write_outputs(checkpoint_writers(directory, params, vocab, cfg, extra))


def load(directory: str) -> tuple[dict, text.Vocab, TowerConfig]:
    """-> (params, vocab, cfg) from a checkpoint folder; names, shapes and values are checked."""
    config = _load_config(directory)
    fields = {f.name: f for f in dataclasses.fields(TowerConfig)}
    for name, value in config.items():
        if name in fields and not _valid(name, value):
            raise RandEnsembleError(f"{directory}: bad config: {name}={value!r}")
    cfg = TowerConfig(**{k: v for k, v in config.items() if k in fields})
    vocab = text.Vocab.load(os.path.join(directory, VOCAB_FILE))
    if len(vocab) != cfg.vocab_size:
        raise RandEnsembleError(f"{directory}: vocabulary has {len(vocab)} tokens, config says "
                                f"{cfg.vocab_size}")
    params, _ = fileio.load_tree(os.path.join(directory, PARAMS_FILE), params_shapes(cfg))
    return jax.tree.map(jnp.asarray, params), vocab, cfg


def _valid(name, value) -> bool:
    """A stored TowerConfig value: whole numbers >= 1 (vocab_size >= 2), a finite margin."""
    if name == "margin":
        return type(value) in (int, float) and 0.0 < value <= 2.0
    return type(value) is int and (2 if name == "vocab_size" else 1) <= value <= MAX_SIZE


def _load_config(directory):
    """The checkpoint's config dict."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isdir(directory):
        raise RandEnsembleError(f"checkpoint directory not found: {directory}")
    if not os.path.lexists(path):
        raise RandEnsembleError(f"not a checkpoint (no {CONFIG_FILE}): {directory}")
    fileio.check_input_file(path, "checkpoint config")
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RandEnsembleError(f"{path}: unreadable JSON ({fileio.first_line(e)})") from None
    return fileio.strict_json_object(text, f"{path}: unreadable JSON")
