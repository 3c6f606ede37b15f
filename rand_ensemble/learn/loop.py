"""The one training loop: an optax optimizer, a jitted step, an eval hook, the best snapshot,
atomic checkpoints every K steps and exact resume.

Used by the question tower (`questions.trainer.train_tower`) and the image trainer. The loop
never mentions a model axis: a caller that trains M members at once passes a `step_fn` that
is batched over params, optimizer states and batches (`model.ensemble.over_members`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterator

import jax
import numpy as np
import optax
from tqdm import tqdm

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model.devices import to_host

CHECKPOINT_FORMAT = "rand_ensemble.learn.loop/1"


def update_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """THE step builder: (params, opt_state, *batch) -> (params, opt_state, loss) for ONE model,
    not jitted (callers jit it, or batch it over members with `ensemble.over_members`).

    loss_fn(params, *batch) -> scalar; value_and_grad, then `optimizer`'s update.
    """
    def step(params, opt_state, *batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """Jitted `update_step`: (params, opt_state, *batch) -> (params, opt_state, loss)."""
    return jax.jit(update_step(loss_fn, optimizer))


@dataclasses.dataclass
class Checkpointing:
    """Where and how often `fit` saves its state, and whether it resumes from it.

    path: one .npz file (params, optimizer state, best snapshot, history), written atomically.
    every: steps between saves (the final step is always saved).
    resume: continue from `path` when it exists (same seed and data: same final params).
    meta: JSON-ready dict stored in the checkpoint (e.g. the architecture and recipe); on
      resume it must equal the stored one, so a checkpoint of another run is refused.
    """
    path: str
    every: int = 100
    resume: bool = False
    meta: dict = dataclasses.field(default_factory=dict)


def fit(loss_fn: Callable | None, params: Any, batches: Iterator[tuple], steps: int,
        optimizer: optax.GradientTransformation | float | None = 1e-3, *,
        step_fn: Callable | None = None, opt_state: Any = None, valid_batches: tuple = (),
        eval_every: int = 100,
        score_fn: Callable | None = None, select: Callable | None = None,
        checkpoint: Checkpointing | None = None, progress: bool = True,
        log: Callable | None = print) -> tuple[Any, list]:
    """Run `steps` optimizer steps on batches from `batches`; -> (params, history).

    Args:
      loss_fn: loss_fn(params, *batch) -> scalar; the step is `make_step(loss_fn, optimizer)`.
      params: the initial params (any pytree; a leading model axis is fine with `step_fn`).
      batches: iterator of batch tuples; batch i must depend only on i and the seed, so a
        resumed run skips the batches already used and sees the same data.
      steps: total optimizer steps >= 1 (including those of a resumed checkpoint).
      optimizer: an optax transformation, or a float learning rate for Adam (None with a
        `step_fn` and its `opt_state`).
      step_fn: a ready (params, opt_state, *batch) -> (params, opt_state, loss) step, e.g.
        `ensemble.over_members(update_step(...))` (loss is then (M,) and its mean is logged).
      opt_state: the starting optimizer state of `step_fn` (default: optimizer.init(params)).
      valid_batches: batch tuples whose mean loss is logged as valid_loss (with loss_fn).
      eval_every: steps between log rows (the last step always logs).
      score_fn: score_fn(params) -> dict of metrics added to each log row; it may raise
        RandEnsembleError to stop training (e.g. on embedding collapse).
      select: select(row) -> comparable, higher is better; the returned params are then the
        best logged snapshot (earliest on ties), else the last.
      checkpoint: save every K steps and resume (see Checkpointing).
      progress: show a tqdm bar.
      log: where each row is printed (None: silent).
    Returns:
      (params, history): history is the list of logged rows, each {"step": i, "train_loss":
      ..., "valid_loss"?: ..., **score_fn(params)}.
    """

    if isinstance(steps, bool) or int(steps) < 1:
        raise RandEnsembleError(f"steps must be >= 1, got {steps}")
    if isinstance(optimizer, (int, float)):
        optimizer = optax.adam(float(optimizer))
    if step_fn is None:
        step_fn = make_step(loss_fn, optimizer)
    state = _start(params, optimizer.init(params) if opt_state is None else opt_state,
                   checkpoint, batches, log)
    eval_loss = jax.jit(loss_fn) if valid_batches else None
    # recent: the losses since the last log row (saved with the state, so a run resumed inside
    # a log window logs the same mean as an uninterrupted one)
    params, opt_state, recent = state["params"], state["opt_state"], list(state["recent"])
    bar = tqdm(range(state["step"] + 1, steps + 1), disable=not progress, desc="train",
               unit="step", dynamic_ncols=True, initial=state["step"], total=steps)
    for i in bar:
        params, opt_state, loss = step_fn(params, opt_state, *next(batches))
        recent.append(loss)
        if i % eval_every == 0 or i == steps:
            row = _log_row(i, params, recent, eval_loss, valid_batches, score_fn)
            recent = []
            if select is not None and (state["best_score"] is None
                                       or select(row) > state["best_score"]):
                state["best"], state["best_score"] = params, select(row)
            state["history"].append(row)
            _show_row(bar, row, progress, log)
        if checkpoint is not None and (i % checkpoint.every == 0 or i == steps):
            state.update(params=params, opt_state=opt_state, step=i, recent=recent)
            _save_state(checkpoint, state)
    return (params if select is None else state["best"]), state["history"]


def _start(params, opt_state, checkpoint, batches, log) -> dict:
    """The loop's state at step 0, or restored from the checkpoint (its batches skipped)."""
    state = {"params": params, "opt_state": opt_state, "best": params, "best_score": None,
             "history": [], "step": 0, "recent": []}
    if checkpoint is not None and checkpoint.resume and os.path.exists(checkpoint.path):
        state = _load_state(checkpoint, state)
        for _ in range(state["step"]):                            # the batches already used
            next(batches)
        if log is not None:
            log(f"resumed from {checkpoint.path} at step {state['step']}")
    return state


