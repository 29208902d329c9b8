"""Issue 22, library defects 5, 6b, 7 and 9: exact counts, clamped traced targets,
ranking by true magnitude in every dtype, and crafted sparse files."""

from __future__ import annotations

import hashlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import admmjax
from admmjax import _export
from admmjax._sparsity import keep_count

# --- defect 5: one counting rule, eagerly and under jit ---------------------------------


def _formula(s: float, n: int) -> int:
    """The documented concrete rule, written independently: n - floor(fl64(s n))."""
    return n - int(np.floor(np.float64(s) * np.float64(n)))


def _traced_formula(s: float, n: int) -> int:
    """The documented rule of a traced (float32) sparsity."""
    return n - int(np.floor(np.float32(np.float32(s) * np.float32(n))))


def _leaf(n: int) -> jax.Array:
    # Distinct nonzero magnitudes: a projection keeps exactly k nonzeros.
    return jnp.asarray(np.random.default_rng(n).permutation(n) + 1.0, jnp.float32)


@jax.jit
def _jit_update(state, params, targets):
    return admmjax.update(state, params, targets)[0]


def _nnz(x) -> int:
    return int(jnp.sum(x != 0))


@given(
    s=st.floats(0, 1, exclude_max=True, allow_nan=False),
    n=st.sampled_from([100, 500, 777]),
)
@example(s=0.29, n=100)
@example(s=0.53, n=100)
@example(s=0.502, n=500)
def test_init_jit_update_prune_and_target_counts_agree(s, n):
    params, targets = {"w": _leaf(n)}, {"w": s}
    k = _formula(s, n)
    assert admmjax.target_counts(params, targets)["w"] == k
    assert keep_count(s, n) == k
    keep_targets = admmjax.as_keep_counts(params, targets)
    assert keep_targets == {"w": admmjax.Keep(k)}
    state = admmjax.init(params, targets)
    assert _nnz(state.z["w"]) == k
    # The pipeline's way: targets as jit arguments, fractions as host-counted Keep.
    assert _nnz(_jit_update(state, params, keep_targets).z["w"]) == k
    assert int(admmjax.prune(params, targets)[1]["w"].sum()) == k
    # A fraction traced as a jit argument follows the documented float32 rule.
    assert _nnz(_jit_update(state, params, targets).z["w"]) == _traced_formula(s, n)


@pytest.mark.parametrize("s, n", [(0.29, 100), (0.53, 100), (0.502, 500), (0.8, 777)])
def test_concrete_fractions_closed_over_inside_jit_stay_concrete(s, n):
    # One compilation per fraction (it is a constant of the computation), so a few
    # values, among them the pairs where the float32 rule would differ.
    params, targets = {"w": _leaf(n)}, {"w": s}
    state = admmjax.init(params, targets)
    closed = jax.jit(lambda st_, p: admmjax.update(st_, p, targets)[0])(state, params)
    assert _nnz(closed.z["w"]) == _formula(s, n)


def test_named_pairs_and_their_float32_disagreement():
    # The pairs: the concrete counts, and the traced float32 ones that differ.
    assert [_formula(s, n) for s, n in [(0.29, 100), (0.53, 100), (0.502, 500)]] == [72, 47, 249]
    assert [_traced_formula(s, n) for s, n in [(0.29, 100), (0.53, 100), (0.502, 500)]] == [
        71,
        48,
        250,
    ]
    params = {"w": _leaf(100)}
    state = admmjax.init(params, {"w": 0.29})
    got = _jit_update(state, params, admmjax.as_keep_counts(params, {"w": 0.29}))
    assert _nnz(got.z["w"]) == 72


def _clamped_traced_formula(t: float, n: int) -> int:
    """The documented rule of a traced sparsity, out-of-range and NaN ones included."""
    s = 0.0 if math.isnan(t) else min(max(t, 0.0), 1.0)
    return min(max(_traced_formula(s, n), 0), n)


@given(
    s=st.floats(0, 1, exclude_max=True, allow_nan=False),
    traced=st.one_of(st.floats(-2, 3), st.just(float("nan"))),
    n=st.integers(1, 2**31 - 1),
)
@example(s=0.29, traced=1.5, n=100)
def test_keep_count_rule_for_every_leaf_size(s, traced, n):
    assert keep_count(s, n) == _formula(s, n)
    got = int(jax.jit(lambda t: keep_count(t, n))(traced))
    assert 0 <= got <= n
    if n <= 2**24:  # fl32(n) == n: the documented float32 rule, exactly
        assert got == _clamped_traced_formula(traced, n)


