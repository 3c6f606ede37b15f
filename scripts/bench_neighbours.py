"""Exact top-k neighbour search: the engine (`evaluate.neighbours.top_k`) vs faiss IndexFlatIP
side by side, and the weak-label job's tiled search, time and peak RSS against N.

`--versus-faiss` (the default) runs ours and faiss IndexFlatIP in ONE single-threaded process
(OMP/BLAS/XLA threads = 1), in alternating rounds on the same unit vectors (D = 320), and
reports the min and median process CPU seconds of each and their ratio, for every N and k;
it also checks that our neighbours equal a float64 brute force on sampled rows. The older
per-candidate runs (tiled, blocked, faiss, each in a fresh process for its peak RSS) remain
behind `--kinds`. faiss (faiss-cpu, the `bench` extra) is optional.

`--deep` is the study's case on every core: a leave-one-out search at R-precision depth
(default N = 10,000, D = 4,096, k = 999, clustered rows: `--clusters` Gaussian centres on the
sphere, noise `--spread` / sqrt(D) a coordinate; or `--rows FILE.npy`, e.g. real embeddings),
ours against faiss IndexFlatIP with all its OpenMP threads and with one (the faster of the two
is the reference: OpenMP threads stall on a shared machine), alternating rounds, wall seconds;
our answer is checked against a float64 brute force rounded to float32, lower index first.

    python scripts/bench_neighbours.py --quick
    python scripts/bench_neighbours.py --deep --rounds 3 --json deep.json
    python scripts/bench_neighbours.py --deep --quick
    python scripts/bench_neighbours.py --sizes 10000 50000 --top-k 1 10 --rounds 5 --json nb.json
    python scripts/bench_neighbours.py --kinds tiled blocked faiss --sizes 10000 50000
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

if "--deep" not in sys.argv:           # the CPU-second comparisons run single-threaded
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1")
from rand_ensemble import fileio  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import numpy as np
from rand_ensemble.evaluate import neighbours
kind, (n, d, k, block), out = sys.argv[1], map(int, sys.argv[2:6]), sys.argv[6]
sizes = [min(block, n - s) for s in range(0, n, block)]

def get_block(j):                                    # (sizes[j], d) unit rows, seeded by j
    x = np.random.default_rng(j).standard_normal((sizes[j], d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
extra = {}
start, cpu_start = time.perf_counter(), time.process_time()
if kind == "tiled-row":                              # one worker's share: tiles (0, b), all b
    first = get_block(0)
    state = None
    for b in range(len(sizes)):
        db = first if b == 0 else get_block(b)
        (ia, sa), _ = neighbours.tile_top_k(first, db, k, diagonal=b == 0)
        part = [(ia + sum(sizes[:b]), sa)]
        state = neighbours.merge_top_k(part if state is None else [state] + part, k)
    idx = state[0]
    tiles = len(sizes) * (len(sizes) + 1) // 2
    extra = {"tiles_run": len(sizes), "tiles_total": tiles,
             "extrapolated_total_s": round((time.process_time() - cpu_start) / len(sizes) * tiles, 1)}
elif kind == "tiled":
    idx, scores = neighbours.tiled_top_k(get_block, sizes, k)
else:
    x = np.concatenate([get_block(j) for j in range(len(sizes))])        # all N rows
    if kind == "blocked":
        idx, scores = neighbours.top_k(x, k, None, block)
    else:
        import faiss
        faiss.omp_set_num_threads(1)
        index = faiss.IndexFlatIP(d)
        index.add(x)
        scores, found = index.search(x, k + 1)       # self comes back too: drop it
        rows = np.arange(n)[:, None]
        keep = np.argsort(found == rows, axis=1, kind="stable")[:, :k]
        idx, scores = np.take_along_axis(found, keep, 1), np.take_along_axis(scores, keep, 1)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
np.save(out, idx)
print(json.dumps({"kind": kind, "n": n, "seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "base_rss_mb": round(base_mb, 1), **extra,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "pairs_per_cpu_s": round(n * (n - 1) / extra.get("extrapolated_total_s", cpu))}))
"""


