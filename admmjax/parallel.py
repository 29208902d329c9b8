r"""Data-parallel ADMM over devices and hosts: a mesh, shardings, a sharded exact projection.

Optional import (``from admmjax import parallel``); pure JAX, nothing is re-exported from
``admmjax``. Data parallelism here is plain ``jax.jit`` over global ``jax.Array``\ s
sharded on a one-axis :class:`~jax.sharding.Mesh` (``jax.pmap`` is in maintenance mode
since JAX 0.8): the batch is split over the ``data`` axis, the params, the ADMM state
and the optimizer state are replicated (or, with :func:`shard_leaves`, large leaves are
split too), and XLA inserts the gradient all-reduce itself. The W-step and the Z/U-steps
are the ordinary ones; nothing in the training code changes::

    from admmjax import parallel

    parallel.initialize()                        # multi-host; a no-op for one process
    mesh = parallel.data_mesh()                  # every local device of every process
    params = parallel.replicate(params, mesh)
    admm_state = parallel.replicate(admmjax.init(params, targets), mesh)
    opt_state = parallel.replicate(tx.init(params), mesh)
    step = admmjax.make_train_step(loss_fn, tx)  # tx = chain(penalty(rho), adam(lr))
    shard, num_shards = parallel.process_shard()
    for x, y in batches(shard_index=shard, num_shards=num_shards):   # this host's rows
        x, y = parallel.shard_batch((x, y), mesh)                    # one global batch
        params, opt_state, loss = step(params, opt_state, x, y, admm_state=admm_state)
    admm_state, info = jax.jit(lambda s, p: admmjax.update(s, p, targets))(admm_state, params)

**Axis type.** :func:`data_mesh` builds its mesh with ``AxisType.Auto`` although
``jax.make_mesh`` now defaults to ``Explicit``. With replicated params both work on a
standard jitted step, but as soon as a parameter is sharded on the ``data`` axis
(:func:`shard_leaves`) an Explicit mesh makes the model's own code fail to type-check
(e.g. ``x @ W + b`` with ``x`` batch-sharded and ``b`` sharded on ``data`` raises
``ShardingTypeError``: Explicit sharding requires the model to say where to reshard).
Auto lets XLA's partitioner insert the all-gathers and reduce-scatters, so one model
serves every layout. Pass your own Explicit mesh to the functions here if you prefer;
they accept any mesh with the named axis.

**The Z-step on sharded leaves.** Under ``jax.jit`` every JAX function computes the
value it would compute on one device, whatever the input shardings: ``jax.jit(
admmjax.project)`` (and ``admmjax.update``) on sharded leaves is already exact and
identical to the unsharded result; XLA gathers what the radix select's scatters need
(4 bytes per entry). :func:`keep_mask_sharded` / :func:`project_sharded` compute the
same mask without gathering the leaf: every shard builds the two 16-bit radix
histograms of its own magnitude keys, ``lax.psum`` makes them global (so the threshold
``T`` and the counts of keys ``> T`` and ``== T`` are those of the whole leaf), and ties
at ``T`` are ranked by global flat index from an ``all_gather`` of per-shard tie counts
(one integer per shard per row, see :func:`keep_mask_sharded`). Communication is two
histograms of 256 KiB and ``num_shards x rows`` integers, independent of the leaf size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from admmjax._projections import leaf_projections
from admmjax._select import _kth_largest_key, magnitude_keys

PyTree = Any

__all__ = [
    "batch_sharding",
    "data_mesh",
    "initialize",
    "keep_mask_sharded",
    "leaf_shardings",
    "process_shard",
    "project_sharded",
    "replicate",
    "replicated",
    "shard_batch",
    "shard_leaves",
]

ENV_COORDINATOR = "ADMMJAX_COORDINATOR"
ENV_NUM_PROCESSES = "ADMMJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "ADMMJAX_PROCESS_ID"


# --------------------------------------------------------------------------- hosts


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs: Any,
) -> bool:
    """Starts JAX's multi-process runtime (``jax.distributed.initialize``); call it first.

    Arguments left ``None`` are read from ``ADMMJAX_COORDINATOR`` (``host:port`` of
    process 0), ``ADMMJAX_NUM_PROCESSES`` and ``ADMMJAX_PROCESS_ID``. With one process
    (``num_processes`` unset or 1) it does nothing and returns ``False``; it also
    returns ``False`` when the runtime is already initialised. Otherwise it returns
    ``True`` once every process has joined. ``kwargs`` go to
    ``jax.distributed.initialize`` (e.g. ``local_device_ids``, ``initialization_timeout``).
    For cluster auto-detection (SLURM, Open MPI, Cloud TPU) call
    ``jax.distributed.initialize()`` yourself.

    Like ``jax.distributed.initialize`` it must run before any JAX computation (even
    ``jax.devices()``). On CPU, cross-process collectives need a collectives
    implementation: JAX 0.10 uses gloo over TCP by default; if
    ``jax_cpu_collectives_implementation`` has been unset it is set back to ``"gloo"``
    here (an explicit ``"mpi"`` is left alone). The flag only affects the CPU client,
    so it is harmless on GPU and TPU.
    """
    if coordinator_address is None:
        coordinator_address = os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if num_processes is None or num_processes == 1:
        return False
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if coordinator_address is None or process_id is None:
        raise ValueError(
            f"a {num_processes}-process run needs coordinator_address and process_id "
            f"(or ${ENV_COORDINATOR} and ${ENV_PROCESS_ID}); got "
            f"coordinator_address={coordinator_address!r}, process_id={process_id!r}"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"need 0 <= process_id < num_processes, got {process_id}, {num_processes}")
    if jax.distributed.is_initialized():
        return False
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return True


def process_shard() -> tuple[int, int]:
    """``(shard_index, num_shards) = (jax.process_index(), jax.process_count())``.

    Feed it to a data loader that yields this process's contiguous rows of every global
    batch (e.g. ``experiments.data.iterate_batches(..., shard_index=i, num_shards=n)``),
    then :func:`shard_batch` assembles the global batch.
    """
    return jax.process_index(), jax.process_count()


# ---------------------------------------------------------------- mesh, shardings


def data_mesh(num_devices: int | None = None, axis: str = "data") -> Mesh:
    """A one-axis mesh over the first ``num_devices`` local devices of every process.

    ``num_devices`` counts devices *per process* (default: all of them); in a
    multi-process run the mesh spans ``num_devices * jax.process_count()`` devices,
    ordered by process, so that each process's devices hold a contiguous block of
    the batch axis (what :func:`shard_batch` and :func:`process_shard` assume). The
    axis type is ``Auto`` (see the module doc). Raises ``ValueError`` when
    ``num_devices`` is below 1 or above the local device count.
    """
    local = jax.local_device_count()
    if num_devices is None:
        num_devices = local
    if isinstance(num_devices, bool) or not isinstance(num_devices, int | np.integer):
        raise TypeError(f"num_devices must be an int or None, got {num_devices!r}")
    if num_devices < 1:
        raise ValueError(f"data_mesh needs num_devices >= 1, got {num_devices}")
    if num_devices > local:
        platform = jax.local_devices()[0].platform
        hint = (
            " (on CPU, create more with jax.config.update('jax_num_cpu_devices', N) "
            "before the first JAX computation)"
            if platform == "cpu"
            else ""
        )
        raise ValueError(
            f"data_mesh: {num_devices} devices per process requested but process "
            f"{jax.process_index()} has {local} {platform} device(s){hint}"
        )
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    devices = [
        d
        for p in sorted(by_process)
        for d in sorted(by_process[p], key=lambda d: d.id)[:num_devices]
    ]
    return Mesh(np.array(devices), (axis,), axis_types=(AxisType.Auto,))


def _data_axis(mesh: Mesh, axis: str | None) -> str:
    if axis is not None:
        if axis not in mesh.axis_names:
            raise ValueError(f"mesh has axes {mesh.axis_names}, not {axis!r}")
        return axis
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh has axes {mesh.axis_names}: name the data axis with axis=")
    return mesh.axis_names[0]


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a full copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: str | None = None) -> NamedSharding:
    """Leading (batch) axis split over the mesh's data axis; other axes whole."""
    return NamedSharding(mesh, P(_data_axis(mesh, axis)))


