"""The shipped systems resolve to the configs of tests/data/resolved_systems.json, and the rule by
which a child file's `stages` merge over its parent's (`benchmark.registry.merge_stages`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmark import registry
from benchmark.config import override_system, parse_overrides
from benchmark.errors import BenchmarkError
from benchmark.registry import merge_stages

# Every system's resolved config, recorded before the stages of child files merged by name.
RESOLVED = json.loads((Path(__file__).parent / "data" / "resolved_systems.json").read_text())
SOURCE = Path("models/child.yaml")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"stages": [{"lr": 1}]}` -> `{"stages.0.lr": 1}`; an empty list or mapping is a leaf."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = enumerate(value)
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def test_the_fixture_covers_every_shipped_system():
    assert sorted(registry.entries("models")) == sorted(RESOLVED)


@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_system_resolves_as_recorded(name: str):
    got = flatten(registry.load_system(name).model_dump(mode="json"))
    want = flatten(RESOLVED[name])
    differ = [
        f"{key}: {want.get(key, '(absent)')!r} -> {got.get(key, '(absent)')!r}"
        for key in sorted(set(got) | set(want))
        if got.get(key, "(absent)") != want.get(key, "(absent)")
    ]
    assert not differ, f"{name}: fields differ from the fixture:\n" + "\n".join(differ)


def stage(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "train": ["content", "llm"],
        "tasks": ["asr"],
        "lr": 1e-4,
        "scheduler": "constant",
    } | fields


PARENT = [stage("content", zero_descriptor=True), stage("descriptor", tasks=["ser_sed", "asr"], lr=2e-5)]


def test_a_named_stage_merges_in_place():
    merged = merge_stages(PARENT, [{"name": "content", "lr": 5e-4}], SOURCE)
    assert [s["name"] for s in merged] == ["content", "descriptor"]
    assert merged[0] == PARENT[0] | {"lr": 5e-4} and merged[1] == PARENT[1]
    assert PARENT[0]["lr"] == 1e-4  # the parent's list is left as it was


def test_a_new_stage_is_appended():
    merged = merge_stages(PARENT, [stage("extra", epochs=2)], SOURCE)
    assert [s["name"] for s in merged] == ["content", "descriptor", "extra"]
    assert merged[2]["epochs"] == 2


def test_drop_removes_a_stage_and_dropping_all_replaces_the_list():
    assert merge_stages(PARENT, [{"name": "content", "drop": True}], SOURCE) == [PARENT[1]]
    drop_all = [{"name": "content", "drop": True}, {"name": "descriptor", "drop": True}, stage("only")]
    assert merge_stages(PARENT, drop_all, SOURCE) == [stage("only")]


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "missing", "drop": True},
        {"name": "content", "drop": True, "lr": 1e-3},
        {"name": "content", "drop": False},
    ],
)
def test_drop_takes_only_the_name_of_a_parent_stage(entry: dict[str, Any]):
    with pytest.raises(BenchmarkError, match="drop: true"):
        merge_stages(PARENT, [entry], SOURCE)


def test_an_unknown_partial_stage_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "typo.yaml"
    child = {"name": "typo", "inherits": "full", "title": "t", "stages": [{"name": "descriptr", "lr": 1e-5}]}
    path.write_text(yaml.safe_dump(child))
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    with pytest.raises(BenchmarkError) as err:
        registry.load_system("typo")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "'descriptr'" in message
    assert "content, descriptor" in message and "scheduler" in message


def test_stages_merge_along_the_inheritance_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "models").mkdir()
    for name, parent, stages in [
        ("child", "full", [stage("extra")]),
        ("grandchild", "child", [{"name": "extra", "epochs": 1}, {"name": "content", "drop": True}]),
    ]:
        data = {"name": name, "inherits": parent, "title": name, "stages": stages}
        (tmp_path / "models" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    full = registry.load_system("full").stages
    stages = registry.load_system("grandchild").stages
    assert [(s.name, s.epochs) for s in stages] == [("descriptor", 4), ("extra", 1)]
    assert stages[0] == full[1]


def test_set_stages_still_replaces_the_list_whole():
    full = registry.load_system("full")
    overrides = parse_overrides(["stages=[{name: descriptor, tasks: [ser_sed]}]"])
    with pytest.raises(BenchmarkError, match="stages"):  # not merged into full's descriptor stage
        override_system(full, overrides)
    one = "stages=[{name: only, train: [content, llm], tasks: [asr], lr: 5.0e-4, scheduler: constant}]"
    system = override_system(full, parse_overrides([one]))
    assert [(s.name, s.lr) for s in system.stages] == [("only", 5e-4)]
    assert registry.load_system("full", parse_overrides([one])).stages == system.stages
