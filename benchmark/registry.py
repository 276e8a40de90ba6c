"""Finds registry entries (systems, backbones, datasets, studies) by name.

The registries are folders of YAML files, as in lm-evaluation-harness: `models/` (systems),
`models/backbones/`, `datasets/` and `studies/`. They are searched in this order, the first match
winning, so a user can shadow a shipped entry with their own:

1. folders given with `--registry DIR` (each may hold `models/`, `models/backbones/`, `datasets/`,
   `studies/`),
2. folders in the `BENCHMARK_REGISTRY` environment variable (separated by the path separator),
3. the repository clone the package runs from (an editable install),
4. the copy shipped inside the installed package (`benchmark/registry_data/`).
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from benchmark.config import (
    SYSTEM_PARAM,
    DatasetCard,
    StageConfig,
    StudySpec,
    SystemConfig,
    load_yaml,
    merge_configs,
    override_system,
    validate,
)
from benchmark.errors import BenchmarkError

Kind = Literal["models", "backbones", "datasets", "studies"]
# Where each kind's files live under a registry root; systems are only `models/*.yaml`, so the
# backbones one folder down are never taken for systems.
FOLDERS: dict[Kind, str] = {
    "models": "models", "backbones": "models/backbones", "datasets": "datasets", "studies": "studies",
}  # fmt: skip



class _Named(Protocol):
    name: str


Named = TypeVar("Named", bound=_Named)
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
        for path in sorted((root / FOLDERS[kind]).glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def find(kind: Kind, name: str) -> Path:
    """The YAML file of one entry; an unknown name lists the known ones."""
    known = entries(kind)
    if name not in known:
        listing = ", ".join(sorted(known)) or "(none)"
        singular = {"models": "system", "backbones": "backbone", "datasets": "dataset", "studies": "study"}
        raise BenchmarkError(f"unknown {singular[kind]} '{name}'", hint=f"known {kind}: {listing}")
    return known[name]


def load_entry(kind: Kind, name: str, model: type[Named]) -> Named:
    """The entry `kind/NAME.yaml`, validated as `model`; its `name` field must be the file's."""
    path = find(kind, name)
    entry = validate(model, load_yaml(path), path)
    if entry.name != name:
        raise BenchmarkError(f"{path}: field 'name' is '{entry.name}' but the file is named '{name}'")
    return entry


def load_dataset_card(name: str) -> DatasetCard:
    return load_entry("datasets", name, DatasetCard)


def dataset_cards() -> dict[str, DatasetCard]:
    return {name: load_dataset_card(name) for name in entries("datasets")}


def merge_stages(parent: list[Any], child: list[Any], source: Path) -> list[Any]:
    """A child file's `stages` merged over its parent's by stage `name`, so that a variant states
    only how its schedule differs (`--set stages=[...]`, by contrast, gives the whole list):

    - a stage named like one of the parent's merges over it (`merge_configs`), in its place;
    - `{name: X, drop: true}` removes the parent's stage X (drop them all to start afresh);
    - any other stage is new and appended, so it must give every field a stage needs.
    """
    stages = list(parent)
    required = [field for field, info in StageConfig.model_fields.items() if info.is_required()]
    for entry in child:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BenchmarkError(f"{source}: every entry of 'stages' needs a 'name'")
        name = entry["name"]
        names = [stage.get("name") if isinstance(stage, dict) else None for stage in stages]
        index = names.index(name) if name in names else None
        known = ", ".join(str(other) for other in names if other is not None) or "none"
        if "drop" in entry:
            if index is None or entry != {"name": name, "drop": True}:
                raise BenchmarkError(
                    f"{source}: stage '{name}': a 'drop: true' entry names one of the parent's stages "
                    f"({known}) and nothing else"
                )
            del stages[index]
        elif index is not None:
            stages[index] = merge_configs(stages[index], entry)
        elif missing := [field for field in required if field not in entry]:
            raise BenchmarkError(
                f"{source}: stage '{name}' is not a parent's stage ({known}), "
                f"and a new stage needs {', '.join(missing)}"
            )
        else:
            stages.append(entry)
    return stages


def _system_data(name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of one system file with its `inherits:` chain resolved, not yet validated.

    The parent is resolved first (recursively) and the child merged over it with `merge_configs`,
    except `stages`, which merge by name (`merge_stages`). The parent's `paper` rows are not
    inherited: a row of the paper belongs to one system, and a variant that claimed its parent's
    row would land in the wrong leaderboard cell.
    """
    path = find("models", name)
    data = load_yaml(path)
    parent = data.pop("inherits", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise BenchmarkError(f"{path}: field 'inherits' must be the name of another system")
    if parent in (*chain, name):
        cycle = [*chain, name, parent]
        files = ", ".join(str(find("models", member)) for member in dict.fromkeys(cycle))
        raise BenchmarkError(
            f"{path}: 'inherits' forms a cycle: {' -> '.join(cycle)}",
            hint=f"remove one 'inherits:' line among {files}",
        )
    inherited = _system_data(parent, (*chain, name))
    inherited.pop("paper", None)
    if isinstance(data.get("stages"), list) and isinstance(inherited.get("stages", []), list):
        data["stages"] = merge_stages(inherited.get("stages", []), data["stages"], path)
    return merge_configs(inherited, data)


def load_system(name: str, overrides: dict[str, Any] | None = None) -> SystemConfig:
    """One system from `models/NAME.yaml`, parents resolved, with `overrides` merged last.

    Overrides are CLI-style changes such as `{"beta": 1e-3}` or `{"training": {"batch_size": 4}}`
    (`benchmark.config.override_system`); the file is validated on its own first, so an error
    blames the file or the override it really comes from.
    """
    path = find("models", name)
    data = _system_data(name)
    config = validate(SystemConfig, data, path)
    if config.name != name:
        raise BenchmarkError(f"{path}: field 'name' is '{config.name}' but the file is named '{name}'")
    return override_system(config, overrides or {})


def paper_order(config: SystemConfig) -> tuple[float, ...]:
    """Sort key that lists systems as the paper does: Table 2 rows (which hold the SSL baselines
    and every main system), then rows only in Table 3, then Table 1, then systems beyond the paper."""
    for rank, row in enumerate((config.paper.table2, config.paper.table3, config.paper.table1)):
        if row is not None:
            return (rank, int(row) if row.isdigit() else math.inf)
    return (3, math.inf)


def system_configs() -> dict[str, SystemConfig]:
    """Every system of the registry, in paper order (ties by name)."""
    configs = [load_system(name) for name in sorted(entries("models"))]
    return {config.name: config for config in sorted(configs, key=paper_order)}


def load_study(name: str) -> StudySpec:
    """One study from `studies/NAME.yaml`; the systems and dataset it names must exist."""
    path = find("studies", name)
    spec = load_entry("studies", name, StudySpec)
    systems = [spec.system, *(spec.params[SYSTEM_PARAM].choices or [] if SYSTEM_PARAM in spec.params else [])]
    for system in systems:
        if str(system) not in entries("models"):
            raise BenchmarkError(
                f"{path}: unknown system '{system}'", hint="see `python -m benchmark systems`"
            )
    if spec.dataset not in entries("datasets"):
        raise BenchmarkError(
            f"{path}: field 'dataset': unknown dataset '{spec.dataset}'", hint="see `data list`"
        )
    if spec.backbone not in (backbones := entries("backbones")):
        raise BenchmarkError(
            f"{path}: field 'backbone': unknown backbone '{spec.backbone}'",
            hint=f"known backbones: {', '.join(sorted(backbones))}",
        )
    return spec
