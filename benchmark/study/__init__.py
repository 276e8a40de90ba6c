"""Optuna studies whose trials are MLflow runs: the search, its workers, storage and report."""
