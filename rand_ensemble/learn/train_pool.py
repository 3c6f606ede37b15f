"""`rand-ensemble train` as one call (`run_train`): plan the outputs, read the dataset (any
`--data SPEC`) and weak pairs, train M members without labels (`trainer.train_embedder`), write
the checkpoint (the one params layout, `model.checkpoint`) and the report as a unit."""
from __future__ import annotations

import dataclasses
import os
import sys
import time

from rand_ensemble import fileio
from rand_ensemble.data import decode, sources
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory
from rand_ensemble.learn import auto, trainer
from rand_ensemble.learn.config import LearnConfig
from rand_ensemble.model import checkpoint, devices
from rand_ensemble.model.config import from_flags


def state_path(out: str) -> str:
    """The training-state checkpoint beside OUT: m.npz -> m.state.npz."""
    base = out[:-4] if out.endswith(".npz") else out
    return base + ".state.npz"


def run_train(out: str, data: str | None = None, renders: str | None = None,
              recipe: LearnConfig | None = None, overrides: dict | None = None,
              pairs: str | None = None, resume: bool = False, json: str | None = None,
              failures: str | None = None, quiet: bool = False,
              embedder: dict | None = None, keep_signal: bool = True,
              select_steps: int = auto.SCREEN_STEPS, timings: str | None = None,
              mirror: bool | None = None) -> dict:
    """Train M embedders on a dataset without labels -> the training report.

    Args:
      out: the trained params (.npz, `model.checkpoint` layout); the resumable training state
        goes to `state_path(out)`, written every `checkpoint_every` steps.
      data: a data spec (`data.sources.SPEC_HELP`); or `renders`: a render folder (alias of
        renders:DIR). Labels are dropped as the data is read (only the oracle keeps them).
      recipe: a fixed recipe (`--recipe NAME` and its flags); None: the recipe is chosen from
        the data without labels (`learn.auto`), `overrides` winning over it.
      overrides: LearnConfig fields the user fixed (with recipe None).
      pairs: the weak-label job's output folder (weak signals; then no pairs are mined).
      resume: continue from the state file (the choice is made again, the same way).
      json: write the report. failures: write the data's failure rows (.jsonl).
      quiet: no log lines.
      embedder: the architecture flags {"family": NAME, field: value, ...}
        (`model.config.from_flags`); with no recipe they override the input policy that
        `learn.auto.input_policy` takes from the images; biases follow the recipe's `bias`.
      keep_signal: with no recipe, keep the descriptor the pairs were mined with in the model
        as one more voter (`model.checkpoint.Model.signal`; `learn.auto.SIGNAL_WEIGHT`).
      select_steps: with no recipe, the steps of each variant screened while choosing.
      timings: write the wall seconds (reading, each stage of the choice, training, total) as
        JSON, apart from the reproducible report.
      mirror: mirror-average the model (`model.checkpoint.Model.mirror`); None: where the
        recipe was chosen from the data (no recipe) with flips, off with a named recipe.
    Returns:
      the report (history, sizes, and with no recipe what was chosen and why); its bytes
      depend only on the inputs and the settings.
    """
    start = time.perf_counter()
    source = sources.source_of(data, renders)
    outputs = [out, state_path(out)] + [p for p in (json, failures, timings) if p]
    fileio.plan_outputs(outputs, inputs=sources.input_paths(source) + ([pairs] if pairs else []))
    if pairs is not None and not os.path.isdir(pairs):
        raise RandEnsembleError(f"pairs folder not found: {pairs}")
    log = None if quiet else print
    progress = not quiet and sys.stderr.isatty()
    overrides = dict(overrides or {})
    if recipe is None:
        pool, arch, flags = auto_input(source, embedder, overrides)
        signal = overrides.get("signal")
    else:
        arch = from_flags(embedder, bias=recipe.bias)
        pool, flags, signal = _load(source, arch), None, recipe.signal
    _check_size(recipe, overrides, arch)
    seconds = {"read_seconds": time.perf_counter() - start}
    if signal != "oracle":                                   # nothing else may see labels
        pool = dataclasses.replace(pool, labels=None, class_names=None)
    choice = None
    if recipe is None:
        choice = _choose(pool, arch, overrides, pairs, progress, log, select_steps)
        recipe = choice.recipe
    pair_rows = (trainer.pairs_for(recipe, pairs, pool) if pairs is not None
                 else None if choice is None else choice.pairs)
    if log:
        extra = f", {len(pair_rows)} weak pairs" if pair_rows is not None else ""
        failed = f", {len(pool.failures)} failure row(s)" if pool.failures else ""
        log(f"{len(pool)} images from {pool.source}{failed}{extra}; signal "
            f"{recipe.signal}, {recipe.members} member(s), {recipe.steps} steps")
    params, arch, report = trainer.train_embedder(
        pool, recipe, pair_rows, checkpoint=state_path(out), resume=resume,
        progress=progress, log=log, arch=arch)
    seconds["train_seconds"] = report.pop("seconds")   # timings stay out of the report
    report["num_failures"] = len(pool.failures)
    report.update(devices.describe())
    training = {"learn": recipe.to_dict(), "num_images": report["num_images"],
                "num_pairs": report["num_pairs"],
                "final": report["history"][-1] if report["history"] else None}
    signal = None
    if mirror is None:
        mirror = choice is not None and choice.mirror
    report["mirror"] = bool(mirror)
    if choice is not None:
        report["chosen"] = training["chosen"] = {"input_policy": flags, **choice.record}
        signal = choice.signal if keep_signal else None
        report["signal_member"] = None if signal is None else {
            "kind": signal["kind"], "weight": signal["weight"]}
    writers = {out: checkpoint.params_writer(params, arch, training, signal, bool(mirror))}
    if json:
        writers[json] = fileio.json_writer(report)
    if failures:
        writers[failures] = fileio.jsonl_writer(pool.failures)
    if choice is not None:
        seconds["choose_seconds"] = {k: round(v, 3) for k, v in choice.seconds.items()}
    seconds["total_seconds"] = time.perf_counter() - start
    if timings:
        writers[timings] = fileio.json_writer(seconds)
    fileio.write_outputs(writers)
    if log:
        chose = "" if choice is None or not choice.seconds else "; choosing took " + ", ".join(
            f"{k} {v:.1f} s" for k, v in choice.seconds.items())
        log(f"trained {recipe.members} member(s) in {seconds['train_seconds']:.1f} s{chose}; "
            f"{seconds['total_seconds']:.1f} s in all; checkpoint: {out}")
    return report


