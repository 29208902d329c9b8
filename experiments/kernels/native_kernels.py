r"""Hand-written AVX-512 kernels for LeNet-style training on CPU: convolution and max pooling.

On the 2-core CPU this project is developed on, XLA's convolutions (YNNPACK forward,
Eigen kernel gradient) and even the banded input gradient of :mod:`experiments.kernels.conv`
ran at 100-185 GFLOP/s of the 435 that the CPU's FMA units give, and kept LeNet-5's
training step behind PyTorch's (oneDNN). ``csrc/native_kernels.cc`` computes

.. math::

    y[n, y, x, o] = \sum_{i, j, c} x[n, y + i, x + j, c]\, w[i, j, c, o], \qquad
    dw[i, j, c, o] = \sum_{n, y, x} x[n, y + i, x + j, c]\, g[n, y, x, o],

    dx[n, y, x, c] = \sum_{i, j, o} g[n, y - i, x - j, o]\, w[i, j, c, o]

directly from NHWC/HWIO data (no patch matrix, no overlap-add pass), in register
tiles of broadcast-and-FMA, split over images on XLA's intra-op thread pool, and the
gradient of 2x2 max pooling (``experiments.kernels.pool``' rule: ``g`` split between the
inputs equal to their window's maximum) in one pass instead of XLA's four. The
results do not depend on the number of threads (each image's output is written by
one task; the kernel gradient is summed in fixed chunks of images, then over chunks
in order). Figures: ``experiments/bench/bench_epoch.py`` and
``experiments/results/README.md``.

The source is compiled on first use with the system C++ compiler (``$CXX``, else
``g++``; ``-O3 -march=native``) against ``jax.ffi.include_dir()``, cached under
``$ADMMJAX_CACHE_DIR`` (default ``~/.cache/admmjax``) by a hash of the source, the
flags, the compiler, jaxlib's version and the CPU's flags, and registered as XLA FFI
targets for the CPU (:data:`TARGETS`). :func:`available` says whether that worked;
when it did not (no compiler, no AVX-512, not Linux x86-64, a build error, or
``ADMMJAX_NATIVE_KERNELS=0``), :func:`unavailable_reason` says why and
:mod:`experiments.kernels.conv` and :mod:`experiments.kernels.pool` keep their pure-JAX code. They
are used (:func:`use_on_cpu`) in single-device CPU processes, for float32, and for
convolutions with ``KW * C <= 128`` (:func:`supports`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.kernels import cpu_kernels
from experiments.kernels.pool_reference import max_pool_2x2_grad_jax

__all__ = [
    "KERNEL_GRAD_CHUNK",
    "MAX_SEGMENT",
    "OPT_OUT",
    "SOURCE",
    "TARGETS",
    "available",
    "forward",
    "input_grad",
    "kernel_grad",
    "max_pool_2x2_grad",
    "supports",
    "unavailable_reason",
    "use_on_cpu",
]

SOURCE = Path(__file__).resolve().parent / "csrc" / "native_kernels.cc"
OPT_OUT = cpu_kernels.NATIVE_OPT_OUT
CACHE_ENV = "ADMMJAX_CACHE_DIR"
CXX_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
MAX_SEGMENT = 128  # KW * C: the kernels hold one kernel row in at most 8 zmm registers
LANES = 16
# Images per partial sum of the kernel gradient: the unit of parallel work, and the
# fixed summation order that keeps results independent of the thread count.
KERNEL_GRAD_CHUNK = 16
_FORWARD = "admmjax_conv_forward"
_INPUT_GRAD = "admmjax_conv_input_grad"
_KERNEL_GRAD = "admmjax_conv_kernel_grad"
_MAX_POOL_GRAD = "admmjax_max_pool_grad"
# The FFI target names (for ``jax.export.DisabledSafetyCheck.custom_call``).
TARGETS = (_FORWARD, _INPUT_GRAD, _KERNEL_GRAD, _MAX_POOL_GRAD)
_reason: str | None = None


def _cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "admmjax")
    return Path(root) / "native"


def _build(cxx: str) -> Path:
    """Compiles :data:`SOURCE` unless a build for this source, compiler and CPU is cached."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(CXX_FLAGS).encode(),
        version.stdout.encode(),
        importlib.metadata.version("jaxlib").encode(),
        " ".join(sorted(cpu_kernels.cpu_flags())).encode(),
    ):
        key.update(part)
    out_dir = _cache_dir()
    target = out_dir / f"native_kernels_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build to a private name, then rename: concurrent processes never load a half file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        cmd = [cxx, *CXX_FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


