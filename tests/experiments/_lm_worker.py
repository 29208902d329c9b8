"""One process of the GPT's kill-and-resume test: a tiny run of the whole pipeline.

    python tests/experiments/_lm_worker.py WORKDIR

A 2-layer GPT (width 32, context 16) on the first 20,000 bytes of the KJV's training
split, gradual magnitude pruning to 70% in 3 W-steps, a checkpoint every 2 steps.
Started with ``ADMMJAX_KILL_AT=EVENT:N`` it kills itself at that point
(:func:`admmjax.checkpoint.fault_point`); started again it resumes. Run as a script.
"""

from __future__ import annotations

import sys

CONFIG = dict(
    model="gpt", dataset="kjv", context=16, embed=32, heads=2, layers=2, mlp_ratio=2,
    batch_size=8, eval_batch_size=512, train_subset=20_000, eval_subset=2_048, weight_decay=0.0,
    sparsity={"blocks/attention/*/kernel": 0.7, "blocks/mlp/*/kernel": 0.7},
    pretrain_steps=4, admm_iterations=3, admm_steps=2, retrain_steps=2,
    rho=0.05, sparsify="gradual", checkpoint_every=2, log_every=1, progress=False,
)  # fmt: skip


def main(workdir: str) -> None:
    from experiments import train

    train.run(train.Config(**CONFIG), workdir, log=lambda line: None)


if __name__ == "__main__":
    main(sys.argv[1])
