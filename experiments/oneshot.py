r"""One-shot pruning of the GPT, block by block, as SparseGPT runs it (issue 23).

:func:`prune_gpt` prunes the attention (query, key, value, out) and MLP (``fc``,
``proj``) kernels of every layer of an :class:`~experiments.models.gpt.GPT` with one of
admmjax's one-shot pruners (:data:`METHODS`); embeddings, LayerNorms and biases stay
exactly as they were. The calibration tokens (e.g. 128 windows of the training split,
:func:`calibration_set`) are embedded once, then for layer ``l = 0 .. L-1``:

1. layer ``l``'s slice of the stacked params (leading layer axis) becomes one
   ``Block``; its sublayers are pruned in the order their inputs become available
   (:data:`SUBLAYERS`): query/key/value (one shared input, ``LN1(x)``), then ``out``
   (the attention's output, computed with the *pruned* q/k/v), then ``fc``
   (``LN2(h)``, ``h`` from the pruned attention), then ``proj`` (the GELU output of the
   pruned ``fc``). Each step runs the block on the calibration activations and records
   the inputs each linear receives, so later sublayers see the errors of earlier
   ones and can compensate for them (SparseGPT's sequential mode, ``--true-sequential``);
2. the block's output with all its kernels pruned is the input of block ``l + 1``,
   so every layer is fitted to the already-pruned model below it.

Each kernel is pruned as an ``(in, out)`` matrix: q/k/v ``(embed, heads, head_dim)``
as ``(embed, heads * head_dim)``, out ``(heads, head_dim, embed)`` as ``(heads *
head_dim, embed)`` (C-order reshapes, so the rows are the contraction). With the
calibration inputs :math:`X` of the kernel (``tokens x in``), :math:`H = X^\top X`:

* ``magnitude``: keep the largest :math:`|W|` of the layer (no data);
* ``wanda``: keep the largest :math:`|W_{ij}| \|X_{:,i}\|_2`, per output column by default;
* ``sparsegpt``: OBS updates in blocks with the dampening and block size below;
* ``admm``: layer-wise ADMM with admmjax's exact Z-step and a refit on the support.

Targets: a fraction ``s`` in [0, 1) (each kernel of each layer keeps ``n - floor(s
n)``; Wanda's per-output recipe keeps ``in - floor(s in)`` in every column) or
``"N:M"`` (``admmjax.NM(N, M, axis=0)``: N of every M consecutive inputs of each
output column, the contraction axis, which must then be a multiple of M).

Each kernel's record holds its kept count and the relative reconstruction error
:math:`\|X W - X \hat W\|_F^2 / \|X W\|_F^2` on its own (sequential) inputs, and the
seconds it took. :func:`bits_per_char_split` then scores a model on every byte of a
split (:func:`experiments.data.text.iterate_eval`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import admmjax
from experiments import config
from experiments.data import text
from experiments.models.gpt import GPT, SIZES, bits_per_char, causal_mask
from experiments.schema import (
    NON_NEGATIVE,
    POSITIVE,
    ConfigError,
    Option,
    check_value,
    field,
    options_of,
)

__all__ = [
    "GPT_SIZES",
    "METHODS",
    "SUBLAYERS",
    "KernelRecord",
    "OneshotConfig",
    "PruneResult",
    "bits_per_char_split",
    "build_model",
    "calibration_set",
    "options",
    "parse_methods",
    "parse_target",
    "parse_targets",
    "prune_gpt",
    "target_name",
]

METHODS = ("magnitude", "wanda", "sparsegpt", "admm")

#: The pruned linears of a block, grouped by shared input, in the order their inputs
#: become available in the forward pass (each group's input depends on the groups before).
SUBLAYERS: tuple[tuple[str, ...], ...] = (
    ("attention/query", "attention/key", "attention/value"),
    ("attention/out",),
    ("mlp/fc",),
    ("mlp/proj",),
)
KERNELS = tuple(name for group in SUBLAYERS for name in group)
#: The GPT constructor's arguments that :class:`OneshotConfig` carries (its options).
GPT_SIZES = SIZES


# --------------------------------------------------------------------------- options


def _default(fn: Callable, name: str) -> Any:
    # The default of the function that uses the value, so the driver never restates it.
    return inspect.signature(fn).parameters[name].default


DAMPENING = _default(admmjax.sparsegpt_prune, "dampening")
BLOCK_SIZE = _default(admmjax.sparsegpt_prune, "block_size")
ADMM_MAX_ITER = _default(admmjax.layerwise_admm_prune, "max_iter")


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in str(text).split(",") if item.strip()]


def parse_methods(text: str) -> list[str]:
    """``"magnitude,admm"`` -> the method names; ValueError naming the bad one."""
    methods = _split_list(text)
    if not methods:
        raise ValueError(f"methods {text!r} is empty; expected some of {', '.join(METHODS)}")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return methods


def parse_target(value: float | str) -> float | admmjax.NM:
    """A fraction in [0, 1) (or its text) or ``"N:M"`` as the target of every kernel."""
    expected = "a fraction in [0, 1) (the share of weights pruned) or 'N:M' such as '2:4'"
    if isinstance(value, str) and ":" in value:
        try:
            nm = config.parse_target(value, "attention and MLP kernels")
        except ValueError:
            raise ValueError(f"target {value!r}: expected {expected}") from None
        if not isinstance(nm, admmjax.NM):
            raise ValueError(f"target {value!r}: expected {expected}")
        return admmjax.NM(nm.n, nm.m, axis=0)  # rows of the (in, out) view: the contraction
    if isinstance(value, bool):
        raise ValueError(f"target {value!r}: expected {expected}")
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"target {value!r}: expected {expected}") from None
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise ValueError(f"target {value!r}: expected {expected}")
    return fraction


def parse_targets(text: str) -> list[float | admmjax.NM]:
    """``"0.5,0.7,2:4"`` -> targets (:func:`parse_target`); ValueError naming the bad one."""
    items = _split_list(text)
    if not items:
        raise ValueError(f"targets {text!r} is empty; expected e.g. '0.5,0.7,0.9,2:4'")
    return [parse_target(item) for item in items]


def target_name(target: float | admmjax.NM) -> str:
    """``0.7`` -> ``"0.7"``, ``NM(2, 4)`` -> ``"2:4"`` (the spelling of the command line)."""
    return f"{target.n}:{target.m}" if isinstance(target, admmjax.NM) else f"{target:g}"


def _nonempty_path(text: str) -> str:
    if not text.strip():
        raise ValueError(f"expected a path, got {text!r}")
    return text


# fmt: off
@dataclasses.dataclass
class OneshotConfig:
    """The options of a one-shot run of the GPT (``python -m experiments.prune_lm``)."""

    dense: str = field(Option(
        str, "",
        "the dense GPT's params: a workdir (its dense/), an orbax params checkpoint "
        "directory, or an .npz keyed by parameter path (blocks/mlp/fc/kernel, ...)",
        check=_nonempty_path, default_text="required",
    ))
    methods: str = field(Option(
        str, ",".join(METHODS),
        f"comma-separated one-shot pruners, each run from the same dense model: "
        f"{', '.join(METHODS)}",
        check=parse_methods,
    ))
    targets: str = field(Option(
        str, "0.5,0.7,0.9,2:4",
        "comma-separated targets of every attention and MLP kernel of every layer: "
        "fractions in [0, 1) pruned, or N:M along the kernel's input (contraction) axis",
        check=parse_targets,
    ))
    calibration_sequences: int = field(Option(
        int, 128, "calibration windows from the training split only, a count",
        rule=POSITIVE,
    ))
    calibration_length: int | None = field(Option(
        int, None, "length of a calibration window, in bytes", rule=POSITIVE, optional=True,
        default_text="the model's context",
    ))
    seed: int = field(Option(
        int, 0, "seed of the calibration sample, an integer >= 0", rule=NON_NEGATIVE,
    ))
    data_dir: str | None = field(Option(
        str, None, "directory holding kjv.txt", optional=True,
        default_text="$ADMMJAX_TEXT_DIR, else ../shared/text/kjv",
    ))
    dampening: float = field(Option(
        float, DAMPENING,
        "sparsegpt and admm: H + lambda I with lambda this times the mean of diag H "
        "(SparseGPT's percdamp, also ALPS's)",
        rule=NON_NEGATIVE,
    ))
    block_size: int = field(Option(
        int, BLOCK_SIZE,
        "sparsegpt: input rows per lazy-update block (the reference code's blocksize)",
        rule=POSITIVE,
    ))
    admm_max_iter: int = field(Option(
        int, ADMM_MAX_ITER, "admm: iteration limit of layer-wise ADMM per kernel, a count",
        rule=POSITIVE,
    ))
    wanda_per_output: bool = field(Option(
        bool, True,
        "wanda: compare scores within each output column (Wanda's recipe) rather than "
        "over the whole kernel",
    ))
    eval_batch_size: int = field(Option(
        int, 64, "evaluation batch, in windows of the model's context", rule=POSITIVE,
    ))
    layers: int = field(GPT.options["layers"])
    heads: int = field(GPT.options["heads"])
    embed: int = field(GPT.options["embed"])
    context: int = field(GPT.options["context"])
    mlp_ratio: int = field(GPT.options["mlp_ratio"])
    tie_embedding: bool = field(GPT.options["tie_embedding"])
    bias: bool = field(GPT.options["bias"])
    # fmt: on

    def validate(self) -> None:
        """Every field against its option (ConfigError naming the value and the rule),
        then the targets against the model's kernels (N:M needs inputs divisible by M)."""
        for name, option in options_of(type(self)).items():
            check_value(name, option, getattr(self, name))
        if self.embed % self.heads:
            raise ConfigError(f"embed {self.embed} must be a multiple of heads {self.heads}")
        if self.calibration_length is not None and self.calibration_length > self.context:
            raise ConfigError(
                f"calibration_length {self.calibration_length} exceeds the model's context "
                f"{self.context}"
            )
        kernels = _kernel_shapes(build_model(self, abstract=True))
        for target in parse_targets(self.targets):
            try:
                _check_target(target, kernels)
            except ValueError as err:
                raise ConfigError(str(err)) from None


