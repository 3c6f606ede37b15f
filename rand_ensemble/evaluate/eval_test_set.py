"""The 1-of-10 protocol behind `eval` and `demo`: one call each (`run_eval`, `run_demo`) plans
the outputs, fits the config to the images, checks the memory, inits (or loads) an ensemble,
embeds, reports, writes every output as a unit and prints the table.
"""
from __future__ import annotations

import math
import os
import time

import jax
import numpy as np

from rand_ensemble import fileio
from rand_ensemble.data import decode, test_sets
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.evaluate import baselines, one_of_ten
from rand_ensemble.evaluate import report as tables
from rand_ensemble.limits import check_memory
from rand_ensemble.model import checkpoint, devices, ensemble
from rand_ensemble.model.config import from_flags

PLOTS = ("accuracy_vs_size.png", "collage.png")


def run_eval(test_set: str, models: int = 10, seed: int = 0, params: str | None = None,
             json: str | None = None, save_params: str | None = None,
             save_embeddings: str | None = None, plots: str | None = None,
             batch_size: int | None = None, bootstrap: int = 2000,
             timings: str | None = None, embedder: dict | None = None) -> dict:
    """`rand-ensemble eval`: M random nets (or a params file) on a test set -> the report.

    Args:
      test_set: .npy / .npy.gz (N, 11, H, W, 3) float in [0, 1] or uint8.
      models, seed: a fresh ensemble of M members (ignored with `params`).
      params: a params file (`save_params`, a trained checkpoint) instead of a fresh init.
      embedder: the fresh members' architecture, {"family": NAME, field: value, ...} as the
        architecture flags give it (`model.config.from_flags`, input_hw the test set's);
        None: the blog net (mean-pooled at sides other than 32).
      json, save_params, save_embeddings, plots, timings: optional outputs (a plots folder).
      batch_size, bootstrap: images per jitted chunk, bootstrap resamples.
    Returns:
      the report (also `json`); every output is checked before any work and written as a unit.
    """
    outputs = [json, timings, save_params, save_embeddings]
    fileio.plan_outputs([p for p in outputs if p is not None] + plot_paths(plots),
                        inputs=[test_set, params])
    images = test_sets.load_test_set(test_set)
    if params is not None and embedder:
        raise RandEnsembleError("architecture flags go with --models; the params file decides "
                                "the architecture")
    model = (checkpoint.Model(None, None) if params is None
             else checkpoint.load_model(params))
    result = evaluate_test_set(images, models, seed, params=model.params, config=model.config,
                               batch_size=batch_size, num_resamples=bootstrap,
                               embedder=embedder, signal=model.signal, mirror=model.mirror)
    report = result["report"]
    report["test_set"] = os.path.abspath(test_set)
    writers = eval_writers(result, images, save_params, save_embeddings, plots)
    if json is not None:
        writers[json] = fileio.json_writer(report)
    if timings is not None:
        writers[timings] = fileio.json_writer(result["timings"])
    fileio.write_outputs(writers)
    tables.print_eval(report, result["timings"], source=test_set, params=params)
    if json is not None:
        print(f"report: {json}")
    return report


def run_demo(examples: int = 100, models: int = 10, seed: int = 0, out: str = "demo-out",
             cache_dir: str | None = None, allow_long: bool = False) -> dict:
    """`rand-ensemble demo`: render (or reuse) a test set, evaluate M random nets, write
    report.json, timings.json and the plots into `out` -> the report."""
    start = time.perf_counter()
    report_path, timings_path = (os.path.join(out, n) for n in ("report.json", "timings.json"))
    fileio.check_output_dir(out, "--out folder")
    fileio.plan_outputs([report_path, timings_path] + plot_paths(out))
    check_eval_memory((examples, 11, 32, 32), ensemble.DEFAULT_CONFIG, models, 128, 2000)
    path, images = test_sets.cached_test_set(examples, seed, cache_dir=cache_dir,
                                             allow_long=allow_long)
    result = evaluate_test_set(images, models, seed)
    report = result["report"]
    report["test_set"] = path
    writers = eval_writers(result, images, plots=out)
    result["timings"]["total_seconds"] = time.perf_counter() - start
    writers[report_path] = fileio.json_writer(report)
    writers[timings_path] = fileio.json_writer(result["timings"])
    fileio.write_outputs(writers)
    tables.print_eval(report, result["timings"], source=path)
    print(f"report: {report_path} (timings: {timings_path})")
    print(f"demo finished in {time.perf_counter() - start:.1f} s. The blog's own test set: "
          "rand-ensemble eval --test-set matpalm_test_set_array.npy.gz --models 10 (see README)")
    return report


def plot_paths(folder: str | None) -> list[str]:
    """The plot files written into `folder` (none without one); the folder is checked."""
    if folder is None:
        return []
    fileio.check_output_dir(folder, "--plots folder")
    return [os.path.join(folder, name) for name in PLOTS]


