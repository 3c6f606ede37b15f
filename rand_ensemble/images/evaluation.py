"""The test-set evaluation behind `eval` and `demo`: fit the config to the images, check the
memory it needs, init (or take) an ensemble, embed, report, and print the table. Writes nothing.
"""
from __future__ import annotations

import math
import sys
import time

from rand_ensemble.errors import RandEnsembleError


def evaluate_test_set(images, num_models, seed, params=None, config=None, batch_size=None,
                      num_resamples=2000) -> dict:
    """Init (or take) an ensemble and embed the (N, 11, H, W, 3) images; writes nothing.

    The sizes involved are checked against available memory before anything is allocated.
    Returns:
      {"report": reproducible dict, "timings": seconds (not reproducible), "embeddings":
       (M, N, 11, E) float32, "params", "config", "curve": accuracy_vs_size}.
    """
    import jax

    from rand_ensemble import ensemble, metrics

    config = fit_config(config, images.shape)
    m = num_models if params is None else ensemble.num_models(params)
    check_eval_memory(images.shape, config, m, batch_size or 128, num_resamples)
    if params is None:
        params = ensemble.init_ensemble(jax.random.PRNGKey(seed), num_models, config)
    start = time.perf_counter()
    total = images.shape[0] * images.shape[1]
    kwargs = {} if batch_size is None else {"batch_size": min(batch_size, total)}
    emb = ensemble.embed(params, images, config, **kwargs)          # (M, N, 11, E)
    seconds = time.perf_counter() - start
    report = metrics.evaluate(emb, num_resamples=num_resamples, seed=seed)
    report.update(seed=int(seed), config=config.to_dict(),
                  image_shape=list(images.shape[2:]), image_dtype=str(images.dtype))
    curve = metrics.accuracy_vs_size(metrics.similarities(emb), seed=seed)
    report["accuracy_vs_size"] = {str(k): v[0] for k, v in curve.items()}
    return {"report": report, "timings": {"embed_seconds": seconds}, "embeddings": emb,
            "params": params, "config": config, "curve": curve}


def fit_config(config, shape):
    """The embedder config for (N, 11, H, W, 3) images: the blog's for 32x32, mean-pooled
    default widths for other square sizes; a given config must name the images' size."""
    from rand_ensemble import ensemble

    h, w = shape[2:4]
    if config is None:
        if h != w:
            raise RandEnsembleError(f"test set images are {h}x{w}; square images are needed")
        try:
            return ensemble.DEFAULT_CONFIG if h == 32 else ensemble.EmbedderConfig(
                input_hw=h, pool="mean")
        except RandEnsembleError as e:
            raise RandEnsembleError(f"test set images are {h}x{w}: {e}") from None
    if (h, w) != (config.input_hw, config.input_hw):
        raise RandEnsembleError(f"the params were made for {config.input_hw}x{config.input_hw} "
                                f"images, but the test set's are {h}x{w}")
    return config


def check_eval_memory(shape, config, num_models, batch_size, num_resamples):
    """Refuse, before allocating, an evaluation that cannot fit in memory (one-line error)."""
    from rand_ensemble.limits import check_memory

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


def print_report(report, timings, source, file=None):
    """The human-readable table of per-model and ensemble figures."""
    file = file or sys.stdout
    m, n = report["num_models"], report["num_examples"]
    h, w = report["image_shape"][:2]
    print(f"test set: {source} ({n} examples, {h}x{w}, {report['image_dtype']})", file=file)
    print(f"ensemble: {m} random nets, seed {report['seed']}, embedded in "
          f"{timings['embed_seconds']:.2f} s", file=file)
    print(f"{'model':>8} {'top-1':>7} {'top-3':>7} {'MRR':>7}", file=file)
    top3 = report["per_model_top_k_accuracy"]["3"]
    for i, (acc, t3, mrr) in enumerate(zip(report["per_model_accuracy"], top3,
                                           report["per_model_mrr"])):
        print(f"{i:>8} {acc:7.3f} {t3:7.3f} {mrr:7.3f}", file=file)
    lo, hi = report["mean_model_accuracy_interval"]
    print(f"single models: mean {report['mean_model_accuracy']:.3f}, "
          f"std {report['std_model_accuracy']:.3f} over {m} (95% CI of the mean "
          f"[{lo:.3f}, {hi:.3f}])", file=file)
    lo, hi = report["ensemble_accuracy_interval"]
    ens_top = report["ensemble_top_k_accuracy"]
    print(f"ensemble of {m}: {report['ensemble_accuracy']:.3f} (95% CI [{lo:.3f}, {hi:.3f}]), "
          f"top-3 {ens_top['3']:.3f}, MRR {report['ensemble_mrr']:.3f}", file=file)
    print(f"chance: {report['chance']:.3f}", file=file)
    for path in report.get("plots", []):
        print(f"plot: {path}", file=file)