@functools.cache
def available() -> bool:
    """Whether the kernels are built and registered (compiles them on the first call)."""
    global _reason
    _reason = cpu_kernels.native_kernels_blocker()
    if _reason is not None:
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(str(_build(cpu_kernels.compiler())))
        for target, symbol in (
            (_FORWARD, lib.AdmmjaxConvForward),
            (_INPUT_GRAD, lib.AdmmjaxConvInputGrad),
            (_KERNEL_GRAD, lib.AdmmjaxConvKernelGrad),
            (_MAX_POOL_GRAD, lib.AdmmjaxMaxPoolGrad),
        ):
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform="cpu")
    except (OSError, AttributeError, RuntimeError, subprocess.CalledProcessError) as err:
        _reason = f"build or load failed: {err}"
        warnings.warn(
            f"experiments.kernels.native_kernels: {_reason}; using the pure-JAX gradients",
            stacklevel=2,
        )
        return False
    _reason = None
    return True


def unavailable_reason() -> str | None:
    """Why :func:`available` returned False (``None`` when the kernels are in use)."""
    available()
    return _reason


def use_on_cpu(dtype: Any, kernel_shape: tuple[int, ...] | None = None) -> bool:
    """Whether a computation traced now should take the kernels on its CPU branch.

    Only in a single-device process whose default backend is the CPU (a GPU/TPU
    process never runs the CPU branch, and XLA's partitioner cannot split a custom
    call over a batch-sharded mesh: it would gather the batch and compute it on every
    device), for float32 and, for a convolution, a kernel :func:`supports` handles.
    """
    if jax.default_backend() != "cpu" or jax.device_count() != 1:
        return False
    if jnp.dtype(dtype) != jnp.float32:
        return False
    if kernel_shape is not None and not supports(kernel_shape, dtype):
        return False
    return available()


def supports(kernel_shape: tuple[int, ...], dtype: jnp.dtype) -> bool:
    """Whether the kernels handle an HWIO kernel of this shape and dtype."""
    if len(kernel_shape) != 4 or jnp.dtype(dtype) != jnp.float32:
        return False
    _, kw, c, _ = kernel_shape
    return 0 < kw * c <= MAX_SEGMENT


