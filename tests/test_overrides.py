"""The precedence of a run's config layers, one test per step:
system YAML < backbone profile < --beta < --set < --epochs (`resolve_system`)."""

from __future__ import annotations

import pytest

from benchmark.config import SystemConfig, parse_overrides
from benchmark.errors import BenchmarkError
from benchmark.nn.backbones import get_backbone
from benchmark.workflows.run import RunRequest, resolve_system

# One stage in the YAML flow syntax that `--set stages=...` takes.
ONE_STAGE = (
    "stages=[{name: only, train: [content, llm], tasks: [asr], epochs: 3, lr: 5.0e-4, scheduler: constant}]"
)


def resolve(backbone: str = "demo", **request) -> SystemConfig:
    return resolve_system(RunRequest(system=request.pop("system", "full"), **request), get_backbone(backbone))


def test_set_pairs_parse_to_nested_yaml_values():
    assert parse_overrides(
        ["training.batch_size=4", "training.seed=1", "decoder.regime=lora", "beta=1.0e-3"]
    ) == {
        "training": {"batch_size": 4, "seed": 1},
        "decoder": {"regime": "lora"},
        "beta": 1e-3,
    }
    assert parse_overrides([ONE_STAGE])["stages"][0]["lr"] == 5e-4
    for bad in ("training.batch_size", "=4"):
        with pytest.raises(BenchmarkError, match="expected KEY=VALUE"):
            parse_overrides([bad])


def test_backbone_profile_overrides_the_system_yaml():
    paper = resolve("paper")  # no profile: the YAML as written
    assert paper.decoder.regime == "lora"
    assert [(s.lr, s.epochs) for s in paper.stages] == [(2e-4, 4), (2e-5, 4)]
    demo = resolve("demo")
    assert demo.decoder.regime == "full"
    assert [(s.lr, s.epochs) for s in demo.stages] == [(1e-3, 24), (1e-3, 24)]
    # every other field of the stages stays the YAML's
    assert [s.model_copy(update={"lr": 0.1, "epochs": 1}) for s in demo.stages] == [
        s.model_copy(update={"lr": 0.1, "epochs": 1}) for s in paper.stages
    ]
    tiny = resolve("tiny")  # only the regime
    assert tiny.decoder.regime == "full" and tiny.stages == paper.stages


def test_beta_overrides_the_backbone_profile():
    demo = resolve("demo", beta=1e-2)
    assert demo.beta == 1e-2
    assert demo.decoder.regime == "full" and [s.lr for s in demo.stages] == [1e-3, 1e-3]
    assert resolve("demo").beta == 1e-4


def test_set_overrides_beta():
    assert resolve("demo", beta=1e-2, overrides=parse_overrides(["beta=1e-3"])).beta == 1e-3


def test_set_overrides_the_backbone_profile():
    # a field of the profile's mapping: the user's value wins
    assert resolve("demo", overrides=parse_overrides(["decoder.regime=lora"])).decoder.regime == "lora"
    # another field of the same mapping: merged, the profile's regime stays
    rank = resolve("demo", overrides=parse_overrides(["decoder.lora_r=4"]))
    assert (rank.decoder.regime, rank.decoder.lora_r) == ("full", 4)
    # the stages given whole keep their own learning rate and epochs, not the demo's 1e-3 and 6x
    stages = resolve("demo", overrides=parse_overrides([ONE_STAGE])).stages
    assert [(s.name, s.lr, s.epochs) for s in stages] == [("only", 5e-4, 3)]


def test_epochs_override_set():
    stages = resolve("demo", overrides=parse_overrides([ONE_STAGE]), epochs=1).stages
    assert [(s.lr, s.epochs) for s in stages] == [(5e-4, 1)]
    ssl = resolve("demo", system="ssl-wavlm", overrides=parse_overrides(["ssl.epochs=5"]), epochs=2)
    assert ssl.ssl.epochs == 2
    assert resolve("demo", system="ssl-wavlm", overrides=parse_overrides(["ssl.epochs=5"])).ssl.epochs == 5


def test_a_bad_set_value_names_the_override_not_the_profile():
    with pytest.raises(BenchmarkError) as err:
        resolve("demo", overrides=parse_overrides(["training.batch_sise=2"]))
    assert "batch_sise" in err.value.message and "stages" not in err.value.message
    with pytest.raises(BenchmarkError, match="cannot change 'name'"):
        resolve("demo", overrides=parse_overrides(["name=other"]))