def _put(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """``leaf`` placed with ``sharding``, across processes where the mesh spans them.

    A host value (NumPy, Python scalar, a local ``jax.Array``) is taken to be the same
    on every process; each process fills its own devices' shards from it.
    """
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)  # already global: reshard
    if sharding.is_fully_addressable:
        return jax.device_put(leaf, sharding)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every array leaf of ``tree`` replicated on all devices of ``mesh``.

    In a multi-process run every process must pass the same values (e.g. params from
    the same seed or checkpoint); each fills only its own devices. ``None`` leaves
    stay ``None``.
    """
    sharding = replicated(mesh)
    return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def shard_batch(batch: PyTree, mesh: Mesh, axis: str | None = None) -> PyTree:
    """This process's rows of a global batch -> global arrays split on axis 0.

    Each leaf of ``batch`` is host-local data (NumPy) holding this process's
    contiguous slice of the global batch (all of it in a single-process run); the
    result has leading size ``local_rows * jax.process_count()``, sharded over the
    data axis (``jax.make_array_from_process_local_data``). The local row count must
    split evenly over this process's devices of the mesh.
    """
    sharding = batch_sharding(mesh, axis)
    local_devices = len(sharding.addressable_devices)
    processes = len({d.process_index for d in mesh.devices.flat})

    def check(path: Any, leaf: Any) -> np.ndarray:
        leaf = np.asarray(leaf)
        name = jax.tree_util.keystr(path) or "batch"
        if leaf.ndim == 0:
            raise ValueError(f"shard_batch: {name} is a scalar; batch leaves need a batch axis")
        rows = leaf.shape[0]
        if rows % local_devices:
            whole = f"global batch {rows * processes}, " if processes > 1 else ""
            raise ValueError(
                f"shard_batch: {name} has batch size {rows} ({whole}this process's rows) "
                f"which does not split over {local_devices} device(s) of the "
                f"{mesh.devices.size}-device mesh; use a batch size divisible by "
                f"{local_devices * processes}"
            )
        return leaf

    batch = jax.tree_util.tree_map_with_path(check, batch)
    if processes == 1 and jax.process_count() == 1:
        # The whole global batch is here: one device_put for all leaves costs about half
        # of one make_array_from_process_local_data per leaf (host time per step).
        return jax.device_put(batch, sharding)
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, leaf), batch)


def _shard_dim(shape: tuple[int, ...], num_shards: int) -> int | None:
    """First dimension of ``shape`` divisible by ``num_shards`` (``None`` if none)."""
    return next((d for d, size in enumerate(shape) if size % num_shards == 0), None)


def _spec(dim: int | None, axis: str) -> P:
    return P() if dim is None else P(*([None] * dim), axis)


def leaf_shardings(
    tree: PyTree, mesh: Mesh, min_size: int = 2**20, axis: str | None = None
) -> PyTree:
    """The shardings :func:`shard_leaves` gives each leaf (for ``jit``'s ``out_shardings``)."""
    axis = _data_axis(mesh, axis)
    n = mesh.shape[axis]

    def rule(leaf: Any) -> NamedSharding:
        shape = tuple(np.shape(leaf))
        dim = _shard_dim(shape, n) if math.prod(shape) >= min_size else None
        return NamedSharding(mesh, _spec(dim, axis))

    return jax.tree.map(rule, tree)


def shard_leaves(
    tree: PyTree, mesh: Mesh, min_size: int = 2**20, axis: str | None = None
) -> PyTree:
    """Splits large leaves over the data axis instead of replicating them.

    A leaf with at least ``min_size`` entries is split along its first dimension that
    is divisible by the mesh size (a ZeRO/FSDP-like layout that divides its memory by
    the device count); smaller leaves, and leaves with no such dimension, are
    replicated. Apply it to params, ADMM state (``Z``, ``U``) and optimizer state
    alike: the rule depends only on shapes, so a weight, its ``Z``, ``U`` and Adam
    moments get the same layout. Jitted steps run unchanged (XLA gathers weights where
    the forward pass needs them), and :func:`project_sharded` projects such leaves
    without gathering them.
    """
    shardings = leaf_shardings(tree, mesh, min_size, axis)
    return jax.tree.map(_put, tree, shardings)


# ------------------------------------------------------- sharded exact projection


def _concrete_dim(x: Any, mesh: Mesh, axis: str) -> int | None:
    """The dimension of concrete ``x`` that its NamedSharding on ``mesh`` splits on ``axis``."""
    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return None
    sharding = x.sharding
    if not isinstance(sharding, NamedSharding) or sharding.mesh.shape != mesh.shape:
        return None
    for d, entry in enumerate(sharding.spec):
        if entry == axis and x.shape[d] % mesh.shape[axis] == 0:
            return d
    return None


def keep_mask_sharded(
    x: jax.Array,
    k: jax.Array | int,
    mesh: Mesh,
    axis: str = "data",
    dim: int | None = None,
) -> jax.Array:
    """:func:`admmjax.keep_mask` computed shard by shard: the same mask, no gather.

    Keeps exactly ``min(k, n)`` entries of largest ``|x|``, ties to the lowest flat
    index, bit-for-bit equal to ``admmjax.keep_mask(x, k)``. ``x`` is split along
    ``dim`` over ``mesh``'s ``axis`` inside ``jax.shard_map``; by default ``dim`` is
    the dimension ``x`` is already split on (concrete ``x``), else the first dimension
    divisible by the axis size (the rule of :func:`shard_leaves`), else ``x`` is
    flattened and zero-padded to a multiple of the axis size (pads have the smallest
    key and the highest index, so they are never chosen over a real entry). The mask
    comes back split along ``dim`` (after padding, its layout is left to XLA).
    Jittable; ``k`` may be traced. Works on Auto and Explicit mesh axes.

    Exactness across shards: the radix select's two histograms are ``lax.psum``-ed,
    so the threshold ``T`` and the counts of keys above and at ``T`` are global. When
    some ties at ``T`` must be dropped, each shard views its block as ``rows x cols``
    (``rows`` = the product of the dimensions before ``dim``, which are not split),
    counts its ties per row, and ``lax.all_gather`` gives every shard the
    ``shards x rows`` table. The global flat order is (row, shard, position in the
    shard's row), so a tie's global rank is: ties in earlier rows (all shards), plus
    ties in the same row of earlier shards, plus its inclusive rank in its own row;
    it is kept when that rank is at most ``k - count(> T)``.

    This sharded path uses the radix select on every platform (a sort cannot be
    ``psum``-ed), also on GPUs, where the unsharded :func:`admmjax.keep_mask` sorts
    instead because the histograms' scatter-adds are slow there.
    """
    num_shards = mesh.shape[axis]
    shape = tuple(jnp.shape(x))
    if dim is None:
        dim = _concrete_dim(x, mesh, axis)
    if dim is None:
        dim = _shard_dim(shape, num_shards)
    elif not 0 <= dim < len(shape) or shape[dim] % num_shards:
        raise ValueError(
            f"keep_mask_sharded: dim {dim} of shape {shape} does not split over "
            f"{num_shards} shards of axis {axis!r}"
        )
    return _keep_mask_sharded(jnp.asarray(x), k, mesh=mesh, axis=axis, dim=dim)


@partial(jax.jit, static_argnames=("mesh", "axis", "dim"))
def _keep_mask_sharded(
    x: jax.Array, k: jax.Array | int, *, mesh: Mesh, axis: str, dim: int | None
) -> jax.Array:
    shape, n = x.shape, x.size
    if n == 0:
        return jnp.zeros(shape, bool)
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, n)
    if dim is None:
        num_shards = mesh.shape[axis]
        padded = -(-n // num_shards) * num_shards
        # Zeros have key 0, the smallest; at the end they lose every tie (k <= n).
        flat = jnp.pad(jnp.ravel(x), (0, padded - n))
        return _sharded_mask_fn(mesh, axis, 0)(flat, k)[:n].reshape(shape)
    return _sharded_mask_fn(mesh, axis, dim)(x, k)


def _sharded_mask_fn(mesh: Mesh, axis: str, dim: int) -> Callable[[jax.Array, jax.Array], Any]:
    spec = _spec(dim, axis)
    explicit = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))[axis] == AxisType.Explicit

    def local(block: jax.Array, k: jax.Array) -> jax.Array:
        rows = math.prod(block.shape[:dim])
        keys = magnitude_keys(block).reshape(rows, -1)
        threshold, greater, equal = _kth_largest_key(
            keys.ravel(), jnp.maximum(k, 1), lambda hist: lax.psum(hist, axis)
        )

        def all_ties_kept(keys: jax.Array) -> jax.Array:
            return keys >= threshold

        def break_ties(keys: jax.Array) -> jax.Array:
            tied = keys == threshold
            row_ties = jnp.sum(tied, axis=1, dtype=jnp.int32)
            table = lax.all_gather(row_ties, axis)  # (shards, rows), same on every shard
            per_row = jnp.sum(table, axis=0)
            earlier_rows = jnp.cumsum(per_row) - per_row
            earlier_shards = (jnp.cumsum(table, axis=0) - table)[lax.axis_index(axis)]
            rank = (earlier_rows + earlier_shards)[:, None] + jnp.cumsum(
                tied, axis=1, dtype=jnp.int32
            )
            return (keys > threshold) | (tied & (rank <= k - greater))

        # Global counts, so every shard takes the same branch.
        keep = lax.cond(greater + equal == k, all_ties_kept, break_ties, keys)
        return (keep & (k > 0)).reshape(block.shape)

    mapped = jax.shard_map(local, mesh=mesh, in_specs=(spec, P()), out_specs=spec)
    if not explicit:
        return mapped  # shard_map slices a replicated input (or XLA reshards) itself
    # On an Explicit axis shard_map only takes inputs already split as in_specs says.
    return lambda x, k: mapped(jax.sharding.reshard(x, NamedSharding(mesh, spec)), k)


def project_sharded(tree: PyTree, targets: PyTree, mesh: Mesh, axis: str = "data") -> PyTree:
    """:func:`admmjax.project` with each targeted leaf's mask from :func:`keep_mask_sharded`.

    Same result as ``admmjax.project(tree, targets)``, exactly (same kept entries,
    same tie-break); each leaf is processed split over ``axis`` without being
    gathered, and the projected leaf keeps the split (constraint leaves such as
    ``admmjax.NM`` use their ordinary projection, exact under ``jit`` too). Jittable
    (``Keep`` counts and sparsities may be traced); concrete leaves holding NaN raise
    as in ``project``.
    """
    mask_fn = lambda x, k: keep_mask_sharded(x, k, mesh, axis)  # noqa: E731
    treedef, proj = leaf_projections(tree, targets, mask_fn)
    leaves = treedef.flatten_up_to(tree)
    return treedef.unflatten([x if p is None else p[0] for x, p in zip(leaves, proj, strict=True)])