def test_as_keep_counts_keeps_other_leaves_and_refuses_traced_targets():
    params = {"a": jnp.ones((4, 8)), "b": jnp.ones(8), "c": jnp.ones((4, 8)), "d": jnp.ones(3)}
    targets = {"a": 0.5, "b": None, "c": admmjax.NM(2, 4, axis=1), "d": admmjax.Keep(2)}
    assert admmjax.as_keep_counts(params, targets) == {
        "a": admmjax.Keep(16),
        "b": None,
        "c": admmjax.NM(2, 4, axis=1),
        "d": admmjax.Keep(2),
    }
    with pytest.raises(TypeError, match="target for 'a' is traced"):
        jax.jit(lambda t: admmjax.as_keep_counts(params, t))(targets)


# --- defect 6b: traced targets out of range are clamped, NaN-safely -----------------------


@jax.jit
def _project_traced(x, target):
    return admmjax.project({"w": x}, {"w": target})["w"]


@pytest.mark.parametrize(
    "target, kept",
    [
        (("keep", 201), 200),
        (("keep", -5), 0),
        (1.5, 0),
        (float("nan"), 200),
        (-0.5, 200),
        (float("inf"), 0),
        (float("-inf"), 200),
    ],
    ids=["keep201", "keep-5", "s1.5", "nan", "s-0.5", "inf", "-inf"],
)
def test_traced_out_of_range_targets_are_clamped(target, kept):
    x = jnp.arange(1.0, 201.0)
    if isinstance(target, tuple):  # Keep(n) with its count traced, as under jit
        n = jnp.int32(target[1])
        got = jax.jit(lambda x, n: admmjax.project({"w": x}, {"w": admmjax.Keep(n)})["w"])(x, n)
        count = jax.jit(lambda n: keep_count(admmjax.Keep(n), 200))(n)
        with pytest.raises(ValueError, match=f"Keep.*{target[1]}"):  # concrete: refused
            admmjax.project({"w": x}, {"w": admmjax.Keep(target[1])})
    else:
        got = _project_traced(x, target)
        count = jax.jit(lambda t: keep_count(t, 200))(target)
        with pytest.raises(ValueError, match="target for 'w' is"):  # concrete: refused
            admmjax.project({"w": x}, {"w": target})
    assert _nnz(got) == kept
    assert int(count) == kept


# --- defect 7: ranking by true magnitude in every dtype ------------------------------------


def _ref_mask(values, k: int) -> np.ndarray:
    """k largest exact magnitudes (Python numbers), ties to the lowest index."""
    mags = [abs(v) for v in values]
    order = sorted(range(len(mags)), key=lambda i: (-mags[i], i))
    out = np.zeros(len(mags), bool)
    out[order[:k]] = True
    return out


_RADIX_WIDTH = 64  # every drawn list fits; one radix compilation per dtype


@jax.jit
def _radix_mask(x: jax.Array, k: jax.Array) -> jax.Array:
    return admmjax.keep_mask(x, k, method="radix")


@jax.jit
def _project_keep(x: jax.Array, k: jax.Array) -> jax.Array:
    return admmjax.project({"w": x}, {"w": admmjax.Keep(k)})["w"]


def _check_cardinality(x: jax.Array, values: list, k: int) -> None:
    want = _ref_mask(values, k)
    _, masks = admmjax.prune({"w": x}, {"w": admmjax.Keep(k)})
    np.testing.assert_array_equal(np.asarray(masks["w"]), want)
    jitted = _project_keep(x, k)
    np.testing.assert_array_equal(np.asarray(jitted) != 0, want & (np.asarray(values) != 0))
    # Small leaves are sorted on CPU; the radix select ranks them alike. Zeros appended
    # rank after every entry (lowest magnitude, highest index): the top k stay the same.
    padded = jnp.concatenate([x, jnp.zeros(_RADIX_WIDTH - x.size, x.dtype)])
    radix = _radix_mask(padded, jnp.int32(k))
    np.testing.assert_array_equal(np.asarray(radix[: x.size]), want)
    assert not bool(radix[x.size :].any())


def test_int32_keeps_the_larger_of_values_float32_merges():
    x = jnp.array([16777216, 16777217], jnp.int32)
    _, masks = admmjax.prune({"w": x}, {"w": admmjax.Keep(1)})
    assert masks["w"].tolist() == [False, True]
    tree = {"a": x[:1], "b": x[1:]}
    got = admmjax.project_global(tree, admmjax.Keep(1), include=["a", "b"])
    assert (int(got["a"][0]), int(got["b"][0])) == (0, 16777217)


