"""One process of the fault-injection test: a tiny run of the whole pipeline.

    python tests/experiments/_fault_worker.py WORKDIR

LeNet-300-100 on tfds mock data (64 generated images, the same in every process),
every stage a few steps, a checkpoint every 2 steps: 9 saves, 2 params outputs and
5 output files. Started with ``ADMMJAX_KILL_AT=EVENT:N`` it kills itself with
SIGKILL at that point (:func:`admmjax.checkpoint.fault_point`); started again with
the same arguments it resumes. Run as a script only.
"""

from __future__ import annotations

import sys

CONFIG = dict(
    model="lenet300_100", dataset="fashion_mnist", sparsity={"fc1/kernel": 0.9, "fc2/kernel": 0.8},
    batch_size=16, eval_batch_size=32, pretrain_steps=6, admm_iterations=3, admm_steps=2,
    retrain_steps=6, checkpoint_every=2, log_every=1, progress=False,
)  # fmt: skip


def main(workdir: str) -> None:
    import tensorflow_datasets as tfds

    from experiments import train

    cfg = train.Config(**CONFIG)
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        train.run(cfg, workdir)


if __name__ == "__main__":
    main(sys.argv[1])
