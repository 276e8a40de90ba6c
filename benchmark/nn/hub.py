"""Where the paper's pretrained weights are looked for, without ever touching the network.

The suite never downloads weights itself: a user who has them points `BENCHMARK_WEIGHTS_DIR` at
a folder of checkpoints (`<dir>/<repo name>/config.json`, e.g. `<dir>/hubert-large-ls960-ft/`)
or has them in the HuggingFace cache (`huggingface-cli download <repo id>` once, on a machine
with access). Missing weights give one error saying where they were looked for and how to get
them, never a hub stack trace.

`--backbone paper-shape` needs no weights at all: the `config.json` of HuBERT-large and of
Llama-3.1-8B-Instruct ship inside the package (`benchmark/nn/<repo name>.json`, copied from the
checkpoints), so the paper's exact architectures can be built with random weights anywhere.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from benchmark.errors import BenchmarkError

# Checkpoints of `--backbone paper` (paper section 3.1, 3.4 and Table 2 Sys. 1-3).
PAPER_CHECKPOINTS: dict[str, str] = {
    "hubert-large": "facebook/hubert-large-ls960-ft",
    "wavlm-large": "microsoft/wavlm-large",
    "wav2vec2-large": "facebook/wav2vec2-large-960h-lv60-self",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
}


def local_checkpoint(repo_id: str) -> Path | None:
    """The local folder of a checkpoint, or None when it is not on this machine."""
    if weights_dir := os.environ.get("BENCHMARK_WEIGHTS_DIR"):
        candidate = Path(weights_dir).expanduser() / repo_id.split("/")[-1]
        if (candidate / "config.json").is_file():
            return candidate
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(config, str):
        return Path(config).parent
    return None


def require_checkpoint(repo_id: str) -> Path:
    """The local folder of a checkpoint; a clear error naming where it was looked for if absent."""
    if path := local_checkpoint(repo_id):
        return path
    from huggingface_hub.constants import HF_HUB_CACHE

    weights_dir = os.environ.get("BENCHMARK_WEIGHTS_DIR", "(BENCHMARK_WEIGHTS_DIR not set)")
    raise BenchmarkError(
        f"weights of {repo_id} not found in {weights_dir} nor in the HuggingFace cache {HF_HUB_CACHE}",
        hint=(
            f"on a machine with hub access run `huggingface-cli download {repo_id}` (gated models need "
            "`huggingface-cli login` first) and copy the cache, or put the checkpoint folder at "
            f"$BENCHMARK_WEIGHTS_DIR/{repo_id.split('/')[-1]}"
        ),
    )


def paper_shape_config(name: str) -> dict[str, Any]:
    """The shipped `config.json` of a paper checkpoint (`PAPER_CHECKPOINTS` name), as a dict.

    Only the checkpoints `--backbone paper-shape` builds are shipped: HuBERT-large and the LLM.
    """
    file = PAPER_CHECKPOINTS[name].split("/")[-1].lower() + ".json"
    try:
        text = resources.files("benchmark.nn").joinpath(file).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise BenchmarkError(
            f"no shipped config for {name!r}: --backbone paper-shape has HuBERT-large and Llama-3.1-8B only",
            hint="the SSL baselines' WavLM and wav2vec2 need --backbone paper or tiny",
        ) from err
    return json.loads(text)