# Clusters of values that a float32 ranking merges, mixed with arbitrary ones.
INT32 = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(2**24 - 4, 2**24 + 4),
    st.integers(-(2**31), -(2**31) + 4),
    st.integers(2**31 - 5, 2**31 - 1),
)
INT64 = st.one_of(
    st.integers(-(2**63), 2**63 - 1), INT32, st.integers(2**53 - 4, 2**53 + 4),
    st.integers(2**62, 2**62 + 4),
)  # fmt: skip
FLOAT64 = st.one_of(
    st.floats(allow_nan=False, allow_infinity=True, width=64),
    st.sampled_from([1.0, 1.0 + 1e-12, 1.0 + 2e-12, -1.0 - 1e-12, 1e-300, 2e-300, 1e300]),
    st.floats(1e39, 1e308),  # beyond float32's range
    st.floats(1e-320, 1e-46),  # below float32's smallest subnormal
)


def _k(frac: float, n: int) -> int:
    return round(frac * n)


@given(values=st.lists(INT32, min_size=1, max_size=40), frac=st.floats(0, 1))
@example(values=[16777216, 16777217], frac=0.5)
@example(values=[2**31 - 1, -(2**31)], frac=0.5)
def test_int32_ranking_matches_numpy(values, frac):
    _check_cardinality(jnp.asarray(values, jnp.int32), values, _k(frac, len(values)))


@given(values=st.lists(FLOAT64, min_size=1, max_size=40), frac=st.floats(0, 1))
@example(values=[1.0, 1.0 + 1e-12], frac=0.5)
@example(values=[1e300, 2e300, 1e-300, 2e-300], frac=0.5)
def test_float64_ranking_matches_numpy_under_x64(values, frac):
    with jax.enable_x64(True):
        x = jnp.asarray(values, jnp.float64)
        assert x.dtype == jnp.float64
        _check_cardinality(x, values, _k(frac, len(values)))


@given(values=st.lists(INT64, min_size=1, max_size=40), frac=st.floats(0, 1))
@example(values=[2**53, 2**53 + 1], frac=0.5)
@example(values=[2**63 - 1, -(2**63)], frac=0.5)
def test_int64_ranking_matches_numpy_under_x64(values, frac):
    with jax.enable_x64(True):
        _check_cardinality(jnp.asarray(values, jnp.int64), values, _k(frac, len(values)))


def test_close_and_out_of_float32_range_float64_values_under_x64():
    with jax.enable_x64(True):
        for values, k, want in [
            ([1.0, 1.0 + 1e-12], 1, [False, True]),
            ([1e-300, 2e-300], 1, [False, True]),
            ([1e300, 2e300], 1, [False, True]),
            ([1e-300, 0.0], 1, [True, False]),
        ]:
            _, masks = admmjax.prune({"w": jnp.asarray(values)}, {"w": admmjax.Keep(k)})
            assert masks["w"].tolist() == want, values
    # Without x64 JAX holds no float64 array: a NumPy float64 leaf becomes float32 on
    # entry (the first two flush to 0) and is ranked as converted.
    x = np.array([3e-46, 1e-46, 2.0, 1.0 + 1e-12, 1.0])
    got = admmjax.project({"w": x}, {"w": admmjax.Keep(2)})["w"]
    want = admmjax.project({"w": x.astype(np.float32)}, {"w": admmjax.Keep(2)})["w"]
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_complex_leaves_are_refused():
    with pytest.raises(TypeError, match="real dtype, got complex64"):
        admmjax.project({"w": jnp.ones(4, jnp.complex64)}, {"w": admmjax.Keep(2)})


def _ref_nm(values: np.ndarray, n: int, m: int) -> np.ndarray:
    """n largest exact magnitudes of every m consecutive entries along axis 1."""
    rows, cols = values.shape
    out = np.zeros(values.shape, bool)
    for r in range(rows):
        for g in range(0, cols, m):
            out[r, g : g + m] = _ref_mask(list(values[r, g : g + m]), n)
    return out


def _grid(draw, elements, rows: int, cols: int) -> np.ndarray:
    flat = draw(st.lists(elements, min_size=rows * cols, max_size=rows * cols))
    return np.array(flat, dtype=object).reshape(rows, cols)


@given(data=st.data(), x64=st.booleans())
def test_nm_ranking_matches_numpy(data, x64):
    rows, m = data.draw(st.integers(1, 3)), data.draw(st.sampled_from([4, 8]))
    n = data.draw(st.integers(0, m))
    elements = st.one_of(INT64 if x64 else INT32, st.sampled_from([16777216, 16777217]))
    values = _grid(data.draw, elements, rows, 2 * m)
    with jax.enable_x64(x64):
        x = jnp.asarray(values.astype(np.int64 if x64 else np.int32))
        _, masks = admmjax.prune({"w": x}, {"w": admmjax.NM(n, m, axis=1)})
    np.testing.assert_array_equal(np.asarray(masks["w"]), _ref_nm(values, n, m))
    if x64:
        with jax.enable_x64(True):
            fvals = _grid(data.draw, st.one_of(FLOAT64, st.just(1.0 + 1e-12)), rows, 2 * m)
            _, masks = admmjax.prune(
                {"w": jnp.asarray(fvals.astype(np.float64))}, {"w": admmjax.NM(n, m, axis=1)}
            )
        np.testing.assert_array_equal(np.asarray(masks["w"]), _ref_nm(fvals, n, m))