def build_model(cfg: OneshotConfig, *, abstract: bool = False) -> GPT:
    """The GPT ``cfg`` describes (shapes only with ``abstract``), its params from seed 0."""
    sizes = {name: getattr(cfg, name) for name in GPT_SIZES}

    def make() -> GPT:
        return GPT(rngs=nnx.Rngs(0), **sizes)

    return nnx.eval_shape(make) if abstract else make()


# --------------------------------------------------------------------------- data


def calibration_set(
    splits: text.TextSplits, num_sequences: int, seq_len: int, *, seed: int
) -> np.ndarray:
    """The calibration tokens ``(num_sequences, seq_len)``: windows of ``splits.train``
    only (:func:`experiments.data.text.calibration_sample`), never validation or test."""
    return text.calibration_sample(splits, num_sequences, seq_len, seed=seed)


def bits_per_char_split(model: GPT, tokens: np.ndarray, batch_size: int) -> float:
    """Bits per character of ``model`` on every next byte of ``tokens`` (one split), in
    non-overlapping windows of the model's context (:func:`text.iterate_eval`)."""
    total, count = 0.0, 0.0
    for x, y, weight in text.iterate_eval(tokens, batch_size, model.context):
        bits, n = _eval_batch(model, jnp.asarray(x), jnp.asarray(y), jnp.asarray(weight))
        total += float(bits)
        count += float(n)
    return total / count


