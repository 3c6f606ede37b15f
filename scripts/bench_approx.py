"""Approximate search (`evaluate.approx`) vs the exact engine: recall@1/@10 and CPU seconds.

Synthetic unit vectors, D = 320: `clustered` (a mixture of Gaussians on the sphere: C centres,
noise `--spread` / sqrt(D) per coordinate) and `uniform`. Everything single-threaded in ONE
process (OMP/BLAS/XLA threads = 1), process CPU seconds. The exact engine's cost over all N
queries is EXTRAPOLATED from `--sample` queries against the full gallery (its cost is linear
in the queries); those queries' exact top-10 are the truth for recall. Each approximate kind
is built over all N rows (timed in full) and searched with the same sampled queries; its
search cost is extrapolated the same way. Peak RSS from psutil / getrusage.

    python scripts/bench_approx.py --quick
    python scripts/bench_approx.py --n 1000000 --data clustered uniform --kinds ivf_flat ivf ivf_pq
    python scripts/bench_approx.py --n 1000000 --data clustered --kinds ivf ivf_flat --nprobe 2 4 16
    python scripts/bench_approx.py --n 200000 --kinds hnsw --ef-search 64 256
"""
import argparse
import json
import os
import resource
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.evaluate import approx, neighbours  # noqa: E402
from scripts.bench_common import machine  # noqa: E402


def unit_rows(n, d, kind, seed, clusters, spread, chunk=100_000):
    """(N, D) float32 unit rows, generated in chunks (memory: the output + one chunk)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        if kind == "clustered":
            x = centres[rng.integers(0, clusters, len(x))] + spread / np.sqrt(d) * x
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss_mb():
    import psutil
    return psutil.Process().memory_info().rss / 2 ** 20


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(rows, kinds, sample, seed, overrides, sweeps):
    """One data set: exact on the sample, then every kind -> list of records."""
    n = len(rows)
    queries = approx.training_sample(n, sample, seed + 7)
    neighbours.top_k(rows[queries[:8]], 11, gallery=rows)               # compile once
    cpu = time.process_time()
    truth = approx.exact_sample(rows, queries, 10)
    exact_s = (time.process_time() - cpu) * n / len(queries)
    records = [{"kind": "exact", "cpu_s_total": round(exact_s, 1),
                "note": f"{len(queries)} queries timed, x {n / len(queries):.0f}"}]
    for kind in kinds:
        before = rss_mb()
        cpu = time.process_time()
        index = approx.build_index(rows, kind, overrides.get(kind), seed)
        build_s = time.process_time() - cpu
        held = rss_mb() - before
        knob = "ef_search" if kind == "hnsw" else "nprobe"
        for value in sweeps.get(knob) or [index.params[knob]]:
            index.params[knob] = value
            cpu = time.process_time()
            idx, _ = approx.search(index, rows[queries], 10, queries)
            search_s = (time.process_time() - cpu) * n / len(queries)
            total = build_s + search_s
            records.append({"kind": kind, "params": dict(index.params),
                            "recall@1": approx.recall_at(idx, truth, 1),
                            "recall@10": approx.recall_at(idx, truth, 10),
                            "build_cpu_s": round(build_s, 1),
                            "search_cpu_s_total": round(search_s, 1),
                            "cpu_s_total": round(total, 1),
                            "exact_over_approx": round(exact_s / total, 1),
                            "index_rss_mb": round(held, 1), "rss_mb": round(rss_mb(), 1),
                            "peak_rss_mb": round(peak_mb(), 1)})
            print(json.dumps(records[-1]), flush=True)
        del index
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=320)
    p.add_argument("--data", nargs="+", default=["clustered", "uniform"])
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--spread", type=float, default=1.0)
    p.add_argument("--kinds", nargs="+", default=["ivf", "ivf_flat", "ivf_pq", "hnsw"])
    p.add_argument("--sample", type=int, default=1000, help="queries timed and checked")
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--nprobe", type=int, nargs="+", default=None,
                   help="IVF lists searched per query (several: one build, each searched)")
    p.add_argument("--ef-search", type=int, nargs="+", default=None, help="HNSW search breadth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="N = 20,000, 200 queries")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.sample = 20_000, 200
    ivf = {"nlist": a.nlist} if a.nlist else {}
    sweeps = {"nprobe": a.nprobe, "ef_search": a.ef_search}
    if "nlist" in ivf:
        ivf["train_size"] = min(a.n, 64 * ivf["nlist"])
    overrides = {k: ivf for k in ("ivf", "ivf_flat", "ivf_pq")}
    result = {"machine": machine(), "n": a.n, "dim": a.dim, "sample": a.sample,
              "base_rss_mb": round(rss_mb(), 1), "data": {}}
    for data in a.data:
        rows = unit_rows(a.n, a.dim, data, a.seed, a.clusters, a.spread)
        print(f"# {data}: N = {a.n}, D = {a.dim}", flush=True)
        result["data"][data] = measure(rows, a.kinds, a.sample, a.seed, overrides, sweeps)
        del rows
    if a.json:
        fileio.save_json(a.json, result)                            # atomic
    return result


if __name__ == "__main__":
    main()
