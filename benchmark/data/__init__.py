"""Data: manifests, corpus readers, audio I/O, acoustic cues, the demo corpus, batching, and the
data contracts: prediction records, tasks and their response format, training/inference examples,
and the feature cache (the encoder's outputs on disk, for any encoder)."""
