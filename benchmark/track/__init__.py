"""Experiments in MLflow: `run` and `evaluate`, the run identity (protocol tags), runs that always
end, comparisons and the leaderboard, the UI server, and the report of what this machine has."""
