"""Finds registry entries (systems, datasets, studies) by name.

The registries are folders of YAML files, as in lm-evaluation-harness: `models/`, `datasets/`
and `studies/`. They are searched in this order, the first match winning, so a user can shadow a
shipped entry with their own:

1. folders given with `--registry DIR` (each may hold `models/`, `datasets/`, `studies/`),
2. folders in the `BENCHMARK_REGISTRY` environment variable (separated by the path separator),
3. the repository clone the package runs from (an editable install),
4. the copy shipped inside the installed package (`benchmark/registry_data/`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

from benchmark.config import DatasetCard, load_yaml, validate
from benchmark.errors import BenchmarkError

Kind = Literal["models", "datasets", "studies"]

_extra_roots: list[Path] = []


def add_registry(path: Path) -> None:
    """Search `path` (holding models/, datasets/ or studies/) before the built-in registries."""
    if not path.is_dir():
        raise BenchmarkError(f"{path}: registry folder not found")
    _extra_roots.append(path)


def registry_roots() -> list[Path]:
    """Folders searched for registry entries, highest priority first."""
    roots = list(_extra_roots)
    roots += [Path(p) for p in os.environ.get("BENCHMARK_REGISTRY", "").split(os.pathsep) if p]
    clone = Path(__file__).resolve().parent.parent
    if (clone / "pyproject.toml").is_file() and (clone / "datasets").is_dir():
        roots.append(clone)
    shipped = Path(str(resources.files("benchmark"))) / "registry_data"
    if shipped.is_dir():
        roots.append(shipped)
    seen: list[Path] = []
    for root in roots:
        if root.resolve() not in [s.resolve() for s in seen]:
            seen.append(root)
    return seen


def entries(kind: Kind) -> dict[str, Path]:
    """Every entry of one registry, name -> YAML file (earlier roots shadow later ones)."""
    found: dict[str, Path] = {}
    for root in registry_roots():
        for path in sorted((root / kind).glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def find(kind: Kind, name: str) -> Path:
    """The YAML file of one entry; an unknown name lists the known ones."""
    known = entries(kind)
    if name not in known:
        listing = ", ".join(sorted(known)) or "(none)"
        singular = {"models": "system", "datasets": "dataset", "studies": "study"}[kind]
        raise BenchmarkError(f"unknown {singular} '{name}'", hint=f"known {kind}: {listing}")
    return known[name]


def load_dataset_card(name: str) -> DatasetCard:
    path = find("datasets", name)
    card = validate(DatasetCard, load_yaml(path), path)
    if card.name != name:
        raise BenchmarkError(f"{path}: field 'name' is '{card.name}' but the file is named '{name}'")
    return card


def dataset_cards() -> dict[str, DatasetCard]:
    return {name: load_dataset_card(name) for name in entries("datasets")}
