"""`rand-ensemble train` as one call (`run_train`): plan the outputs, read the dataset (any
`--data SPEC`) and weak pairs, train M members without labels (`trainer.train_embedder`), write
the checkpoint (the one params layout, `model.checkpoint`) and the report as a unit."""
from __future__ import annotations

import os
import sys

from rand_ensemble import fileio
from rand_ensemble.data import sources
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory
from rand_ensemble.learn import trainer
from rand_ensemble.learn.config import LearnConfig
from rand_ensemble.model import checkpoint, devices
from rand_ensemble.model.config import from_flags


def state_path(out: str) -> str:
    """The training-state checkpoint beside OUT: m.npz -> m.state.npz."""
    base = out[:-4] if out.endswith(".npz") else out
    return base + ".state.npz"


def run_train(out: str, data: str | None = None, renders: str | None = None,
              recipe: LearnConfig = LearnConfig(), pairs: str | None = None,
              resume: bool = False, json: str | None = None, failures: str | None = None,
              quiet: bool = False, embedder: dict | None = None) -> dict:
    """Train `recipe.members` embedders on a dataset -> the training report.

    Args:
      out: the trained params (.npz, `model.checkpoint` layout); the resumable training state
        goes to `state_path(out)`, written every `checkpoint_every` steps.
      data: a data spec (`data.sources.SPEC_HELP`); or `renders`: a render folder (alias of
        renders:DIR). Labels, if any, are used only by the oracle and the evaluation lines.
      recipe: the recipe. pairs: the weak-label job's output folder (weak signals).
      resume: continue from the state file. json: write the report. failures: write the
        data's failure rows (.jsonl). quiet: no log lines.
      embedder: the architecture trained, {"family": NAME, field: value, ...} as the
        architecture flags give it (`model.config.from_flags`; None: the blog net); its biases
        are `recipe.bias`.
    Returns:
      the report (history, sizes); its bytes depend only on the inputs and the recipe.
    """
    source = sources.source_of(data, renders)
    outputs = [out, state_path(out)] + [p for p in (json, failures) if p]
    fileio.plan_outputs(outputs, inputs=sources.input_paths(source) + ([pairs] if pairs else []))
    if pairs is not None and not os.path.isdir(pairs):
        raise RandEnsembleError(f"pairs folder not found: {pairs}")
    arch = from_flags(embedder, bias=recipe.bias)
    check_memory(recipe.members * arch.num_params * 4 * 4,   # params, grads, AdamW
                 f"--members {recipe.members} of {arch.widths}")
    pool = sources.load_dataset(source, **sources.embedder_input(arch))
    pair_rows = None if pairs is None else trainer.pairs_for(recipe, pairs, pool)
    log = None if quiet else print
    if log:
        extra = f", {len(pair_rows)} weak pairs" if pair_rows is not None else ""
        failed = f", {len(pool.failures)} failure row(s)" if pool.failures else ""
        log(f"{len(pool)} images from {pool.source}{failed}{extra}; signal "
            f"{recipe.signal}, {recipe.members} member(s), {recipe.steps} steps")
    params, arch, report = trainer.train_embedder(
        pool, recipe, pair_rows, checkpoint=state_path(out), resume=resume,
        progress=not quiet and sys.stderr.isatty(), log=log, arch=arch)
    seconds = report.pop("seconds", None)          # timings stay out of the reproducible files
    report["num_failures"] = len(pool.failures)
    report.update(devices.describe())
    training = {"learn": recipe.to_dict(), "num_images": report["num_images"],
                "num_pairs": report["num_pairs"],
                "final": report["history"][-1] if report["history"] else None}
    writers = {out: checkpoint.params_writer(params, arch, training)}
    if json:
        writers[json] = fileio.json_writer(report)
    if failures:
        writers[failures] = fileio.jsonl_writer(pool.failures)
    fileio.write_outputs(writers)
    if log:
        log(f"trained {recipe.members} member(s) in {seconds or 0.0:.1f} s; "
            f"checkpoint: {out}")
    return report
