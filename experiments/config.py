"""The one option schema: every option of a run, declared once.

:class:`Config` is a dataclass whose fields carry their :class:`~experiments.schema.Option`
(type, unit in the help, default, rule) in their metadata: the pipeline's options are
declared here, each model's own options by the model (``options`` on its class, e.g.
LeNet-5's ``dropout`` and ``fold_idle``) and collected by :func:`model_fields`. From
this one schema come the command-line flags and ``--help`` of every pruning CLI
(:func:`add_options`), the config-file check (:meth:`Config.validate`, types included)
and the README's option table (:func:`markdown_table`, kept in sync by a test).

Why a dataclass with field metadata and not ``ml_collections.config_flags``: the
pipeline, its checkpoints (``dataclasses.asdict`` in their metadata) and every config
file already speak ``Config`` fields and plain dicts; a dataclass keeps the
command-line names (``--batch-size``) and needs no new dependency, while
``config_flags`` would rename every flag to ``--config.batch_size`` and still need the
rules (``> 0``, fractions, model-specific options) written next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax

import admmjax
from experiments import models as models_lib
from experiments.data import text as text_data
from experiments.schema import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    ConfigError,
    Option,
    check_value,
    field,
    flag,
    help_line,
    options_of,
    parse_text,
)

__all__ = [
    "MULTIHOST",
    "SCHEDULES",
    "TARGET_SPECS",
    "Config",
    "ConfigError",
    "add_option",
    "add_options",
    "argparse_type",
    "check_values",
    "directory_path",
    "markdown_table",
    "model_fields",
    "options",
    "parse_sparsity",
    "parse_target",
    "seed_type",
]

SCHEDULES = ("constant", "cosine")

# --------------------------------------------------------------------------- sparsity

TARGET_SPECS = """\
a fraction in [0, 1)      cardinality: prune that fraction of the entries (the paper)
"N:M" (e.g. "2:4")        N:M sparsity along the input dimension, admmjax.NM(N, M)
"N:M@AXES" ("2:4@0,1")    N:M along these axes of a kernel (of one layer when stacked)
"filters:S"               prune the fraction S of whole output channels / columns
"channels:S"              prune the fraction S of whole input channels (conv kernels)
"rows:S"                  prune the fraction S of whole rows (dense kernels' inputs)
"quant:L"                 levels s * {-L..L} with the scale s learned (L=1: ternary)
"sparsequant:S:L:SCALE"   keep 1-S of the entries, each on SCALE * {-L..L}"""


def _fraction(text: str) -> float:
    value = float(text)
    if value not in FRACTION:
        raise ValueError(f"expected a fraction {FRACTION.text}, got {text}")
    return value


def parse_target(value: float | str, pattern: str = "?") -> Any:
    """A ``Config.sparsity`` value as an admmjax target (see :data:`TARGET_SPECS`)."""
    if not isinstance(value, str):
        return value
    parts = value.strip().split(":")
    try:
        kind = parts[0].lower()
        if len(parts) == 2 and kind.isdigit():
            m, at, axes = parts[1].partition("@")
            if not at:
                return admmjax.NM(int(parts[0]), int(m))
            axis = tuple(int(a) for a in axes.split(","))
            return admmjax.NM(int(parts[0]), int(m), axis=axis[0] if len(axis) == 1 else axis)
        if kind in ("filters", "channels", "rows") and len(parts) == 2:
            axis = {"filters": -1, "channels": -2, "rows": 0}[kind]
            return admmjax.Structured(_fraction(parts[1]), axis=axis)
        if kind == "quant" and len(parts) == 2:
            return admmjax.Quantized(int(parts[1]), scale="learned")
        if kind == "sparsequant" and len(parts) == 4:
            return admmjax.SparseQuantized(
                _fraction(parts[1]), int(parts[2]), scale=float(parts[3])
            )
    except (ValueError, TypeError) as err:
        raise ValueError(f"sparsity for {pattern!r}: bad constraint {value!r}: {err}") from None
    raise ValueError(
        f"sparsity for {pattern!r}: unknown constraint {value!r}; expected one of:\n" + TARGET_SPECS
    )


def check_sparsity(sparsity: Any) -> None:
    """A dict of path pattern -> fraction in [0, 1) or constraint spec; ValueError naming
    the first bad entry."""
    if not isinstance(sparsity, dict):
        raise ValueError(f"sparsity must be a dict of path pattern -> fraction, got {sparsity!r}")
    if not sparsity:
        raise ValueError("sparsity is empty: give at least one 'path-pattern': fraction")
    for pattern, value in sparsity.items():
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError(f"sparsity pattern {pattern!r} is not a parameter path pattern")
        if isinstance(value, str):
            parse_target(value, pattern)  # raises, naming the pattern and the spec
        elif isinstance(value, bool) or not isinstance(value, int | float) or (
            value not in FRACTION
        ):
            raise ValueError(
                f"sparsity for {pattern!r} is {value!r}; expected a fraction {FRACTION.text} "
                "(the share of weights pruned: 0.9 keeps 10%) or a constraint spec"
            )


def parse_sparsity(text: str) -> dict[str, float]:
    """``'0.9'`` (every kernel) or ``'fc1/kernel=0.96,fc2/kernel=0.91'``; fractions in [0, 1)."""
    usage = "expected a fraction like 0.9 or 'fc1/kernel=0.96,fc2/kernel=0.91'"
    out: dict[str, float] = {}
    try:
        items = [("*kernel", text)] if "=" not in text else [i.split("=") for i in text.split(",")]
        for item in items:
            pattern, value = item  # ValueError unless exactly one '='
            pattern = pattern.strip()
            if not pattern:
                raise ValueError
            if pattern in out:
                raise ConfigError(f"pattern {pattern!r} is given twice in {text!r}")
            out[pattern] = float(value)
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"bad value {text!r}: {usage}") from None
    for pattern, value in out.items():
        if value not in FRACTION:
            raise ConfigError(
                f"{value:g} for {pattern!r} is not a fraction {FRACTION.text}: it is the share "
                "of weights pruned (0.9 keeps 10%)"
            )
    return out


def scaled_sparsity(params: Any, base: dict[str, float], compression: float) -> dict[str, float]:
    """Per-pattern sparsity with the kept fractions of ``base`` scaled to ``compression``.

    Kept fractions ``keep_i = min(1, a * (1 - base_i))`` with the one factor ``a`` (found
    by bisection) that makes ``sum(keep_i * n_i) = sum(n_i) / compression`` over the
    layers ``base`` names, so every method prunes the same layers in the same
    proportions.
    """
    if not compression > 1:
        raise ValueError(f"compression must be > 1, got {compression}")
    sizes = {
        pattern: sum(
            leaf.size
            for leaf in admmjax.targeted_leaves(
                params, admmjax.sparsity_by_path(params, {pattern: s})
            ).values()
        )
        for pattern, s in base.items()
    }
    total = sum(sizes.values())
    goal = total / compression

    def kept(a: float) -> float:
        return sum(min(1.0, a * (1 - base[p])) * n for p, n in sizes.items())

    lo, hi = 0.0, 1.0
    while kept(hi) < goal:
        hi *= 2
        if hi > 1e12:
            raise ValueError(f"compression {compression} cannot be reached")
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < goal else (lo, mid)
    return {p: 1.0 - min(1.0, hi * (1 - base[p])) for p in base}


# --------------------------------------------------------------------------- the schema

_REQUIRED_ON_CLI = "the config's; required without --config"


# fmt: off
@dataclasses.dataclass
class _PipelineOptions:
    """The pipeline's options (see :class:`Config`)."""

    model: str = field(Option(
        str, "lenet300_100", "model to prune", choices=tuple(sorted(models_lib.MODELS)),
        default_text=_REQUIRED_ON_CLI,
    ))
    dataset: str = field(Option(
        str, "mnist",
        "TFDS name of an MNIST-like dataset (28x28x1 uint8 images, 10 classes): "
        "mnist, fashion_mnist, kmnist, emnist/mnist... (imagenet2012 streams ImageNet; "
        "kjv, the King James Bible as bytes, is the language models' text)",
    ))
    data_dir: str | None = field(Option(
        str, None,
        "TFDS data dir, an existing directory holding DATASET/VERSION/ prepared by TFDS "
        "(kjv: the directory holding kjv.txt)",
        optional=True,
        default_text="$TFDS_DATA_DIR, else ~/tensorflow_datasets (kjv: $ADMMJAX_TEXT_DIR, "
        "else ../shared/text/kjv)",
    ))
    seed: int = field(Option(
        int, 0, "seed of initialisation, data order and dropout, an integer >= 0",
        rule=NON_NEGATIVE,
    ))
    devices: int = field(Option(
        int, 0, "local devices per process to split each batch over, a count (0: all)",
        rule=NON_NEGATIVE,
    ))
    shard_min_size: int = field(Option(
        int, 0,
        "split params/optimizer/ADMM-state leaves of >= N entries over the devices, "
        "in entries (0: replicate every leaf)",
        rule=NON_NEGATIVE,
    ))
    batch_size: int = field(Option(
        int, 128, "global training batch, in images (a multiple of the number of devices)",
        rule=POSITIVE,
    ))
    eval_batch_size: int = field(Option(int, 1000, "evaluation batch, in images", rule=POSITIVE))
    train_subset: int = field(Option(
        int, 0,
        "train on the first N training images only, in images (0: all; at most the "
        "training split's size)",
        rule=NON_NEGATIVE,
    ))
    validation_size: int = field(Option(
        int, 0,
        "hold out the last N training images as a validation split, in images (0: none); "
        "choices such as experiments.search's are made on it, never on the test split",
        rule=NON_NEGATIVE,
    ))
    eval_subset: int = field(Option(
        int, 0,
        "evaluate on the first N examples of the test and validation splits only, in "
        "images (0: all; a split holding fewer is used whole): quick runs and tests, "
        "whose accuracies are then of those N",
        rule=NON_NEGATIVE,
    ))
    augment_shift: int = field(Option(
        int, 0, "random translations of up to N pixels while training, in pixels (0: none)",
        rule=NON_NEGATIVE,
    ))
    weight_decay: float = field(Option(
        float, 5e-5,
        "L2 coefficient: weight_decay * W is added to the gradient in pretraining and ADMM "
        "(dimensionless, >= 0)",
        rule=NON_NEGATIVE,
    ))
    pretrained: str | None = field(Option(
        str, None,
        "skip pretraining: load the dense params from this workdir (its dense/), params "
        "checkpoint directory or .npz of converted weights",
        optional=True, default_text="none: pretrain from scratch",
    ))
    carry_masks: bool = field(Option(
        bool, False,
        "with --pretrained: weights that are exactly zero there stay zero (progressive "
        "ADMM, each stage starting from the last one's pruned model), true or false",
    ))
    pretrain_epochs: float = field(Option(
        float, 10.0, "pretraining budget, in epochs (fractions allowed)", rule=NON_NEGATIVE,
    ))
    pretrain_steps: int = field(Option(
        int, 0,
        "pretraining budget, in optimizer steps; overrides --pretrain-epochs when > 0",
        rule=NON_NEGATIVE,
    ))
    pretrain_lr: float = field(Option(
        float, 1e-3, "Adam learning rate of pretraining (peak of the schedule), > 0",
        rule=POSITIVE,
    ))
    pretrain_schedule: str = field(Option(
        str, "cosine",
        "learning-rate schedule of pretraining: constant, or cosine decay to 0 over the stage",
        choices=SCHEDULES,
    ))
    # ADMM: `sparsity` maps path patterns (e.g. "fc1/kernel") to the fraction pruned, or to
    # a constraint spec string (see `parse_target`: "2:4", "filters:0.5", "quant:1", ...).
    sparsity: dict[str, float | str] = field(Option(  # noqa: RUF009 (a default_factory)
        dict, {},
        "fraction of weights pruned, in [0, 1): one number for every kernel, or "
        "'pattern=fraction,...' over parameter paths (glob patterns such as fc1/kernel, "
        "conv*/kernel); biases stay dense. A config file may also give constraint specs "
        "('2:4', 'filters:0.5', 'quant:1', ...)",
        check=check_sparsity, parse=parse_sparsity, default_text=_REQUIRED_ON_CLI,
    ))
    admm_iterations: int = field(Option(
        int, 10, "number of ADMM iterations (Z/U updates), a count", rule=NON_NEGATIVE,
    ))
    admm_epochs: float = field(Option(
        float, 1.0, "W-step length per ADMM iteration, in epochs", rule=NON_NEGATIVE,
    ))
    admm_steps: int = field(Option(
        int, 0,
        "W-step length per ADMM iteration, in optimizer steps; overrides --admm-epochs when > 0",
        rule=NON_NEGATIVE,
    ))
    admm_lr: float = field(Option(float, 1e-3, "Adam learning rate of the W-steps, > 0",
                                  rule=POSITIVE))
    admm_schedule: str = field(Option(
        str, "constant",
        "W-step learning-rate schedule: constant, or cosine decay restarted every iteration",
        choices=SCHEDULES,
    ))
    allocation: str = field(Option(
        str, "per_layer",
        "per_layer (each pattern's fraction is its layer's budget) or global (the fractions "
        "fix only the total; each Z-step and the hard prune split it by magnitude)",
        choices=("per_layer", "global"),
    ))
    sparsify: str = field(Option(
        str, "admm",
        "how the admm stage reaches the sparsity: admm (penalised W-steps with a Z/U update "
        "every admm_steps) or gradual (gradual magnitude pruning, Zhu & Gupta 2017: at the "
        "start of W-step i of admm_iterations the weights of least magnitude are masked, a "
        "fraction s (1 - (1 - i / admm_iterations)^3) of each target s, N:M and structured "
        "specs in full; same steps, optimizer and data); the hard prune and retraining "
        "follow either way",
        choices=("admm", "gradual"),
    ))
    rho: float = field(Option(
        float, 1e-3,
        "ADMM penalty coefficient in rho/2 ||W - Z + U||_F^2 (dimensionless, >= 0)",
        rule=NON_NEGATIVE,
    ))
    rho_growth: float = field(Option(
        float, 1.0,
        "factor rho is multiplied by after every ADMM iteration (1: constant rho), > 0",
        rule=POSITIVE,
    ))
    eps: float = field(Option(
        float, 1e-3,
        "tolerance on every layer's primal and dual residual (Frobenius norms, in weight "
        "units) for reporting 'converged'; it does not stop the run",
        rule=NON_NEGATIVE,
    ))
    retrain_epochs: float = field(Option(
        float, 10.0, "masked retraining budget, in epochs (fractions allowed)",
        rule=NON_NEGATIVE,
    ))
    retrain_steps: int = field(Option(
        int, 0,
        "masked retraining budget, in optimizer steps; overrides --retrain-epochs when > 0",
        rule=NON_NEGATIVE,
    ))
    retrain_lr: float = field(Option(
        float, 1e-3, "Adam learning rate of retraining (peak of the schedule), > 0",
        rule=POSITIVE,
    ))
    retrain_schedule: str = field(Option(
        str, "cosine",
        "learning-rate schedule of retraining: constant, or cosine decay to 0 over the stage",
        choices=SCHEDULES,
    ))
    # Knowledge distillation (not in the paper): every ADMM W-step and retraining step
    # minimises (1 - w) CE + w T^2 KL(softmax(t / T) || softmax(s / T)), t / s the
    # teacher's / student's logits on the same (augmented) batch. Pretraining never is.
    teacher: str | None = field(Option(
        str, None,
        "distil from this model during ADMM and retraining: a workdir (its dense/) or params "
        "checkpoint directory",
        optional=True, default_text="none: no distillation",
    ))
    distill_weight: float = field(Option(
        float, 0.5,
        "weight w of the distillation term: (1 - w) CE + w T^2 KL (dimensionless, in [0, 1])",
        rule=UNIT_INTERVAL,
    ))
    distill_temperature: float = field(Option(
        float, 4.0, "softmax temperature T of the distillation term (dimensionless, > 0)",
        rule=POSITIVE,
    ))
    checkpoint_every: int = field(Option(
        int, 0, "checkpoint interval, in optimizer steps (0: once per epoch)",
        rule=NON_NEGATIVE,
    ))
    log_every: int = field(Option(
        int, 50, "loss-history interval, in optimizer steps (one mean per point)",
        rule=POSITIVE,
    ))
    progress: bool = field(Option(bool, True, "progress bars when stderr is a terminal"))
    # fmt: on

    def validate(self) -> None:
        """Rejects bad values before any work starts, naming the value and the rule
        (:class:`ConfigError`, a ``ValueError``)."""
        validate(self)


def model_fields() -> list[tuple[str, type, Any]]:
    """The dataclass fields of the options the models declare (``options`` on a model's
    class). An option several models declare is one field; its help joins theirs."""
    declared: dict[str, list[tuple[str, Option]]] = {}
    for name in sorted(models_lib.MODELS):
        for option_name, option in models_lib.model_options(name).items():
            declared.setdefault(option_name, []).append((name, option))
    fields = []
    for option_name, by_model in declared.items():
        first = by_model[0][1]
        for model, option in by_model[1:]:
            same = (option.type, option.default, option.rule)
            if same != (first.type, first.default, first.rule):
                raise TypeError(
                    f"option {option_name!r}: model {model!r} declares type, default or rule "
                    f"unlike model {by_model[0][0]!r}'s"
                )
        takes = ", ".join(model for model, _ in by_model)
        helps = "; ".join(dict.fromkeys(option.help for _, option in by_model))
        option = dataclasses.replace(first, help=f"{helps} (models taking it: {takes})")
        fields.append((option_name, first.type, field(option)))
    return fields


Config = dataclasses.make_dataclass(
    "Config",
    model_fields(),
    bases=(_PipelineOptions,),
    namespace={
        "__module__": __name__,
        "__doc__": "Every knob of a run: the pipeline's options and the models' own "
        "(:func:`model_fields`). Epoch budgets may be fractional; ``*_steps`` override them.",
    },
)


def options() -> Mapping[str, Option]:
    """Every :class:`Config` field's option, in field order."""
    return options_of(Config)


# --------------------------------------------------------------------------- checking


def check_values(cfg: Any) -> None:
    """Every field of ``cfg`` against its option (type and rule); no JAX, no I/O."""
    for name, option in options().items():
        check_value(name, option, getattr(cfg, name))


def validate(cfg: Any) -> None:
    """Every field of ``cfg`` against its option, then the rules between fields (what a
    model takes, devices, budgets, sparsity patterns against the model's params)."""
    check_values(cfg)
    opts = options()
    taken = models_lib.model_options(cfg.model)
    for name, _, _ in model_fields():
        value = getattr(cfg, name)
        if name not in taken and value != opts[name].default:
            takers = [m for m in sorted(models_lib.MODELS) if name in models_lib.model_options(m)]
            raise ConfigError(
                f"{name} {value!r}: model {cfg.model!r} has no {name} option (models taking "
                f"it: {', '.join(takers)})"
            )
        needs = opts[name].needs
        if value and needs and not getattr(cfg, needs):
            raise ConfigError(
                f"{name} {value!r} needs {needs}, got {needs} {getattr(cfg, needs)!r}"
            )
    check_task(cfg)
    local = jax.local_device_count()
    if cfg.devices > local:
        raise ConfigError(
            f"devices must be in [0, {local}] (0: all local devices), got {cfg.devices}"
        )
    shards = (cfg.devices or local) * jax.process_count()
    for name in ("batch_size", "eval_batch_size"):
        if getattr(cfg, name) % shards:
            raise ConfigError(
                f"{name} {getattr(cfg, name)} must be a multiple of the {shards} devices "
                "it is split over (use --devices to choose fewer)"
            )
    if 0 < cfg.train_subset < cfg.batch_size:
        raise ConfigError(
            f"train_subset {cfg.train_subset} is smaller than one batch ({cfg.batch_size} images)"
        )
    if cfg.train_subset:
        check_training_size(cfg, cfg.train_subset)
    if cfg.allocation == "global" and any(isinstance(v, str) for v in cfg.sparsity.values()):
        raise ConfigError("allocation 'global' takes fractions only, not constraint specs")
    if cfg.sparsify == "gradual":
        if cfg.allocation == "global":
            raise ConfigError("sparsify 'gradual' prunes per layer: give allocation 'per_layer'")
        if cfg.carry_masks:
            raise ConfigError("sparsify 'gradual' does not take carry_masks")
        quantized = [v for v in cfg.sparsity.values() if isinstance(v, str) and "quant" in v]
        if quantized:
            raise ConfigError(
                f"sparsify 'gradual' masks by magnitude; it takes no quantization specs "
                f"({quantized})"
            )
    # `pretrained` may name a stage not run yet (experiments.progressive): the CLIs check it.
    if cfg.teacher is not None and not os.path.exists(cfg.teacher):
        raise ConfigError(f"teacher {cfg.teacher!r} does not exist (a workdir or checkpoint)")
    # Sparsity patterns must match parameters of the model (shapes only: no compute).
    try:
        admmjax.sparsity_by_path(
            abstract_params(cfg), {p: parse_target(v, p) for p, v in cfg.sparsity.items()},
            stacked=stacked_axes(cfg) or None,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_task(cfg: Any) -> None:
    """Language models train on the text (``dataset`` kjv), image models on images; the
    options that only images have stay at their defaults for a language model."""
    task = models_lib.model_task(cfg.model)
    if (task == "language") != (cfg.dataset == text_data.NAME):
        wanted = repr(text_data.NAME) if task == "language" else "an image dataset"
        raise ConfigError(
            f"dataset {cfg.dataset!r}: model {cfg.model!r} is a {task} model and trains on "
            f"{wanted}"
        )
    if task == "language" and cfg.validation_size:
        raise ConfigError(
            f"validation_size {cfg.validation_size}: the text's validation split is fixed "
            "(Genesis, experiments.data.text); give 0"
        )
    if task == "language" and cfg.augment_shift:
        raise ConfigError(
            f"augment_shift {cfg.augment_shift}: translations are for images, not for the "
            f"language model {cfg.model!r}"
        )


def check_training_size(cfg: Any, available: int) -> None:
    """The training images a run uses (``train_subset`` of ``available``, less the
    validation split) fill at least one batch; ConfigError naming the values."""
    if cfg.train_subset > available:
        raise ConfigError(
            f"train_subset {cfg.train_subset} is more than the {available} training images "
            f"of {cfg.dataset!r}"
        )
    used = cfg.train_subset or available
    if used - cfg.validation_size < cfg.batch_size:
        raise ConfigError(
            f"validation_size {cfg.validation_size} of the {used} training images used leaves "
            f"{used - cfg.validation_size}, fewer than one batch ({cfg.batch_size} images)"
        )


def model_kwargs(cfg: Any) -> dict[str, Any]:
    """The constructor arguments of ``cfg.model`` from its declared options (those
    without an ``on_pretrained`` hook)."""
    return {
        name: getattr(cfg, name)
        for name, option in models_lib.model_options(cfg.model).items()
        if option.on_pretrained is None
    }


def abstract_params(cfg: Any) -> Any:
    """Shapes and dtypes of ``cfg.model``'s params, as ``cfg`` builds it."""
    return models_lib.abstract_params(cfg.model, **model_kwargs(cfg))


def stacked_axes(cfg: Any) -> dict[str, int]:
    """``{path: axis}`` of ``cfg.model``'s stacked layers (one budget per layer)."""
    return models_lib.stacked_axes(cfg.model, **model_kwargs(cfg))


def on_pretrained(cfg: Any, params: Any) -> Any:
    """Loaded dense params after the hooks of ``cfg.model``'s options that are set."""
    for name, option in models_lib.model_options(cfg.model).items():
        if option.on_pretrained is not None and getattr(cfg, name):
            params = option.on_pretrained(params)
    return params


# --------------------------------------------------------------------------- command line

WORKDIR = Option(
    str, None, "output and checkpoint directory, created if missing; it holds one run (required)"
)
CONFIG_FILE = Option(
    str, None,
    "FILE.py[:VARIANT], a Python file defining get_config(variant) -> dict of Config "
    "fields, e.g. {example}",
    optional=True, default_text="none",
)  # fmt: skip
MULTIHOST: dict[str, Option] = {
    "coordinator": Option(
        str, None, "multi-host: host:port of process 0's coordinator", optional=True,
        default_text="$ADMMJAX_COORDINATOR",
    ),
    "num_processes": Option(
        int, None, "multi-host: number of processes, a count", rule=POSITIVE, optional=True,
        default_text="$ADMMJAX_NUM_PROCESSES, else 1",
    ),
    "process_id": Option(
        int, None, "multi-host: this process's index in [0, NUM_PROCESSES)",
        rule=NON_NEGATIVE, optional=True, default_text="$ADMMJAX_PROCESS_ID",
    ),
    "coordinator_timeout": Option(
        int, 300,
        "multi-host: seconds to wait for every process to reach the coordinator before "
        "giving up with an error naming its address",
        rule=POSITIVE,
    ),
}  # fmt: skip
_FIRST = ("model", "sparsity")  # the options a command line must give (or its config)


def seed_type() -> Any:
    """The argparse ``type`` of a seed option (the ``seed`` field's rule)."""
    return argparse_type(options()["seed"])


def argparse_type(option: Option) -> Any:
    """An argparse ``type`` for ``option``: its text parsed and checked, refusals shown
    with what was expected and given."""

    def parse(text: str) -> Any:
        try:
            return parse_text(option, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = option.type.__name__  # argparse: "invalid float value: 'ten'"
    return parse


def directory_path(text: str) -> str:
    """An argparse ``type`` for a directory to create or use: any non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a directory path, got {text!r}")
    return text


def add_option(
    parser: argparse.ArgumentParser, name: str, option: Option, help_text: str | None = None,
    default_text: str | None = None, choices: Any = None,
) -> None:  # fmt: skip
    """One schema option as the flag ``--name`` (default ``None``: "not given"), its text
    parsed and checked by the option; ``help_text``/``default_text``/``choices`` override."""
    kwargs: dict[str, Any] = {"type": argparse_type(option)}
    if option.choices or choices:
        kwargs = {"choices": choices or option.choices}
    if default_text is not None:
        option = dataclasses.replace(option, default_text=default_text)
    parser.add_argument(flag(name), default=None, help=help_line(option, help_text), **kwargs)


def add_options(
    parser: argparse.ArgumentParser,
    *,
    config_example: str,
    help_text: Mapping[str, str] | None = None,
    default_text: Mapping[str, str] | None = None,
    choices: Mapping[str, Any] | None = None,
) -> None:
    """Every option of a pruning CLI, from the schema: ``--workdir``, ``--config``, one
    flag per :class:`Config` field (``help_text``, ``default_text`` and ``choices``
    override some), then ``--no-progress`` and the multi-host options."""
    help_text, default_text, choices = help_text or {}, default_text or {}, choices or {}
    parser.add_argument("--workdir", required=True, type=directory_path, help=WORKDIR.help)
    parser.add_argument(
        "--config", help=help_line(CONFIG_FILE, CONFIG_FILE.help.format(example=config_example))
    )
    opts = options()
    for name in (*_FIRST, *(n for n in opts if n not in _FIRST and n != "progress")):
        add_option(parser, name, opts[name], help_text.get(name), default_text.get(name),
                   choices.get(name))  # fmt: skip
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars [default: bars when stderr is a terminal]",
    )
    for name, option in MULTIHOST.items():
        add_option(parser, name, option)


def cli_values(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Config` values the command line gives (options left out are absent)."""
    values = {n: getattr(args, n) for n in options() if getattr(args, n, None) is not None}
    if args.no_progress:
        values["progress"] = False
    return values


# --------------------------------------------------------------------------- docs


def markdown_table(parser: Any) -> str:
    """The README's option table of an argparse ``parser`` built from this schema: one
    row per flag (its longest name) with its help."""
    rows = ["| option | meaning [default] |", "|---|---|"]
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        text = (action.help or "").replace("|", "\\|")
        rows.append(f"| `{max(action.option_strings, key=len)}` | {text} |")
    return "\n".join(rows)
