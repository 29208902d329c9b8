"""The model registry: name -> constructor, input shape and per-model hooks.

Models: LeNet-300-100 and LeNet-5 (:mod:`experiments.models.lenet`), BVLC AlexNet
(:mod:`experiments.models.alexnet`); the conventions they share are in
:mod:`experiments.models.base`. The pipeline knows models only through this module:
:func:`create_model`, :func:`abstract_functional` (shapes without initialising) and
:func:`hook` (a model's optional extras, e.g. LeNet-5's ``fold_idle``).

To add a model: a Flax NNX module taking ``rngs=`` and NHWC images, an entry in
``MODELS`` and ``INPUT_SHAPES``, and its hooks (if any) in ``HOOKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from flax import nnx

from experiments.models import base
from experiments.models.alexnet import INPUT_SHAPE as ALEXNET_INPUT_SHAPE
from experiments.models.alexnet import AlexNet
from experiments.models.base import ApplyFn, count_params, functional
from experiments.models.lenet import LeNet5, LeNet300100, fold_idle_lenet5

__all__ = [
    "HOOKS",
    "INPUT_SHAPES",
    "MODELS",
    "AlexNet",
    "ApplyFn",
    "LeNet5",
    "LeNet300100",
    "ModelHooks",
    "abstract_functional",
    "count_params",
    "create_model",
    "functional",
    "hook",
]


class ModelHooks(NamedTuple):
    """Optional per-model steps the pipeline calls by name when a config asks for them.

    ``fold_idle(params) -> params``: the same function with every weight that cannot
    change the outputs zeroed or folded into a bias (plain nested dicts in, plain
    nested dicts with the same leaf order out); run on the pretrained params before
    ADMM when ``Config.fold_idle`` is set.
    """

    fold_idle: Callable[[Any], Any] | None = None


MODELS: dict[str, type[nnx.Module]] = {
    "lenet300_100": LeNet300100,
    "lenet5": LeNet5,
    "alexnet": AlexNet,  # BVLC AlexNet for ImageNet
}

# One example's (H, W, C), as the MAC counts feed it.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "lenet300_100": (28, 28, 1),
    "lenet5": (28, 28, 1),
    "alexnet": ALEXNET_INPUT_SHAPE,
}

HOOKS: dict[str, ModelHooks] = {"lenet5": ModelHooks(fold_idle=fold_idle_lenet5)}


def _constructor(name: str) -> type[nnx.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}"
        ) from None


def create_model(name: str, *, seed: int, **kwargs: Any) -> nnx.Module:
    """Build the registered model ``name`` with parameters initialised from ``seed``."""
    return _constructor(name)(rngs=nnx.Rngs(seed), **kwargs)


def abstract_functional(name: str, **kwargs: Any) -> tuple[nnx.GraphDef, nnx.State, ApplyFn]:
    """``functional(create_model(name, **kwargs))`` with ``jax.ShapeDtypeStruct`` params:
    the shapes of a model's params (and its ``apply_fn``) without initialising it."""
    return base.abstract_functional(_constructor(name), **kwargs)


def hook(name: str, which: str) -> Callable[[Any], Any] | None:
    """Model ``name``'s hook ``which`` (a :class:`ModelHooks` field), or None if it has none."""
    if which not in ModelHooks._fields:
        raise ValueError(f"unknown model hook {which!r}; known: {', '.join(ModelHooks._fields)}")
    _constructor(name)  # an unknown model is an error, not "no hook"
    return getattr(HOOKS.get(name, ModelHooks()), which)
