"""Faster XLA:CPU kernels for the experiments, switched on before JAX's backend starts.

XLA:CPU's default convolution and dot emitters keep one core busy for most of a
LeNet-5 training step (the forward and weight-gradient convolutions run single
threaded). Routing dot, elementwise and reduce fusions through YNNPACK
(``--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce``) made the LeNet-5 step
about 2x faster on the 2-core CPU this project is developed on (figures and the
other layouts and flags that were tried: ``experiments/bench/bench_epoch.py`` and
``experiments/results/bench/epoch_cpu.json``). Gradients agree with the default
kernels to a few 1e-7 relative, but not bit for bit, and the YNNPACK results depend on
the number of threads: a run is bit-reproducible on the same machine type.

Importing :mod:`experiments` calls :func:`enable_fast_cpu_kernels`. It only appends to
``XLA_FLAGS``, which XLA reads when the CPU backend starts, so it has no effect if JAX
already ran a computation, if ``XLA_FLAGS`` already names the option, or if
``ADMMJAX_FAST_CPU_KERNELS=0`` is set (the way to get XLA's default kernels back, e.g.
to reproduce a result made before this switch). The flag changes nothing on GPU/TPU.
"""

from __future__ import annotations

import os

YNN_OPTION = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG = f"{YNN_OPTION}=dot,eltwise,reduce"
OPT_OUT = "ADMMJAX_FAST_CPU_KERNELS"


def enable_fast_cpu_kernels() -> bool:
    """Appends :data:`YNN_FLAG` to ``XLA_FLAGS`` unless opted out; returns whether it did."""
    if os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_OPTION in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
    return True
