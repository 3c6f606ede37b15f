"""Devices and processes: the forward pass (`ensemble.embed`) and the M-member training step
(`trainer.compiled_step`) on 1, 2, 4 devices in one process and on 2 processes, each row in
its own worker process(es), reported as images x members / s and peak memory per device.

    python scripts/bench_devices.py --json bench_devices.json              # the full form
    python scripts/bench_devices.py --quick                                # smoke run

On a CPU-only machine the devices are XLA:CPU devices forced with
XLA_FLAGS=--xla_force_host_platform_device_count=D: they SHARE the machine's cores, so more
devices cannot be faster here; these rows measure the overhead of the mesh, shard_map and
(for processes) gloo collectives, not a speed-up. On a GPU or TPU machine the same command
uses the real devices (the first D of them) and `JAX_LOCAL_DEVICE_IDS` splits them between
the processes, and the rows show the scaling. Peak memory per device: the device's own
`peak_bytes_in_use` where JAX reports it, else (CPU) the worker's peak RSS / its devices.
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CPU_NOTE = ("XLA:CPU devices forced by XLA_FLAGS share this machine's {cores} cores: more "
            "devices cannot be faster here; the rows measure the overhead of the mesh, "
            "shard_map and gloo collectives")


def worker(a):
    """One row's measurement in this process -> its JSON on stdout (process 0's)."""
    import jax

    from rand_ensemble.learn import signals, trainer
    from rand_ensemble.learn.config import LearnConfig
    from rand_ensemble.model import devices, ensemble
    if a.num_processes > 1:
        devices.initialize(f"127.0.0.1:{a.port}", a.num_processes, a.process_id, 120)
    devices.use_devices(a.use_devices)
    config = ensemble.DEFAULT_CONFIG
    if a.small:                                           # --quick: a smoke run compiles fast
        config = ensemble.EmbedderConfig(widths=(8, 8, 8, 8), dense=8, embedding_dim=8)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (a.images, 32, 32, 3), dtype=np.uint8)
    params = ensemble.init_ensemble(jax.random.PRNGKey(0), a.members, config)
    ensemble.embed(params, pool, config)                               # compile
    forward = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        ensemble.embed(params, pool, config)
        forward.append(time.perf_counter() - start)
    cfg = LearnConfig(members=a.members, steps=a.steps + 1, batch_size=a.batch, warmup=1)
    step = trainer.compiled_step(config, cfg, ensemble.member_conv())
    opt_state = ensemble.over_members(trainer.make_optimizer(cfg).init, how="vmap")(params)
    batches = signals.Batches("augment", a.images, a.members, a.batch, 0)
    images, groups = devices.replicated((pool, np.arange(a.images, dtype=np.int32)))
    p, o, loss = step(params, opt_state, *batches[1][1:], images, groups)   # compile
    devices.to_host(loss)
    start = time.perf_counter()
    for i in range(2, a.steps + 2):
        p, o, loss = step(p, o, *batches[i][1:], images, groups)
    devices.to_host(loss)
    train_s = time.perf_counter() - start
    local = len(jax.local_devices()) if a.use_devices is None else a.use_devices
    stats = [d.memory_stats() or {} for d in jax.local_devices()[:local]]
    peaks = [s.get("peak_bytes_in_use") for s in stats]
    if all(peaks):
        peak, how = max(peaks), "device peak_bytes_in_use"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / local
        how = "process peak RSS / its devices"
    row = {"num_devices": devices.device_count(), "num_processes": jax.process_count(),
           "backend": jax.default_backend(), "device_kind": jax.local_devices()[0].device_kind,
           "forward_min_s": min(forward), "train_s": train_s,
           "forward_images_members_per_s": a.images * a.members / min(forward),
           "train_images_members_per_s": a.steps * a.members * 2 * a.batch / train_s,
           "peak_bytes_per_device": peak, "peak_memory_source": how}
    devices.leave()
    if jax.process_index() == 0:
        print(json.dumps(row))


def free_port():
    """A free TCP port on 127.0.0.1 (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_row(a, devices, processes, backend):
    """Start the worker(s) of one row (each with `devices` devices) -> the row dict."""
    common = [sys.executable, os.path.abspath(__file__), "--worker", "--members", str(a.members),
              "--images", str(a.images), "--batch", str(a.batch), "--steps", str(a.steps),
              "--repeats", str(a.repeats), "--num-processes", str(processes),
              "--port", str(free_port())] + (["--small"] if a.quick else [])
    procs = []
    for p in range(processes):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if backend == "cpu":
            env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices}"
                                if devices > 1 else "")
            cmd = common + ["--process-id", str(p)]
        else:
            env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(p * devices + k) for k in range(devices))
            cmd = common + ["--process-id", str(p), "--use-devices", str(devices)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
                other.wait()
            raise SystemExit(f"row devices={devices} processes={processes}: over "
                             f"{a.timeout} s")
        if proc.returncode != 0:
            raise SystemExit(f"row devices={devices} processes={processes} failed:\n"
                             + "\n".join(err.strip().splitlines()[-5:]))
        outs.append(out)
    return json.loads([line for line in outs[0].splitlines() if line.startswith("{")][-1])


def local_backend():
    """(backend, device count) of this machine, from a child (the driver keeps JAX unloaded)."""
    out = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend(), "
                          "len(jax.devices()))"], capture_output=True, text=True, check=True)
    backend, count = out.stdout.split()
    return backend, int(count)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=8, help="M (a multiple of every count)")
    p.add_argument("--images", type=int, default=1024, help="images embedded per pass")
    p.add_argument("--batch", type=int, default=64, help="training pairs per member and step")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes (min kept)")
    p.add_argument("--devices", default=None,
                   help="device counts of the 1-process rows (default 1,2,4; --quick 1,2)")
    p.add_argument("--processes", type=int, default=2,
                   help="processes of the multi-process row (each with devices/processes)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    p.add_argument("--json", default=None, help="write the results here (atomic)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a small net (8 channels), M=4, 64 images, 2 steps, 1 and "
                        "2 devices, 2 processes")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--use-devices", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.quick:
        a.members, a.images, a.batch, a.steps, a.repeats = 4, 64, 8, 2, 1
    a.devices = a.devices or ("1,2" if a.quick else "1,2,4")
    backend, available = local_backend()
    counts = [int(c) for c in a.devices.split(",")]
    if backend != "cpu":
        counts = [c for c in counts if c <= available]
    rows = [run_row(a, c, 1, backend) for c in counts]
    per_process = max(counts[-1] // a.processes, 1)
    if a.processes > 1 and (backend == "cpu" or per_process * a.processes <= available):
        rows.append(run_row(a, per_process, a.processes, backend))
    base = rows[0]
    for row in rows:
        row["forward_vs_1_device"] = (row["forward_images_members_per_s"]
                                      / base["forward_images_members_per_s"])
        row["train_vs_1_device"] = (row["train_images_members_per_s"]
                                    / base["train_images_members_per_s"])
    note = CPU_NOTE.format(cores=os.cpu_count()) if backend == "cpu" else \
        f"{backend} devices ({rows[0]['device_kind']})"
    net = "a small net (8 channels; --quick)" if a.quick else "the blog net"
    print(f"{note}\n{net}, M={a.members}, {a.images} images (forward), {a.steps} steps of "
          f"{a.batch} pairs per member (training)")
    print(f"{'devices':>7s} {'procs':>5s} {'fwd img*M/s':>12s} {'x1':>6s} {'train img*M/s':>14s} "
          f"{'x1':>6s} {'peak MiB/dev':>12s}")
    for row in rows:
        print(f"{row['num_devices']:7d} {row['num_processes']:5d} "
              f"{row['forward_images_members_per_s']:12.0f} {row['forward_vs_1_device']:6.2f} "
              f"{row['train_images_members_per_s']:14.0f} {row['train_vs_1_device']:6.2f} "
              f"{row['peak_bytes_per_device'] / 2 ** 20:12.0f}")
    print(f"peak memory: {rows[0]['peak_memory_source']}")
    result = {"note": note, "net": net, "backend": backend, "cores": os.cpu_count(),
              "quick": a.quick,
              "members": a.members, "images": a.images, "batch": a.batch, "steps": a.steps,
              "rows": rows}
    if a.json:
        from rand_ensemble import fileio
        fileio.save_json(a.json, result)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
