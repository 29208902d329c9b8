"""BVLC AlexNet: exact shapes and parameter count, LRN and grouping, Caffe conversion
checked against an independent NCHW forward pass with Caffe's conventions, and the
loading of converted weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import alexnet as alexnet_cli
from experiments import models
from experiments.models import alexnet

BVLC_SHAPES = {
    "conv1/kernel": (11, 11, 3, 96),
    "conv2/kernel": (5, 5, 48, 256),
    "conv3/kernel": (3, 3, 256, 384),
    "conv4/kernel": (3, 3, 192, 384),
    "conv5/kernel": (3, 3, 192, 256),
    "fc6/kernel": (9216, 4096),
    "fc7/kernel": (4096, 4096),
    "fc8/kernel": (4096, 1000),
}


@pytest.fixture(scope="module")
def caffe_blobs() -> dict[str, np.ndarray]:
    return _caffe_blobs()


@pytest.fixture(scope="module")
def model_parts(caffe_blobs, tmp_path_factory):
    """(graphdef, params, apply_fn) of AlexNet holding converted random Caffe blobs.

    The model is built abstractly (``models.abstract_functional``) and filled from an
    ``.npz``: NumPy's RNG is much faster on CPU than initialising 61M parameters with JAX.
    """
    graphdef, like, apply_fn = models.abstract_functional("alexnet")
    path = tmp_path_factory.mktemp("weights") / "alexnet.npz"
    np.savez(path, **alexnet.convert_caffe(caffe_blobs))
    return graphdef, alexnet.load_pretrained(path, like), apply_fn


def test_parameter_count_and_shapes_are_bvlc():
    shapes = alexnet.expected_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == 60_965_224 == alexnet.NUM_PARAMS
    for path, shape in BVLC_SHAPES.items():
        assert shapes[path] == shape
        layer = path.split("/")[0]
        assert shapes[f"{layer}/bias"] == (shape[-1],)
    weights = sum(int(np.prod(s)) for p, s in shapes.items() if p.endswith("kernel"))
    assert weights == 60_954_656  # the paper's 60.9M
    # The paper's per-layer counts (Tables 3-4): 34.8K, 307.2K, 884.7K, 663.5K, 442.4K...
    kernels = [int(np.prod(BVLC_SHAPES[p])) for p in BVLC_SHAPES]
    assert kernels[:5] == [34_848, 307_200, 884_736, 663_552, 442_368]


def test_registered_model_counts_exactly(model_parts):
    _, params, _ = model_parts
    assert models.count_params(params) == 60_965_224
    abstract = models.abstract_functional("alexnet")[1]
    assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(abstract)) == 60_965_224


def test_forward_train_and_eval(model_parts):
    _, params, apply_fn = model_parts
    x = jax.random.uniform(jax.random.key(1), (2, 227, 227, 3))
    f = jax.jit(apply_fn, static_argnums=2)
    logits = f(params, x, False)
    assert logits.shape == (2, 1000) and bool(jnp.all(jnp.isfinite(logits)))
    dropped = f(params, x, True, jax.random.key(2))
    assert not np.allclose(np.asarray(dropped), np.asarray(logits))  # dropout on fc6/fc7
    np.testing.assert_array_equal(np.asarray(f(params, x, False)), np.asarray(logits))


def test_bad_inputs_are_refused_with_the_expected_shape():
    model = nnx.eval_shape(lambda: alexnet.AlexNet(rngs=nnx.Rngs(0)))  # checks come first
    with pytest.raises(ValueError, match=r"\(N, 227, 227, 3\).*\(1, 224, 224, 3\)"):
        model(jnp.zeros((1, 224, 224, 3)))
    with pytest.raises(ValueError, match="rngs="):
        model(jnp.zeros((1, 227, 227, 3)), train=True)
    with pytest.raises(ValueError, match="dropout"):
        alexnet.AlexNet(rngs=nnx.Rngs(0), dropout=1.0)


def test_lrn_matches_caffe_formula():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 7)).astype(np.float32)
    got = np.asarray(alexnet.local_response_norm(jnp.asarray(x)))
    want = np.empty_like(x)
    for c in range(7):
        window = x[..., max(0, c - 2) : c + 3]
        want[..., c] = x[..., c] / (1.0 + 1e-4 / 5 * (window**2).sum(-1)) ** 0.75
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_grouped_convolutions_split_the_channels(model_parts):
    graphdef, params, _ = model_parts
    model = nnx.merge(graphdef, params)
    x = jax.random.normal(jax.random.key(0), (1, 13, 13, 384))
    bumped = x.at[..., 192:].add(1.0)  # only the second group's inputs change
    a, b = np.asarray(model.conv4(x)), np.asarray(model.conv4(bumped))
    np.testing.assert_array_equal(a[..., :192], b[..., :192])
    assert not np.allclose(a[..., 192:], b[..., 192:])


# --------------------------------------------------------------------------- Caffe


def _caffe_blobs(seed: int = 0) -> dict[str, np.ndarray]:
    """Random blobs in Caffe's layout: OIHW conv kernels (I = in / groups), (out, in) fc."""
    rng = np.random.default_rng(seed)
    shapes = {
        "conv1": (96, 3, 11, 11),
        "conv2": (256, 48, 5, 5),
        "conv3": (384, 256, 3, 3),
        "conv4": (384, 192, 3, 3),
        "conv5": (256, 192, 3, 3),
        "fc6": (4096, 9216),
        "fc7": (4096, 4096),
        "fc8": (1000, 4096),
    }
    blobs = {}
    for layer, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        blobs[f"{layer}/0"] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        blobs[f"{layer}/1"] = (0.1 * rng.standard_normal(shape[0])).astype(np.float32)
    return blobs


