"""MLflow plumbing: where runs go, how they are written, found, tagged and read back."""
