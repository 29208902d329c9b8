"""admmjax: systematic DNN weight pruning with ADMM, as pure functions over pytrees.

The public API::

    targets = admmjax.uniform_sparsity(params, 0.9)            # or sparsity_by_path
    state = admmjax.init(params, targets)                       # Z0 = P(W0), U0 = 0
    tx = optax.chain(admmjax.penalty(1e-3), optax.adam(1e-3))   # the W-step optimizer
    updates, opt_state = tx.update(grads, opt_state, params, admm_state=state)
    state, info = admmjax.update(state, params, targets)        # Z- and U-steps
    params, masks = admmjax.prune(params, targets)              # hard prune
    tx = admmjax.keep_pruned(optax.adam(1e-3), masks)           # masked retraining
    tx = admmjax.admm(optax.adam(1e-3), targets, rho=1e-3, every=500)  # or all in one
    z, u = admmjax.admm_state(opt_state).admm[:2]               # ... in any opt_state
    print(admmjax.sparsity_report(params, targets))
    kernel = admmjax.sparsegpt_prune(kernel, admmjax.gram_matrix(x), 0.7)  # one-shot, per layer
    admmjax.Structured(0.5, axis=1, group="heads")              # leaves sharing one selection
    small = admmjax.shrink(params, targets)                     # pruned slices removed
    targets = admmjax.sparsity_by_path(params, {                # other constraint sets
        "conv*/kernel": admmjax.Structured(0.5, axis=-1),       # half of the filters
        "fc1/kernel": admmjax.NM(2, 4),                         # 2:4 along the inputs
        "fc2/kernel": admmjax.Quantized(1, scale="learned")})   # ternary {-s, 0, s}
    sparse = admmjax.encode_sparse(params)                      # compact per-leaf storage
    params = admmjax.decode_sparse(sparse, like=params)         # exact round trip

Files: ``admmjax.checkpoint`` (orbax) and ``admmjax.sparse_io`` (``save_sparse`` /
``load_sparse``, NumPy only) are the two modules that do I/O; import them explicitly.
``admmjax.flax`` (``recompute_batch_stats``, ``recompute_nnx_batch_stats``: BatchNorm
statistics after the hard prune) depends on Flax; it too is imported explicitly.
"""

from admmjax._admm import ADMMInfo, ADMMState, init, penalty, penalty_value, update
from admmjax._constraints import NM, Quantized, SparseQuantized, Structured, freeze_quantized
from admmjax._export import (
    SparseFormatError,
    SparseLeaf,
    SparseParams,
    decode_sparse,
    encode_sparse,
    sparse_from_bytes,
    sparse_nbytes,
    sparse_to_bytes,
)
from admmjax._masking import KeepPrunedState, apply_masks, keep_pruned, prune
from admmjax._oneshot import (
    LayerwiseADMMInfo,
    gram_matrix,
    input_norms,
    layer_error,
    layerwise_admm_prune,
    magnitude_prune,
    sparsegpt_prune,
    wanda_prune,
    wanda_scores,
)
from admmjax._projections import global_to_targets, project, project_global
from admmjax._report import LeafRow, SparsityReport, sparsity_report
from admmjax._select import keep_mask, keep_mask_top_k
from admmjax._shrink import shrink
from admmjax._sparsity import (
    Constraint,
    Keep,
    as_keep_counts,
    is_layer_weight,
    leaf_paths,
    path_str,
    sparsity_by_path,
    target_counts,
    targeted_leaves,
    uniform_sparsity,
)
from admmjax._stacked import Stacked, stacked_axes_from_nnx
from admmjax._step import make_train_step
from admmjax._transform import ADMMTransformState, admm, admm_state

__version__ = "0.1.0"

__all__ = [
    "NM",
    "ADMMInfo",
    "ADMMState",
    "ADMMTransformState",
    "Constraint",
    "Keep",
    "KeepPrunedState",
    "LayerwiseADMMInfo",
    "LeafRow",
    "Quantized",
    "SparseFormatError",
    "SparseLeaf",
    "SparseParams",
    "SparseQuantized",
    "SparsityReport",
    "Stacked",
    "Structured",
    "admm",
    "admm_state",
    "apply_masks",
    "as_keep_counts",
    "decode_sparse",
    "encode_sparse",
    "freeze_quantized",
    "global_to_targets",
    "gram_matrix",
    "init",
    "input_norms",
    "is_layer_weight",
    "keep_mask",
    "keep_mask_top_k",
    "keep_pruned",
    "layer_error",
    "layerwise_admm_prune",
    "leaf_paths",
    "magnitude_prune",
    "make_train_step",
    "path_str",
    "penalty",
    "penalty_value",
    "project",
    "project_global",
    "prune",
    "shrink",
    "sparse_from_bytes",
    "sparse_nbytes",
    "sparse_to_bytes",
    "sparsegpt_prune",
    "sparsity_by_path",
    "sparsity_report",
    "stacked_axes_from_nnx",
    "target_counts",
    "targeted_leaves",
    "uniform_sparsity",
    "update",
    "wanda_prune",
    "wanda_scores",
]
