"""The retrieval protocol behind `rand-ensemble retrieval`: one call (`run_retrieval`) plans the
outputs, loads the members and the dataset (any `--data SPEC`), embeds, scores
(evaluate/retrieval.py), writes every output as a unit and prints the table."""
from __future__ import annotations

import os

import jax
import numpy as np

from rand_ensemble import fileio
from rand_ensemble.data import sources
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import baselines, neighbours, retrieval
from rand_ensemble.evaluate import report as tables
from rand_ensemble.limits import check_memory
from rand_ensemble.model import checkpoint as checkpoints
from rand_ensemble.model import devices, ensemble
from rand_ensemble.model.config import from_flags


def run_retrieval(data: str | None = None, renders: str | None = None,
                  images: str | None = None, labels: str | None = None,
                  gallery: str | None = None, checkpoint: str | None = None,
                  models: int | None = None, seed: int = 0, json: str | None = None,
                  save_embeddings: str | None = None, plot: str | None = None,
                  failures: str | None = None, bootstrap: int = 2000,
                  embedder: dict | None = None, pixels: str | None = None) -> dict:
    """`rand-ensemble retrieval`: P@1, R-precision, MAP@R, Recall@K of random or trained members.

    Args:
      data: a data spec (`data.sources.SPEC_HELP`) with labels; or the aliases `renders` (a
        render folder) or `images` (a recursive glob) with a `labels` CSV.
      gallery: optional labelled spec (e.g. the train split) for k-NN classification of the
        data's rows (`_knn`).
      checkpoint: a params file; or `models`: a fresh random ensemble of M members (`seed`)
        of the architecture `embedder` names ({"family": NAME, field: value, ...} as the
        architecture flags give it, `model.config.from_flags`; None: the blog net); or
        `pixels`: the training-free baselines of `evaluate.baselines`, "raw" (cosine of the
        flattened pixels) or "pca" (half-whitened top-200 principal components, fitted on the
        gallery's images when given, else on the data's own; never on labels), one "member"
        of the images fitted to `embedder`'s input.
      json, save_embeddings (float32 (M, N, E), rows in the dataset's id order), plot (PCA
        .png), failures (.jsonl, the failure rows of data and gallery): outputs.
      bootstrap: resamples for the 95% intervals (seeded by `seed`).
    Returns:
      the report (also `json`); its bytes depend only on the inputs and the seed.
    """
    source = sources.source_of(data, renders, images, labels)
    gallery_source = None if gallery is None else sources.parse_spec(gallery)
    inputs = [checkpoint, *sources.input_paths(source)]
    if gallery_source is not None:
        inputs += sources.input_paths(gallery_source)
    outputs = _plan(inputs, json=json, plot=plot, save_embeddings=save_embeddings,
                    failures=failures)
    model = (checkpoints.Model(None, from_flags(embedder)) if pixels
             else _members(checkpoint, models, seed, embedder))
    params, config, signal = model.params, model.config, model.signal
    ds, gal = _load(source, gallery_source, config)
    failed = ds.failures + ([] if gal is None else gal.failures)
    m, n = 1 if pixels else ensemble.num_models(params), len(ds)
    width = int(np.prod(ds.images.shape[1:])) if pixels else config.embedding_dim
    check_memory(m * n * (width * 4 + n * 8) + bootstrap * n * 16,
                 f"retrieval over {n} images with {m} members and --bootstrap {bootstrap}")
    embed, rows = _embedding(pixels, model, ds if gal is None else gal)
    emb = np.asarray(embed(ds.images))
    report = retrieval.retrieval_metrics(emb, ds.labels, num_resamples=bootstrap, seed=seed,
                                         **({} if signal is None else {
                                             "signal": rows(ds.images),
                                             "signal_weight": signal["weight"]}))
    if signal is not None:
        report["signal"] = {"kind": signal["kind"], "weight": signal["weight"]}
    if model.mirror:
        report["mirror"] = True
    if gal is not None:
        report["gallery"] = _knn(embed, rows, signal, ds, emb, gal, bootstrap, seed)
    report.update(data=ds.source, split=ds.split, num_failures=len(failed), seed=seed,
                  config=config.to_dict(), **devices.describe(),
                  source=(f"pixels:{pixels}" if pixels else os.path.abspath(checkpoint)
                          if checkpoint else "random"))
    fileio.write_outputs(_writers(report, emb, ds, failed, json, save_embeddings, plot,
                                  failures))
    _print_summary(report, ds, gal, failed, failures, outputs)
    return report


