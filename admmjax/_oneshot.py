r"""One-shot layer-wise pruners: magnitude, Wanda, SparseGPT and layer-wise ADMM (ALPS).

Each pruner takes ONE layer's kernel :math:`W` of shape ``(in, out)`` (Flax ``Dense``
layout, :math:`y = x W`), its calibration statistics and an admmjax target leaf, and
returns the pruned kernel. The statistics come from the layer's calibration inputs
:math:`X` (``tokens x in``): the Gram matrix :math:`H = X^\top X` (:func:`gram_matrix`)
or the input norms :math:`\|X_{:,i}\|_2 = \sqrt{H_{ii}}` (:func:`input_norms`). The
layer-wise problem of SparseGPT and layer-wise ADMM is

.. math::
   \min_{\hat W \in S} \|X W - X \hat W\|_F^2
   = \min_{\hat W \in S} \operatorname{tr}\big((W - \hat W)^\top H (W - \hat W)\big),

which :func:`layer_error` evaluates. It separates over output columns: column
:math:`j` costs :math:`(w_j - \hat w_j)^\top H (w_j - \hat w_j)`.

Targets: a sparsity fraction or ``Keep(n)`` (a budget for the whole layer, except in
Wanda, whose recipe compares within each output), ``NM(n, m)`` (groups of ``m``
consecutive *input* rows of every output column, the 2:4 tensor-core layout),
``Structured`` (magnitude, Wanda, layer-wise ADMM), and ``Stacked(target, axis=0)``
for a stacked kernel ``(L, in, out)`` with statistics ``(L, in, in)`` / ``(L, in)``:
every layer slice is pruned on its own (``jax.vmap``; ``lax.map`` for layer-wise
ADMM). Counts are exact: every result keeps at most the target's count, and its mask
exactly that count (ties to the lowest index, as everywhere in admmjax).

All pruners are pure and jittable with the target and options static, e.g.
``jax.jit(sparsegpt_prune, static_argnames=("target",))``; eager calls run a jitted
core, so they compile once per shape and target. Computation is in ``float32``
(``float64`` under ``jax_enable_x64``); results have the kernel's dtype.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from admmjax._constraints import NM, Structured, _compute_dtype, _int
from admmjax._projections import leaf_projections
from admmjax._select import keep_mask
from admmjax._sparsity import Constraint, Keep, keep_count, resolve_targets
from admmjax._stacked import Stacked

#: SparseGPT's reference dampening: 1% of the mean diagonal of H ("percdamp=.01").
SPARSEGPT_DAMPENING = 0.01
#: SparseGPT's reference block size ("blocksize=128" in ``SparseGPT.fasterprune``).
SPARSEGPT_BLOCK_SIZE = 128


class LayerwiseADMMInfo(NamedTuple):
    r"""What :func:`layerwise_admm_prune` did.

    ``iterations``: ADMM iterations run; ``rho``: the final rho; ``refit_iterations``:
    conjugate-gradient steps of the PCG refit (0 for the other refits);
    ``refit_residual``: the largest relative residual over output columns of the
    normal equations on the support, :math:`\|(H_\lambda (\hat W - W))_S\| /
    \|(H_\lambda W)_S\|`, in the normalised coordinates (0 for an exact solve, up to
    rounding).
    """

    iterations: jax.Array
    rho: jax.Array
    refit_iterations: jax.Array
    refit_residual: jax.Array


# --------------------------------------------------------------------------- statistics


def gram_matrix(inputs: jax.Array) -> jax.Array:
    r"""The input Gram matrix :math:`H = X^\top X` of a layer's calibration inputs.

    ``inputs`` has shape ``(..., in)`` (e.g. ``(batch, seq, in)``); all leading axes
    are tokens. Sums in the compute dtype; Gram matrices of several calibration batches
    add up.
    """
    x = jnp.asarray(inputs)
    if x.ndim < 1:
        raise ValueError(f"gram_matrix: inputs must have shape (..., in), got {x.shape}")
    x = x.reshape(-1, x.shape[-1]).astype(_compute_dtype(x))
    return x.T @ x


def input_norms(inputs: jax.Array) -> jax.Array:
    r"""Wanda's input-feature norms :math:`\|X_{:,i}\|_2` over all tokens (shape ``(in,)``).

    Equal to ``sqrt(diag(gram_matrix(inputs)))``.
    """
    x = jnp.asarray(inputs)
    if x.ndim < 1:
        raise ValueError(f"input_norms: inputs must have shape (..., in), got {x.shape}")
    x = x.reshape(-1, x.shape[-1]).astype(_compute_dtype(x))
    return jnp.sqrt(jnp.sum(x * x, axis=0))


def layer_error(kernel: jax.Array, pruned: jax.Array, gram: jax.Array) -> jax.Array:
    r"""The layer-wise error :math:`\|X W - X \hat W\|_F^2 = \mathrm{tr}(\Delta^\top H \Delta)`.

    ``kernel`` and ``pruned`` are ``(in, out)`` (or stacked ``(L, in, out)`` with
    ``gram`` ``(L, in, in)``, summed over layers), :math:`\Delta = W - \hat W`.
    """
    delta = (jnp.asarray(kernel) - jnp.asarray(pruned)).astype(_compute_dtype(kernel))
    return jnp.sum(delta * (jnp.asarray(gram, delta.dtype) @ delta))


# --------------------------------------------------------------------------- validation


def _layer_target(owner: str, kernel: Any, target: Any) -> Any:
    """The target normalised and validated against the kernel (errors name ``owner``)."""
    if target is None:
        raise ValueError(f"{owner}: target is None; give a sparsity, Keep(n) or a constraint")
    if isinstance(target, Keep) and isinstance(target.n, jax.core.Tracer):
        raise TypeError(f"{owner}: Keep(n) needs a concrete n (the target is static)")
    _, [leaf] = resolve_targets({"kernel": kernel}, {"kernel": target})
    return leaf.spec


def _check_layer(
    owner: str, kernel: Any, stats: Any, stats_name: str, stats_dims: int, target: Any
) -> tuple[Any, bool, Any]:
    """Checks shapes before any work; returns ``(target, stacked, per-slice target)``.

    A plain kernel is ``(in, out)``; a ``Stacked`` target needs ``(L, in, out)`` with the
    stacked axis 0. ``stats`` is ``(in,) * stats_dims`` (with a leading ``L`` if stacked).
    """
    shape = tuple(jnp.shape(kernel))
    if not jnp.issubdtype(jnp.result_type(kernel), jnp.floating):
        raise TypeError(f"{owner}: kernel must be floating point, got {jnp.result_type(kernel)}")
    stacked = isinstance(target, Stacked)
    if stacked:
        if len(shape) != 3:
            raise ValueError(
                f"{owner}: a Stacked target needs a stacked kernel (L, in, out), got shape {shape}"
            )
        if target.split_shape(shape)[0] != (0,):
            raise ValueError(
                f"{owner}: Stacked axis must be 0 (kernel (L, in, out)), got axis {target.axis}"
            )
    elif len(shape) != 2:
        raise ValueError(
            f"{owner}: kernel must be (in, out) (Flax Dense layout), got shape {shape}; for "
            "a stacked kernel (L, in, out) pass Stacked(target, axis=0), and reshape other "
            "layouts (e.g. attention (embed, heads, head_dim)) to (in, out) first"
        )
    spec = _layer_target(owner, kernel, target)
    if stats is not None:
        want = shape[:-2] + (shape[-2],) * stats_dims
        got = tuple(jnp.shape(stats))
        if got != want:
            raise ValueError(
                f"{owner}: {stats_name} must have shape {want} for a kernel of shape {shape}, "
                f"got {got}"
            )
        if not jnp.issubdtype(jnp.result_type(stats), jnp.floating):
            raise TypeError(
                f"{owner}: {stats_name} must be floating point, got {jnp.result_type(stats)}"
            )
    inner = spec.target if stacked else spec
    return spec, stacked, inner


def _nonnegative(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}: {name} must be finite and >= 0, got {value!r}")
    return float(value)


def _positive(owner: str, name: str, value: Any) -> float:
    value = _nonnegative(owner, name, value)
    if value == 0:
        raise ValueError(f"{owner}: {name} must be > 0, got {value!r}")
    return value


def _per_slice(fn: Callable, stacked: bool, kernel: Any, stats: Any) -> Any:
    """``fn(kernel, stats)`` on a plain layer, ``jax.vmap`` of it over stacked layers."""
    return jax.vmap(fn)(kernel, stats) if stacked else fn(kernel, stats)


def _project_leaf(x: jax.Array, target: Any) -> tuple[jax.Array, jax.Array]:
    """``(projection, mask)`` of one array onto ``target``'s set (admmjax's own Z-step)."""
    return leaf_projections({"kernel": x}, {"kernel": target})[1][0]


def _dampen(gram: jax.Array, dampening: float) -> jax.Array:
    r""":math:`H + \lambda I` with :math:`\lambda` = ``dampening`` times the mean of diag H."""
    diag = jnp.diagonal(gram)
    return gram + dampening * jnp.mean(diag) * jnp.eye(gram.shape[0], dtype=gram.dtype)


# --------------------------------------------------------------------------- magnitude


def magnitude_prune(kernel: jax.Array, target: Any) -> jax.Array:
    """Magnitude pruning of one layer: admmjax's exact projection onto ``target``'s set.

    Keeps the largest ``|W|`` (for a fraction or ``Keep``, over the whole layer), or the
    constraint's own projection (``NM``, ``Structured``, ``Stacked``, ...). No statistics.
    """
    _layer_target("magnitude_prune", kernel, target)
    return _project_leaf(jnp.asarray(kernel), target)[0]


# --------------------------------------------------------------------------- Wanda


def wanda_scores(kernel: jax.Array, norms: jax.Array) -> jax.Array:
    r"""Wanda's importance :math:`S_{ij} = |W_{ij}|\,\|X_{:,i}\|_2` (input ``i``, output ``j``).

    ``norms`` has shape ``(in,)`` (``(L, in)`` for a stacked kernel ``(L, in, out)``).
    """
    kernel = jnp.asarray(kernel)
    return jnp.abs(kernel).astype(_compute_dtype(kernel)) * jnp.asarray(norms)[..., :, None]


def _wanda_per_column(target: Any, shape: tuple[int, int], per_output: bool) -> int | None:
    """Entries Wanda keeps in each output column, or ``None`` to project the scores."""
    if not per_output or isinstance(target, Constraint):
        return None
    n_in, n_out = shape
    if isinstance(target, Keep):
        if target.n % n_out:
            raise ValueError(
                f"wanda_prune: per_output=True splits Keep({target.n}) evenly over the "
                f"{n_out} output columns, but {target.n} is not a multiple of {n_out}; "
                "pass per_output=False for one budget over the layer"
            )
        return target.n // n_out
    return int(keep_count(target, n_in))


def _top_per_column(scores: jax.Array, k: int) -> jax.Array:
    """Mask of the ``k`` largest scores of every column, ties to the lowest row.

    ``lax.top_k`` over the rows (it returns equal values lowest index first): one small
    sort per column, where the layer-wide radix select of ``Stacked`` under ``vmap``
    would build a 65,536-bin histogram per column.
    """
    n_in, n_out = scores.shape
    if k == 0:
        return jnp.zeros(scores.shape, bool)
    _, rows = lax.top_k(scores.T, k)
    return jnp.zeros((n_out, n_in), bool).at[jnp.arange(n_out)[:, None], rows].set(True).T


def wanda_prune(
    kernel: jax.Array, norms: jax.Array, target: Any, *, per_output: bool = True
) -> jax.Array:
    r"""Wanda (Sun et al., 2023): keep the largest :math:`|W_{ij}|\,\|X_{:,i}\|_2`; no update.

    With ``per_output=True`` (Wanda's recipe: "per output", i.e. per row of a PyTorch
    ``(out, in)`` weight, per column here) a fraction ``s`` prunes ``floor(s * in)``
    entries of every output column and ``Keep(n)`` keeps ``n / out`` per column; with
    ``per_output=False`` the scores compete over the whole layer. ``NM(n, m)`` keeps the
    ``n`` best scores of every ``m`` consecutive inputs of each column (Wanda's N:M);
    other constraints are projections of the scores. ``norms``: :func:`input_norms`.
    """
    _, stacked, inner = _check_layer("wanda_prune", kernel, norms, "norms", 1, target)
    kernel = jnp.asarray(kernel)
    per_column = _wanda_per_column(inner, kernel.shape[-2:], per_output)

    def prune_slice(w: jax.Array, nrm: jax.Array) -> jax.Array:
        scores = wanda_scores(w, nrm)
        if per_column is None:
            mask = _project_leaf(scores, inner)[1]
        else:
            mask = _top_per_column(scores, per_column)
        return jnp.where(mask, w, jnp.zeros((), w.dtype))

    return _per_slice(prune_slice, stacked, kernel, jnp.asarray(norms))


# --------------------------------------------------------------------------- SparseGPT


def _upper_cholesky_of_inverse(h: jax.Array) -> jax.Array:
    r"""Upper :math:`U` with :math:`H^{-1} = U^\top U` (SparseGPT's ``Hinv``)."""
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    lower = jnp.linalg.cholesky(h)
    h_inv = jax.scipy.linalg.cho_solve((lower, True), eye)
    return jnp.linalg.cholesky((h_inv + h_inv.T) / 2).T


def _obs_rows(
    w1: jax.Array, u1: jax.Array, keep: jax.Array, nm: NM | None
) -> tuple[jax.Array, jax.Array]:
    r"""Prunes the rows of one block in order, each with its OBS update of the later rows.

    Row ``i`` is replaced by its masked copy :math:`q_i`; the error
    :math:`e_i = (w_i - q_i) / U_{ii}` is spread over the block's later rows as
    :math:`W_{r} \mathrel{-}= U_{ir} e_i` (:math:`U` upper, so earlier rows are untouched).
    With ``nm`` the mask of each group of ``m`` rows is chosen when the group is reached,
    from the updated weights: the ``n`` largest :math:`|w| / U_{ii}` of each column.
    Returns the block and its errors (for the update of the rows after the block).
    """
    d = jnp.diagonal(u1)

    def row(i, carry):
        w1, err1, keep = carry
        wi = w1[i]
        qi = jnp.where(keep[i], wi, jnp.zeros((), wi.dtype))
        e = (wi - qi) / d[i]
        w1 = (w1 - u1[i][:, None] * e[None, :]).at[i].set(qi)
        return w1, err1.at[i].set(e), keep

    carry = (w1, jnp.zeros_like(w1), keep)
    if nm is None:
        carry = lax.fori_loop(0, w1.shape[0], row, carry)
    else:
        m = nm.m

        def group(g, carry):
            w1, err1, keep = carry
            rows = lax.dynamic_slice_in_dim(w1, g * m, m)
            scale = lax.dynamic_slice_in_dim(d, g * m, m)
            group_keep = _project_leaf(jnp.abs(rows) / scale[:, None], NM(nm.n, m, axis=0))[1]
            keep = lax.dynamic_update_slice_in_dim(keep, group_keep, g * m, 0)
            return lax.fori_loop(g * m, (g + 1) * m, row, (w1, err1, keep))

        carry = lax.fori_loop(0, w1.shape[0] // m, group, carry)
    return carry[0], carry[1]


@functools.partial(jax.jit, static_argnames=("target", "dampening", "block_size"))
def _sparsegpt(
    kernel: jax.Array, gram: jax.Array, target: Any, dampening: float, block_size: int
) -> jax.Array:
    n_in, n_out = kernel.shape
    dt = _compute_dtype(kernel)
    w, h = kernel.astype(dt), gram.astype(dt)
    # As the reference code: an input that never fires gets H_ii = 1 and a zero row.
    dead = jnp.diagonal(h) == 0
    h = h + jnp.diag(dead.astype(dt))
    w = jnp.where(dead[:, None], 0, w)
    u = _upper_cholesky_of_inverse(_dampen(h, dampening))
    nm = target if isinstance(target, NM) else None
    if nm is not None:
        block_size = max(nm.m, block_size // nm.m * nm.m)  # whole N:M groups per block
    total = n_in * n_out
    pruned_total = total - int(keep_count(target, total)) if nm is None else 0
    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        w1, u1 = w[i1:i2], u[i1:i2, i1:i2]
        if nm is None:
            # The block's share of the budget: cumulative floors sum to the exact total.
            pruned = pruned_total * i2 * n_out // total - pruned_total * i1 * n_out // total
            score = jnp.abs(w1) / jnp.diagonal(u1)[:, None]
            keep = keep_mask(score, w1.size - pruned)
        else:
            keep = jnp.zeros(w1.shape, bool)
        w1, err1 = _obs_rows(w1, u1, keep, nm)
        w = w.at[i1:i2].set(w1).at[i2:].add(-(u[i1:i2, i2:].T @ err1))
    return w.astype(kernel.dtype)


def _support_target(owner: str, target: Any, allowed: tuple[type, ...]) -> None:
    if isinstance(target, Constraint) and not isinstance(target, allowed):
        names = ", ".join(t.__name__ for t in allowed)
        raise ValueError(
            f"{owner}: target {target!r} is not supported; use a sparsity, Keep(n) or "
            f"one of {names} (inside Stacked for a stacked kernel)"
        )


def sparsegpt_prune(
    kernel: jax.Array,
    gram: jax.Array,
    target: Any,
    *,
    dampening: float = SPARSEGPT_DAMPENING,
    block_size: int = SPARSEGPT_BLOCK_SIZE,
) -> jax.Array:
    r"""SparseGPT (Frantar & Alistarh, 2023): OBS pruning of input rows in blocks.

    With :math:`H_\lambda = H + \lambda I`, :math:`\lambda` = ``dampening`` times the mean
    of :math:`\operatorname{diag} H` (the reference code's ``percdamp=.01``), and the upper
    Cholesky factor :math:`U` of :math:`H_\lambda^{-1} = U^\top U`, the input rows are
    visited in order. Removing row ``q``'s weights :math:`w_q` (for the remaining rows
    :math:`F = \{q, q+1, \dots\}`) is the Optimal Brain Surgeon step

    .. math::
       \delta_F = -\frac{w_q}{[H_F^{-1}]_{qq}} [H_F^{-1}]_{:,q}, \qquad
       \text{error} = \frac{w_q^2}{[H_F^{-1}]_{qq}},

    and :math:`[H_F^{-1}]_{:,q} / [H_F^{-1}]_{qq} = U_{q,F} / U_{qq}`, so one Cholesky
    factor serves every step. Rows go in blocks of ``block_size`` (128, the reference
    code's ``blocksize``): inside a block the updates are applied row by row, to the
    rows after it as one matrix product (lazy batch updates).

    Mask selection is adaptive, as in the paper: for a fraction or ``Keep`` each block
    prunes its share of the layer's budget (the cumulative floors of the budget times the
    block's share of entries, so the total is exact) among the smallest scores
    :math:`w^2 / U_{qq}^2` of the block's current weights; for ``NM(n, m)`` each group of
    ``m`` input rows keeps, per output column, the ``n`` largest scores when reached.
    ``Structured`` and quantized targets are not supported.
    """
    owner = "sparsegpt_prune"
    _, stacked, inner = _check_layer(owner, kernel, gram, "gram", 2, target)
    _support_target(owner, inner, (NM,))
    if isinstance(inner, NM) and inner._group_axes(jnp.shape(kernel)[-2:]) != (0,):
        raise ValueError(
            f"{owner}: {inner!r} must group along the input axis (axis 0 of an (in, out) "
            f"kernel), got axis {inner.axis}"
        )
    dampening = _nonnegative(owner, "dampening", dampening)
    block_size = _int(owner, "block_size", block_size, 1)
    core = functools.partial(_sparsegpt, target=inner, dampening=dampening, block_size=block_size)
    return _per_slice(core, stacked, jnp.asarray(kernel), jnp.asarray(gram))


# --------------------------------------------------------------------------- layer-wise ADMM

#: ALPS's schedule (``ALPS_admm``): rho starts at 0.1 on the normalised H, grows every 3
#: iterations by 1.3 / 1.2 / 1.1 as the support changes by > 10% / > 0.5% / at all.
ADMM_RHO = 0.1
ADMM_UPDATE_EVERY = 3
_RHO_STEPS = ((0.1, 1.3), (0.005, 1.2))
_RHO_SMALL_STEP = 1.1
_RHO_MAX = 1e6
_STALL_AFTER, _STALL_CHANGE = 30, 3e-4
#: The PCG refit's defaults: at most 30 conjugate-gradient steps, to a relative residual
#: of 1e-5 in every output column (ALPS: 10 steps, 1e-4).
REFIT_MAX_ITER = 30
REFIT_RTOL = 1e-5


def _exact_refit(h: jax.Array, g: jax.Array, keep: jax.Array, batch: int) -> jax.Array:
    r"""Exact least squares on a fixed support, column by column (a direct solve).

    Column :math:`j` with support :math:`S` solves :math:`H_{SS} x_S = g_S` and
    :math:`x_{\bar S} = 0`, i.e. the SPD system
    :math:`(M H M + I - M) x = M g` with :math:`M = \operatorname{diag}(\text{keep}_j)`,
    by Cholesky. ``lax.map`` over columns in batches bounds the memory to ``batch``
    matrices of ``in x in``.
    """
    eye = jnp.eye(h.shape[0], dtype=h.dtype)

    def column(args):
        keep_j, g_j = args
        m = keep_j.astype(h.dtype)
        a = h * m[:, None] * m[None, :] + eye * (1 - m)
        x = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(a), True), m * g_j)
        return x * m

    return lax.map(column, (keep.T, g.T), batch_size=batch).T


def _relative_residuals(h: jax.Array, g: jax.Array, m: jax.Array, x: jax.Array) -> jax.Array:
    r"""Per column :math:`\|M (g - H x)\|_2 / \|M g\|_2` (0 where :math:`M g = 0`)."""
    r = m * (g - h @ x)
    return _column_ratio(jnp.sum(r * r, axis=0), m * g)


def _column_ratio(r2: jax.Array, b: jax.Array) -> jax.Array:
    b2 = jnp.sum(b * b, axis=0)
    return jnp.sqrt(jnp.where(b2 > 0, r2 / jnp.where(b2 > 0, b2, 1), 0))


def _pcg_refit(
    h: jax.Array,
    g: jax.Array,
    keep: jax.Array,
    x0: jax.Array,
    max_iter: jax.Array | int,
    rtol: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    r"""Least squares on a fixed support by conjugate gradient, all columns at once.

    Column :math:`j` solves :math:`H_{SS} x_S = g_S` (:math:`x_{\bar S} = 0`) as CG on
    the masked operator :math:`A p = M (H p)`, :math:`M` the 0/1 mask: residuals and
    directions stay zero off the support, so one product :math:`H P` serves every
    column, and the per-column scalars are column sums:

    .. math::
       r_0 = M(g - H x_0), \quad p_0 = r_0; \qquad
       \alpha = \frac{r^\top r}{p^\top A p}, \quad x \mathrel{+}= \alpha p, \quad
       r \mathrel{-}= \alpha A p, \quad
       p \leftarrow r + \frac{r_+^\top r_+}{r^\top r} p.

    ``h`` is the normalised :math:`D^{-1} H D^{-1}` with unit diagonal, so this is the
    Jacobi-preconditioned CG of the original coordinates (CG on :math:`D^{-1} H D^{-1}`
    is PCG on :math:`H` with preconditioner :math:`\operatorname{diag}(H)^{-1}`) at no
    extra sweep. It stops once every column's relative residual
    :math:`\|r_j\| / \|M g_j\|` is at most ``rtol``, or after ``max_iter`` steps.
    ``max_iter`` and ``rtol`` may be traced (they only steer the loop), so changing
    them does not recompile. Returns the solution and the steps run.
    """
    m = keep.astype(h.dtype)
    b = m * g
    x = m * x0
    r = b - m * (h @ x)
    rr = jnp.sum(r * r, axis=0)
    b2 = jnp.sum(b * b, axis=0)
    tol2 = jnp.asarray(rtol, h.dtype) ** 2 * b2

    def cond(state):
        _, _, _, rr, it = state
        return (it < max_iter) & jnp.any(rr > tol2)

    def body(state):
        x, r, p, rr, it = state
        ap = m * (h @ p)
        pap = jnp.sum(p * ap, axis=0)
        # A converged column (r = p = 0) gets a zero step instead of 0 / 0.
        alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1), 0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = jnp.sum(r * r, axis=0)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1), 0)
        return x, r, r + beta * p, rr_new, it + 1

    x, _, _, _, it = lax.while_loop(cond, body, (x, r, r, rr, jnp.asarray(0)))
    return x, it


