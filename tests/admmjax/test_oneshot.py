"""One-shot layer-wise pruners against independent references on small random layers.

References are written here in NumPy (float64): the OBS closed form, sequential OBS on
a given mask, least squares per output column (``numpy.linalg.lstsq``), Wanda's
formula. Several random problems run in one call as a ``Stacked`` kernel, which tests
``Stacked`` and keeps the number of XLA compilations (most of this file's time) small.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import admmjax

L, IN, OUT, TOKENS = 4, 32, 8, 256
DAMP = admmjax._oneshot.SPARSEGPT_DAMPENING


@functools.cache
def problems(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``L`` random well-conditioned layers: inputs (L, T, in), kernels, Gram matrices."""
    rng = np.random.default_rng(seed)
    mix = np.eye(IN) + 0.3 * rng.normal(size=(L, IN, IN)) / np.sqrt(IN)
    x = np.einsum("lti,lij->ltj", rng.normal(size=(L, TOKENS, IN)), mix).astype(np.float32)
    w = rng.normal(size=(L, IN, OUT)).astype(np.float32)
    h = np.einsum("lti,ltj->lij", x.astype(np.float64), x).astype(np.float32)
    return x, w, h


def error(w: np.ndarray, pruned: np.ndarray, h: np.ndarray) -> float:
    """``||X W - X W'||^2`` in float64."""
    d = np.asarray(w, np.float64) - np.asarray(pruned, np.float64)
    return float(np.sum(d * (np.asarray(h, np.float64) @ d)))


def lstsq_refit(x: np.ndarray, w: np.ndarray, support: np.ndarray, damp: float) -> np.ndarray:
    """Least squares per output column on ``support``, by ``numpy.linalg.lstsq``.

    With ``damp`` > 0 the problem is the dampened one the solvers see:
    ``||X w - X w'||^2 + lam ||w - w'||^2`` (``lam`` = damp * mean diag H), i.e. least
    squares on ``X`` stacked over ``sqrt(lam) I``.
    """
    x = np.asarray(x, np.float64)
    lam = damp * np.mean(np.sum(x * x, axis=0))
    a = np.vstack([x, np.sqrt(lam) * np.eye(x.shape[1])])
    out = np.zeros(w.shape)
    for j in range(w.shape[1]):
        s = support[:, j]
        out[s, j] = np.linalg.lstsq(a[:, s], a @ w[:, j].astype(np.float64), rcond=None)[0]
    return out


