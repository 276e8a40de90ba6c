"""The command workflows, one module per verb: find or start runs, load, compute, log."""
