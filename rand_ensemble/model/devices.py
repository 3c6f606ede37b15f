"""Devices: where the model axis M (and the batch axis) meets the hardware, and nowhere else.

A process sees its local devices (GPUs, TPU cores, or XLA:CPU devices made with
XLA_FLAGS=--xla_force_host_platform_device_count=N); after `initialize` (jax.distributed),
several processes on one or many hosts see every process's devices as one list. On ONE
device nothing here runs: `mesh_for` returns None and callers keep their single-device jit.

With D > 1 devices:
  mesh_for(M, B)   a Mesh ("members", "batch") over all D devices: members split m ways and
                   batches b ways (m * b = D), the split with the least work per device;
                   training splits members only (b = 1).
  sharded(...)     jit(shard_map(per_device)): every device runs the single-device program (the
                   vmap or the lax.map over members) on its own members and batch rows. Not
                   jit's automatic partitioning: on XLA:CPU (jaxlib 0.10) GSPMD partitions the
                   vmap lowering's grouped convs wrongly (the blog net's conv3, whose 3x3 window
                   covers its whole input, comes out wrong in every member), and the lax.map
                   lowering needs per-device code anyway.
  put, to_host     host numpy -> sharded arrays (each process supplies its own shards), and
                   back to numpy on every process (a collective when several processes run).

M not a multiple of m: the members are padded with copies of the last one inside the jitted
program, computed and dropped; no member is ever lost. Arrays at rest keep M rows: sharded on
"members" when m divides M, else replicated (each step then gathers them, which costs little
next to the step for these nets). Params files are written from `to_host`'s numpy, so a file
written on 4 devices is the file written on 1.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rand_ensemble import paths
from rand_ensemble.errors import RandEnsembleError

MEMBERS, BATCH = "members", "batch"
PEER_TIMEOUT_S = 60              # a process silent this long ends the run (heartbeats)

_requested: int | None = None    # use_devices(N): the first N local devices of each process


def use_devices(count: int | None) -> None:
    """Use the first `count` local devices of every process (None: all of them)."""
    global _requested
    if count is not None:
        available = len(jax.local_devices())
        if isinstance(count, bool) or int(count) < 1 or int(count) > available:
            raise RandEnsembleError(f"--devices {count}: this process has {available} "
                                    f"{jax.default_backend()} device(s)")
        count = int(count)
    _requested = count


def devices() -> list:
    """The devices in use, every process's first N local ones, ordered by process then id."""
    if _requested is None:
        return jax.devices()
    return [d for p in range(jax.process_count())
            for d in sorted((d for d in jax.devices() if d.process_index == p),
                            key=lambda d: d.id)[:_requested]]


def device_count() -> int:
    """D, the devices in use over all processes."""
    return len(jax.devices()) if _requested is None else _requested * jax.process_count()


def describe() -> dict:
    """{"num_devices": D, "num_processes": P}: what a command's report names."""
    return {"num_devices": device_count(), "num_processes": jax.process_count()}


def mesh_for(num_members: int, batch: int | None = None) -> Mesh | None:
    """The mesh ("members", "batch") for M members and batches of B rows (None: members only,
    as training splits them) -> None on one device.

    Over all D devices, members split m ways and batches b ways (`split`).
    """
    d = device_count()
    if d == 1:
        return None
    m, b = split(num_members, batch, d)
    return _mesh(m, b, tuple(dev.id for dev in devices()))