def _load(source, gallery_source, config):
    """-> (the labelled dataset, the labelled gallery or None), fitted to the members' input;
    a pool with nothing to score is refused before any embedding."""
    fit = sources.embedder_input(config)
    ds = sources.load_dataset(source, require_labels=True, **fit)
    gal = None if gallery_source is None else sources.load_dataset(
        gallery_source, require_labels=True, **fit)
    check_scorable(ds.labels, source.spec)
    return ds, gal


def _embedding(pixels, model, fit_on):
    """The embedding functions: uint8 images (N, H, W, C) -> (M, N, E) of the members, or
    (1, N, D) of the pixel baseline `pixels` fitted on the dataset `fit_on`'s images; and the
    signal member's (N, D) rows, or None (`baselines.model_embedders`)."""
    if pixels:
        fitted = baselines.fit_baseline(pixels, fit_on.images, fit_on.source)

        def embed(images):                                                 # -> (1, N, D)
            return baselines.pixel_embedding(fitted, images)[None]
        return embed, None
    return baselines.model_embedders(model)


def _print_summary(report, ds, gal, failed, failures, outputs):
    """The table, the gallery's k-NN accuracies, the failures and the files written."""
    tables.print_retrieval(report, ds.source)
    if gal is not None:
        print(f"k-NN classification by the gallery {gal.source}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in report["gallery"].items() if k.endswith("_accuracy")))
    if failed:
        print(f"failures: {len(failed)} item(s), file(s) or label row(s) could not be used, "
              f"e.g. {failed[0]['error']}" + (f" (all in {failures})" if failures else ""))
    for path in outputs:
        print(f"wrote: {path}")


def _knn(embed, rows, signal, ds, emb, gal, bootstrap, seed) -> dict:
    """k-NN classification of the data's rows by the gallery's labels (`retrieval.knn_accuracy`:
    k = 1, and k = 200 weighted, with intervals). Labels are matched by name across the two
    datasets (their codes may differ)."""
    if not set(ds.label_names()) & set(gal.label_names()):
        raise RandEnsembleError(f"the gallery {gal.source} shares no label name with "
                                f"{ds.source} (labels are matched by name), so every query "
                                "would be misclassified")
    names = sorted(set(ds.label_names()) | set(gal.label_names()))
    code = {name: k for k, name in enumerate(names)}
    gallery_emb, query_emb = np.asarray(embed(gal.images)), np.asarray(emb)   # (M, G|N, E)
    if signal is not None:                            # the model's rows: members + signal
        gallery_emb = neighbours.model_rows(gallery_emb, rows(gal.images), signal["weight"])
        query_emb = neighbours.model_rows(query_emb, rows(ds.images), signal["weight"])
    gallery_labels = np.asarray([code[x] for x in gal.label_names()])
    query_labels = np.asarray([code[x] for x in ds.label_names()])
    out = retrieval.knn_accuracy(gallery_emb, gallery_labels, query_emb, query_labels,
                                 num_resamples=bootstrap, seed=seed)
    return {"data": gal.source, "split": gal.split, **out}


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


def _members(checkpoint, models, seed, embedder=None):
    """-> a `checkpoints.Model`: a params file's (`checkpoints.load_model`), or M fresh nets
    of `embedder` (no signal member, not mirror-averaged)."""
    if checkpoint:
        if embedder:
            raise RandEnsembleError("architecture flags go with --models; the checkpoint's "
                                    "file decides the architecture")
        return checkpoints.load_model(checkpoint)
    config = from_flags(embedder)
    check_memory(models * config.num_params * 4 * 2, f"--models {models} of {config.widths}")
    return checkpoints.Model(ensemble.init_ensemble(jax.random.PRNGKey(seed), models, config),
                             config)


def _writers(report, emb, ds, failed, json, save_embeddings, plot, failures) -> dict:
    """{path: writer} of the requested outputs (written together by the caller)."""
    writers = {}
    if save_embeddings:
        writers[save_embeddings] = fileio.npy_writer(emb.astype("float32"))
    if plot:
        from rand_ensemble.evaluate import plots  # matplotlib (0.6 s to import): only when plotting
        writers[plot] = lambda tmp: plots.embedding_pca(emb, ds.labels, tmp)
    if json:
        writers[json] = fileio.json_writer(report)
    if failures:
        writers[failures] = fileio.jsonl_writer(failed)
    return writers