def _load(source, arch):
    """The dataset fitted to a net's input."""
    return sources.load_dataset(source, **sources.embedder_input(arch))


def auto_input(source, embedder: dict | None = None, overrides: dict | None = None):
    """Read a parsed Source and take the net's input from its images (`auto.input_policy`),
    the architecture flags `embedder` winning, biases from `overrides` ("bias", default on):
    -> (the Dataset at that input, labels kept; its EmbedderConfig; the flags used)."""
    given, overrides = dict(embedder or {}), dict(overrides or {})
    try:
        native = sources.load(source, hw=given.get("input_hw"))
    except decode.SizesDiffer:                        # several sizes: the blog net's input
        native = sources.load(source, hw=auto.NET_SIDE)
    flags = given if "family" in given else {**auto.input_policy(native.images), **given}
    arch = from_flags(flags, bias=overrides.get("bias", LearnConfig.bias))
    images = decode.to_input(native.images, **sources.embedder_input(arch))
    return dataclasses.replace(native, images=images), arch, flags


def _choose(pool, arch, overrides, pairs, progress, log, select_steps):
    """auto.choose, or where the user fixed the signal (no weak pairs to mine) or gave the
    pairs, the recipe those leave: -> auto.Choice."""
    if overrides.get("signal") in ("augment", "remine", "oracle"):
        config = LearnConfig.recipe("renders", **overrides)
        return auto.Choice(config, None, {"signal": None, "reason": f"--signal "
                                          f"{config.signal} given: the renders recipe"}, {})
    if pairs is not None:
        return auto.with_pairs(pool, arch, overrides,
                               overrides.get("seed", LearnConfig.seed))
    if log:
        log(f"choosing the recipe without labels on {len(pool)} images (no --recipe given)")
    return auto.choose(pool, arch, overrides, overrides.get("seed", LearnConfig.seed),
                       progress, log, select_steps)


def _check_size(recipe, overrides, arch):
    """Refuse a run whose params, gradients and AdamW state would not fit in memory."""
    members = (recipe.members if recipe is not None
               else overrides.get("members", auto.SIGNAL_MEMBERS))
    check_memory(members * arch.num_params * 4 * 4,                  # params, grads, AdamW
                 f"--members {members} of {arch.widths}")
