"""Faster XLA:CPU kernels for the experiments, switched on before JAX's backend starts.

XLA:CPU's default convolution and dot emitters keep one core busy for most of a
LeNet-5 training step (the forward and weight-gradient convolutions run single
threaded). Routing dot, elementwise and reduce fusions through YNNPACK
(``--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce``,
:data:`YNN_FLAG_WITHOUT_NATIVE`) made the LeNet-5 step about 2x faster on the 2-core
CPU this project is developed on. Since the hand-written kernels of
:mod:`experiments.kernels.native_kernels` do the training convolutions, YNNPACK's elementwise
fusions no longer pay: they run the optimizer's elementwise chains (e.g. the ADMM
penalty plus weight decay) slower than XLA's own loop fusion, and ``dot,reduce``
(:data:`YNN_FLAG`) trains LeNet-300-100 about 1.3x and LeNet-5 about 1.05x faster
(figures: ``experiments/bench/bench_epoch.py``, ``experiments/results/README.md``).
``dot,reduce`` is also the choice where those kernels cannot run: with ``eltwise``
XLA refuses some fusions of transposed operands ("unsupported layout in YNN fusion",
seen on an AMD EPYC without AVX-512 in the one-shot pruners' batched solves), so
:data:`YNN_FLAG_WITHOUT_NATIVE` is only an option to set by hand or to benchmark.
Gradients agree with the default kernels to a few 1e-7 relative, but not bit for bit,
and the YNNPACK results depend on the number of threads: a run is bit-reproducible on
the same machine type with the same flags.

Nothing here runs at import: each CLI calls :func:`experiments.kernels.configure_cpu`
first thing, which calls :func:`enable_fast_cpu_kernels`. That only appends to
``XLA_FLAGS``, which XLA reads when the CPU backend starts, so it has no effect if JAX
already ran a computation, if ``XLA_FLAGS`` already names the option (the way to pick
a set by hand, e.g. ``dot,eltwise,reduce`` to reproduce a result made before
2026-11-30 evening), or if ``ADMMJAX_FAST_CPU_KERNELS=0`` is set (XLA's default
kernels). The flag changes nothing on GPU/TPU.
"""

from __future__ import annotations

import os
import platform
import shutil

YNN_OPTION = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG = f"{YNN_OPTION}=dot,reduce"
YNN_FLAG_WITHOUT_NATIVE = f"{YNN_OPTION}=dot,eltwise,reduce"
OPT_OUT = "ADMMJAX_FAST_CPU_KERNELS"
NATIVE_OPT_OUT = "ADMMJAX_NATIVE_KERNELS"


def _switched_off(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compiler() -> str:
    """The C++ compiler the native kernels are built with: ``$CXX``, else ``g++``."""
    return os.environ.get("CXX") or "g++"


def native_kernels_blocker() -> str | None:
    """Why :mod:`experiments.kernels.native_kernels` cannot run here, or ``None`` if nothing
    stands in the way before compiling them (opt-out, platform, AVX-512, compiler)."""
    if _switched_off(NATIVE_OPT_OUT):
        return f"switched off by {NATIVE_OPT_OUT}={os.environ[NATIVE_OPT_OUT]}"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"needs Linux on x86-64, this is {platform.system()} {platform.machine()}"
    if "avx512f" not in cpu_flags():
        return "the CPU has no AVX-512 (avx512f not in /proc/cpuinfo)"
    cxx = compiler()
    if shutil.which(cxx) is None:
        return f"no C++ compiler: {cxx!r} not found (set CXX)"
    return None


def ynn_flag() -> str:
    """:data:`YNN_FLAG`, with or without the native kernels (see the module docstring)."""
    return YNN_FLAG


def would_enable() -> bool:
    """Whether :func:`enable_fast_cpu_kernels` would change ``XLA_FLAGS``: not opted out
    and ``XLA_FLAGS`` does not name the option yet."""
    return not _switched_off(OPT_OUT) and YNN_OPTION not in os.environ.get("XLA_FLAGS", "")


def enable_fast_cpu_kernels() -> bool:
    """Appends :func:`ynn_flag` to ``XLA_FLAGS`` unless opted out; returns whether it did."""
    if not would_enable():
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} {ynn_flag()}".strip()
    return True
