"""Reading a trained model: multiply-accumulates (:mod:`~experiments.analysis.macs`), storage
(:mod:`~experiments.analysis.storage`), LeNet-5 shrinking (:mod:`~experiments.analysis.shrink`),
sparse inference (:mod:`~experiments.analysis.sparse_inference`) and plots
(:mod:`~experiments.analysis.plots`).

These take params and functions, not workdirs; the CLIs that read a run
(``python -m experiments.macs``, ``.storage``, ``.shrink``) sit above them."""