@nnx.jit
def _eval_batch(
    model: GPT, x: jax.Array, y: jax.Array, weight: jax.Array
) -> tuple[jax.Array, jax.Array]:
    # Sums, not means: the padded last batch must not weigh as much as a full one.
    n = jnp.sum(weight)
    return bits_per_char(model(x.astype(jnp.int32)), y, weight) * n, n


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class KernelRecord:
    """One pruned kernel of one layer."""

    layer: int
    kernel: str  # e.g. "attention/query" (its leaf: blocks/attention/query/kernel)
    shape: tuple[int, int]  # the (in, out) view it was pruned as
    kept: int  # nonzeros after pruning
    total: int
    relative_error: float  # ||X W - X W'||^2 / ||X W||^2 on this kernel's inputs
    seconds: float
    iterations: int | None = None  # admm: ADMM iterations run


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_gpt` returns: the params (the tree of ``nnx.state(model,
    nnx.Param)`` with plain arrays, same shapes) and one record per layer and kernel."""

    params: nnx.State
    records: tuple[KernelRecord, ...]
    seconds: float  # wall-clock of the whole call, calibration forward passes included


# --------------------------------------------------------------------------- pruning


def _kernel_shapes(model: GPT) -> dict[str, tuple[int, ...]]:
    """Each pruned kernel's stacked shape ``(layers, ...)``, by :data:`KERNELS` name."""
    blocks = nnx.to_pure_dict(nnx.state(model.blocks, nnx.Param))
    return {name: tuple(_get(blocks, name)["kernel"].shape) for name in KERNELS}


def _get(tree: Mapping[str, Any], name: str) -> Any:
    for part in name.split("/"):
        tree = tree[part]
    return tree


def _matrix_shape(name: str, stacked_shape: Sequence[int]) -> tuple[int, int]:
    """The ``(in, out)`` view of one layer's kernel: out's (heads, head_dim) are inputs."""
    shape = tuple(stacked_shape[1:])
    n_in = math.prod(shape[:2]) if name == "attention/out" else shape[0]
    return n_in, math.prod(shape) // n_in


def _check_target(target: Any, kernels: Mapping[str, Sequence[int]]) -> None:
    if isinstance(target, admmjax.NM):
        for name, stacked_shape in kernels.items():
            n_in, _ = _matrix_shape(name, stacked_shape)
            if n_in % target.m:
                raise ValueError(
                    f"target {target_name(target)}: kernel blocks/{name}/kernel of shape "
                    f"{tuple(stacked_shape[1:])} per layer has {n_in} inputs, not a multiple "
                    f"of {target.m}, so it cannot be cut into groups of {target.m} along its "
                    "contraction axis"
                )


# Eager calls of the projection-based pruners run op by op (seconds per kernel on 2
# cores); jitted they compile once per kernel shape and target.
_magnitude = jax.jit(admmjax.magnitude_prune, static_argnames=("target",))
_wanda = jax.jit(admmjax.wanda_prune, static_argnames=("target", "per_output"))


@jax.jit
def _statistics(inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(gram, norms)`` of one kernel's calibration inputs ``(tokens, in)``."""
    return admmjax.gram_matrix(inputs), admmjax.input_norms(inputs)


@jax.jit
def _relative_error(w: jax.Array, pruned: jax.Array, gram: jax.Array) -> jax.Array:
    dense = admmjax.layer_error(w, jnp.zeros_like(w), gram)
    return admmjax.layer_error(w, pruned, gram) / jnp.maximum(dense, jnp.finfo(dense.dtype).tiny)


def _pruner(
    method: str, target: Any, *, dampening: float, block_size: int, admm_max_iter: int,
    wanda_per_output: bool,
) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, int | None]]:  # fmt: skip
    """``prune(kernel (in, out), gram, norms) -> (pruned, ADMM iterations or None)``."""

    def prune(w: jax.Array, gram: jax.Array, norms: jax.Array) -> tuple[jax.Array, int | None]:
        if method == "magnitude":
            return _magnitude(w, target=target), None
        if method == "wanda":
            return _wanda(w, norms, target=target, per_output=wanda_per_output), None
        if method == "sparsegpt":
            pruned = admmjax.sparsegpt_prune(
                w, gram, target, dampening=dampening, block_size=block_size
            )
            return pruned, None
        pruned, info = admmjax.layerwise_admm_prune(
            w, gram, target, dampening=dampening, max_iter=admm_max_iter, return_info=True
        )
        return pruned, int(info.iterations)

    return prune


class _Recorder:
    """Stands in for one linear of a block: notes the input it gets, then applies it."""

    def __init__(self, inner: Callable[..., jax.Array], name: str, seen: dict[str, jax.Array]):
        self.inner, self.name, self.seen = inner, name, seen

    def __call__(self, x: jax.Array, **kwargs: Any) -> jax.Array:
        self.seen[self.name] = x
        return self.inner(x, **kwargs)


@functools.partial(jax.jit, static_argnums=0)
def _run_block(
    graphdef: nnx.GraphDef, params: Any, rest: Any, x: jax.Array, mask: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One block's output and the input of each of its pruned linears.

    The block is the model's own ``Block``, merged from one layer's slice of the stacked
    params, so the forward pass is the model's; only its pruned linears are wrapped to
    record what they receive. Compiled once per block structure (``graphdef``, static).
    """
    block = nnx.merge(graphdef, params, rest)
    seen: dict[str, jax.Array] = {}
    for name in KERNELS:
        parent, _, attr = name.rpartition("/")
        owner = _get_module(block, parent)
        setattr(owner, attr, _Recorder(getattr(owner, attr), name, seen))
    out = block(x, mask, train=False, key=None)
    return out, seen


def _get_module(module: Any, path: str) -> Any:
    for part in path.split("/"):
        module = getattr(module, part)
    return module


def _check_calibration(model: GPT, calibration: Any) -> jax.Array:
    tokens = jnp.asarray(calibration)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"calibration must be integer tokens (sequences, length), got {tokens.dtype} "
            f"{tokens.shape}"
        )
    if not 0 < tokens.shape[1] <= model.context or tokens.shape[0] == 0:
        raise ValueError(
            f"calibration of shape {tokens.shape}: expected at least one sequence of 1 to "
            f"{model.context} tokens (the model's context)"
        )
    return tokens.astype(jnp.int32)


def prune_gpt(
    model: GPT,
    calibration: Any,
    method: str,
    target: float | str | admmjax.NM,
    *,
    dampening: float = DAMPENING,
    block_size: int = BLOCK_SIZE,
    admm_max_iter: int = ADMM_MAX_ITER,
    wanda_per_output: bool = True,
    log: Callable[[str], None] | None = None,
) -> PruneResult:
    """Prunes every attention and MLP kernel of ``model`` layer by layer (module doc).

    ``calibration``: integer tokens ``(sequences, length)``, ``length <= context``
    (:func:`calibration_set`). ``method`` is one of :data:`METHODS`, ``target`` a
    fraction in [0, 1), ``"N:M"`` or ``admmjax.NM(n, m)`` (taken along the inputs).
    Both are checked, and so is every kernel's shape against an N:M target, before any
    work. ``model`` is not changed; ``nnx.update(model, result.params)`` applies the
    result. Deterministic: the same inputs give bit-identical params.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if isinstance(target, admmjax.NM):
        if target.axis not in (None, 0):
            raise ValueError(
                f"target {target!r}: N:M runs along each kernel's inputs here; pass axis=0 "
                "or None"
            )
        target = admmjax.NM(target.n, target.m, axis=0)
    else:
        target = parse_target(target)
    _check_target(target, _kernel_shapes(model))
    tokens = _check_calibration(model, calibration)
    prune = _pruner(
        method, target, dampening=dampening, block_size=block_size,
        admm_max_iter=admm_max_iter, wanda_per_output=wanda_per_output,
    )  # fmt: skip

    start = time.perf_counter()
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    blocks = nnx.to_pure_dict(nnx.state(model.blocks, nnx.Param))
    graphdef, _, rest = nnx.split(model.blocks, nnx.Param, ...)

    def run(layer_params: Any, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict]:
        return _run_block(graphdef, layer_params, rest, x, mask)

    x, mask = model.embed(tokens), causal_mask(tokens)
    new_kernels: dict[str, list[jax.Array]] = {name: [] for name in KERNELS}
    records: list[KernelRecord] = []
    for layer in range(model.layers):
        layer_params = jax.tree.map(lambda leaf, i=layer: leaf[i], blocks)
        for group in SUBLAYERS:
            # The group's input with every earlier sublayer of this layer already pruned.
            _, seen = run(layer_params, x, mask)
            inputs = seen[group[0]]
            gram, norms = _statistics(inputs.reshape(-1, math.prod(inputs.shape[2:])))
            for name in group:
                leaf = _get(layer_params, name)
                kernel = leaf["kernel"]
                w = kernel.reshape(_matrix_shape(name, (0, *kernel.shape)))
                t0 = time.perf_counter()
                pruned, iterations = prune(w, gram, norms)
                pruned = jax.block_until_ready(pruned)
                seconds = time.perf_counter() - t0
                error = _relative_error(w, pruned, gram)
                records.append(KernelRecord(
                    layer, name, tuple(w.shape), int(jnp.count_nonzero(pruned)), int(w.size),
                    float(error), seconds, iterations,
                ))  # fmt: skip
                leaf["kernel"] = pruned.reshape(kernel.shape).astype(kernel.dtype)
                new_kernels[name].append(leaf["kernel"])
                if log is not None:
                    r = records[-1]
                    log(f"layer {layer} {name}: kept {r.kept}/{r.total}, relative error "
                        f"{r.relative_error:.4f}, {r.seconds:.2f} s")  # fmt: skip
        x, _ = run(layer_params, x, mask)  # the pruned block's output feeds the next one
    for name, slices in new_kernels.items():  # written back as stacked leaves
        _get(params["blocks"], name)["kernel"] = jnp.stack(slices)
    jax.block_until_ready(params)
    return PruneResult(params, tuple(records), time.perf_counter() - start)


def options() -> Mapping[str, Option]:
    """Every :class:`OneshotConfig` field's option, in field order."""
    return options_of(OneshotConfig)
