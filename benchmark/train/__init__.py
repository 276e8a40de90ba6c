"""Training: stage plans and training mixtures, the loop, the plain and DeepSpeed engines,
checkpoints and RNG state, the SSL baselines' training, and the recipe of the demo backbone."""
