"""The trained model a fold run logs (`model/system.pt`), and its rebuild long after the run.

`benchmark evaluate` and `benchmark explain` need the exact model, so each fold run logs:
- LLM systems: the module-group weights (both branches, the LoRA adapters); the frozen base LLM is
  rebuilt from its own checkpoint and the random tiny LLM from the system's seed;
- SSL baselines: the whole `SSLBaseline` state and its labels, the classifier's classes in order.
The file also records the model's kind, the resolved system config, the backbone and the
encoder's shape (hidden states, width), which the rebuild checks against the encoder it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.config import SystemConfig
from benchmark.errors import BenchmarkError
from benchmark.nn.backbones import get_backbone
from benchmark.nn.encoder import SpeechEncoder, build_encoder
from benchmark.nn.hub import weights_digest
from benchmark.nn.ssl_baseline import SSLBaseline
from benchmark.nn.system import SpeechEmotionCaptioner, build_system
from benchmark.train.checkpoint import group_weights, load_group_weights
from benchmark.train.demo_backbone import encoder_weights
from benchmark.train.ssl import build_ssl_baseline, pretrained_top_layers

TrainedModel = SpeechEmotionCaptioner | SSLBaseline
ARTIFACT = Path("model/system.pt")  # where each fold run logs its trained model


def export_trained_model(
    model: TrainedModel, system: SystemConfig, path: Path, backbone: str, encoder_shape: tuple[int, int]
) -> Path:
    """Write `model` of `system` with what `rebuild_trained_model` needs (module docstring) to `path`."""
    weights: dict[str, Any]
    if isinstance(model, SSLBaseline):
        state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
        weights = {"state": state, "labels": model.labels}
    else:
        weights = {"groups": group_weights(model)}
    metadata = {"kind": system.kind, "system": system.model_dump(mode="json"), "backbone": backbone}
    torch.save({**weights, **metadata, "encoder_shape": list(encoder_shape)}, path)
    return path


def rebuild_trained_model(saved: dict[str, Any], encoder: SpeechEncoder, source: str) -> TrainedModel:
    """The model of a file `export_trained_model` wrote (`saved`, as loaded), in eval mode.

    `encoder` is the frozen encoder of the file's backbone: its shape must match, and an SSL
    baseline that fine-tuned top layers takes their structure from it. `source` names the file
    in errors. Files written before the kind was recorded are LLM systems.
    """
    system = SystemConfig.model_validate(saved["system"])
    shape = [encoder.num_layers, encoder.hidden_size]
    if shape != saved["encoder_shape"]:
        raise BenchmarkError(
            f"{source}: encoder shape {saved['encoder_shape']}, but the {encoder.key} encoder's is {shape}"
        )
    if saved.get("kind", "llm") == "ssl":
        model: TrainedModel = build_ssl_baseline(
            system, *shape, saved["labels"], top_layers=pretrained_top_layers(system, encoder)
        )
        model.load_state_dict(saved["state"])
    else:
        torch.manual_seed(system.training.seed)  # the same random tiny LLM the weights were trained on
        model = build_system(system, *shape, backbone=saved["backbone"])
        load_group_weights(model, saved["groups"], source)
    return model.eval()


def frozen_encoder(backbone: str, family: str) -> SpeechEncoder:
    """The frozen encoder of the registry's `backbone` for a system of `family`: the one way a run,
    an evaluation and an explanation get theirs, the demo backbone's weights built first if absent."""
    return build_encoder(backbone, family, encoder_weights(backbone))


def weights_params(backbone: str, system: SystemConfig) -> dict[str, str]:
    """Params naming the weights a run of `system` on the registry's `backbone` loads, so a result
    can be traced to them: `backbone.encoder_checkpoint` and, for LLM systems,
    `backbone.llm_checkpoint` (the folder read, or `random` for weights built at random), and
    `backbone.weights_digest` of those folders (`benchmark.nn.hub.weights_digest`; `random` when
    no folder is read)."""
    spec = get_backbone(backbone)
    encoder = spec.encoder_checkpoint(system.encoder_family)
    folders = {"encoder": encoder_weights(backbone) or spec.hub_folder(encoder)}
    if system.kind == "llm":  # an SSL baseline loads no LLM
        folders["llm"] = spec.hub_folder(spec.llm)
    params = {f"backbone.{part}_checkpoint": str(folder or "random") for part, folder in folders.items()}
    read = [folder for folder in folders.values() if folder is not None]
    params["backbone.weights_digest"] = weights_digest(read) if read else "random"
    return params


def load_trained_model(saved: dict[str, Any], source: str) -> tuple[TrainedModel, SpeechEncoder]:
    """The model of a file `export_trained_model` wrote (`saved`, as loaded), and its frozen encoder."""
    system = SystemConfig.model_validate(saved["system"])
    encoder = frozen_encoder(saved["backbone"], system.encoder_family)
    return rebuild_trained_model(saved, encoder, source), encoder