_REFITS = ("pcg", "exact", None)


@functools.partial(
    jax.jit,
    static_argnames=(
        "target",
        "dampening",
        "rho",
        "update_every",
        "refit",
        "batch",
    ),
)
def _layerwise_admm(
    kernel: jax.Array,
    gram: jax.Array,
    target: Any,
    dampening: float,
    rho: float,
    max_iter: jax.Array,
    update_every: int,
    refit: str | None,
    batch: int,
    refit_max_iter: jax.Array,
    refit_rtol: jax.Array,
) -> tuple[jax.Array, LayerwiseADMMInfo]:
    dt = _compute_dtype(kernel)
    h = _dampen(gram.astype(dt), dampening)
    # ALPS's normalisation: H -> D^-1 H D^-1 with D = sqrt(diag H), W -> D W. A support
    # set is invariant under this row scaling, and rho = 0.1 then suits every layer.
    scale = jnp.sqrt(jnp.diagonal(h))
    scale = jnp.where(scale > 0, scale, 1)
    hn = h / scale[:, None] / scale[None, :]
    b0 = kernel.astype(dt) * scale[:, None]
    g = hn @ b0  # the least-squares right-hand side X^T X W
    lam, q = jnp.linalg.eigh(hn)
    lam = jnp.maximum(lam, 0)
    n_in, n_out = b0.shape
    # rho changes at most every `update_every` iterations, so forming (H + rho I)^-1
    # (one in^3 product) then costs less than the second in^2 out product per iteration
    # of applying Q (Lambda + rho)^-1 Q^T as two factors whenever in < update_every out.
    explicit = n_in < update_every * n_out

    def inverse(r):
        return (q / (lam + r)) @ q.T

    def project(x):
        return _project_leaf(x, target)

    d0, keep0 = project(b0)
    kept = jnp.maximum(jnp.sum(keep0), 1).astype(dt)
    r0 = jnp.asarray(rho, dt)
    qt_g = None if explicit else q.T @ g

    def cond(state):
        return (state[4] < max_iter) & ~state[6]

    def body(state):
        b, d, v, r, it, prev_keep, _, inv = state
        # W-step: B = (H + rho I)^-1 (H B0 - V + rho Z), H = Q diag(lam) Q^T.
        if explicit:
            b = inv @ (g - v + r * d)
        else:
            b = q @ ((qt_g + q.T @ (r * d - v)) / (lam + r)[:, None])
        d, keep = project(b + v / r)
        v = v + r * (b - d)
        it = it + 1
        change = jnp.sum(keep != prev_keep) / kept
        factor = _RHO_SMALL_STEP
        for threshold, step in reversed(_RHO_STEPS):
            factor = jnp.where(change > threshold, step, factor)
        stop = (change == 0) | ((it >= _STALL_AFTER) & (change < _STALL_CHANGE))
        check = it % update_every == 0
        new_r = jnp.where(check, jnp.minimum(r * factor, _RHO_MAX), r)
        if explicit:  # a new inverse only when rho changed, and not after the last step
            again = (new_r != r) & ~(check & stop) & (it < max_iter)
            inv = lax.cond(again, inverse, lambda _: inv, new_r)
        prev_keep = jnp.where(check, keep, prev_keep)
        return b, d, v, new_r, it, prev_keep, check & stop, inv

    inv0 = inverse(r0) if explicit else jnp.zeros((), dt)
    init = (b0, d0, jnp.zeros_like(b0), r0, 0, keep0, jnp.asarray(False), inv0)
    b, _, _, r, it, _, _, _ = lax.while_loop(cond, body, init)
    z, keep = project(b)  # the support found, as ALPS: the projection of the last W
    steps = jnp.asarray(0)
    if refit == "pcg":
        z, steps = _pcg_refit(hn, g, keep, z, refit_max_iter, refit_rtol)
    elif refit == "exact":
        z = _exact_refit(hn, g, keep, batch)
    residual = jnp.max(_relative_residuals(hn, g, keep.astype(dt), z))
    info = LayerwiseADMMInfo(it, r, steps, residual)
    return (z / scale[:, None]).astype(kernel.dtype), info


