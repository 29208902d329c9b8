"""Experiments built on admmjax: data, models and the training pipeline."""