@given(data=st.data())
def test_structured_ranking_matches_exact_norms_under_x64(data):
    # Entries are small integers times one power of two: every squared norm is exact in
    # float64, so the exact (Fraction-free, integer) norms give the reference ranking.
    groups, width = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 4))
    ints = _grid(data.draw, st.integers(-(2**10), 2**10), groups, width)
    scale = 2.0 ** data.draw(st.sampled_from([-1000, -300, 0, 300, 1000]))
    k = data.draw(st.integers(0, groups))
    norms = [sum(int(v) ** 2 for v in row) for row in ints]
    want = np.repeat(_ref_mask(norms, k)[:, None], width, axis=1)
    with jax.enable_x64(True):
        x = jnp.asarray(ints.astype(np.float64) * scale)
        _, masks = admmjax.prune({"w": x}, {"w": admmjax.Structured(admmjax.Keep(k), axis=0)})
    np.testing.assert_array_equal(np.asarray(masks["w"]), want)


@given(data=st.data(), kind=st.sampled_from(["int32", "int64", "float64"]))
def test_global_ranking_matches_numpy(data, kind):
    elements = {"int32": INT32, "int64": INT64, "float64": FLOAT64}[kind]
    a = data.draw(st.lists(elements, min_size=1, max_size=20))
    b = data.draw(st.lists(elements, min_size=1, max_size=20))
    k = data.draw(st.integers(0, len(a) + len(b)))
    want = _ref_mask(a + b, k)
    with jax.enable_x64(kind != "int32"):
        tree = {"a": jnp.asarray(a, kind), "b": jnp.asarray(b, kind)}
        got = admmjax.project_global(tree, admmjax.Keep(k), include=["a", "b"])
        keep = admmjax.global_to_targets(tree, admmjax.Keep(k), include=["a", "b"])
    kept = np.concatenate([np.asarray(got["a"]) != 0, np.asarray(got["b"]) != 0])
    np.testing.assert_array_equal(kept, want & (np.asarray(a + b, dtype=object) != 0))
    assert keep["a"].n + keep["b"].n == k
    assert keep["a"].n == int(want[: len(a)].sum())


# --- defect 9 (library part): crafted sparse files ------------------------------------------


def _crafted(data: bytes, edit=None, flags: int = 0) -> bytes:
    """``data`` with an edited manifest and/or header flags, and a valid checksum."""
    _, version, _, m, p, _ = _export.HEADER.unpack_from(data)
    manifest = json.loads(data[_export.HEADER_SIZE : _export.HEADER_SIZE + m])
    if edit is not None:
        edit(manifest)
    body = json.dumps(manifest).encode() + data[_export.HEADER_SIZE + m :]
    digest = hashlib.sha256(body).digest()
    return _export.HEADER.pack(_export.MAGIC, version, flags, len(body) - p, p, digest) + body


def _sparse_bytes() -> bytes:
    w = np.zeros((6, 5), np.float32)
    w[1, 2] = 3.0
    sparse = admmjax.encode_sparse({"b": np.ones(3, np.float32), "w": w}, encoding="relative")
    return admmjax.sparse_to_bytes(sparse)


def test_crafted_huge_shape_is_a_format_error_before_allocating():
    data = _sparse_bytes()

    def huge(manifest):
        leaf = manifest["leaves"][1]
        leaf.update(shape=[10**12], nonzero=0, values=[leaf["values"][0], 0], index=[0, 0])

    with pytest.raises(admmjax.SparseFormatError, match=r"shape \[1000000000000\] of float32"):
        admmjax.sparse_from_bytes(_crafted(data, huge))
    beyond = lambda m: m["leaves"][1].update(shape=[2**40, 2**40])  # noqa: E731
    with pytest.raises(admmjax.SparseFormatError, match="leaf 'w'"):
        admmjax.sparse_from_bytes(_crafted(data, beyond))
    with pytest.raises(admmjax.SparseFormatError, match="bad path or shape"):
        admmjax.sparse_from_bytes(_crafted(data, lambda m: m["leaves"][1].update(shape=[True])))
    assert admmjax.sparse_from_bytes(_crafted(data))[0].leaves[1].shape == (6, 5)


@pytest.mark.parametrize("flags", [1, 0x8000, 0xFFFF])
def test_reserved_flag_bits_are_checked(flags):
    with pytest.raises(admmjax.SparseFormatError, match=f"reserved header flags.*0x{flags:04x}"):
        admmjax.sparse_from_bytes(_crafted(_sparse_bytes(), flags=flags))
