"""The CPU kernels behind the models, and the start-up switch that picks them.

The models use two operations from here, whatever runs underneath:

* :func:`conv_general_dilated` (a drop-in for ``lax.conv_general_dilated`` in
  ``nnx.Conv``), whose VALID stride-1 case has hand-written gradients
  (:mod:`experiments.kernels.conv`);
* :func:`max_pool_2x2` (:mod:`experiments.kernels.pool`).

Both run the AVX-512 kernels of :mod:`experiments.kernels.native_kernels` where those
build and load (single-device CPU, float32), and pure JAX everywhere else, so a model
trains the same way (to float rounding) when the native module is missing or switched
off (``ADMMJAX_NATIVE_KERNELS=0``).

Importing this package changes no global state. :func:`configure_cpu` is the one place
that does: every CLI calls it first, before JAX starts its backend (XLA reads
``XLA_FLAGS`` then), and so does ``tests/conftest.py``.
"""

from __future__ import annotations

from experiments.kernels import cpu_kernels
from experiments.kernels.conv import conv_general_dilated
from experiments.kernels.pool import max_pool_2x2

__all__ = ["configure_cpu", "conv_general_dilated", "max_pool_2x2"]


def configure_cpu(enable: bool = True) -> bool:
    """Chooses XLA:CPU's YNNPACK fusions for this process; returns whether it set them.

    With ``enable`` (the CLIs' default) it appends :func:`cpu_kernels.ynn_flag` to
    ``XLA_FLAGS`` unless ``ADMMJAX_FAST_CPU_KERNELS=0`` is set or ``XLA_FLAGS`` already
    names the option; with ``enable=False`` it leaves XLA's defaults. Where it would
    change ``XLA_FLAGS`` it must run before the process's first JAX computation (the
    backend reads them when it starts), so then it raises instead of doing nothing.
    """
    if not isinstance(enable, bool):
        raise TypeError(f"configure_cpu: enable must be a bool, got {enable!r}")
    if not enable or not cpu_kernels.would_enable():
        return False
    if _backend_started():
        raise RuntimeError(
            "configure_cpu: JAX's backend has already started, so XLA_FLAGS would be "
            "ignored; call it before the first JAX computation"
        )
    return cpu_kernels.enable_fast_cpu_kernels()


def _backend_started() -> bool:
    # jax._src.xla_bridge keeps the initialised backends; there is no public query.
    from jax._src import xla_bridge

    return bool(xla_bridge._backends)