def split(num_members: int, batch: int | None, d: int) -> tuple[int, int]:
    """(m, b), m * b = d: members in m parts, batch rows in b (batch None: b = 1), with the
    least (members x rows) per device, ceil(M / m) * ceil(B / b); ties go to more member parts
    (each device then keeps whole batches)."""
    if batch is None:
        return d, 1
    cost = {m: -(-num_members // m) * -(-batch // (d // m)) for m in range(1, d + 1)
            if d % m == 0}
    m = min(cost, key=lambda k: (cost[k], -k))
    return m, d // m


@functools.lru_cache(maxsize=32)
def _mesh(m: int, b: int, ids: tuple) -> Mesh:
    by_id = {dev.id: dev for dev in jax.devices()}
    return Mesh(np.array([by_id[i] for i in ids]).reshape(m, b), (MEMBERS, BATCH))


def padded_size(n: int, parts: int) -> int:
    """n rounded up to a multiple of `parts`."""
    return -(-n // parts) * parts


def sharding_of(mesh: Mesh, axis: str | None, rows: int = 0) -> NamedSharding:
    """Where an argument lives at rest: leading axis split on `axis` ("members" or "batch")
    when its `rows` divide evenly, else replicated (axis None: replicated)."""
    if axis is None or rows % mesh.shape[axis]:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(axis))


def sharded(per_device: Callable, mesh: Mesh, in_axes: Sequence[str | None],
            out_axes: tuple = (MEMBERS,)) -> Callable:
    """jit(shard_map(per_device)) on `mesh`: -> run(*args) with the single-device signature.

    in_axes: per argument, "members" (every leaf has a leading M), "batch" (a leading B, a
    multiple of the batch parts) or None (the same on every device). Members are padded to a
    multiple of the member parts with copies of the last member and the padding is dropped
    from every output, whose leaves lead with (M,) + out_axes[1:] as laid out by `out_axes`.
    """
    parts = mesh.shape[MEMBERS]
    specs = tuple(P() if axis is None else P(axis) for axis in in_axes)

    def program(*args):
        m = _rows(args, in_axes)
        pad = padded_size(m, parts) - m
        args = [jax.tree_util.tree_map(lambda a: _pad_rows(a, pad), a) if axis == MEMBERS and pad
                else a for a, axis in zip(args, in_axes)]
        out = _shard_map(per_device, mesh, specs, P(*out_axes))(*args)
        return jax.tree_util.tree_map(lambda o: o[:m], out) if pad else out

    jitted = jax.jit(program)

    def run(*args):
        m = _rows(args, in_axes)
        return jitted(*(put(a, sharding_of(mesh, axis, m if axis == MEMBERS else
                                           _leading(a)))
                        for a, axis in zip(args, in_axes)))
    return run


def _shard_map(f, mesh, in_specs, out_specs):
    """shard_map without its replication check (the per-device program is the single-device
    one), on the jax versions setup.cfg allows (jax.experimental's before jax.shard_map)."""
    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map  # older jax only (setup.cfg range)
    check = "check_vma" if "check_vma" in inspect.signature(shard_map).parameters else "check_rep"
    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **{check: False})


def _rows(args, in_axes) -> int:
    """M: the leading size of the first members argument."""
    return next(_leading(a) for a, axis in zip(args, in_axes) if axis == MEMBERS)


def _leading(tree) -> int:
    return int(np.shape(jax.tree_util.tree_leaves(tree)[0])[0])


def _pad_rows(a, pad):
    """(M, ...) -> (M + pad, ...), the last row repeated."""
    return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])


def put(tree, sharding: NamedSharding):
    """Place a pytree with `sharding`: host numpy or arrays on one device are copied (in a
    multi-process run each process supplies its own shards, so every process must hold the
    same values); arrays already placed so are kept."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x if x.sharding.is_equivalent_to(sharding, x.ndim) else jax.device_put(
                x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree_util.tree_map(one, tree)


def replicated(tree):
    """The same arrays on every device in use (on one device: `jnp.asarray`), placed once
    for programs that take them unsplit (a training pool)."""
    mesh = mesh_for(1)
    if mesh is None:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    return put(tree, NamedSharding(mesh, P()))


def to_host(tree):
    """Every leaf as numpy on this process (`jax.device_get`); arrays spread over several
    processes are gathered first, a collective every process must join."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils  # multi-process runs only
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)
    return jax.tree_util.tree_map(one, tree)


def leave() -> None:
    """Leave the run of several processes, all together (a barrier; nothing on one process):
    after it this process works alone (process 0 writing, or a job only it runs)."""
    jax.distributed.shutdown()                # a no-op when no run was joined


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, peer_timeout: float = PEER_TIMEOUT_S) -> None:
    """Join a run of several processes (`jax.distributed.initialize`), before any JAX work.

    Arguments left None are read by JAX from the environment (SLURM, Open MPI, TPU VMs, or
    JAX_COORDINATOR_ADDRESS). Every process then sees all processes' devices; only process 0
    writes files (`paths.set_writer`). A process that stops sending heartbeats for
    `peer_timeout` seconds, or a coordinator that goes away, ends every other process (the CLI
    turns that into a one-line error, `cli.launch`).
    """
    timeout = max(1, int(round(peer_timeout)))
    # JAX's preemption service takes over SIGTERM (to sync a checkpoint with the others); the
    # project's own handler must keep it (exit 143, temps removed).
    with contextlib.suppress(AttributeError):         # older jax: no such service
        jax.config.update("jax_enable_preemption_service", False)
    wanted = {"initialization_timeout": max(timeout, 30), "heartbeat_timeout_seconds": timeout,
              "shutdown_timeout_seconds": max(timeout, 30)}
    known = inspect.signature(jax.distributed.initialize).parameters
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   **{k: v for k, v in wanted.items() if k in known})
    except (RuntimeError, ValueError, TypeError) as e:
        where = coordinator or "the coordinator the environment names"
        raise RandEnsembleError(f"could not join the run at {where}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
                                ) from None
    paths.set_writer(jax.process_index() == 0)
