"""Torch modules: the speech encoder, the IB-VAE bottleneck, the adapter, the LLM decoder (LoRA)
and its tokenizer, the whole system, the SSL baselines' heads, where pretrained weights are
found, and the backbone registry's entries (what each `--backbone` means for them)."""
