"""The one training pipeline: pretrain -> ADMM -> hard prune -> retrain -> evaluate.

A run is a resumable state machine over stages. Every stage runs the same loop
(:func:`run_stage`) with the same jitted step (:func:`admmjax.make_train_step`);
the stages differ only in their optax transform:

* ``pretrain``: ``add_decayed_weights -> adam`` (L2 coupled into the gradient, as
  the official TF recipe's weight decay);
* ``admm``: ``admmjax.penalty(rho) -> add_decayed_weights -> adam``, with the Z/U
  update (:func:`admmjax.update`) every ``admm_epochs`` epochs;
* ``retrain``: ``admmjax.keep_pruned(adam, masks)`` after the hard prune.

With ``sparsify="gradual"`` the ``admm`` stage is gradual magnitude pruning instead
(``keep_pruned(add_decayed_weights -> adam)`` with masks recomputed by magnitude every
``admm_steps``), at the same budget: the baseline the paper's method is measured against.

Two tasks (the model's ``task``, :func:`experiments.models.model_task`): image
classification (cross-entropy, scored by top-1 accuracy) and byte-level language
modelling on the KJV (:class:`experiments.data.text.TextSource`; next-byte
cross-entropy, scored by bits per character, lower is better). Stacked layers
(``nnx.vmap``/``nnx.scan``) get one budget per layer (``admmjax.Stacked``).

Everything the loop needs to continue is checkpointed with orbax through
:mod:`admmjax.checkpoint`: params, optimizer state, ADMM state (W, Z, U), the stage,
the step in the stage, and the history. The data order of every epoch and the
dropout key of every step are functions of ``(seed, stage, step)``, so a run killed
at any point and restarted with the same command continues exactly where the last
checkpoint left it and ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import admmjax
from admmjax import parallel
from admmjax.checkpoint import Checkpointer, CheckpointError, fault_point, save_pytree
from experiments import config
from experiments import models as models_lib
from experiments import workdir as workdir_lib
from experiments.config import TARGET_SPECS, Config, parse_target
from experiments.data import mnist as data_lib
from experiments.data import text as text_data

__all__ = ["TARGET_SPECS", "Config", "Pipeline", "parse_target", "run"]  # Config: the schema

STAGES = ("pretrain", "admm", "retrain", "done")

# The key of one training step: jax.random.fold_in(stage_key, step), jitted. Called
# eagerly it costs about 0.1 ms of host time per step (5% of a LeNet-300-100 step on
# the 2-core CPU); jitted about 0.01 ms. Same keys either way.
step_key = jax.jit(jax.random.fold_in)


# --------------------------------------------------------------------------- pieces

def sparsity_targets(
    params: Any, sparsity: dict[str, float | str], stacked: dict[str, int] | None = None
) -> Any:
    """``Config.sparsity`` (fractions or constraint specs) as an admmjax targets tree;
    leaves in ``stacked`` (``{path: axis}``, :func:`experiments.models.stacked_axes`) get
    ``admmjax.Stacked`` targets, one budget per layer."""
    return admmjax.sparsity_by_path(
        params, {p: parse_target(v, p) for p, v in sparsity.items()}, stacked=stacked or None
    )


def gradual_ramp(update: int, updates: int) -> float:
    """The share of the target at mask update ``update`` (1-based) of ``updates``:
    ``1 - (1 - update / updates)^3`` (Zhu & Gupta 2017's cubic ramp, 1 at the last)."""
    return 1.0 - (1.0 - min(update, updates) / updates) ** 3


def gradual_sparsity(sparsity: dict[str, float | str], update: int, updates: int) -> dict:
    """``sparsity`` at mask update ``update`` of ``updates`` in gradual magnitude pruning:
    fractions times :func:`gradual_ramp`, constraint specs unchanged."""
    ramp = gradual_ramp(update, updates)
    return {p: v if isinstance(v, str) else v * ramp for p, v in sparsity.items()}


def keep_whole(kind: str, kept: int, total: int) -> str:
    """The spec ``"<kind>:S"`` that keeps exactly ``kept`` of ``total`` whole slices.

    ``kind`` is ``"filters"``, ``"channels"`` or ``"rows"``. ``Structured`` prunes
    ``floor(S * total)`` slices. ``S = (total - kept) / total`` is used where it floors
    to ``total - kept``; float rounding makes some (e.g. ``29 / 50 * 50``) land just
    below, and those get the midpoint ``(total - kept + 0.5) / total`` instead.
    """
    if kind not in ("filters", "channels", "rows"):
        raise ValueError(f"kind is {kind!r}; expected 'filters', 'channels' or 'rows'")
    if not 0 < kept <= total:
        raise ValueError(f"kept is {kept}; expected 1 to total ({total}) whole slices")
    fraction = (total - kept) / total
    if math.floor(fraction * total) != total - kept:
        fraction = (total - kept + 0.5) / total
    return f"{kind}:{fraction}"


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats) over every label: a batch of images, or every position
    of a batch of byte windows."""
    labels = labels.astype(jnp.int32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def distillation_loss(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float
) -> jax.Array:
    """``T^2 KL(softmax(t / T) || softmax(s / T))``, batch mean (Hinton et al., 2015).

    The ``T^2`` keeps its gradient on the scale of the cross-entropy's as ``T`` varies.
    The teacher's logits are constants: no gradient flows into them.
    """
    t = jax.lax.stop_gradient(teacher_logits) / temperature
    s = student_logits / temperature
    kl = jnp.sum(jax.nn.softmax(t) * (jax.nn.log_softmax(t) - jax.nn.log_softmax(s)), -1)
    return temperature**2 * jnp.mean(kl)


def lr_schedule(lr: float, kind: str, period: int) -> optax.Schedule:
    """Constant, or cosine decay to 0 restarting every ``period`` optimizer steps."""
    if kind == "constant" or period <= 0:
        return optax.constant_schedule(lr)
    cosine = optax.cosine_decay_schedule(lr, period)
    return lambda count: cosine(count % period)


def random_shift(x: jax.Array, rng: jax.Array, max_shift: int) -> jax.Array:
    """Translates each NHWC image by up to ``max_shift`` pixels (zero fill), on device."""
    n, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * max_shift + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def adam_with_l2(lr: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
    # L2 enters the gradient before Adam, as weight decay did in the official recipe.
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def rho_schedule(cfg: Config) -> Callable[[jax.Array], jax.Array]:
    return lambda count: cfg.rho * cfg.rho_growth ** count.astype(jnp.float32)


class Pipeline:
    """Data, model and jitted functions of one run; :meth:`run` drives the stages."""

    def __init__(self, cfg: Config, workdir: str, log: Callable[[str], None] = print):
        cfg.validate()
        self.cfg = cfg
        self.workdir = os.path.abspath(workdir)
        self.log = log
        self.task = models_lib.model_task(cfg.model)
        # The figure a run is scored by (summary keys dense_<metric>, ...).
        self.metric = "bits_per_char" if self.task == "language" else "accuracy"
        self.source = data_source(cfg)
        if isinstance(self.source, data_lib.ArraySource):  # the arrays, as before
            self.train_x, self.train_y = self.source.train_x, self.source.train_y
            self.test_x, self.test_y = self.source.test_x, self.source.test_y
        self.steps_per_epoch = data_lib.steps_per_epoch(self.source.num_train, cfg.batch_size)
        # The options the model declares go to its constructor (AlexNet's class default
        # dropout 0.5 would otherwise survive dropout=0).
        model = models_lib.create_model(cfg.model, seed=cfg.seed, **config.model_kwargs(cfg))
        self.stacked = config.stacked_axes(cfg)
        _, self.init_params, self.apply_fn = models_lib.functional(model)
        self.targets = self.sparsity_targets(cfg.sparsity)
        self.key = jax.random.key(cfg.seed)
        # Data parallelism: the global batch is split over a `data` mesh axis; params,
        # optimizer and ADMM state are replicated; jit inserts the gradient all-reduce.
        self.mesh = parallel.data_mesh(cfg.devices or None)
        self.shard_index, self.num_shards = parallel.process_shard()
        self.init_params = self.replicate(self.init_params)

        apply_fn = self.apply_fn

        shift = cfg.augment_shift
        inputs = model_inputs(self.task)

        def loss_fn(params, x, y, rng, teacher=None):
            x = inputs(x)
            if shift:
                rng, shift_rng = jax.random.split(rng)
                x = random_shift(x, shift_rng, shift)
            logits = apply_fn(params, x, True, rng)
            loss = cross_entropy(logits, y)
            if teacher is None:
                return loss
            w = cfg.distill_weight
            soft = distillation_loss(
                logits, apply_fn(teacher, x, False, None), cfg.distill_temperature
            )
            return (1.0 - w) * loss + w * soft

        self.loss_fn = loss_fn
        # The teacher's params travel as a step argument (not a jit constant), replicated.
        self.teacher = (
            self.replicate(workdir_lib.load_dense_params(cfg.teacher, self.init_params))
            if cfg.teacher
            else None
        )

        @jax.jit
        def correct(params, x, y, valid):
            logits = apply_fn(params, inputs(x), False, None)
            if self.task == "language":  # summed cross-entropy of the real targets, nats
                ce = optax.softmax_cross_entropy_with_integer_labels(logits, y.astype(jnp.int32))
                return jnp.sum(jnp.where(valid, ce, 0.0))
            return jnp.sum(valid & (jnp.argmax(logits, -1) == y))

        self._correct = correct

        @jax.jit
        def correct_topk(params, x, y, valid):
            logits = apply_fn(params, inputs(x), False, None)
            _, top = jax.lax.top_k(logits, min(5, logits.shape[-1]))
            top1 = jnp.sum(valid & (top[:, 0] == y))
            top5 = jnp.sum(valid & jnp.any(top == y[:, None], axis=-1))
            return top1, top5

        self._correct_topk = correct_topk
        self._last_topk: tuple[Any, dict[str, float]] | None = None
        self.is_primary = jax.process_index() == 0
        # Global allocation: one budget over the targeted leaves, re-split at every Z-step.
        self.global_paths = set(admmjax.targeted_leaves(self.init_params, self.targets))
        self.global_budget = sum(
            jax.tree.leaves(admmjax.target_counts(self.init_params, self.targets))
        )
        self._update_jit = jax.jit(
            lambda state, params, targets: admmjax.update(state, params, targets, eps=cfg.eps)
        )

    def sparsity_targets(self, sparsity: dict[str, float | str]) -> Any:
        """:func:`sparsity_targets` of this run's params, stacked layers per layer."""
        return sparsity_targets(self.init_params, sparsity, self.stacked)

    def _admm_update(self, state: admmjax.ADMMState, params: Any) -> tuple[Any, Any]:
        """The Z/U update; with global allocation the per-layer split of the budget is
        the one :func:`admmjax.project_global` gives ``W + U``."""
        if self.cfg.allocation == "global":
            treedef = jax.tree.structure(params)
            v = [w if u is None else w + u for w, u in zip(
                treedef.flatten_up_to(params), treedef.flatten_up_to(state.u), strict=True
            )]  # fmt: skip
            self.targets = self.global_targets(treedef.unflatten(v))
        # Fractions as exact host-counted Keep(k): a float leaf passed through jit would
        # be traced and counted in float32 (one entry off init/prune on some sizes).
        return self._update_jit(state, params, admmjax.as_keep_counts(params, self.targets))

    def gradual_targets(self, update: int) -> Any:
        """The targets of mask update ``update`` of gradual magnitude pruning
        (:func:`gradual_sparsity`)."""
        return self.sparsity_targets(
            gradual_sparsity(self.cfg.sparsity, update, self.cfg.admm_iterations)
        )

    def global_targets(self, tree: Any) -> Any:
        """Per-leaf ``Keep`` targets: the global allocation of the budget for ``tree``."""
        return admmjax.global_to_targets(
            tree, admmjax.Keep(self.global_budget),
            include=lambda path, leaf: path in self.global_paths,
        )  # fmt: skip

    # ---- budgets

    def stage_steps(self, stage: str) -> int:
        c = self.cfg
        if stage == "pretrain":
            return c.pretrain_steps or round(c.pretrain_epochs * self.steps_per_epoch)
        if stage == "admm":
            return c.admm_iterations * self.admm_period()
        if stage == "retrain":
            return c.retrain_steps or round(c.retrain_epochs * self.steps_per_epoch)
        return 0

    def admm_period(self) -> int:
        c = self.cfg
        return max(1, c.admm_steps or round(c.admm_epochs * self.steps_per_epoch))

    # ---- transforms per stage

    def transform(self, stage: str, masks: Any = None) -> optax.GradientTransformation:
        c = self.cfg
        n = self.stage_steps(stage)
        if stage == "pretrain":
            return adam_with_l2(lr_schedule(c.pretrain_lr, c.pretrain_schedule, n), c.weight_decay)
        if stage == "admm":
            lr = lr_schedule(c.admm_lr, c.admm_schedule, self.admm_period())
            if c.sparsify == "gradual":  # the masks are those of the last magnitude prune
                return admmjax.keep_pruned(adam_with_l2(lr, c.weight_decay), masks)
            tx = optax.chain(admmjax.penalty(rho_schedule(c)), adam_with_l2(lr, c.weight_decay))
            # Progressive ADMM: the last stage's pruned weights stay at exactly zero.
            return admmjax.keep_pruned(tx, masks) if c.carry_masks else tx
        if stage == "retrain":
            lr = lr_schedule(c.retrain_lr, c.retrain_schedule, n)
            return admmjax.keep_pruned(optax.adam(lr), masks)
        raise ValueError(f"no transform for stage {stage!r}")

    # ---- evaluation

    def evaluate(self, params: Any, split: str = "test") -> float:
        """The run's metric on the whole test split (or ``split="validation"``): top-1
        accuracy (a fraction), or for a language model bits per character.

        For sources that report top-5 (ImageNet) both are computed in the same pass;
        :meth:`evaluate_topk` returns them.
        """
        if split == "validation":
            batches, count = self.source.validation_batches, self.source.num_validation
        elif self.source.top5:
            return self.evaluate_topk(params)["top1"]
        else:
            batches, count = self.source.eval_batches, self.source.num_test
        total = 0
        for batch in batches(
            self.cfg.eval_batch_size, shard_index=self.shard_index, num_shards=self.num_shards
        ):
            value = self._correct(params, *parallel.shard_batch(batch, self.mesh))
            total += float(value) if self.task == "language" else int(value)
        if self.task == "language":
            return total / count / math.log(2.0)  # nats per target -> bits per character
        return total / count

    def evaluate_topk(self, params: Any) -> dict[str, float]:
        """``{"top1": ..., "top5": ...}`` accuracies on the whole test split (fractions).

        The result for the last ``params`` object evaluated is kept, so asking again
        for the same object (the final summary after the last evaluation) is free.
        """
        if self._last_topk is not None and self._last_topk[0] is params:
            return dict(self._last_topk[1])
        top1 = top5 = 0
        batches = self.source.eval_batches(
            self.cfg.eval_batch_size, shard_index=self.shard_index, num_shards=self.num_shards
        )
        for batch in batches:
            a, b = self._correct_topk(params, *parallel.shard_batch(batch, self.mesh))
            top1, top5 = top1 + int(a), top5 + int(b)
        n = self.source.num_test
        result = {"top1": top1 / n, "top5": top5 / n}
        self._last_topk = (params, result)
        return dict(result)

    # ---- the one loop

    def replicate(self, tree: Any) -> Any:
        """``tree`` (params, optimizer or ADMM state) placed on the mesh: replicated, or
        with leaves of at least ``shard_min_size`` entries split over the devices."""
        if self.cfg.shard_min_size:
            return parallel.shard_leaves(tree, self.mesh, self.cfg.shard_min_size)
        return parallel.replicate(tree, self.mesh)

    def batches(self, stage: str, start: int) -> Iterator[tuple[int, jax.Array, jax.Array]]:
        """``(step, x, y)`` from step ``start`` on; the order depends on (seed, stage, epoch).

        ``x`` and ``y`` are global arrays split over the mesh; each process reads only
        its own rows of every global batch.
        """
        spe = self.steps_per_epoch
        epoch, offset = divmod(start, spe)
        stage_seed = self.cfg.seed * 1000 + STAGES.index(stage)
        step = start
        while True:
            for batch in self.source.train_batches(
                self.cfg.batch_size, seed=stage_seed, epoch=epoch, start_step=offset,
                shard_index=self.shard_index, num_shards=self.num_shards,
            ):  # fmt: skip
                yield step, *parallel.shard_batch(batch, self.mesh)
                step += 1
            epoch, offset = epoch + 1, 0


