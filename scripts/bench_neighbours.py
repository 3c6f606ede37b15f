"""Exact top-k neighbour search: the weak-label job's tiled search vs the blocked library
function vs faiss IndexFlatIP, time and peak RSS against N (D = M * E = 320 by default).

Each candidate runs in a fresh process (peak RSS = that run only), single-threaded
(OMP/BLAS threads = 1), on the same unit vectors: block j of the pool is drawn from seed j,
so the tiled candidate regenerates blocks as it needs them and never holds all N rows, as
a Beam worker holding two blocks would not. faiss (faiss-cpu, the `bench` extra) is optional.

    python scripts/bench_neighbours.py --quick
    python scripts/bench_neighbours.py --sizes 10000 50000 100000 200000 --json nb.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import numpy as np
from rand_ensemble.evaluate import weak_labels
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
        (ia, sa), _ = weak_labels.tile_top_k(first, db, k, diagonal=b == 0)
        part = [(ia + sum(sizes[:b]), sa)]
        state = weak_labels.merge_top_k(part if state is None else [state] + part, k)
    idx = state[0]
    tiles = len(sizes) * (len(sizes) + 1) // 2
    extra = {"tiles_run": len(sizes), "tiles_total": tiles,
             "extrapolated_total_s": round((time.process_time() - cpu_start) / len(sizes) * tiles, 1)}
elif kind == "tiled":
    idx, scores = weak_labels.tiled_top_k(get_block, sizes, k)
else:
    x = np.concatenate([get_block(j) for j in range(len(sizes))])        # all N rows
    if kind == "blocked":
        idx, scores = weak_labels.top_k_neighbours(x, k, block)
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


def main(argv=None):
    """Measure every candidate at every N; print a table, optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000, 100000, 200000])
    p.add_argument("--dim", type=int, default=320, help="D = M * E (10 x 32)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--kinds", nargs="+", default=["tiled", "blocked", "faiss"])
    p.add_argument("--max-full-n", type=int, default=50000,
                   help="above this N: skip the all-in-memory candidates and run one worker's "
                        "row of tiles, extrapolating the total time")
    p.add_argument("--quick", action="store_true", help="N = 2000, 6000; block 1024")
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.block_size, args.max_full_n = [2000, 6000], 1024, 4000
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
                rec = dict(run_child(kind, n, args.dim, args.top_k, args.block_size, out),
                           dim=args.dim, top_k=args.top_k, block_size=args.block_size)
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)


if __name__ == "__main__":
    main()
