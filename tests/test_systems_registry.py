from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmark import registry
from benchmark.cli import main
from benchmark.errors import BenchmarkError

# docs/architecture.md: name -> (Table 1, Table 2, Table 3 row), targets, schedule.
T, D, E = "transcript", "descriptor", "emotion"
EXPECTED = {
    "ssl-hubert": ((None, "1", None), {T, E}, "ssl"),
    "ssl-wavlm": ((None, "2", None), {T, E}, "ssl"),
    "ssl-wav2vec2": ((None, "3", None), {T, E}, "ssl"),
    "no-fd": (("1", "4", None), {T, D, E}, "alternating"),
    "fd-ser-asr": ((None, "5", "3"), {T, E}, "alternating"),
    "fd-ser-sed": (("2", "6", None), {D, E}, "one-stage"),
    "full": (("3", "7", "4"), {T, D, E}, "alternating"),
    "one-stage": ((None, None, "1"), {D, E}, "one-stage"),
    "two-stage": ((None, None, "2"), {T, D, E}, "two-stage"),
    "joint": ((None, None, None), {T, D, E}, "joint"),
}


def write_system(root: Path, name: str, **fields: Any) -> Path:
    (root / "models").mkdir(exist_ok=True)
    path = root / "models" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **fields}, sort_keys=False))
    return path


def test_every_shipped_system_matches_the_paper_rows():
    systems = registry.system_configs()
    assert list(systems) == list(EXPECTED), "shipped systems or their paper order changed"
    for name, (rows, targets, schedule) in EXPECTED.items():
        config = systems[name]
        assert (config.paper.table1, config.paper.table2, config.paper.table3) == rows, name
        assert set(config.targets) == targets, name
        assert config.schedule == schedule, name


def test_paper_settings_of_the_main_systems():
    full = registry.load_system("full")
    assert full.beta == 1e-4 and full.training.batch_size == 8 and full.decoder.lora_r == 8
    stage1, stage2 = full.stages
    assert (stage1.train, stage1.tasks, stage1.zero_descriptor) == (["content", "llm"], ["asr"], True)
    assert (stage1.epochs, stage1.lr, stage1.scheduler, stage1.warmup_ratio) == (4, 2e-4, "constant", 0.03)
    assert (stage2.train, stage2.tasks, stage2.zero_descriptor) == (
        ["descriptor", "llm"],
        ["ser_sed", "asr"],
        False,
    )
    assert (stage2.epochs, stage2.lr, stage2.scheduler) == (4, 2e-5, "cosine")
    assert registry.load_system("two-stage").stages[1].tasks == ["ser_sed"]
    assert registry.load_system("two-stage").beta == 1e-2
    assert registry.load_system("one-stage").beta == 1.0
    assert registry.load_system("fd-ser-asr").stages[1].tasks == ["ser", "asr"]
    assert not registry.load_system("no-fd").disentangle
    assert registry.load_system("ssl-wavlm").kind == "ssl"
    assert registry.load_system("ssl-wavlm").encoder_family == "wavlm"
    assert len(registry.load_system("joint").stages) == 1


def test_inheritance_merges_mappings_and_stages_and_keeps_paper_rows_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    write_system(tmp_path, "child", inherits="full", title="a variant", decoder={"lora_r": 16})
    write_system(
        tmp_path,
        "grandchild",
        inherits="child",
        title="another",
        paper={"table3": "9"},
        stages=[
            {"name": "content", "drop": True},
            {"name": "descriptor", "drop": True},
            {
                "name": "only",
                "train": ["descriptor", "llm"],
                "tasks": ["ser"],
                "lr": 1e-4,
                "scheduler": "cosine",
            },
        ],
    )
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    child = registry.load_system("child")
    assert child.decoder.lora_r == 16 and child.decoder.lora_alpha == 32  # merged key by key
    assert child.stages == registry.load_system("full").stages
    assert child.paper.table1 is None and child.paper.table3 is None  # full's rows are not claimed
    grandchild = registry.load_system("grandchild")
    assert [stage.name for stage in grandchild.stages] == ["only"]  # full's stages dropped, one added
    assert grandchild.decoder.lora_r == 16 and grandchild.paper.table3 == "9"


def test_inheritance_cycle_names_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_system(tmp_path, "loop-a", inherits="loop-b", title="a")
    write_system(tmp_path, "loop-b", inherits="loop-a", title="b")
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    with pytest.raises(BenchmarkError, match="cycle") as err:
        registry.load_system("loop-a")
    assert "loop-a.yaml" in str(err.value) and "loop-b.yaml" in str(err.value)


def test_name_must_match_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "renamed.yaml").write_text(registry.find("models", "full").read_text())
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    with pytest.raises(BenchmarkError, match="named 'renamed'"):
        registry.load_system("renamed")


def test_unknown_system_lists_the_known_ones():
    with pytest.raises(BenchmarkError) as err:
        registry.load_system("fulll")
    assert "unknown system 'fulll'" in err.value.message
    assert "full" in err.value.hint and "no-fd" in err.value.hint


def test_overrides_apply_last_and_bad_fields_are_named():
    config = registry.load_system("full", {"beta": 1e-3, "training": {"batch_size": 2}})
    assert config.beta == 1e-3 and config.training.batch_size == 2 and config.training.seed == 0
    assert registry.load_system("full").beta == 1e-4
    with pytest.raises(BenchmarkError, match="betta"):
        registry.load_system("full", {"betta": 1e-3})
    with pytest.raises(BenchmarkError, match="field 'beta'"):
        registry.load_system("full", {"beta": -1})


def test_systems_verb_prints_every_system(capsys: pytest.CaptureFixture[str]):
    assert main(["systems"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
    assert "asr | ser_sed+asr" in out