def model_inputs(task: str) -> Callable[[jax.Array], jax.Array]:
    """What the model is fed, inside the jitted step: uint8 images scaled to [0, 1]
    float32, or byte tokens as int32."""
    if task == "language":
        return lambda x: jnp.asarray(x, jnp.int32)
    return data_lib.to_float


def data_source(cfg: Config) -> Any:
    """The data of a run, chosen by ``cfg.dataset``: ImageNet (``imagenet2012``) streams
    JPEGs from disk (:class:`experiments.data.imagenet.ImageNetSource`); ``kjv`` is the
    text of the language models (:class:`experiments.data.text.TextSource`, windows of
    the model's ``context``); any other name is an MNIST-like dataset held in memory
    (:class:`experiments.data.ArraySource`)."""
    from experiments.data import imagenet as imagenet_data

    if cfg.dataset == text_data.NAME:
        return text_data.TextSource(
            cfg.context, cfg.data_dir, train_subset=cfg.train_subset, eval_subset=cfg.eval_subset
        )

    if imagenet_data.is_imagenet(cfg.dataset):
        if cfg.validation_size:
            raise ValueError(
                f"validation_size {cfg.validation_size}: a held-out split is implemented for "
                "in-memory (MNIST-like) datasets only, not for ImageNet"
            )
        return imagenet_data.ImageNetSource(
            cfg.dataset, cfg.data_dir, train_subset=cfg.train_subset, eval_subset=cfg.eval_subset
        )
    return data_lib.ArraySource(
        cfg.dataset, cfg.data_dir, train_subset=cfg.train_subset,
        validation_size=cfg.validation_size, eval_subset=cfg.eval_subset,
    )  # fmt: skip