def eval_writers(result: dict, images, save_params=None, save_embeddings=None,
                 plots=None) -> dict:
    """{path: writer} for the optional outputs of an evaluation (written later, as a unit)."""
    writers = {}
    if save_params is not None:
        writers[save_params] = checkpoint.params_writer(result["params"], result["config"])
    if save_embeddings is not None:
        writers[save_embeddings] = fileio.npy_writer(result["embeddings"].astype("float32"))
    if plots is not None:
        from rand_ensemble.evaluate import plots as plotting  # matplotlib (0.6 s): when plotting
        report = result["report"]
        size_plot, collage = plot_paths(plots)
        writers[size_plot] = lambda tmp: plotting.accuracy_vs_size(
            result["curve"], report["per_model_accuracy"], one_of_ten.CHANCE, tmp)
        writers[collage] = lambda tmp: plotting.collage(images, report["ensemble_picks"], tmp)
        report["plots"] = [size_plot, collage]
    return writers


def evaluate_test_set(images, num_models, seed, params=None, config=None, batch_size=None,
                      num_resamples=2000, embedder=None, signal=None,
                      mirror: bool = False) -> dict:
    """Init (or take) an ensemble and embed the (N, 11, H, W, 3) images; writes nothing.

    Fresh members are of `embedder`'s architecture (`fit_config`); a greyscale one
    (in_channels=1) sees the images' luma. `signal`: a trained model's signal member
    (`model.checkpoint.Model.signal`), scored with the members (`one_of_ten.evaluate`).
    `mirror`: the model's rows are mirror-averaged (`model.checkpoint.Model.mirror`).

    The sizes involved are checked against available memory before anything is allocated.
    Returns:
      {"report": reproducible dict, "timings": seconds (not reproducible), "embeddings":
       (M, N, 11, E) float32, "params", "config", "curve": accuracy_vs_size}.
    """
    config = fit_config(config, images.shape, embedder)
    m = num_models if params is None else ensemble.num_models(params)
    check_eval_memory(images.shape, config, m, batch_size or 128, num_resamples)
    if params is None:
        params = ensemble.init_ensemble(jax.random.PRNGKey(seed), num_models, config)
    start = time.perf_counter()
    total = images.shape[0] * images.shape[1]
    members, signal_rows = baselines.model_embedders(
        checkpoint.Model(params, config, signal, mirror),
        None if batch_size is None else min(batch_size, total))
    inputs = to_channels(images, config.in_channels)
    emb = members(inputs)                                            # (M, N, 11, E)
    extra = {}
    if signal is not None:
        flat = ensemble.as_uint8_images(inputs.reshape((-1,) + inputs.shape[2:]))
        rows = signal_rows(flat)                                     # (N * 11, D)
        extra = {"signal": rows.reshape(inputs.shape[:2] + rows.shape[1:]),
                 "signal_weight": signal["weight"]}
    seconds = time.perf_counter() - start
    report = one_of_ten.evaluate(emb, num_resamples=num_resamples, seed=seed, **extra)
    if signal is not None:
        report["signal"] = {"kind": signal["kind"], "weight": signal["weight"]}
    if mirror:
        report["mirror"] = True
    report.update(seed=int(seed), config=config.to_dict(),
                  image_shape=list(images.shape[2:]), image_dtype=str(images.dtype),
                  **devices.describe())
    curve = one_of_ten.accuracy_vs_size(one_of_ten.similarities(emb), seed=seed)
    report["accuracy_vs_size"] = {str(k): v[0] for k, v in curve.items()}
    return {"report": report, "timings": {"embed_seconds": seconds}, "embeddings": emb,
            "params": params, "config": config, "curve": curve}


def fit_config(config, shape, embedder=None):
    """The embedder config for (N, 11, H, W, 3) images: the blog's for 32x32, mean-pooled
    default widths for other square sizes, or the architecture `embedder` names at side H; a
    given config must name the images' size."""
    h, w = shape[2:4]
    if config is None:
        if h != w:
            raise RandEnsembleError(f"test set images are {h}x{w}; square images are needed")
        try:
            if embedder:
                return from_flags(embedder, input_hw=h)
            return ensemble.DEFAULT_CONFIG if h == 32 else ensemble.EmbedderConfig(
                input_hw=h, pool="mean")
        except RandEnsembleError as e:
            raise RandEnsembleError(f"test set images are {h}x{w}: {e}") from None
    checkpoint.check_image_size(config.input_hw, h, w, "the test set's images")
    return config


def to_channels(images, channels):
    """(..., H, W, 3) test-set images -> (..., H, W, channels): uint8 by `decode.
    convert_channels`, float in [0, 1] by the same ITU-R 601 luma weights."""
    if images.shape[-1] == channels:
        return images
    if images.dtype == np.uint8:
        return decode.convert_channels(images, channels)
    return images @ np.asarray([0.299, 0.587, 0.114], images.dtype)[:, None]


def check_eval_memory(shape, config, num_models, batch_size, num_resamples):
    """Refuse, before allocating, an evaluation that cannot fit in memory (one-line error)."""
    n, k, h, w = (int(v) for v in shape[:4])
    m, e = int(num_models), config.embedding_dim
    per_model = sum(math.prod(shape) for _, shape, _, _ in config.layers())
    needed = (m * n * k * e * 4 * 2               # embeddings, and their float32 copy
              + m * n * k * 4 * 3                 # similarities, ranks, hits
              + int(num_resamples) * n * 16       # bootstrap indices and draws
              + m * per_model * 4 * 2             # params (and the init's temporaries)
              + min(batch_size, n * k) * h * w * 4 * 64)   # one chunk through the convs
    check_memory(needed, f"evaluating {m} models on {n} examples of {h}x{w} with "
                         f"{num_resamples} bootstrap resamples and batches of {batch_size}")
