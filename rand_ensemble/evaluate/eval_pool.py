"""The retrieval protocol behind `rand-ensemble retrieval`: one call (`run_retrieval`) plans the
outputs, loads the members and the pool, embeds, scores (evaluate/retrieval.py), writes every
output as a unit and prints the table."""
from __future__ import annotations

import json as jsonlib
import os

import jax
import numpy as np

from rand_ensemble import fileio
from rand_ensemble.data import files
from rand_ensemble.data import renders as render_pools
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import report as tables
from rand_ensemble.evaluate import retrieval
from rand_ensemble.limits import check_memory
from rand_ensemble.model import checkpoint as checkpoints
from rand_ensemble.model import ensemble


def run_retrieval(renders: str | None = None, images: str | None = None,
                  labels: str | None = None, checkpoint: str | None = None,
                  models: int | None = None, seed: int = 0, json: str | None = None,
                  save_embeddings: str | None = None, plot: str | None = None,
                  failures: str | None = None, bootstrap: int = 2000) -> dict:
    """`rand-ensemble retrieval`: P@1, R-precision, MAP@R, Recall@K of random or trained members.

    Args:
      renders: a render folder; or `images` (a recursive glob) with a `labels` CSV.
      checkpoint: a params file; or `models`: a fresh random ensemble of M blog nets (`seed`).
      json, save_embeddings (float32 (M, N, E)), plot (PCA .png), failures (.jsonl): outputs.
      bootstrap: resamples for the 95% intervals (seeded by `seed`).
    Returns:
      the report (also `json`); its bytes depend only on the inputs and the seed.
    """
    if (images is None) != (labels is None):
        raise RandEnsembleError("--images and --labels go together (labels name the objects)")
    outputs = _plan([renders, images, labels, checkpoint], json=json, plot=plot,
                    save_embeddings=save_embeddings, failures=failures)
    params, config = _members(checkpoint, models, seed)
    if renders is not None:
        pool, failed = render_pools.load_pool(renders, hw=config.input_hw), []
    else:
        pool, failed = files.load_image_files(images, labels, config.input_hw)
    check_scorable(pool.object_ids, renders or images)
    m, n = ensemble.num_models(params), len(pool)
    check_memory(m * n * (config.embedding_dim * 4 + n * 8) + bootstrap * n * 16,
                 f"retrieval over {n} images with {m} members and --bootstrap {bootstrap}")
    report, emb = retrieval.evaluate_pool(params, config, pool, bootstrap, seed)
    report.update(renders=os.path.abspath(renders) if renders else None, images=images,
                  num_failures=len(failed), seed=seed, config=config.to_dict(),
                  source=os.path.abspath(checkpoint) if checkpoint else "random")
    fileio.write_outputs(_writers(report, emb, pool, failed, json, save_embeddings, plot,
                                  failures))
    tables.print_retrieval(report, renders or images)
    if failed:
        print(f"failures: {len(failed)} file(s) or label row(s) could not be used, e.g. "
              f"{failed[0]['error']}" + (f" (all in {failures})" if failures else ""))
    for path in outputs:
        print(f"wrote: {path}")
    return report


def check_scorable(labels, source) -> None:
    """A pool where no image shares its label with another has no query to score: a one-line
    error before any embedding (never a report of nulls)."""
    if len(labels) and not np.any(retrieval.same_label_counts(labels) > 0):
        raise RandEnsembleError(
            f"nothing to score in {source}: none of its {len(labels)} image(s) shares its "
            "object id or label with another, so no query has a match; retrieval needs "
            "objects with two or more images")


EXTENSIONS = {"json": ".json", "plot": ".png", "save_embeddings": ".npy", "failures": ""}


def _plan(inputs: list, **outputs) -> list[str]:
    """Every output path checked (extension, writable, not an input) before any work."""
    for name, path in outputs.items():
        if path is not None and not path.endswith(EXTENSIONS[name]):
            flag = "--" + name.replace("_", "-")
            raise RandEnsembleError(f"{flag} must be a {EXTENSIONS[name]} path, got {path!r}")
    planned = [p for p in outputs.values() if p is not None]
    fileio.plan_outputs(planned, inputs=[p for p in inputs if p])
    return planned


def _members(checkpoint, models, seed):
    """-> (params (M, ...), EmbedderConfig): a params file, or M fresh blog nets."""
    if checkpoint:
        return checkpoints.load_params(checkpoint)
    config = ensemble.DEFAULT_CONFIG
    return ensemble.init_ensemble(jax.random.PRNGKey(seed), models, config), config


def _writers(report, emb, pool, failed, json, save_embeddings, plot, failures) -> dict:
    """{path: writer} of the requested outputs (written together by the caller)."""
    writers = {}
    if save_embeddings:
        writers[save_embeddings] = fileio.npy_writer(emb.astype("float32"))
    if plot:
        from rand_ensemble.evaluate import plots  # matplotlib: only when plotting
        writers[plot] = lambda tmp: plots.embedding_pca(emb, pool.object_ids, tmp)
    if json:
        writers[json] = fileio.json_writer(report)
    if failures:
        writers[failures] = fileio.text_writer(
            "".join(jsonlib.dumps(f, sort_keys=True) + "\n" for f in failed))
    return writers