def histogram(params: Any, targets: Any, bins: int = 80) -> dict[str, Any]:
    """Per targeted leaf: histogram of the nonzero weights and the count of zeros."""
    out = {}
    for path, leaf in admmjax.targeted_leaves(params, targets).items():
        w = np.asarray(leaf, np.float32).ravel()
        nz = w[w != 0]
        counts, edges = (
            np.histogram(nz, bins=bins) if nz.size else (np.zeros(bins), np.zeros(bins + 1))
        )
        out[path] = {
            "counts": counts.astype(int).tolist(),
            "edges": edges.tolist(),
            "zeros": int(w.size - nz.size),
            "size": int(w.size),
        }
    return out


# --------------------------------------------------------------------------- the run


def _fresh_meta(cfg: Config) -> dict[str, Any]:
    return {
        "stage": "pretrain",
        "step": 0,  # step within the stage
        "saves": 0,
        "config": dataclasses.asdict(cfg),
        "accuracy": {},
        "stage_seconds": {},
        "loss": [],  # [stage, step in stage, mean loss over the last log_every steps]
        "admm": [],  # one entry per Z/U update: residuals, rho, accuracy
        "histograms": {},
    }


def run(cfg: Config, workdir: str, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs (or resumes) the whole pipeline in ``workdir``; returns the summary dict."""
    cfg.validate()
    workdir = os.path.abspath(workdir)
    # One process (the primary) holds the workdir's lock for the whole run.
    lock = workdir_lib.locked(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        finished = workdir_lib.finished_summary(cfg, workdir)  # refuses another config's
        if finished is not None:
            log(f"workdir {workdir} holds this run, finished: nothing to do")
            return finished
        return _run_locked(cfg, workdir, log)


def _run_locked(cfg: Config, workdir: str, log: Callable[[str], None]) -> dict[str, Any]:
    # Refuses a foreign workdir before loading any data.
    saved = workdir_lib.saved_run(cfg, workdir)
    pipe = Pipeline(cfg, workdir, log=log)
    os.makedirs(workdir, exist_ok=True)  # the primary's lock made it; other hosts may lag
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    params = pipe.init_params
    opt_state = admm_state = None
    if saved is not None:
        # The newest checkpoint that passes verification, into its stage's structure.
        try:
            tree, meta = ckpt.restore(lambda meta: _template(pipe, meta["stage"]))
        except CheckpointError as err:
            raise workdir_lib.WorkdirError(
                f"workdir {workdir}: {err}; move its checkpoints/ away to start the run over"
            ) from None
        params, opt_state, admm_state = tree["params"], tree["opt_state"], tree["admm"]
        log(f"resumed {meta['stage']} at step {meta['step']} from {ckpt.directory}")
        if cfg.allocation == "global" and meta["stage"] in ("retrain", "done"):
            pipe.targets = pipe.global_targets(params)  # the allocation of the hard prune
    else:
        meta = _fresh_meta(cfg)
        if pipe.is_primary:
            workdir_lib.write_json_atomic(
                os.path.join(pipe.workdir, "config.json"), meta["config"], indent=2
            )
        if cfg.pretrained:
            params = workdir_lib.load_dense_params(cfg.pretrained, params)
            meta["pretrained_from"] = shown_path(cfg.pretrained)
            params = config.on_pretrained(cfg, params)  # e.g. LeNet-5's fold_idle
            meta = _finish_pretrain(pipe, params, meta)
            params, opt_state, admm_state = _begin_admm(pipe, params)
        else:
            opt_state = pipe.transform("pretrain").init(params)

    clock = [time.perf_counter()]

    def save(stage_state: dict[str, Any], meta: dict[str, Any], stage: str) -> None:
        # Wall-clock is booked to the stage at every save, so a resumed run keeps the
        # time spent before the kill (up to its last checkpoint).
        now = time.perf_counter()
        meta["stage_seconds"][stage] = meta["stage_seconds"].get(stage, 0.0) + now - clock[0]
        clock[0] = now
        meta["saves"] += 1
        # Orbax writes in the background while the next step donates these buffers, so
        # it gets its own copy (once per checkpoint, a few MB for the LeNets).
        ckpt.save(meta["saves"], jax.tree.map(jnp.copy, stage_state), meta)

    while meta["stage"] != "done":
        stage = meta["stage"]
        params, opt_state, admm_state, meta = run_stage(
            pipe, stage, params, opt_state, admm_state, meta, save
        )
        if stage == "pretrain":
            meta = _finish_pretrain(pipe, params, meta)
            params, opt_state, admm_state = _begin_admm(pipe, params)
        elif stage == "admm":
            meta["histograms"]["admm"] = histogram(params, pipe.targets)
            if cfg.allocation == "global":
                pipe.targets = pipe.global_targets(params)
            params, masks = admmjax.prune(params, pipe.targets)
            masks = admmjax.freeze_quantized(masks, pipe.targets)  # levels stay fixed
            meta["accuracy"]["hard_prune"] = pipe.evaluate(params)
            _validate(pipe, params, meta, "hard_prune")
            log(f"hard prune: test {pipe.metric} {meta['accuracy']['hard_prune']:.4f}")
            meta.update(stage="retrain", step=0)
            opt_state, admm_state = pipe.transform("retrain", masks).init(params), None
        elif stage == "retrain":
            meta["accuracy"]["pruned"] = pipe.evaluate(params)
            _validate(pipe, params, meta, "pruned")
            meta["histograms"]["retrained"] = histogram(params, pipe.targets)
            log(f"retrained: test {pipe.metric} {meta['accuracy']['pruned']:.4f}")
            fault_point("output")
            save_pytree(shown_path(os.path.join(pipe.workdir, "pruned")), params)
            meta.update(stage="done", step=0)
        save({"params": params, "opt_state": opt_state, "admm": admm_state}, meta, stage)
    ckpt.close()
    summary = write_outputs(pipe, params, meta)
    return summary


def shown_path(path: str) -> str:
    """``path`` as the outputs record it: relative to the working directory when inside
    it (the CLIs run from the repo root, so committed results hold no machine paths),
    else absolute."""
    full = os.path.abspath(path)
    inside = os.path.commonpath([full, os.getcwd()]) == os.getcwd()
    return os.path.relpath(full) if inside else full


def _validate(pipe: Pipeline, params: Any, meta: dict[str, Any], key: str) -> None:
    """The validation metric of ``params`` into ``meta`` when the data has that split
    (a held-out part of MNIST's training images; the text's Genesis)."""
    if pipe.cfg.validation_size or pipe.task == "language":
        meta.setdefault("validation", {})[key] = pipe.evaluate(params, split="validation")


def _finish_pretrain(pipe: Pipeline, params: Any, meta: dict[str, Any]) -> dict[str, Any]:
    meta["accuracy"]["dense"] = pipe.evaluate(params)
    _validate(pipe, params, meta, "dense")
    meta["histograms"]["pretrained"] = histogram(params, pipe.targets)
    pipe.log(f"dense model: test {pipe.metric} {meta['accuracy']['dense']:.4f}")
    fault_point("output")
    save_pytree(shown_path(os.path.join(pipe.workdir, "dense")), params)
    meta.update(stage="admm", step=0)
    return meta


def nonzero_masks(params: Any, targets: Any) -> Any:
    """``params != 0`` at each targeted leaf, ``None`` elsewhere (the masks a pruned
    model carries into the next stage of progressive ADMM)."""
    treedef = jax.tree.structure(params)
    leaves = treedef.flatten_up_to(params)
    specs = treedef.flatten_up_to(targets)
    return treedef.unflatten(
        [None if t is None else leaf != 0 for leaf, t in zip(leaves, specs, strict=True)]
    )


def _begin_admm(pipe: Pipeline, params: Any) -> tuple[Any, Any, admmjax.ADMMState | None]:
    """``(params, opt_state, admm_state)`` at the start of the admm stage. Gradual
    magnitude pruning starts with its first magnitude prune and no ADMM state."""
    if pipe.cfg.sparsify == "gradual":
        params, masks = admmjax.prune(params, pipe.gradual_targets(1))
        return params, pipe.transform("admm", masks).init(params), None
    masks = nonzero_masks(params, pipe.targets) if pipe.cfg.carry_masks else None
    return params, pipe.transform("admm", masks).init(params), admmjax.init(params, pipe.targets)


def _template(pipe: Pipeline, stage: str) -> dict[str, Any]:
    """A tree with the structure, shapes and dtypes a checkpoint of ``stage`` holds."""
    params = pipe.init_params
    admm_state = None
    if stage in ("pretrain",):
        opt_state = pipe.transform("pretrain").init(params)
    elif stage == "admm":
        _, opt_state, admm_state = _begin_admm(pipe, params)
    else:
        _, masks = admmjax.prune(params, pipe.targets)
        masks = admmjax.freeze_quantized(masks, pipe.targets)
        opt_state = pipe.transform("retrain", masks).init(params)
    return {"params": params, "opt_state": opt_state, "admm": admm_state}


def run_stage(
    pipe: Pipeline,
    stage: str,
    params: Any,
    opt_state: Any,
    admm_state: Any,
    meta: dict[str, Any],
    save: Callable[[dict[str, Any], dict[str, Any], str], None],
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The training loop shared by every stage, from ``meta['step']`` to the stage's end."""
    cfg = pipe.cfg
    total = pipe.stage_steps(stage)
    # Restored or freshly initialised state may sit on one device; put it on the mesh.
    params, opt_state, admm_state = pipe.replicate((params, opt_state, admm_state))
    # Each step donates params and optimizer state to its outputs (updated in place, no
    # fresh buffers per step: LeNet-300-100's W-step ran 6-8% slower without, results
    # README "Benchmarks"). One copy first, so arrays the caller still holds (e.g.
    # pipe.init_params) survive.
    params, opt_state = jax.tree.map(jnp.copy, (params, opt_state))
    masks = opt_state.masks if isinstance(opt_state, admmjax.KeepPrunedState) else None
    step_fn = admmjax.make_train_step(pipe.loss_fn, pipe.transform(stage, masks), donate=True)
    teacher = () if pipe.teacher is None or stage == "pretrain" else (pipe.teacher,)
    ckpt_every = cfg.checkpoint_every or pipe.steps_per_epoch
    period = pipe.admm_period()
    stage_key = jax.random.fold_in(pipe.key, STAGES.index(stage))
    start = meta["step"]
    # The partial loss average is checkpointed too, so a resumed run logs the same history.
    partial_sum, loss_count = meta.get("loss_acc", [0.0, 0])
    loss_sum = jnp.asarray(partial_sum, jnp.float32)
    bar = _progress(cfg, stage, start, total)
    postfix: dict[str, str] = {}  # loss of the last log window; W's accuracy in ADMM
    for step, x, y in pipe.batches(stage, start):
        if step >= total:
            break
        rng = step_key(stage_key, step)
        params, opt_state, loss = step_fn(
            params, opt_state, x, y, rng, *teacher, admm_state=admm_state
        )
        loss_sum, loss_count = loss_sum + loss, loss_count + 1
        done = step + 1
        if done % cfg.log_every == 0 or done == total:
            mean = float(loss_sum) / loss_count
            if not math.isfinite(mean):
                raise FloatingPointError(
                    f"{stage} loss is {mean} at step {done}: lower the learning rate or rho"
                )
            meta["loss"].append([stage, done, mean])
            loss_sum, loss_count = jnp.zeros(()), 0
            postfix["loss"] = f"{mean:.4f}"
            bar.set_postfix(postfix)
        bar.update(1)
        if stage == "admm" and done % period == 0 and cfg.sparsify == "gradual":
            # The next mask update (none after the last W-step: the hard prune follows).
            rec = _gradual_record(pipe, params, done // period)
            if done < total:
                params, masks = admmjax.prune(params, pipe.gradual_targets(done // period + 1))
                params = pipe.replicate(params)
                opt_state = opt_state._replace(masks=pipe.replicate(masks))
            meta["admm"].append(rec)
            postfix[pipe.metric] = f"{rec[pipe.metric]:.4f}"
            bar.set_postfix(postfix)
            pipe.log(
                f"gradual pruning, W-step {rec['iteration']}/{cfg.admm_iterations} at "
                f"{rec['ramp']:.3f} of the target: {pipe.metric} {rec[pipe.metric]:.4f}"
            )
        elif stage == "admm" and done % period == 0:
            admm_state, info = pipe._admm_update(admm_state, params)
            meta["admm"].append(_admm_record(pipe, params, admm_state, info, done // period))
            rec = meta["admm"][-1]
            postfix[pipe.metric] = f"{rec[pipe.metric]:.4f}"
            bar.set_postfix(postfix)
            pipe.log(
                f"ADMM iteration {rec['iteration']}/{cfg.admm_iterations}: primal "
                f"{rec['primal_total']:.4g} dual {rec['dual_total']:.4g} "
                f"{pipe.metric}(W) {rec[pipe.metric]:.4f}"
            )
        if done % pipe.steps_per_epoch == 0 and stage != "admm" and meta["loss"]:
            pipe.log(
                f"{stage} epoch {done // pipe.steps_per_epoch}: loss {meta['loss'][-1][2]:.4f}"
            )
        if done % ckpt_every == 0 and done < total:
            meta["step"] = done
            meta["loss_acc"] = [float(loss_sum), loss_count]
            save({"params": params, "opt_state": opt_state, "admm": admm_state}, meta, stage)
    bar.close()
    meta["step"] = total
    meta["loss_acc"] = [0.0, 0]
    return params, opt_state, admm_state, meta


def _admm_record(pipe, params, admm_state, info, iteration) -> dict[str, Any]:
    paths = list(admmjax.targeted_leaves(params, pipe.targets))
    leaves = [float(v) for v in jax.tree.leaves(info.primal)]
    duals = [float(v) for v in jax.tree.leaves(info.dual)]
    return {
        "iteration": iteration,
        "rho": float(rho_schedule(pipe.cfg)(admm_state.count - 1)),
        "primal": dict(zip(paths, leaves, strict=True)),
        "dual": dict(zip(paths, duals, strict=True)),
        "primal_total": float(info.primal_total),
        "dual_total": float(info.dual_total),
        "converged": bool(info.converged),
        pipe.metric: pipe.evaluate(params),
    }


def _gradual_record(pipe: Pipeline, params: Any, iteration: int) -> dict[str, Any]:
    """After W-step ``iteration`` of gradual magnitude pruning: its ramp and metric."""
    return {
        "iteration": iteration,
        "ramp": gradual_ramp(iteration, pipe.cfg.admm_iterations),
        "primal": {},  # no ADMM variables: the plots show no residuals
        "dual": {},
        pipe.metric: pipe.evaluate(params),
    }


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, *args: Any, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(cfg: Config, stage: str, start: int, total: int):
    if not cfg.progress or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=stage, unit="step", leave=False)


# --------------------------------------------------------------------------- outputs


def write_outputs(pipe: Pipeline, params: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """summary.json, table.md, history.json and the figures; returns the summary."""
    from experiments.analysis import plots

    cfg = pipe.cfg
    report = admmjax.sparsity_report(params, pipe.targets)
    acc = meta["accuracy"]  # the run's metric (accuracy or bits per character) by point
    m = pipe.metric
    summary = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "metric": m,
        f"dense_{m}": acc.get("dense"),
        f"hard_prune_{m}": acc.get("hard_prune"),
        f"pruned_{m}": acc.get("pruned"),
        f"validation_{m}": meta.get("validation"),  # the validation split's, if any
        "compression": report.compression,
        "weights": report.weights,
        "nonzero": report.nonzero,
        "total_params": models_lib.count_params(params),
        "layers": [
            {
                "path": r.path,
                "shape": list(r.shape),
                "weights": r.weights,
                "nonzero": r.nonzero,
                "kept_percent": r.kept_percent,
            }
            for r in report.rows
        ],
        "admm_final": meta["admm"][-1] if meta["admm"] else None,
        "stage_seconds": meta["stage_seconds"],
        "stage_epochs": {
            s: pipe.stage_steps(s) / pipe.steps_per_epoch for s in ("pretrain", "admm", "retrain")
        },
        "devices": [str(d) for d in pipe.mesh.devices.flat],
        "processes": jax.process_count(),
        "seed": cfg.seed,
        "config": meta["config"],
        "pretrained_from": meta.get("pretrained_from"),
    }
    if cfg.pretrained:
        summary["stage_epochs"]["pretrain"] = 0.0
    if pipe.source.top5:  # ImageNet: top-5 of the dense and the final model
        summary["pruned_top5"] = pipe.evaluate_topk(params)["top5"]
        dense_dir = os.path.join(pipe.workdir, "dense")
        if os.path.isdir(dense_dir):
            dense = pipe.replicate(admmjax.checkpoint.load_pytree(dense_dir, pipe.init_params))
            summary["dense_top5"] = pipe.evaluate_topk(dense)["top5"]
    summary["macs"] = _mac_summary(pipe, params, report) if pipe.source.image_shape else None
    w = pipe.workdir
    if not pipe.is_primary:  # every process holds the same values; one writes them
        return summary
    # summary.json goes last and atomically: its presence marks a finished run
    # (experiments.workdir), so a run killed before it redoes the outputs on restart.
    fault_point("output")
    with open(os.path.join(w, "history.json"), "w") as f:
        json.dump({k: meta[k] for k in ("loss", "admm", "histograms")}, f)
    fault_point("output")
    with open(os.path.join(w, "table.md"), "w") as f:
        f.write(summary_markdown(summary, report))
    fault_point("output")
    plots.histograms(meta["histograms"], os.path.join(w, "weights_histograms.png"))
    fault_point("output")
    plots.residuals_and_loss(meta, os.path.join(w, "residuals_loss.png"))
    fault_point("output")
    workdir_lib.write_json_atomic(os.path.join(w, "summary.json"), summary, indent=2)
    return summary


def _mac_summary(pipe: Pipeline, params: Any, report: admmjax.SparsityReport) -> dict[str, Any]:
    """Per-layer MACs per image, dense and pruned (experiments.macs), for the summary."""
    from experiments.analysis import macs

    kept = {r.path: r.nonzero for r in report.rows}
    table = macs.mac_report(
        lambda p, x: pipe.apply_fn(p, x), params, pipe.source.image_shape, kept=kept
    )
    return table.to_dict()


def summary_markdown(summary: dict[str, Any], report: admmjax.SparsityReport) -> str:
    metric = summary.get("metric", "accuracy")

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    def value(x):
        if metric == "accuracy":
            return pct(x)
        return "n/a" if x is None else f"{x:.4f}"

    secs = ", ".join(f"{k} {v:.0f} s" for k, v in summary["stage_seconds"].items())
    top5 = "pruned_top5" in summary
    label = "test accuracy" if metric == "accuracy" else "test bits per character"
    subset = summary.get("config", {}).get("eval_subset")
    if subset:  # a quick run's figures are of the first examples only: say so
        label += f" (first {subset:,} examples)"
    head = f"| | {label} | top-5 |\n|---|---:|---:|\n" if top5 else (
        f"| | {label} |\n|---|---:|\n"
    )  # fmt: skip

    def row(name: str, key: str, top5_key: str | None) -> str:
        extra = f" {pct(summary.get(top5_key)) if top5_key else 'n/a'} |" if top5 else ""
        return f"| {name} | {value(summary[key])} |{extra}\n"

    macs = summary.get("macs")
    from experiments.analysis.macs import MacReport

    mac_text = (
        f"\n\nMultiply-accumulates per image: **{macs['macs']:,}** dense, "
        f"**{macs['pruned_macs']:,}** after pruning ({macs['mac_reduction']:.1f}x fewer).\n\n"
        f"{MacReport.from_dict(macs).to_markdown()}"
        if macs
        else ""
    )
    return (
        f"# {summary['model']} on {summary['dataset']}\n\n"
        + head
        + row("dense", f"dense_{metric}", "dense_top5")
        + row("after hard prune (before retraining)", f"hard_prune_{metric}", None)
        + row("pruned and retrained", f"pruned_{metric}", "pruned_top5")
        + f"\nCompression over the pruned layers: **{summary['compression']:.1f}x** "
        f"({summary['nonzero']:,} of {summary['weights']:,} weights kept).\n\n"
        f"{report.to_markdown()}{mac_text}\n\nWall-clock per stage: {secs}.\n"
    )
