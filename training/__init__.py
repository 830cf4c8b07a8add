"""Offline training pipeline: data, splits, features and embeddings, XGBoost, calibration, evaluation, reports.

Imports the runtime package ``essayscore``; the runtime never imports this package (only the CLI's ``train``
and ``evaluate`` commands reach it, lazily).
"""
