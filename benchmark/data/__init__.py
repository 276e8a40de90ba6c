"""Data layer: manifests, corpus readers, audio I/O, the demo corpus, batching."""
