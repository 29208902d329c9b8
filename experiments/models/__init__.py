"""The model registry: name -> constructor, task, input shape and declared options.

Models: LeNet-300-100 and LeNet-5 (:mod:`experiments.models.lenet`), BVLC AlexNet
(:mod:`experiments.models.alexnet`), the byte-level GPT (:mod:`experiments.models.gpt`);
the conventions they share are in :mod:`experiments.models.base`. The pipeline knows
models only through this module: :func:`create_model`, :func:`abstract_functional` /
:func:`abstract_params` (shapes without initialising), :func:`model_task` and
:func:`model_options` (the run options a model declares in its class attribute
``options``, e.g. LeNet-5's ``dropout`` and ``fold_idle``, the GPT's sizes; collected
by :mod:`experiments.config`).

A model's ``task`` (class attribute, default ``"classify"``) says what it eats:
``"classify"``: NHWC images to class logits (trained on cross-entropy, scored by
accuracy); ``"language"``: byte tokens ``(B, T)`` to next-byte logits (trained on
next-byte cross-entropy, scored by bits per character on text data).

To add an image model: a Flax NNX module taking ``rngs=`` and NHWC images, an entry
in ``MODELS`` and ``INPUT_SHAPES``, and its ``options`` (if any). A language model
sets ``task = "language"`` and has no input shape.

Not registered: :class:`experiments.models.transformer.TinyLM` (a test model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax import nnx

import admmjax
from experiments import schema
from experiments.models import base
from experiments.models.alexnet import INPUT_SHAPE as ALEXNET_INPUT_SHAPE
from experiments.models.alexnet import AlexNet
from experiments.models.base import ApplyFn, count_params, functional
from experiments.models.gpt import GPT
from experiments.models.lenet import LeNet5, LeNet300100

__all__ = [
    "GPT",
    "INPUT_SHAPES",
    "MODELS",
    "TASKS",
    "AlexNet",
    "ApplyFn",
    "LeNet5",
    "LeNet300100",
    "abstract_functional",
    "abstract_params",
    "count_params",
    "create_model",
    "functional",
    "model_options",
    "model_task",
    "stacked_axes",
]


MODELS: dict[str, type[nnx.Module]] = {
    "lenet300_100": LeNet300100,
    "lenet5": LeNet5,
    "alexnet": AlexNet,  # BVLC AlexNet for ImageNet
    "gpt": GPT,  # byte-level language model (the KJV)
}

TASKS = ("classify", "language")

# One image's (H, W, C), as the MAC counts feed it (image models only).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "lenet300_100": (28, 28, 1),
    "lenet5": (28, 28, 1),
    "alexnet": ALEXNET_INPUT_SHAPE,
}

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


def abstract_params(name: str, **kwargs: Any) -> Any:
    """Shapes and dtypes of model ``name``'s params (``jax.ShapeDtypeStruct`` leaves),
    without initialising it."""
    return abstract_functional(name, **kwargs)[1]


def model_options(name: str) -> Mapping[str, schema.Option]:
    """The run options model ``name`` declares (its class's ``options``; none by default)."""
    return getattr(_constructor(name), "options", {})


def model_task(name: str) -> str:
    """``"classify"`` (images to class logits) or ``"language"`` (bytes to next-byte logits)."""
    return getattr(_constructor(name), "task", "classify")


def stacked_axes(name: str, **kwargs: Any) -> dict[str, int]:
    """``{path: axis}`` of model ``name``'s params stacked by ``nnx.vmap``/``nnx.scan``
    (their ``"layers"`` sharding name; :func:`admmjax.stacked_axes_from_nnx`), read from
    the abstract model: the ``stacked=`` that gives every layer its own budget. Empty
    for models without stacked layers."""
    model = nnx.eval_shape(lambda: _constructor(name)(rngs=nnx.Rngs(0), **kwargs))
    return admmjax.stacked_axes_from_nnx(nnx.state(model, nnx.Param))
