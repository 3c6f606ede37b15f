"""Training: optax Adam, a jitted step, a loop with periodic validation, and checkpoints
(params .npz with '/'-joined names + vocabulary + config JSON; loading never unpickles)."""
import json
import os

import jax
import numpy as np
import optax

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.fileio import save_json, save_npz

PARAMS_FILE, VOCAB_FILE, CONFIG_FILE = "params.npz", "vocab.txt", "config.json"


def flatten_params(params, prefix="", leaf=np.asarray):
    """Named dict tree -> {"tower/lstm/kernel": leaf(array), ...} (numpy arrays by default)."""
    flat = {}
    for name, value in params.items():
        if "/" in name:
            raise RandEnsembleError(f"parameter name {name!r} may not contain '/'")
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, key + "/", leaf))
        else:
            flat[key] = leaf(value)
    return flat


def unflatten_params(flat):
    """{"a/b/c": array} -> {"a": {"b": {"c": array}}}."""
    tree = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def make_step(loss_fn, optimizer):
    """Jitted (params, opt_state, *batch) -> (params, opt_state, loss) of loss_fn(params, *batch)
    under the optax `optimizer`."""

    @jax.jit
    def step(params, opt_state, *batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def fit(loss_fn, params, batches, steps, lr=1e-3, valid_batches=(), eval_every=100,
        score_fn=None, select=None, progress=True, log=print):
    """Adam on loss_fn(params, *batch) for `steps` batches from the iterator `batches`.

    Every `eval_every` steps (and at the end) logs the mean train loss, the mean loss over
    `valid_batches` (a list of batch tuples) and the metrics dict `score_fn(params)`. With
    `select(row) -> comparable` (higher is better) the returned params are the best logged
    snapshot (earliest on ties), else the last. -> (params, history).
    """
    from tqdm import tqdm  # only the training loop needs it; plain text bar works everywhere

    optimizer = optax.adam(lr)
    opt_state = optimizer.init(params)
    step = make_step(loss_fn, optimizer)
    eval_loss = jax.jit(loss_fn)
    history, recent, best, best_score = [], [], params, None
    bar = tqdm(range(1, steps + 1), disable=not progress, desc="train", unit="step",
               dynamic_ncols=True)
    for i in bar:
        params, opt_state, loss = step(params, opt_state, *next(batches))
        recent.append(loss)
        if i % eval_every and i != steps:
            continue
        row = {"step": i, "train_loss": float(np.mean(jax.device_get(recent)))}
        recent = []
        if valid_batches:
            row["valid_loss"] = float(np.mean([eval_loss(params, *b) for b in valid_batches]))
        if score_fn is not None:
            row.update(score_fn(params))
        if select is not None and (best_score is None or select(row) > best_score):
            best, best_score = params, select(row)
        history.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"}, refresh=False)
        if log is not None:
            line = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in row.items())
            bar.write(line) if progress else log(line)
    return (params if select is None else best), history


def save_checkpoint(directory, params, vocab, config):
    """Write params.npz, vocab.txt and config.json into `directory` (each atomically)."""
    os.makedirs(directory, exist_ok=True)
    save_npz(os.path.join(directory, PARAMS_FILE), flatten_params(jax.device_get(params)))
    vocab.save(os.path.join(directory, VOCAB_FILE))
    save_json(os.path.join(directory, CONFIG_FILE), config)


def load_config(directory):
    """The checkpoint's config dict."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isdir(directory):
        raise RandEnsembleError(f"checkpoint directory not found: {directory}")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise RandEnsembleError(f"not a checkpoint (no {CONFIG_FILE}): {directory}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RandEnsembleError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(config, dict):
        raise RandEnsembleError(f"{path}: expected a JSON object")
    return config


def load_params(path, expected):
    """Read a params .npz without pickle; names and shapes must match `expected` (a tree of
    arrays or ShapeDtypeStructs). Returns the named dict tree."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            flat = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise RandEnsembleError(f"checkpoint params not found: {path}") from None
    except ValueError as e:  # object arrays (pickles) and corrupt archives land here
        raise RandEnsembleError(f"{path}: unreadable params ({e})") from None
    want = flatten_params(expected, leaf=lambda v: tuple(v.shape))
    if set(flat) != set(want):
        missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
        raise RandEnsembleError(f"{path}: parameter names differ from the model "
                                f"(missing {missing}, unexpected {extra})")
    for k, shape in want.items():
        if flat[k].shape != shape:
            raise RandEnsembleError(f"{path}: {k} has shape {flat[k].shape}, model expects {shape}")
    return unflatten_params(flat)
