"""Local servers to try the jobs on real engines: Beam's job service + an external worker
pool (the portable path of Flink, Spark and Dataflow), or a Dask scheduler + workers.

Used by the runner tests and scripts/bench_pipeline.py. Every server binds 127.0.0.1 and is
stopped by PID (SIGTERM to its process group, then SIGKILL) when its context ends, also on
error. Run as a module, this file starts a Beam service module with every gRPC port bound to
127.0.0.1 (the worker pool has no flag for it and listens on all interfaces otherwise) and
appends each bound port to $PORTS_FILE:

    python -m rand_ensemble.pipelines.local_services \
        apache_beam.runners.worker.worker_pool_main --service_port 0
"""
import contextlib
import json
import os
import runpy
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def env():
    """Environment for servers and their workers: this package's checkout first on the path."""
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PATH=BIN + os.pathsep + os.environ.get("PATH", ""), JAX_PLATFORMS="cpu",
                DASK_DISTRIBUTED__WORKER__DAEMON="False")


def stop(procs):
    """Stop processes by PID: SIGTERM to each one's group, then SIGKILL what is left."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def wait_for(path, timeout=120, check=lambda text: bool(text.strip())):
    """Contents of `path` once `check` accepts them (servers write their address there)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if check(text):
                return text
        time.sleep(0.2)
    raise TimeoutError(f"no address in {path} after {timeout} s")


def start(args, log):
    """Start a server in its own process group (so stop() also ends its children)."""
    return subprocess.Popen(args, env=env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


@contextlib.contextmanager
def portable_services(tmp):
    """-> Beam args for PortableRunner on a loopback job service + external worker pool."""
    procs = []
    log = open(os.path.join(tmp, "services.log"), "w")
    try:
        job_ports, pool_ports = os.path.join(tmp, "job.port"), os.path.join(tmp, "pool.ports")
        me = [sys.executable, "-m", "rand_ensemble.pipelines.local_services"]
        procs.append(start([*me, "apache_beam.runners.portability."
                            "local_job_service_main", "--port", "0", "--port_file", job_ports],
                           log))
        procs.append(subprocess.Popen(
            [*me, "apache_beam.runners.worker.worker_pool_main", "--service_port",
             "0"], env=dict(env(), PORTS_FILE=pool_ports), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        job = wait_for(job_ports).strip()
        pool = wait_for(pool_ports).split()[0]
        yield ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{job}",
               "--environment_type", "EXTERNAL", "--environment_config", f"localhost:{pool}"]
    finally:
        stop(procs)
        log.close()


@contextlib.contextmanager
def dask_cluster(tmp, workers=2):
    """-> Beam args for the DaskRunner on a scheduler + `workers` workers on 127.0.0.1."""
    procs = []
    log = open(os.path.join(tmp, "dask.log"), "w")
    try:
        info = os.path.join(tmp, "scheduler.json")
        procs.append(start([os.path.join(BIN, "dask"), "scheduler", "--host", "127.0.0.1",
                            "--port", "0", "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                            "--scheduler-file", info], log))
        address = json.loads(wait_for(info))["address"]
        for _ in range(workers):
            procs.append(start([os.path.join(BIN, "dask"), "worker", address, "--host",
                                "127.0.0.1", "--no-nanny", "--nthreads", "1", "--no-dashboard",
                                "--dashboard-address", "127.0.0.1:0",
                                "--memory-limit", "0"], log))
        from distributed import Client  # Dask: only for the Dask runner's local cluster
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner",
               "--dask_client_address", address, "--dask_npartitions", str(workers)]
    finally:
        stop(procs)
        log.close()


def _serve_on_loopback(module, argv):
    """Run `module` as __main__ with gRPC's add_insecure_port forced to 127.0.0.1."""
    import grpc._server  # only when serving a Beam job service on loopback
    original = grpc._server._Server.add_insecure_port

    def add_insecure_port(self, address):
        port = original(self, "127.0.0.1:" + address.rsplit(":", 1)[1])
        if os.environ.get("PORTS_FILE"):
            with open(os.environ["PORTS_FILE"], "a") as f:
                f.write(f"{port}\n")
        return port

    grpc._server._Server.add_insecure_port = add_insecure_port
    sys.argv = [module] + argv
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _serve_on_loopback(sys.argv[1], sys.argv[2:])