def layerwise_admm_prune(
    kernel: jax.Array,
    gram: jax.Array,
    target: Any,
    *,
    dampening: float = SPARSEGPT_DAMPENING,
    rho: float = ADMM_RHO,
    max_iter: int = 300,
    update_every: int = ADMM_UPDATE_EVERY,
    refit: str | None = "pcg",
    refit_max_iter: int = REFIT_MAX_ITER,
    refit_rtol: float = REFIT_RTOL,
    refit_batch: int = 64,
    return_info: bool = False,
) -> jax.Array | tuple[jax.Array, LayerwiseADMMInfo]:
    r"""Layer-wise ADMM (ALPS, Meng et al., NeurIPS 2024) with admmjax's exact Z-step.

    Solves :math:`\min_{\hat W \in S} \operatorname{tr}((W - \hat W)^\top H_\lambda (W -
    \hat W))` (dampening as in :func:`sparsegpt_prune`, ALPS's default too) in ALPS's
    normalised coordinates (:math:`H \to D^{-1} H D^{-1}`, :math:`W \to D W`,
    :math:`D = \operatorname{diag}(H)^{1/2}`) by ADMM on the split :math:`B = Z`:

    .. math::
       B &= (H + \rho I)^{-1} (H W - V + \rho Z), \\
       Z &= \Pi_S(B + V / \rho), \qquad V \mathrel{+}= \rho (B - Z).

    :math:`H = Q \Lambda Q^\top` is decomposed once. When rho changes (at most every
    ``update_every`` iterations) the inverse :math:`Q (\Lambda + \rho)^{-1} Q^\top` is
    formed (one ``in^3`` product), so the W-step is one ``in x in`` by ``in x out``
    product, as in ALPS; for a kernel with ``in >= update_every * out`` the two factors
    are applied instead (two products per iteration, no ``in^3``). :math:`\Pi_S` is
    admmjax's exact projection of the target (so fractions, ``Keep``, ``NM`` including
    2:4, ``Structured`` all work).

    The rho schedule (ALPS's ``ALPS_admm``; ours keeps its numbers): rho starts at
    ``rho = 0.1``; every ``update_every = 3`` iterations the support change (entries
    whose membership in :math:`Z`'s mask changed since the last check, over the kept
    count) multiplies rho by 1.3 if above 10%, 1.2 if above 0.5%, 1.1 otherwise, capped
    at 1e6. It stops when a check finds no change, after 30 iterations when the change
    is below 0.03%, or at ``max_iter = 300``. Unlike ALPS we drop its branch that divides
    rho by 5 and restarts when the support stalls before rho ever grew (with the
    normalised H and rho = 0.1 the support moves at first), so the loop is one
    ``lax.while_loop``. A larger starting rho stops sooner but on worse supports: on
    the first layer of a trained LeNet-300-100 (784 x 300, 8,192 MNIST images) at 70%,
    rho = 0.2 / 0.4 cut the iterations from 36 to 30 / 24 and raised the error by
    12% / 41% (at 90%: 14% / 46%; measured ad hoc, not a committed benchmark), so we
    keep ALPS's 0.1.

    The support :math:`S` is that of :math:`\Pi_S(B)` for the last :math:`B` (as ALPS).
    The kept weights are then refitted on it: the least-squares problem
    :math:`\min_{x_{\bar S} = 0} (x - w)^\top H (x - w)` of each output column
    :math:`j`, i.e. :math:`H_{SS} x_S = (H w)_S`:

    * ``refit="pcg"`` (default, ALPS's post-processing): conjugate gradient on the
      masked operator :math:`x \mapsto M \odot (H x)` for all columns at once (one
      ``in x in`` by ``in x out`` product per step), Jacobi-preconditioned (the
      normalised :math:`H` has unit diagonal), warm-started from :math:`\Pi_S(B)`;
      it stops when every column's relative residual
      :math:`\|(H x - H w)_S\| / \|(H w)_S\|` is at most ``refit_rtol`` (1e-5) or
      after ``refit_max_iter`` (30) steps. ALPS runs at most 10 steps to ``rtol=1e-4``;
      ours are tighter because CG from the ADMM point is cheap next to ADMM itself and
      the tests hold the result to the exact solution;
    * ``refit="exact"``: a direct Cholesky solve per column (``refit_batch`` columns
      at a time), exact to rounding but ``in^3 / 3`` flops per column: at 512 x 2048,
      70%, on the shared 2-core CPU the whole call took 50 s with it and 0.75 s with
      the PCG (6 steps), to the same error (``bench_oneshot.py``);
    * ``refit=None``: :math:`\Pi_S(B)` as it is.

    ``return_info`` also returns a :class:`LayerwiseADMMInfo` (iterations, final rho,
    CG steps, the refit's largest relative residual). Quantized targets are not
    supported.
    """
    owner = "layerwise_admm_prune"
    _, stacked, inner = _check_layer(owner, kernel, gram, "gram", 2, target)
    _support_target(owner, inner, (NM, Structured))
    if not (refit is None or (isinstance(refit, str) and refit in _REFITS)):
        raise ValueError(f"{owner}: refit must be 'pcg', 'exact' or None, got {refit!r}")
    core = functools.partial(
        _layerwise_admm,
        target=inner,
        dampening=_nonnegative(owner, "dampening", dampening),
        rho=_positive(owner, "rho", rho),
        update_every=_int(owner, "update_every", update_every, 1),
        refit=refit,
        batch=_int(owner, "refit_batch", refit_batch, 1),
        # Runtime values, not static: new step limits or tolerance do not recompile.
        max_iter=jnp.asarray(_int(owner, "max_iter", max_iter, 1)),
        refit_max_iter=jnp.asarray(_int(owner, "refit_max_iter", refit_max_iter, 0)),
        refit_rtol=jnp.asarray(_nonnegative(owner, "refit_rtol", refit_rtol)),
    )
    kernel, gram = jnp.asarray(kernel), jnp.asarray(gram)
    if stacked:
        # One slice after another, not vmap: under vmap the loop's lax.cond (a new
        # inverse only when rho changed) would become a select computing it every
        # iteration, and every slice would run as many iterations as the slowest one.
        pruned, info = lax.map(lambda args: core(*args), (kernel, gram))
    else:
        pruned, info = core(kernel, gram)
    return (pruned, info) if return_info else pruned