def sequential_obs(w: np.ndarray, h: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """SparseGPT's update on a given mask, by its definition: rows in order, each pruned
    weight removed by the OBS step over the rows not yet visited (float64)."""
    w = np.asarray(w, np.float64).copy()
    h = np.asarray(h, np.float64)
    n = w.shape[0]
    for q in range(n):
        h_inv = np.linalg.inv(h[q:, q:])
        for j in np.flatnonzero(~keep[q]):
            w[q:, j] -= w[q, j] / h_inv[0, 0] * h_inv[:, 0]
    return w


def dampened(h: np.ndarray, damp: float) -> np.ndarray:
    h = np.asarray(h, np.float64)
    return h + damp * np.mean(np.diag(h)) * np.eye(h.shape[0])


def kept_count(target) -> int:
    return (
        IN * OUT // target.m * target.n
        if isinstance(target, admmjax.NM)
        else IN * OUT - int(target * IN * OUT)
    )


def assert_meets(pruned: np.ndarray, target) -> None:
    """Exactly the target's count of nonzeros; for N:M exactly n of every m inputs."""
    nz = np.asarray(pruned) != 0
    assert nz.sum() == kept_count(target)
    if isinstance(target, admmjax.NM):
        groups = nz.reshape(IN // target.m, target.m, OUT).sum(axis=1)
        np.testing.assert_array_equal(groups, target.n)


# --------------------------------------------------------------------------- statistics


def test_gram_and_norms_match_numpy():
    x, _, _ = problems()
    x3 = x[0].reshape(4, TOKENS // 4, IN)  # leading axes are all tokens
    x64 = x[0].astype(np.float64)
    np.testing.assert_allclose(admmjax.gram_matrix(x3), x64.T @ x64, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(admmjax.input_norms(x3), np.linalg.norm(x64, axis=0), rtol=1e-5)
    w = x[0][:IN, :OUT]
    np.testing.assert_allclose(
        admmjax.layer_error(w, 0 * w, x64.T @ x64),
        np.sum((x64 @ w) ** 2),
        rtol=1e-5,
    )


# --------------------------------------------------------------------------- magnitude, Wanda


def test_magnitude_is_admmjax_projection():
    _, w, _ = problems()
    for target in (0.7, admmjax.NM(2, 4)):
        np.testing.assert_array_equal(
            admmjax.magnitude_prune(w[0], target), admmjax.project(w[0], target)
        )
        assert_meets(admmjax.magnitude_prune(w[0], target), target)


def test_wanda_scores_and_per_output_selection_match_formula():
    x, w, _ = problems()
    norms = np.linalg.norm(x[0].astype(np.float64), axis=0)
    scores = np.abs(w[0]) * norms[:, None]
    np.testing.assert_allclose(admmjax.wanda_scores(w[0], norms), scores, rtol=1e-6)
    pruned = np.asarray(admmjax.wanda_prune(w[0], norms, 0.7))
    kept_per_column = IN - int(0.7 * IN)
    for j in range(OUT):
        top = np.argsort(-scores[:, j], kind="stable")[:kept_per_column]
        expect = np.zeros(IN)
        expect[top] = w[0][top, j]
        np.testing.assert_array_equal(pruned[:, j], expect)
    # One budget over the layer, and Keep(n) split evenly over the columns.
    layer = np.asarray(admmjax.wanda_prune(w[0], norms, 0.7, per_output=False))
    assert (layer != 0).sum() == kept_count(0.7)
    assert np.abs(scores[layer != 0]).min() >= np.abs(scores[layer == 0]).max()
    keep = admmjax.wanda_prune(w[0], norms, admmjax.Keep(kept_per_column * OUT))
    np.testing.assert_array_equal(keep, pruned)


def test_wanda_nm_keeps_best_scores_of_each_group():
    x, w, _ = problems()
    norms = np.linalg.norm(x[0].astype(np.float64), axis=0)
    pruned = np.asarray(admmjax.wanda_prune(w[0], norms, admmjax.NM(2, 4)))
    assert_meets(pruned, admmjax.NM(2, 4))
    groups = (np.abs(w[0]) * norms[:, None]).reshape(IN // 4, 4, OUT)
    kept = (pruned != 0).reshape(IN // 4, 4, OUT)
    assert (
        np.where(kept, groups, np.inf).min(axis=1) >= np.where(kept, -np.inf, groups).max(axis=1)
    ).all()


@pytest.mark.parametrize("target", [0.7, admmjax.NM(2, 4)], ids=str)
def test_magnitude_and_wanda_stacked_prune_every_slice_on_its_own(target):
    x, w, _ = problems()
    norms = np.linalg.norm(x.astype(np.float64), axis=1).astype(np.float32)  # (L, in)
    stacked = admmjax.Stacked(target, axis=0)
    magnitude = np.asarray(admmjax.magnitude_prune(w, stacked))
    wanda = np.asarray(admmjax.wanda_prune(w, norms, stacked))
    for i in range(L):
        np.testing.assert_array_equal(magnitude[i], admmjax.magnitude_prune(w[i], target))
        np.testing.assert_array_equal(wanda[i], admmjax.wanda_prune(w[i], norms[i], target))
        assert_meets(magnitude[i], target)
        if isinstance(target, admmjax.NM):
            assert_meets(wanda[i], target)


# --------------------------------------------------------------------------- SparseGPT


def test_sparsegpt_removing_one_weight_is_the_obs_closed_form():
    _, w, h = problems()
    w, h = w[0].copy(), h[0]
    h_inv = np.linalg.inv(h.astype(np.float64))
    n = IN * OUT
    # Row 0: the first row visited, so its OBS step is over all rows (the full H^-1).
    w[0, 3] = 1e-3
    pruned = np.asarray(admmjax.sparsegpt_prune(w, h, admmjax.Keep(n - 1), dampening=0.0))
    assert pruned[0, 3] == 0 and (pruned != 0).sum() == n - 1
    expect = w.astype(np.float64).copy()
    expect[:, 3] -= w[0, 3] / h_inv[0, 0] * h_inv[:, 0]
    expect[0, 3] = 0
    np.testing.assert_allclose(pruned, expect, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(error(w, pruned, h), w[0, 3] ** 2 / h_inv[0, 0], rtol=1e-3)
    # A later row q: rows before it stay, the step is over rows q.. (H restricted to them).
    q = 13
    w = problems()[1][0].copy()
    w[q, 5] = 1e-3
    pruned = np.asarray(admmjax.sparsegpt_prune(w, h, admmjax.Keep(n - 1), dampening=0.0))
    sub_inv = np.linalg.inv(h[q:, q:].astype(np.float64))
    expect = w.astype(np.float64).copy()
    expect[q:, 5] -= w[q, 5] / sub_inv[0, 0] * sub_inv[:, 0]
    expect[q, 5] = 0
    np.testing.assert_allclose(pruned, expect, rtol=1e-4, atol=1e-6)


@functools.cache
def pruned_stack(name: str, target) -> np.ndarray:
    """SparseGPT (blocks of 12 rows: 12, 12, 8, uneven on purpose) or layer-wise ADMM
    with each of its refits (``admm`` is the default, PCG)."""
    _, w, h = problems()
    fn = {
        "sparsegpt": functools.partial(admmjax.sparsegpt_prune, block_size=12),
        "admm": admmjax.layerwise_admm_prune,
        "admm_exact": functools.partial(admmjax.layerwise_admm_prune, refit="exact"),
        "admm_none": functools.partial(admmjax.layerwise_admm_prune, refit=None),
    }[name]
    return np.asarray(fn(w, h, admmjax.Stacked(target, axis=0)))


TARGETS = [0.7, admmjax.NM(2, 4)]


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_sparsegpt_exact_count_sequential_obs_and_near_least_squares(target):
    x, w, h = problems()
    pruned = pruned_stack("sparsegpt", target)
    for i in range(L):
        assert_meets(pruned[i], target)
        # Its update on its own mask is sequential OBS on the dampened H...
        reference = sequential_obs(w[i], dampened(h[i], DAMP), pruned[i] != 0)
        np.testing.assert_allclose(pruned[i], reference, rtol=2e-3, atol=2e-4)
        # ... whose error is a few percent above the exact least-squares refit on that mask
        # (measured on these problems: 1.03-1.05 at 70%, 1.06-1.10 at 2:4).
        best = error(w[i], lstsq_refit(x[i], w[i], pruned[i] != 0, 0.0), h[i])
        ratio = error(w[i], pruned[i], h[i]) / best
        assert 1.0 <= ratio < (1.08 if target == 0.7 else 1.15), ratio


# --------------------------------------------------------------------------- layer-wise ADMM


@pytest.mark.parametrize("refit", ["admm", "admm_exact"])
@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_layerwise_admm_refit_is_least_squares_and_no_worse_than_sparsegpt(target, refit):
    x, w, h = problems()
    pruned = pruned_stack(refit, target)
    sparsegpt = pruned_stack("sparsegpt", target)
    for i in range(L):
        assert_meets(pruned[i], target)
        # The kept weights are the exact least-squares solution on the support (of the
        # dampened problem the solver is given), by PCG as by the direct solve.
        refit_ref = lstsq_refit(x[i], w[i], pruned[i] != 0, DAMP)
        np.testing.assert_allclose(pruned[i], refit_ref, rtol=1e-3, atol=1e-4)
        assert error(w[i], pruned[i], h[i]) <= error(w[i], sparsegpt[i], h[i])


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_layerwise_admm_pcg_refit_equals_exact_refit_on_the_same_support(target):
    _, w, h = problems()
    pcg, exact, none = (pruned_stack(n, target) for n in ("admm", "admm_exact", "admm_none"))
    # One ADMM run, one support: the refits only move the kept weights, never the mask.
    np.testing.assert_array_equal(pcg != 0, none != 0)
    np.testing.assert_array_equal(exact != 0, none != 0)
    np.testing.assert_allclose(pcg, exact, rtol=1e-4, atol=1e-5)
    for i in range(L):
        # The refit is a minimum on the support: no worse than ADMM's own point.
        assert error(w[i], pcg[i], h[i]) <= error(w[i], none[i], h[i]) * (1 + 1e-6)


def test_layerwise_admm_pcg_stops_at_its_tolerance_or_step_limit():
    _, w, h = problems()
    target = 0.7
    prune = functools.partial(admmjax.layerwise_admm_prune, w[0], h[0], target, return_info=True)
    none, none_info = prune(refit=None)
    zero, zero_info = prune(refit="pcg", refit_max_iter=0)
    np.testing.assert_array_equal(zero, none)  # no step: ADMM's projected point itself
    assert int(zero_info.refit_iterations) == 0
    assert float(zero_info.refit_residual) == pytest.approx(float(none_info.refit_residual))
    loose, loose_info = prune(refit="pcg", refit_rtol=1e-2)
    tight, tight_info = prune(refit="pcg", refit_rtol=1e-6, refit_max_iter=IN)
    assert 0 < int(loose_info.refit_iterations) <= int(tight_info.refit_iterations) <= IN
    assert float(loose_info.refit_residual) <= 1e-2 < float(none_info.refit_residual)
    assert float(tight_info.refit_residual) <= 1e-5
    one, one_info = prune(refit="pcg", refit_rtol=0.0, refit_max_iter=1)
    assert int(one_info.refit_iterations) == 1
    for pruned in (loose, tight, one):
        np.testing.assert_array_equal(np.asarray(pruned) != 0, np.asarray(none) != 0)


def test_layerwise_admm_structured_rows():
    x, w, h = problems()
    target = admmjax.Structured(0.5, axis=0)  # half of the inputs, whole rows
    pruned = np.asarray(admmjax.layerwise_admm_prune(w[0], h[0], target))
    rows = (pruned != 0).any(axis=1)
    assert rows.sum() == IN // 2 and (pruned[rows] != 0).all()
    refit_ref = lstsq_refit(x[0], w[0], np.broadcast_to(rows[:, None], w[0].shape), DAMP)
    np.testing.assert_allclose(pruned, refit_ref, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- jit, Stacked


def test_eager_equals_jit_and_stacked_equals_per_slice():
    x, w, h = problems()
    norms = np.linalg.norm(x[0].astype(np.float64), axis=0).astype(np.float32)
    target = 0.7

    def all_methods(w, h, norms):
        return (
            admmjax.magnitude_prune(w, target),
            admmjax.wanda_prune(w, norms, target),
            admmjax.sparsegpt_prune(w, h, target, block_size=12),
            admmjax.layerwise_admm_prune(w, h, target),
        )

    eager = all_methods(w[0], h[0], norms)
    jitted = jax.jit(all_methods)(w[0], h[0], norms)
    for a, b, c in zip(eager, jitted, all_methods(w[0], h[0], norms), strict=True):
        np.testing.assert_array_equal(a, c)  # same inputs, same bits
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(a) != 0, np.asarray(b) != 0)
    np.testing.assert_allclose(eager[2], pruned_stack("sparsegpt", target)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eager[3], pruned_stack("admm", target)[0], rtol=1e-4, atol=1e-5)


def test_layerwise_admm_info():
    _, w, h = problems()
    pruned, info = admmjax.layerwise_admm_prune(
        w[0], h[0], 0.7, max_iter=6, refit=None, return_info=True
    )
    assert int(info.iterations) <= 6 and float(info.rho) >= admmjax._oneshot.ADMM_RHO
    assert int(info.refit_iterations) == 0 and float(info.refit_residual) > 0
    assert_meets(pruned, 0.7)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda w, h, n: admmjax.sparsegpt_prune(w, h[:-1], 0.5),
            r"gram must have shape \(32, 32\)",
        ),
        (lambda w, h, n: admmjax.layerwise_admm_prune(w, h[:, :-1], 0.5), r"gram must have shape"),
        (lambda w, h, n: admmjax.wanda_prune(w, n[:-1], 0.5), r"norms must have shape \(32,\)"),
        (lambda w, h, n: admmjax.sparsegpt_prune(w[0], h, 0.5), r"kernel must be \(in, out\)"),
        (lambda w, h, n: admmjax.sparsegpt_prune(w[None], h, 0.5), r"Stacked\(target, axis=0\)"),
        (
            lambda w, h, n: admmjax.sparsegpt_prune(w[None], h[None], admmjax.Stacked(0.5, 1)),
            "Stacked axis must be 0",
        ),
        (lambda w, h, n: admmjax.sparsegpt_prune(w, h, None), "target is None"),
        (lambda w, h, n: admmjax.sparsegpt_prune(w, h, 1.5), r"expected a sparsity in \[0, 1\)"),
        (
            lambda w, h, n: admmjax.sparsegpt_prune(w, h, admmjax.Structured(0.5)),
            "Structured.* is not supported",
        ),
        (
            lambda w, h, n: admmjax.sparsegpt_prune(w, h, admmjax.NM(2, 4, axis=1)),
            "must group along the input axis",
        ),
        (
            lambda w, h, n: admmjax.layerwise_admm_prune(w, h, admmjax.Quantized(1)),
            "Quantized.* is not supported",
        ),
        (lambda w, h, n: admmjax.sparsegpt_prune(w, h, 0.5, dampening=-1.0), "dampening"),
        (lambda w, h, n: admmjax.sparsegpt_prune(w, h, 0.5, block_size=0), "block_size"),
        (lambda w, h, n: admmjax.layerwise_admm_prune(w, h, 0.5, rho=0.0), "rho must be > 0"),
        (
            lambda w, h, n: admmjax.layerwise_admm_prune(w, h, 0.5, refit=True),
            "refit must be 'pcg', 'exact' or None, got True",
        ),
        (
            lambda w, h, n: admmjax.layerwise_admm_prune(w, h, 0.5, refit_rtol=-1.0),
            "refit_rtol must be finite and >= 0",
        ),
        (
            lambda w, h, n: admmjax.layerwise_admm_prune(w, h, 0.5, refit_max_iter=-1),
            "refit_max_iter must be >= 0",
        ),
        (lambda w, h, n: admmjax.wanda_prune(w, n, admmjax.Keep(9)), "not a multiple of 8"),
        (lambda w, h, n: admmjax.wanda_prune(w, n, admmjax.NM(2, 5)), "not a multiple of 5"),
    ],
)
def test_bad_input_raises_clear_error_before_work(call, match):
    _, w, h = problems()
    norms = np.ones(IN, np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        call(w[0], h[0], norms)