def run_child(kind, n, d, k, block, out):
    """One measurement in a fresh single-threaded process -> its JSON record."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(n), str(d), str(k),
                           str(block), out], env=env, capture_output=True, text=True)
    if proc.returncode:
        return {"kind": kind, "n": n, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout)


def unit_rows(n, d, seed=0):
    """(n, d) float32 unit rows."""
    import numpy as np
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def faiss_top_k(x, k):
    """faiss IndexFlatIP over x, self dropped: (N, D) -> (N, k) indices."""
    import faiss
    import numpy as np
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, found = index.search(x, k + 1)
    keep = np.argsort(found == np.arange(len(x))[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(found, keep, 1)


def exact_on_sample(x, idx, k, rows=200):
    """Whether our neighbours of `rows` sampled queries equal a float64 brute force."""
    import numpy as np
    pick = np.random.default_rng(1).choice(len(x), min(rows, len(x)), replace=False)
    sims = (x[pick].astype(np.float64) @ x.T.astype(np.float64)).astype(np.float32)
    sims[np.arange(len(pick)), pick] = -np.inf
    return bool((np.argsort(-sims, axis=1, kind="stable")[:, :k] == idx[pick]).all())


def versus_faiss(n, d, k, rounds):
    """Ours and faiss in alternating rounds in this process -> a record of CPU seconds."""
    import time

    import faiss
    import numpy as np

    from rand_ensemble.evaluate import neighbours
    faiss.omp_set_num_threads(1)
    x = unit_rows(n, d)
    cpu, wall = {"ours": [], "faiss": []}, {"ours": [], "faiss": []}
    for _ in range(rounds):
        for name, search in (("ours", lambda: neighbours.top_k(x, k)[0]),
                             ("faiss", lambda: faiss_top_k(x, k))):
            start, start_wall = time.process_time(), time.perf_counter()
            found = search()
            cpu[name].append(time.process_time() - start)
            wall[name].append(time.perf_counter() - start_wall)
            if name == "ours":
                ours = found
    rec = {"n": n, "dim": d, "top_k": k, "rounds": rounds,
           "exact_on_sample": exact_on_sample(x, ours, k),
           "same_as_faiss": float(np.mean(ours == found))}
    for name, values in cpu.items():
        rec[f"{name}_cpu_s"] = [round(v, 3) for v in values]
        rec[f"{name}_min_s"], rec[f"{name}_median_s"] = min(values), float(np.median(values))
    rec["ratio_min"] = rec["ours_min_s"] / rec["faiss_min_s"]
    rec["ratio_median"] = rec["ours_median_s"] / rec["faiss_median_s"]
    # wall-clock rate of ours on the device JAX uses (faiss-cpu stays on the CPU)
    import jax
    from bench_common import device_peak_gflops
    peak, source = device_peak_gflops(None)
    rec["backend"], rec["faiss_device"] = jax.default_backend(), "cpu"
    rec["ours_wall_min_s"] = min(wall["ours"])
    rec["scores_per_s"] = n * (n - 1) / rec["ours_wall_min_s"]
    rec["fraction_of_peak"] = None if peak is None else rec["scores_per_s"] * 2 * d / 1e9 / peak
    rec["peak_source"] = source
    return rec


def run_versus_faiss(args):
    """Every N and k, ours vs faiss; print a table -> records."""
    print(f"{'N':>7} {'k':>3} {'ours min':>9} {'ours med':>9} {'faiss min':>9} "
          f"{'faiss med':>9} {'ratio min':>9} {'ratio med':>9} exact faiss-agree", flush=True)
    records = []
    for n in args.sizes:
        for k in args.top_k:
            r = versus_faiss(n, args.dim, k, args.rounds)
            print(f"{n:>7} {k:>3} {r['ours_min_s']:>9.3f} {r['ours_median_s']:>9.3f} "
                  f"{r['faiss_min_s']:>9.3f} {r['faiss_median_s']:>9.3f} {r['ratio_min']:>9.3f} "
                  f"{r['ratio_median']:>9.3f} {r['exact_on_sample']!s:>5} "
                  f"{r['same_as_faiss']:.5f}", flush=True)
            records.append(r)
    return records


def clustered_rows(n, d, clusters, spread, seed=0):
    """(n, d) float32 unit rows around `clusters` random unit centres, noise spread / sqrt(d)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread / np.sqrt(d) * \
        rng.standard_normal((n, d), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force_check(x, idx, scores, block=500):
    """Our (idx, scores) against a float64 brute force rounded to float32 (self excluded, score
    descending, then lower index), every row -> {"exact", "rows_off_plain_float64"}.

    The reference is the float64 GEMM cast to float32; where a row differs from it, the row is
    checked again against `similarities` (the float64 sums within a float64 rounding of a
    float32 midpoint settled exactly: a plain cast double-rounds those few), so such rows are
    counted apart, not as errors.
    """
    import numpy as np

    from rand_ensemble.evaluate.exact_scores import similarities
    x64, exact, plain_off = x.astype(np.float64), True, 0

    def same(sims, rows):
        sims[np.arange(len(rows)), rows] = -np.inf
        want = np.argsort(-sims, axis=1, kind="stable")[:, :idx.shape[1]]
        return (want == idx[rows]).all(1) & \
            (np.take_along_axis(sims, want, 1) == scores[rows]).all(1)

    for s in range(0, len(x), block):
        rows = np.arange(s, min(s + block, len(x)))
        off = rows[~same((x64[rows] @ x64.T).astype(np.float32), rows)]
        plain_off += len(off)
        exact = exact and bool(same(similarities(x[off], x), off).all())
    return {"exact": exact, "rows_off_plain_float64": plain_off}


def deep(args):
    """The deep leave-one-out case, ours vs faiss on every core, alternating rounds -> record."""
    import time

    import faiss
    import numpy as np

    from rand_ensemble.evaluate import neighbours
    if args.rows:
        x = neighbours.as_rows(np.load(args.rows), "--rows")
        data = f"rows of {args.rows}"
    else:
        x = clustered_rows(args.n, args.dim, args.clusters, args.spread)
        data = f"{args.clusters} clusters, spread {args.spread}"
    threads = faiss.omp_get_max_threads()

    def run_faiss(count):
        faiss.omp_set_num_threads(count)
        return faiss_top_k(x, args.k)

    candidates = {"ours": lambda: neighbours.top_k(x, args.k),
                  f"faiss {threads} threads": lambda: run_faiss(threads),
                  "faiss 1 thread": lambda: run_faiss(1)}
    if threads == 1:
        del candidates["faiss 1 thread"]
    neighbours.top_k(x[:64], min(args.k, 63))                    # compile outside the rounds
    wall = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, search in candidates.items():
            start = time.perf_counter()
            found = search()
            wall[name].append(round(time.perf_counter() - start, 3))
            if name == "ours":
                ours = found
    best_faiss = min((name for name in wall if name != "ours"), key=lambda n: min(wall[n]))
    rec = {"case": "deep", "n": len(x), "dim": x.shape[1], "top_k": args.k, "data": data,
           "rounds": args.rounds, "wall_s": wall, "faiss_reference": best_faiss,
           "ratio_min": min(wall["ours"]) / min(wall[best_faiss]),
           **brute_force_check(x, *ours), "load_after": os.getloadavg()}
    print(f"N = {rec['n']}, D = {rec['dim']}, k = {args.k}, {data}: ours / {best_faiss} "
          f"(min wall over {args.rounds} rounds) = {rec['ratio_min']:.2f}; {wall}; "
          f"equal to the brute force: {rec['exact']} (rows off a plain float64 cast: "
          f"{rec['rows_off_plain_float64']})", flush=True)
    return [rec]


def run_kinds(args):
    """The per-candidate fresh-process runs (tiled, blocked, faiss) -> records."""
    records = []
    print(f"{'N':>8} {'candidate':>9} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} "
          f"{'base MB':>8} {'Mpairs/CPU s':>12} agree")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            ref = None
            for kind in args.kinds:
                if kind == "tiled" and n > args.max_full_n:
                    kind = "tiled-row"                      # one worker's row of tiles only
                elif kind != "tiled" and n > args.max_full_n:
                    continue
                out = os.path.join(tmp, f"{kind}-{n}.npy")
                k = args.top_k[0]
                rec = dict(run_child(kind, n, args.dim, k, args.block_size, out),
                           dim=args.dim, top_k=k, block_size=args.block_size)
                if "error" not in rec:
                    import numpy as np
                    idx = np.load(out)
                    ref = idx if ref is None else ref
                    rec["agree_with_tiled"] = float(np.mean(idx[:len(ref)] == ref[:len(idx)]))
                    print(f"{n:>8} {kind:>9} {rec['seconds']:>8.2f} {rec['cpu_s']:>8.2f} "
                          f"{rec['peak_rss_mb']:>12.1f} {rec['base_rss_mb']:>8.1f} "
                          f"{rec['pairs_per_cpu_s'] / 1e6:>12.1f} {rec['agree_with_tiled']:.5f}",
                          flush=True)
                else:
                    print(f"{n:>8} {kind:>9} error: {rec['error']}", flush=True)
                records.append(rec)
    return records


def main(argv=None):
    """Ours vs faiss (default) or the per-candidate runs; print a table, optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000])
    p.add_argument("--dim", type=int, default=320, help="D = M * E (10 x 32)")
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 10])
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of ours vs faiss")
    p.add_argument("--block-size", type=int, default=4096, help="tile rows of --kinds runs")
    p.add_argument("--kinds", nargs="+", help="per-candidate fresh-process runs instead: "
                   "tiled, blocked, faiss")
    p.add_argument("--max-full-n", type=int, default=50000,
                   help="--kinds above this N: skip the all-in-memory candidates and run one "
                        "worker's row of tiles, extrapolating the total time")
    p.add_argument("--deep", action="store_true", help="the leave-one-out R-precision case on "
                   "every core (N = --n, D = --dim, k = --k); see above")
    p.add_argument("--n", type=int, default=10000, help="--deep rows")
    p.add_argument("--k", type=int, default=999, help="--deep neighbours a row")
    p.add_argument("--clusters", type=int, default=10, help="--deep centres")
    p.add_argument("--spread", type=float, default=1.0, help="--deep noise (x 1 / sqrt(D))")
    p.add_argument("--rows", help="--deep: an (N, D) or (M, N, E) .npy of rows instead")
    p.add_argument("--quick", action="store_true", help="N = 2000, 6000; 3 rounds; block 1024 "
                   "(with --deep: N = 2,000, D = 1,024, k = 199, 2 rounds)")
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    if args.deep:
        args.dim = 4096 if args.dim == 320 else args.dim
    if args.quick and args.deep:
        args.n, args.dim, args.k, args.rounds = 2000, 1024, 199, 2
    elif args.quick:
        args.sizes, args.rounds, args.block_size, args.max_full_n = [2000, 6000], 3, 1024, 4000
    records = deep(args) if args.deep else run_kinds(args) if args.kinds else \
        run_versus_faiss(args)
    if args.json:
        fileio.save_json(args.json, records)                        # atomic


if __name__ == "__main__":
    main()