def _log_row(i, params, recent, eval_loss, valid_batches, score_fn):
    """One history row: mean train loss since the last row, valid loss, score_fn's metrics."""
    row = {"step": i, "train_loss": float(np.mean(to_host(recent)))}
    if valid_batches:
        row["valid_loss"] = float(np.mean([eval_loss(params, *b) for b in valid_batches]))
    if score_fn is not None:
        row.update(score_fn(params))
    return row


def _show_row(bar, row, progress, log):
    """A log row on the progress bar and as one `key=value` line."""
    bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if isinstance(v, float)},
                    refresh=False)
    if log is not None:
        line = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items())
        bar.write(line) if progress else log(line)


def _save_state(checkpoint, state):
    """params, optimizer state (as its ordered leaves) and the best snapshot, atomically, from
    host memory (arrays spread over devices or processes are gathered first)."""
    leaves = to_host(jax.tree_util.tree_leaves(state["opt_state"]))
    tree = {"params": to_host(state["params"]),
            "best": to_host(state["best"]),
            "opt_state": {f"{k:05d}": np.asarray(v) for k, v in enumerate(leaves)}}
    recent = [np.asarray(v) for v in to_host(state["recent"])]
    meta = {"format": CHECKPOINT_FORMAT, "step": state["step"], "history": state["history"],
            "best_score": state["best_score"], "run": checkpoint.meta,
            "recent_losses": [v.tolist() for v in recent],
            "recent_dtype": str(recent[0].dtype) if recent else None}
    fileio.save_tree(checkpoint.path, tree, meta)


def _load_state(checkpoint, fresh):
    """The saved state, checked against a fresh one (names, shapes, and the run's meta)."""
    leaves, treedef = jax.tree_util.tree_flatten(fresh["opt_state"])
    like = {"params": fresh["params"], "best": fresh["params"],
            "opt_state": {f"{k:05d}": np.asarray(v) for k, v in enumerate(leaves)}}
    tree, meta = fileio.load_tree(checkpoint.path, like)
    if not meta or meta.get("format") != CHECKPOINT_FORMAT:
        raise RandEnsembleError(f"{checkpoint.path} is not a training checkpoint")
    if meta.get("run") != _json_round_trip(checkpoint.meta):
        raise RandEnsembleError(f"{checkpoint.path} was written by a run with other settings; "
                                f"use another path or the same settings to resume")
    restored = [np.asarray(tree["opt_state"][f"{k:05d}"], np.asarray(v).dtype)
                for k, v in enumerate(leaves)]
    best_score = meta.get("best_score")
    return {"params": tree["params"], "best": tree["best"],
            "opt_state": jax.tree_util.tree_unflatten(treedef, restored),
            "best_score": tuple(best_score) if isinstance(best_score, list) else best_score,
            "history": meta["history"], "step": int(meta["step"]),
            "recent": _recent_losses(checkpoint.path, meta)}


def _recent_losses(path, meta) -> list:
    """The stored losses since the last log row, as the arrays the step returned."""
    losses, dtype = meta.get("recent_losses", []), meta.get("recent_dtype")
    try:
        return [np.asarray(v, dtype=np.dtype(dtype)) for v in losses] if losses else []
    except (TypeError, ValueError):
        raise RandEnsembleError(f"{path}: its stored recent losses are malformed") from None


def _json_round_trip(obj):
    """What `obj` reads back as from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))