def _padded(length: int) -> int:
    """``length`` rounded up to whole 16-float vectors."""
    return -(-length // LANES) * LANES


def _require_available() -> None:
    if not available():
        raise RuntimeError(f"native kernels unavailable: {_reason}")


def _check(kernel_shape: tuple[int, ...], dtype: jnp.dtype) -> None:
    if not supports(kernel_shape, dtype):
        raise ValueError(
            f"native conv kernels need a float32 HWIO kernel with KW * C <= {MAX_SEGMENT}, "
            f"got shape {tuple(kernel_shape)} and dtype {jnp.dtype(dtype)}"
        )
    _require_available()


def _forward(x: jax.Array, w: jax.Array) -> jax.Array:
    """``conv(x, w)``, VALID, stride 1, NHWC/HWIO.

    ``x``: (N, H, W, C), ``w``: (KH, KW, C, O); returns (N, H - KH + 1, W - KW + 1, O).
    """
    _check(w.shape, w.dtype)
    kh, kw, c, o = w.shape
    n, h, width, xc = x.shape
    if xc != c or x.dtype != w.dtype or h < kh or width < kw:
        raise ValueError(f"input {x.shape} {x.dtype} does not fit kernel {w.shape} {w.dtype}")
    # wp[(i * KW + j) * C + c, o] = w[i, j, c, o], channels zero-padded to whole vectors.
    wp = jnp.pad(w.reshape(kh * kw * c, o), ((0, 0), (0, _padded(o) - o)))
    out = jax.ShapeDtypeStruct((n, h - kh + 1, width - kw + 1, o), jnp.float32)
    call = jax.ffi.ffi_call(_FORWARD, out, vmap_method="sequential")
    return call(x, wp, kh=np.int64(kh), kw=np.int64(kw))


def _input_grad(g: jax.Array, w: jax.Array) -> jax.Array:
    """Input gradient of ``conv(x, w)`` (VALID, stride 1, NHWC/HWIO) for output gradient ``g``.

    ``g``: (N, OH, OW, O), ``w``: (KH, KW, C, O); returns (N, OH + KH - 1, OW + KW - 1, C).
    """
    _check(w.shape, w.dtype)
    kh, kw, c, o = w.shape
    n, oh, ow, go = g.shape
    if go != o or g.dtype != w.dtype:
        raise ValueError(f"output gradient {g.shape} {g.dtype} does not fit kernel {w.shape}")
    # wt[o, i, j * C + c] = w[i, j, c, o], zero-padded to whole vectors.
    wt = jnp.pad(
        w.transpose(3, 0, 1, 2).reshape(o, kh, kw * c),
        ((0, 0), (0, 0), (0, _padded(kw * c) - kw * c)),
    )
    out = jax.ShapeDtypeStruct((n, oh + kh - 1, ow + kw - 1, c), jnp.float32)
    call = jax.ffi.ffi_call(_INPUT_GRAD, out, vmap_method="sequential")
    return call(g, wt, kw=np.int64(kw))


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """Kernel gradient of ``conv(x, w)`` (VALID, stride 1, NHWC/HWIO) for output gradient ``g``.

    ``x``: (N, H, W, C), ``g``: (N, H - KH + 1, W - KW + 1, O); returns (KH, KW, C, O).
    """
    _check(kernel_shape, x.dtype)
    kh, kw, c, o = kernel_shape
    n, h, w, xc = x.shape
    if g.shape != (n, h - kh + 1, w - kw + 1, o) or xc != c or g.dtype != x.dtype:
        raise ValueError(
            f"input {x.shape}, output gradient {g.shape}, kernel {kernel_shape} do not fit"
        )
    out = jax.ShapeDtypeStruct((kh * kw * c, _padded(o)), jnp.float32)
    call = jax.ffi.ffi_call(_KERNEL_GRAD, out, vmap_method="sequential")
    dwp = call(x, g, kh=np.int64(kh), kw=np.int64(kw), chunk=np.int64(KERNEL_GRAD_CHUNK))
    return dwp[:, :o].reshape(kh, kw, c, o)


def _max_pool_2x2_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """Gradient of 2x2 stride-2 max pooling of NHWC ``x`` (even H and W) for ``g``.

    The same values as ``experiments.models._max_pool_2x2_grad`` (bit for bit, for
    finite ``x``): every input equal to its window's maximum gets ``g / ties``.
    """
    n, h, w, c = x.shape
    if x.dtype != jnp.float32 or g.dtype != jnp.float32:
        raise ValueError(f"native max pool gradient needs float32, got {x.dtype} and {g.dtype}")
    if h % 2 or w % 2 or g.shape != (n, h // 2, w // 2, c):
        raise ValueError(f"input {x.shape} and output gradient {g.shape} do not fit 2x2 pooling")
    _require_available()
    call = jax.ffi.ffi_call(_MAX_POOL_GRAD, jax.ShapeDtypeStruct(x.shape, jnp.float32),
                            vmap_method="sequential")  # fmt: skip
    return call(x, g)


# The three convolution maps are bilinear and each one's adjoints are the other two, so
# they differentiate through each other (reverse over reverse, e.g. Hessian-vector
# products through a training step); the pooling gradient through its JAX twin.
forward = jax.custom_vjp(_forward)
forward.defvjp(
    lambda x, w: (_forward(x, w), (x, w)),
    lambda res, ct: (input_grad(ct, res[1]), kernel_grad(res[0], ct, res[1].shape)),
)
forward.__doc__ = _forward.__doc__

input_grad = jax.custom_vjp(_input_grad)
input_grad.defvjp(
    lambda g, w: (_input_grad(g, w), (g, w)),
    lambda res, ct: (forward(ct, res[1]), kernel_grad(ct, res[0], res[1].shape)),
)
input_grad.__doc__ = _input_grad.__doc__

kernel_grad = jax.custom_vjp(_kernel_grad, nondiff_argnums=(2,))
kernel_grad.defvjp(
    lambda x, g, shape: (_kernel_grad(x, g, shape), (x, g)),
    lambda shape, res, ct: (input_grad(res[1], ct), forward(res[0], ct)),
)
kernel_grad.__doc__ = _kernel_grad.__doc__


def _max_pool_2x2_grad_vjp(res, ct):
    return jax.vjp(max_pool_2x2_grad_jax, *res)[1](ct)


max_pool_2x2_grad = jax.custom_vjp(_max_pool_2x2_grad)
max_pool_2x2_grad.defvjp(lambda x, g: (_max_pool_2x2_grad(x, g), (x, g)), _max_pool_2x2_grad_vjp)
max_pool_2x2_grad.__doc__ = _max_pool_2x2_grad.__doc__
