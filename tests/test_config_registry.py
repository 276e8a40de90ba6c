from __future__ import annotations

from pathlib import Path

import pytest

from benchmark import registry
from benchmark.config import DatasetCard, load_yaml, validate
from benchmark.data.splits import fold_names
from benchmark.errors import BenchmarkError

CARD_NAMES = {"demo", "iemocap", "meld", "speechcraft", "emosec"}


def test_every_shipped_card_validates():
    cards = registry.dataset_cards()
    assert set(cards) >= CARD_NAMES
    assert cards["iemocap"].labels == ["neutral", "happy", "angry", "sad"]
    assert cards["iemocap"].map_label("exc") == (True, "happy")
    assert cards["iemocap"].map_label("fru") == (True, None)
    assert cards["iemocap"].map_label("zzz") == (False, None)
    assert len(cards["meld"].labels) == 7
    assert cards["demo"].protocol.folds == ["1", "2", "3", "4", "5"]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(BenchmarkError) as err:
        registry.load_dataset_card("iemocapp")
    assert "unknown dataset 'iemocapp'" in err.value.message
    assert "iemocap" in err.value.hint and "meld" in err.value.hint


def test_invalid_yaml_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nlabels: [a, b\nother: 1\n")
    with pytest.raises(BenchmarkError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_yaml(path)


def test_misspelt_field_names_file_and_field(tmp_path: Path):
    data = load_yaml(registry.find("datasets", "meld"))
    data["lables"] = data.pop("labels")
    with pytest.raises(BenchmarkError) as err:
        validate(DatasetCard, data, tmp_path / "meld.yaml")
    assert "meld.yaml" in err.value.message and "lables" in err.value.message


def test_run_without_fold_takes_the_cards_default_fold():
    cards = registry.dataset_cards()
    assert fold_names(cards["demo"]) == [cards["demo"].protocol.default_fold]
    assert fold_names(cards["demo"], "all") == ["1", "2", "3", "4", "5"]
    assert fold_names(cards["iemocap"]) == [f"Session{k}" for k in range(1, 6)]  # the paper's 5-fold CV
    assert fold_names(cards["meld"]) == ["test"]


def test_default_fold_must_be_a_fold():
    data = load_yaml(registry.find("datasets", "demo"))
    data["protocol"]["default_fold"] = "6"
    with pytest.raises(BenchmarkError) as err:
        validate(DatasetCard, data, "demo.yaml")
    assert "demo.yaml" in err.value.message and "default_fold" in err.value.message


def test_label_map_must_target_known_labels():
    data = load_yaml(registry.find("datasets", "iemocap"))
    data["label_map"]["exc"] = "excited"
    with pytest.raises(BenchmarkError, match="excited"):
        validate(DatasetCard, data, "iemocap.yaml")


def test_user_registry_shadows_shipped_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = load_yaml(registry.find("datasets", "meld"))
    (tmp_path / "datasets").mkdir()
    text = registry.find("datasets", "meld").read_text().replace(data["title"], "My MELD copy")
    (tmp_path / "datasets" / "meld.yaml").write_text(text)
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    assert registry.load_dataset_card("meld").title == "My MELD copy"
    assert registry.load_dataset_card("iemocap").name == "iemocap"


def test_card_name_must_match_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "other.yaml").write_text(registry.find("datasets", "meld").read_text())
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    with pytest.raises(BenchmarkError, match="named 'other'"):
        registry.load_dataset_card("other")
