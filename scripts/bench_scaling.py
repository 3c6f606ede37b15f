"""Scaling of the ensemble forward pass: time vs M and N, peak RSS while streaming a memmap,
and the blocked top-k neighbour search of the weak-label job.

    python scripts/bench_scaling.py --json bench_scaling.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import forward_flops, machine  # noqa: E402

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.evaluate import neighbours  # noqa: E402
from rand_ensemble.model import ensemble  # noqa: E402

# Runs in a fresh process so its peak RSS belongs to this one measurement only.
RSS_CHILD = r"""
import json, resource, sys, time
import jax, numpy as np
from rand_ensemble.model import ensemble
path, m = sys.argv[1], int(sys.argv[2])
params = ensemble.init_ensemble(jax.random.PRNGKey(0), m)
images = np.load(path, mmap_mode="r")                                 # (N, 32, 32, 3) uint8
start = time.perf_counter()
out = ensemble.embed(params, images)                                  # (M, N, E)
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KiB on Linux
print(json.dumps({"n": int(images.shape[0]), "models": m, "seconds": seconds,
                  "peak_rss_mb": peak_kb / 1024, "output_mb": out.nbytes / 2**20,
                  "finite": bool(np.isfinite(out).all())}))
"""


def best_of(fn, repeats):
    """Min seconds over `repeats` warm calls (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sweep(models_list, n_list, repeats):
    """[{models, n, seconds, us_per_image_model, gflops}] over the grid given."""
    rng = np.random.default_rng(0)
    flops_one = forward_flops(ensemble.DEFAULT_CONFIG)
    rows = []
    for m in models_list:
        params = ensemble.init_ensemble(jax.random.PRNGKey(m), m)
        for n in n_list:
            images = rng.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)
            s = best_of(lambda: ensemble.embed(params, images), repeats)
            rows.append({"models": m, "n": n, "seconds": s,
                         "us_per_image_model": s / (m * n) * 1e6,
                         "gflops": flops_one * m * n / s / 1e9})
            print(f"M={m:3d} N={n:6d}  {s:8.3f} s  {rows[-1]['us_per_image_model']:7.2f} "
                  f"us/(image*model)  {rows[-1]['gflops']:6.1f} GFLOP/s", flush=True)
    return rows


def write_memmap(path, n, chunk=10_000):
    """A (n, 32, 32, 3) uint8 .npy written in chunks (the parent never holds it whole)."""
    rng = np.random.default_rng(1)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        out[start:stop] = rng.integers(0, 256, (stop - start, 32, 32, 3), dtype=np.uint8)
    out.flush()
    del out


def peak_rss(n_list, models):
    """Peak RSS of a subprocess embedding a memmapped .npy of each size in n_list."""
    rows = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    with tempfile.TemporaryDirectory() as tmp:
        for n in n_list:
            path = os.path.join(tmp, f"images_{n}.npy")
            write_memmap(path, n)
            done = subprocess.run([sys.executable, "-c", RSS_CHILD, path, str(models)],
                                  env=env, check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            os.unlink(path)
            r = rows[-1]
            print(f"memmap N={n:7d} M={models}: {r['seconds']:7.1f} s, peak RSS "
                  f"{r['peak_rss_mb']:7.0f} MB (output array {r['output_mb']:.0f} MB)", flush=True)
    return rows


def top_k_times(n_list, models, k, block_size):
    """The exact top-k engine (`evaluate.neighbours.top_k`) over (N, M*E) unit rows."""
    rng = np.random.default_rng(2)
    rows = []
    for n in n_list:
        x = rng.normal(size=(n, models * ensemble.DEFAULT_CONFIG.embedding_dim))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # (N, M*E)
        start = time.perf_counter()
        neighbours.top_k(x, k, None, block_size)
        s = time.perf_counter() - start
        rows.append({"n": n, "dim": x.shape[1], "k": k, "block_size": block_size, "seconds": s})
        print(f"top-{k} N={n:7d} D={x.shape[1]}: {s:7.2f} s", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="1,4,16,64", help="M sweep (at N = --m-sweep-n)")
    p.add_argument("--m-sweep-n", type=int, default=1100)
    p.add_argument("--images", default="1000,4000,16000", help="N sweep (at M = --n-sweep-m)")
    p.add_argument("--n-sweep-m", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rss-images", default="10000,100000", help="memmap sizes for peak RSS")
    p.add_argument("--rss-models", type=int, default=16)
    p.add_argument("--topk-images", default="1000,10000,30000",
                   help="N for the blocked top-k (100000 takes minutes)")
    p.add_argument("--topk-models", type=int, default=10)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--json", default=None, help="write the results here (atomic)")
    p.add_argument("--quick", action="store_true", help="smoke run on small sizes")
    args = p.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    if args.quick:
        args.models, args.m_sweep_n, args.images, args.n_sweep_m = "1,4", 200, "200,800", 2
        args.repeats, args.rss_images, args.rss_models, args.topk_images = 1, "2000", 4, "2000"

    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, jax {info['jax']} ({info['backend']})")
    result = {"machine": info}

    def record(key, value):  # after every section, so a long run cut short keeps what it measured
        result[key] = value
        if args.json:
            fileio.save_json(args.json, result)

    record("m_sweep", sweep(ints(args.models), [args.m_sweep_n], args.repeats))
    record("n_sweep", sweep([args.n_sweep_m], ints(args.images), args.repeats))
    record("memmap_peak_rss", peak_rss(ints(args.rss_images), args.rss_models))
    record("top_k", top_k_times(ints(args.topk_images),
                                args.topk_models, args.k, args.block_size))
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