def _caffe_forward(blobs: dict[str, np.ndarray], x_rgb01: np.ndarray) -> np.ndarray:
    """AlexNet the Caffe way: NCHW, BGR input in 0..255 minus the mean, OIHW kernels,
    fc6 over the (C, H, W) flatten. Written independently of experiments.alexnet."""
    mean_bgr = np.array(alexnet.BVLC_MEAN_RGB[::-1], np.float32)
    x = (x_rgb01 * 255.0)[..., ::-1] - mean_bgr  # NHWC BGR
    x = jnp.asarray(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NCHW

    def conv(x, layer, stride, pad, groups):
        w, b = jnp.asarray(blobs[f"{layer}/0"]), jnp.asarray(blobs[f"{layer}/1"])
        y = jax.lax.conv_general_dilated(
            x, w, (stride, stride), [(pad, pad)] * 2,
            dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups,
        )  # fmt: skip
        return jax.nn.relu(y + b[None, :, None, None])

    def lrn(x):  # across channels, n=5, alpha=1e-4, beta=0.75, k=1
        sq = jnp.pad(x * x, ((0, 0), (2, 2), (0, 0), (0, 0)))
        s = sum(sq[:, i : i + x.shape[1]] for i in range(5))
        return x / (1.0 + 1e-4 / 5 * s) ** 0.75

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "VALID")

    def fc(x, layer):
        return x @ jnp.asarray(blobs[f"{layer}/0"]).T + jnp.asarray(blobs[f"{layer}/1"])

    x = pool(lrn(conv(x, "conv1", 4, 0, 1)))
    x = pool(lrn(conv(x, "conv2", 1, 2, 2)))
    x = conv(x, "conv3", 1, 1, 1)
    x = conv(x, "conv4", 1, 1, 2)
    x = pool(conv(x, "conv5", 1, 1, 2))
    x = x.reshape(x.shape[0], -1)  # (C, H, W) order, as Caffe's InnerProduct
    x = jax.nn.relu(fc(x, "fc6"))
    x = jax.nn.relu(fc(x, "fc7"))
    return np.asarray(fc(x, "fc8"))


def test_converted_caffe_weights_give_caffe_outputs(model_parts, caffe_blobs):
    _, params, apply_fn = model_parts  # loaded from convert_caffe(caffe_blobs)
    blobs = caffe_blobs
    x = np.random.default_rng(1).uniform(size=(2, 227, 227, 3)).astype(np.float32)
    ours = np.asarray(jax.jit(apply_fn)(params, jnp.asarray(x)))
    caffe = _caffe_forward(blobs, x)
    np.testing.assert_allclose(ours, caffe, rtol=2e-4, atol=2e-4 * np.abs(caffe).max())


def test_convert_cli_writes_the_layout(tmp_path, capsys, caffe_blobs):
    np.savez(tmp_path / "caffe.npz", **caffe_blobs)
    alexnet_cli.main(["convert", str(tmp_path / "caffe.npz"), str(tmp_path / "ours.npz")])
    assert "60,965,224 parameters" in capsys.readouterr().out
    with np.load(tmp_path / "ours.npz") as z:
        assert {k: z[k].shape for k in z.files} == alexnet.expected_shapes()


def test_load_pretrained_names_missing_extra_and_misshaped_keys(tmp_path, model_parts):
    _, like, _ = model_parts
    arrays = {k: np.zeros(s, np.float32) for k, s in alexnet.expected_shapes().items()}
    del arrays["fc8/bias"]
    arrays["fc7/kernel"] = np.zeros((4096, 10), np.float32)
    arrays["fc9/kernel"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError) as err:
        alexnet.load_pretrained(tmp_path / "bad.npz", like)
    text = str(err.value)
    assert "missing keys ['fc8/bias']" in text
    assert "unexpected keys ['fc9/kernel']" in text
    assert "fc7/kernel has shape (4096, 10), expected (4096, 4096)" in text
    with pytest.raises(FileNotFoundError, match=r"nothere\.npz"):
        alexnet.load_pretrained(tmp_path / "nothere.npz", like)


def test_load_pretrained_from_npy_dict_for_any_model(tmp_path):
    like = models.abstract_functional("lenet5")[1]
    rng = np.random.default_rng(0)
    arrays = {
        jax.tree_util.keystr(p, simple=True, separator="/"): rng.normal(size=v.shape)
        for p, v in jax.tree_util.tree_flatten_with_path(like)[0]
    }
    np.save(tmp_path / "lenet5.npy", arrays, allow_pickle=True)
    loaded = alexnet.load_pretrained(tmp_path / "lenet5.npy", like)
    for (p, leaf), want in zip(
        jax.tree_util.tree_flatten_with_path(loaded)[0], arrays.values(), strict=True
    ):
        assert leaf.dtype == jnp.float32, p
        np.testing.assert_array_equal(np.asarray(leaf), want.astype(np.float32))
