"""Torch modules: the speech encoder, the IB-VAE bottleneck, the adapter, the LLM decoder (LoRA)
and its tokenizer, the whole system, the SSL baselines' heads, where the paper's pretrained
weights are found, and what each `--backbone` means for them."""
