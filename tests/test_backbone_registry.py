"""The backbone registry (`models/backbones/`): the shipped entries, validation, shadowing, `doctor`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmark import registry
from benchmark.config import DecoderSettings
from benchmark.environment import backbone_checks
from benchmark.errors import BenchmarkError
from benchmark.nn.backbones import backbones, get_backbone
from benchmark.nn.decoder import build_decoder
from benchmark.study.search import StudyRequest, resolve_spec

HUBERT, LLAMA = "facebook/hubert-large-ls960-ft", "meta-llama/Llama-3.1-8B-Instruct"
PAPER_ENCODERS = {
    "hubert": HUBERT, "wavlm": "microsoft/wavlm-large", "wav2vec2": "facebook/wav2vec2-large-960h-lv60-self",
}  # fmt: skip
TINY = dict.fromkeys(PAPER_ENCODERS, "tiny")
# name -> encoder, llm, dtype, decoder_regime, features, stage_lr, epoch_scale, random_weights
LLAMA_3B = "meta-llama/Llama-3.2-3B-Instruct"
SHIPPED = {
    "demo": ({"hubert": "demo"}, "tiny", "float32", "full", "cache", 1e-3, 6, False),
    "llama-3.2-3b": ({"hubert": HUBERT}, LLAMA_3B, "bfloat16", None, "online", None, 1, False),
    "paper": (PAPER_ENCODERS, LLAMA, "bfloat16", None, "online", None, 1, False),
    "paper-shape": ({"hubert": HUBERT}, LLAMA, "bfloat16", None, "online", None, 1, True),
    "tiny": (TINY, "tiny", "float32", "full", "cache", None, 1, False),
}
FIELDS = "encoder", "llm", "dtype", "decoder_regime", "features", "stage_lr", "epoch_scale", "random_weights"


def user_backbone(root: Path, file: str, **changes) -> Path:
    """`root/models/backbones/FILE.yaml`: the shipped `tiny` named FILE, with `changes`."""
    folder = root / "models" / "backbones"
    folder.mkdir(parents=True, exist_ok=True)
    data = {**get_backbone("tiny").model_dump(), "name": file, **changes}
    (folder / f"{file}.yaml").write_text(yaml.safe_dump(data))
    return folder / f"{file}.yaml"


def test_every_shipped_backbone_has_its_fields():
    found = {name: tuple(getattr(b, field) for field in FIELDS) for name, b in backbones().items()}
    assert found == SHIPPED


def test_backbones_are_not_systems():
    assert set(registry.entries("backbones")) == set(SHIPPED)
    assert not set(registry.entries("models")) & set(SHIPPED)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"features": "disk"}, "features"),
        ({"encoder": {"wavlm": "demo"}}, "encoder"),
        ({"llm": "llama"}, "llm"),
    ],
)
def test_a_bad_field_is_one_line_naming_file_and_field(
    changes: dict, field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    user_backbone(tmp_path, "mine", **changes)
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    with pytest.raises(BenchmarkError) as err:
        get_backbone("mine")
    assert "mine.yaml" in err.value.message and f"'{field}" in err.value.message
    assert "\n" not in err.value.message


def test_a_registry_folder_shadows_and_adds_backbones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    user_backbone(tmp_path, "paper", llm="someone/other-llm")
    user_backbone(tmp_path, "other", name="mine")
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(tmp_path))
    assert get_backbone("paper").llm == "someone/other-llm" and get_backbone("demo").llm == "tiny"
    with pytest.raises(BenchmarkError, match="named 'other'"):
        get_backbone("other")
    with pytest.raises(BenchmarkError, match="unknown backbone 'nosuch'") as err:
        get_backbone("nosuch")
    assert "llama-3.2-3b" in err.value.hint


def test_the_llm_checkpoint_comes_from_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BENCHMARK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BenchmarkError) as err:
        build_decoder(DecoderSettings(), "llama-3.2-3b")
    assert LLAMA_3B in err.value.message and LLAMA_3B in err.value.hint


def test_a_family_the_backbone_lacks_is_one_line():
    with pytest.raises(BenchmarkError, match="backbone 'paper-shape' has no wavlm encoder") as err:
        get_backbone("paper-shape").encoder_checkpoint("wavlm")
    assert err.value.hint == "backbones with one: paper, tiny"


def test_a_study_refuses_random_weights():
    with pytest.raises(BenchmarkError, match="random weights"):
        resolve_spec(StudyRequest("beta", backbone="paper-shape"))


def test_doctor_lists_every_backbone_and_where_its_weights_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("BENCHMARK_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hubert-large-ls960-ft").mkdir()
    (tmp_path / "hubert-large-ls960-ft" / "config.json").write_text("{}")
    checks = {check.name: check for check in backbone_checks()}
    assert {name.split(":")[0] for name in checks} == set(SHIPPED)
    for name in ("paper: encoder hubert", "llama-3.2-3b: encoder hubert"):
        assert checks[name].ok and checks[name].detail == str(tmp_path / "hubert-large-ls960-ft")
    assert checks["paper: llm"].ok is False and LLAMA in checks["paper: llm"].detail
    assert checks["paper-shape: llm"].ok and "RANDOM" in checks["paper-shape: llm"].detail
    assert checks["tiny: encoder wavlm"].ok and checks["demo: encoder hubert"].ok is None  # not built
