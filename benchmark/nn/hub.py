"""Where pretrained weights are looked for, without ever touching the network; what a run loaded.

The suite never downloads weights itself: a user who has them points `BENCHMARK_WEIGHTS_DIR` at
a folder of checkpoints (`<dir>/<repo name>/config.json`, e.g. `<dir>/hubert-large-ls960-ft/`)
or has them in the HuggingFace cache (`huggingface-cli download <repo id>` once, on a machine
with access). Missing weights give one error saying where they were looked for and how to get
them, never a hub stack trace.

Backbones with `random_weights` (`paper-shape`) need no weights at all: the `config.json` of
their checkpoints ships inside the package (`benchmark/nn/<repo name, lower case>.json`, copied
from the checkpoints; HuBERT-large and Llama-3.1-8B-Instruct now), so those architectures are
built with random weights anywhere. `weights_digest` says which weights a run loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

from benchmark.errors import BenchmarkError

# `weights_digest`: the files `from_pretrained` reads for a model, its tokenizer and its feature
# extractor (not READMEs, licences, nor the demo build's own notes); files up to WHOLE_FILE_BYTES
# are hashed whole, of larger ones SAMPLES evenly spaced pieces of SAMPLE_BYTES.
LOADED_FILES = (
    "*.safetensors", "*.bin", "*.index.json", "config.json", "generation_config.json",
    "preprocessor_config.json", "tokenizer*", "special_tokens_map.json", "chat_template.jinja",
)  # fmt: skip
WHOLE_FILE_BYTES = 16 << 20
SAMPLES, SAMPLE_BYTES = 16, 64 << 10


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


def shipped_config(repo_id: str) -> dict[str, Any]:
    """The `config.json` of checkpoint `repo_id` shipped in the package (module docstring), as a dict."""
    file = repo_id.split("/")[-1].lower() + ".json"
    try:
        text = resources.files("benchmark.nn").joinpath(file).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise BenchmarkError(
            f"no shipped config for {repo_id}: random weights are built from benchmark/nn/{file}",
            hint="copy the checkpoint's config.json there, or use a backbone that loads its weights",
        ) from err
    return json.loads(text)


def _safetensors_header(handle: BinaryIO, size: int) -> bytes:
    """The JSON header of a safetensors file of `size` bytes (tensor names, dtypes, shapes,
    offsets), after its 8-byte little-endian length; empty when that length does not fit."""
    length = int.from_bytes(handle.read(8), "little")
    return handle.read(length) if 8 + length <= size else b""


def weights_digest(folders: Sequence[Path]) -> str:
    """A sha256 (16 hex) of the checkpoint folders a run loaded, cheap at any size.

    It covers, in each folder, the files `from_pretrained` reads (`LOADED_FILES`; sub-folders such
    as Meta's `original/` are never read): each one's name and size; small files (configs,
    tokenizer, the safetensors index, tiny weights) whole; of each file over 16 MiB, its
    safetensors header and 16 evenly spaced 64 KiB samples of its bytes, about 1 MiB per shard, so
    other weights of one architecture show too. Paths are not hashed: the same checkpoint elsewhere
    gives the same digest; the order of the folders counts.
    """
    digest = hashlib.sha256()
    for folder in folders:
        files = [p for p in Path(folder).iterdir() if any(p.match(name) for name in LOADED_FILES)]
        for path in sorted(p for p in files if p.is_file()):
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with path.open("rb") as handle:
                if size <= WHOLE_FILE_BYTES:
                    digest.update(handle.read())
                    continue
                digest.update(_safetensors_header(handle, size) if path.suffix == ".safetensors" else b"")
                for index in range(SAMPLES):
                    handle.seek(max(size - SAMPLE_BYTES, 0) * index // (SAMPLES - 1))
                    digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]
