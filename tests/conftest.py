"""Shared test setup: 4 virtual CPU devices and hypothesis profiles.

Layers: ``tests/admmjax/`` (the library: jax, optax, numpy, pytest and hypothesis only),
``tests/integration/`` (the library on Flax models re-typed from Flax's examples, no
data), ``tests/experiments/`` (everything else; markers ``data``, ``torch``, ``slow``).

The device count and the CPU kernels' XLA flags must be set before JAX's backend
starts, so both are done here, before any test module runs a computation:
:func:`experiments.kernels.configure_cpu` gives the tests the CLIs' numerics
(importing ``experiments`` does not). A run of ``tests/admmjax`` alone skips it, so
the library's fast loop never imports ``experiments`` and runs on XLA's defaults.
Profiles: ``default`` (quick, for local runs) and ``ci`` (more examples); pick one
with ``HYPOTHESIS_PROFILE=ci``.

XLA compilations are cached on disk for the whole run (JAX's persistent compilation
cache, in a fresh temporary folder unless ``JAX_COMPILATION_CACHE_DIR`` is set): the
many subprocesses (CLIs, benchmarks' quick runs, the fault-injection restarts,
notebook kernels) compile the same training steps, and each finds them compiled.
The cache returns the executable XLA built, so results are unchanged.

XLA:CPU's backend optimisation level is 0 in the tests (``--xla_backend_optimization_level=0``
in ``XLA_FLAGS``, inherited by the subprocesses), unless ``XLA_FLAGS`` already names
it: most tests compile many small programs and run each a few times, so LLVM's
optimisation passes cost more than they save (``tests/admmjax`` on 2 cores: 243 s
at XLA's default level, 144 s at 0). Benchmarks' figures
never come from the tests; run them on their own. To test the fully optimised
code: ``XLA_FLAGS=--xla_backend_optimization_level=3 python -m pytest tests``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_num_cpu_devices", 4)

_COMMON = dict(
    deadline=None,  # the first example of a shape pays for XLA compilation
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("default", max_examples=20, **_COMMON)
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
LIBRARY_TESTS = REPO / "tests" / "admmjax"


# Cache every compilation, however quick or small (JAX option -> value; the
# environment variable of each is its name in upper case).
_CACHE_SETTINGS = {
    "jax_persistent_cache_min_compile_time_secs": 0,
    "jax_persistent_cache_min_entry_size_bytes": -1,
}
_OWN_CACHE: list[str] = []


def _share_compilation_cache() -> None:
    # Environment variables reach the subprocesses; jax.config covers this process.
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="admmjax-tests-xla-cache-"))
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE[0]
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    for name, value in _CACHE_SETTINGS.items():
        os.environ.setdefault(name.upper(), str(value))
        jax.config.update(name, value)


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _OWN_CACHE:
        shutil.rmtree(path, ignore_errors=True)


# Set before the backend starts (XLA reads XLA_FLAGS once); see the module docstring.
_OPT_LEVEL_FLAG = "--xla_backend_optimization_level"


def _quick_compiles() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if _OPT_LEVEL_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_OPT_LEVEL_FLAG}=0".strip()


def pytest_configure(config: pytest.Config) -> None:
    _quick_compiles()
    _share_compilation_cache()
    targets = [
        (config.invocation_params.dir / arg.split("::")[0]).resolve() for arg in config.args
    ]
    if not all(t.is_relative_to(LIBRARY_TESTS) for t in targets):
        from experiments.kernels import configure_cpu

        configure_cpu()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Real MNIST comes only through the mnist_dir fixture, so its users are the data tests.
    for item in items:
        if "mnist_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
    # Files holding `slow` tests run first: the parallel workers (whole files each) then
    # end on short files together instead of one worker finishing a long file alone.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    """Real MNIST prepared by TFDS: ``$TFDS_DATA_DIR`` or ``../shared/tfds``; fails if absent."""
    path = Path(os.environ.get("TFDS_DATA_DIR") or REPO.parent / "shared" / "tfds")
    if not (path / "mnist").is_dir():
        pytest.fail(
            f"real MNIST is not prepared under {path}: set TFDS_DATA_DIR to a TFDS data dir "
            "holding mnist/3.0.1 (tests never skip it)"
        )
    return str(path)


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if data is loaded or a run starts (CLI checks come first)."""
    from experiments import train
    from experiments.data import mnist as data

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the bad value was refused")

    monkeypatch.setattr(data, "load_split", forbidden)
    monkeypatch.setattr(train, "run", forbidden)
    monkeypatch.setattr(train, "Pipeline", forbidden)
