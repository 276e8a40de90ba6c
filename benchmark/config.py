"""Typed, validated configuration: YAML files in, pydantic models out, and the overrides on top.

Dataset cards (`datasets/`) and system variants (`models/`) are YAML files checked by pydantic
models with `extra="forbid"`, so a misspelt field is an error that names the file and the field
instead of a silently ignored key. Changes on top of a file (`--set KEY=VALUE`, `--beta`, a
backbone's profile) are nested mappings deep-merged over its fields and validated again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from benchmark.errors import BenchmarkError

T = TypeVar("T", bound=BaseModel)


# The languages of transcripts and descriptors; captioning metrics tokenise Mandarin by character.
Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")


def benchmark_home() -> Path:
    """Where prepared corpora, the demo corpus, cue caches and self-made backbones live.

    `BENCHMARK_HOME` wins; otherwise the XDG cache folder, like HuggingFace's own cache, because
    these are derived artefacts that can always be rebuilt.
    """
    if home := os.environ.get("BENCHMARK_HOME"):
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "explainable-ser"


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning parser errors into one line with the file and line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise BenchmarkError(f"{path}: cannot read ({err.strerror})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else "?"
        raise BenchmarkError(f"{path}:{line}: invalid YAML: {err.problem}") from err
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a mapping of fields at the top level")
    return data


def validate(model: type[T], data: dict[str, Any], source: Path | str) -> T:
    """Build `model` from `data`; the first validation error names the source and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise BenchmarkError(
            f"{source}: field {field!r}: {first['msg']}{more}",
            hint=f"fix the field in {source}; the fields allowed are those of {model.__name__}",
        ) from err


class StrictModel(BaseModel):
    """Unknown fields are errors, and so is a float that is NaN or infinite: no field of the suite
    has a meaning for them, and one would only surface later as a NaN loss or a broken table."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ValidationSpec(StrictModel):
    """Which part of a corpus's training part is held out for validation (exactly one field set).

    - `split`: a split of its own (MELD's `dev`).
    - `groups`: this many of the training groups, the ones after the test group in `folds` order,
      cyclically (the demo corpus's speaker groups).
    - `speakers`: this many speakers of the group after the test group, first in sorted order
      (IEMOCAP: one speaker of a training session; every session has its own two speakers).
    Whichever is used, every utterance of a validation speaker leaves training, so validation and
    training share no speaker wherever the corpus's speakers are distinct people.
    """

    split: str | None = None
    groups: int = Field(0, ge=0)
    speakers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ValidationSpec:
        if sum([self.split is not None, self.groups > 0, self.speakers > 0]) != 1:
            raise ValueError("set exactly one of 'split', 'groups', 'speakers'")
        return self


class SplitProtocol(StrictModel):
    """How a corpus is split for training and evaluation (paper section 4.1).

    - `leave_one_group_out`: k-fold cross-validation where fold k holds out group `folds[k]`
      (IEMOCAP sessions; the demo corpus's speaker groups).
    - `official_splits`: the corpus's own train/dev/test split names (MELD).
    - `zero_shot`: evaluation only, never trained on (EMOSEC).
    - `training_only`: a training corpus with no evaluation split (SpeechCraft).
    """

    kind: Literal["leave_one_group_out", "official_splits", "zero_shot", "training_only"]
    folds: list[str] = Field(default_factory=list)
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    # What `run` trains when no --fold is given: "all", or one group of `folds` where the whole
    # cross-validation would be too slow for a first run (the demo corpus on two CPU cores).
    default_fold: str = "all"
    # Corpora whose training part joins this corpus's in every fold (the paper: SpeechCraft).
    train_with: list[str] = Field(default_factory=list)
    # Per corpus of `train_with`: its task labels -> this corpus's (null: the emotion is not
    # trained on). A label not listed maps to the same label if this corpus has it, else to null.
    label_maps: dict[str, dict[str, str | None]] = Field(default_factory=dict)
    validation: ValidationSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitProtocol:
        if self.kind == "leave_one_group_out" and len(self.folds) < 2:
            raise ValueError("leave_one_group_out needs at least two groups in 'folds'")
        if self.default_fold != "all" and self.default_fold not in self.folds:
            raise ValueError(f"default_fold must be 'all' or one of 'folds', got {self.default_fold!r}")
        if self.kind == "official_splits" and not (self.train and self.test):
            raise ValueError("official_splits needs 'train' and 'test' split names")
        if self.kind == "zero_shot" and not self.test:
            raise ValueError("zero_shot needs a 'test' split name")
        if unlisted := set(self.label_maps) - set(self.train_with):
            raise ValueError(f"label_maps names corpora not in 'train_with': {sorted(unlisted)}")
        spec = self.validation
        if spec is not None and spec.split is None and self.kind != "leave_one_group_out":
            raise ValueError("validation by 'groups' or 'speakers' needs a leave_one_group_out protocol")
        if spec is not None and spec.groups >= len(self.folds) - 1 and spec.groups:
            raise ValueError("validation 'groups' must leave at least one group to train on")
        return self


class DatasetCard(StrictModel):
    """One corpus: its labels, how raw labels map to the task's, its splits and on-disk layout."""

    name: str
    title: str
    citation: str
    homepage: str
    license: str
    reader: Literal["demo", "iemocap", "meld", "speechcraft", "emosec"]
    tasks: list[Literal["ser", "asr", "sed"]]
    sample_rate: int = 16000
    language: Language = "en"
    labels: list[str] = Field(default_factory=list)
    # Raw corpus label -> task label; a null value drops utterances with that raw label on purpose
    # (e.g. IEMOCAP's frustration), which is reported, not treated as a bad row.
    label_map: dict[str, str | None] = Field(default_factory=dict)
    splits: list[str]
    protocol: SplitProtocol
    layout: str
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> DatasetCard:
        unknown = {v for v in self.label_map.values() if v is not None} - set(self.labels)
        if unknown:
            raise ValueError(f"label_map maps to labels not in 'labels': {sorted(unknown)}")
        validation = self.protocol.validation
        named = {self.protocol.train, self.protocol.dev, self.protocol.test} - {None}
        named |= {validation.split} if validation and validation.split else set()
        if missing := named - set(self.splits):
            raise ValueError(f"protocol names splits not in 'splits': {sorted(missing)}")
        if "ser" in self.tasks and not self.labels:
            raise ValueError("a corpus with the 'ser' task needs 'labels'")
        return self

    def map_label(self, raw: str) -> tuple[bool, str | None]:
        """Return (known, label): known is False for a raw label the card does not mention."""
        key = raw.strip()
        if key in self.label_map:
            return True, self.label_map[key]
        lowered = {k.lower(): v for k, v in self.label_map.items()}
        if key.lower() in lowered:
            return True, lowered[key.lower()]
        if key.lower() in self.labels:
            return True, key.lower()
        return False, None


# ---------------------------------------------------------------------------------------------
# Systems (models/*.yaml): the paper's Tables 1-3 rows and our additions.
# ---------------------------------------------------------------------------------------------

Module = Literal["content", "descriptor", "llm"]
# What one batch asks the LLM to write (benchmark.data.tasks.format_response):
#   asr -> transcript; ser -> emotion; ser_sed -> descriptor + emotion; full -> all three.
Task = Literal["asr", "ser", "ser_sed", "full"]


class StageConfig(StrictModel):
    """One stage of a schedule (paper section 3.5 and 4.4).

    `train` names the modules whose weights update (`llm` = LoRA adapters, or every LLM weight
    in the `full` regime); everything else is frozen. `tasks` are interleaved batch by batch.
    `zero_descriptor` replaces the descriptor tokens by zeros (stage 1 of the alternating schedule).
    """

    name: str
    train: list[Module]
    tasks: list[Task]
    zero_descriptor: bool = False
    epochs: int = Field(4, ge=0)
    lr: float = Field(gt=0)
    scheduler: Literal["constant", "cosine"]
    warmup_ratio: float = Field(0.03, ge=0, lt=1)


class BottleneckConfig(StrictModel):
    """The IB-VAE sizes and how the VIB loss (paper eq. 2 and 4) is reduced over a batch.

    `loss_reduction`:
    - `paper`: eq. 2 as written: per example, the sum of its response tokens' cross-entropies
      (eq. 4) plus beta times the KL of its whole latent sequence (summed over frames and latent
      dimensions); the batch loss is the mean over examples.
    - `token_mean`: the mean cross-entropy over the batch's response tokens plus beta times the KL
      summed over latent dimensions and averaged over frames. Relative to the cross-entropy, the
      same beta then weighs the KL about (encoder frames / response tokens) times less than
      under `paper`: the paper's beta = 1e-4 is not this reduction's 1e-4.
    """

    hidden_dim: int = 256
    latent_dim: int = 128
    loss_reduction: Literal["paper", "token_mean"] = "token_mean"
    # `scale_preserving`: He init before the GELUs, unit gain for the mean head (why: the
    # docstring of benchmark.nn.bottleneck); `pytorch`: PyTorch's default Linear init.
    init: Literal["scale_preserving", "pytorch"] = "scale_preserving"


class AdapterConfig(StrictModel):
    stack: int = Field(5, ge=1)
    hidden_dim: int = 512


class TinyLLMSettings(StrictModel):
    """Sizes of the random Llama of the `tiny` and `demo` backbones (the paper's LLM ignores them)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128


class DecoderSettings(StrictModel):
    """The LLM and how it trains; `regime: full` trains every weight (random tiny LLMs).

    The last four fields (and `lora_dropout: 0`) are speed and memory switches, all off by default;
    `measurements/gpu_check.py` measures them (docs/paper-scale.md).
    - `loss_logits_only`: the output layer runs only at the positions that predict a response
      token, not over the whole prompt and speech; the loss is the same up to float rounding.
    - `lora_dtype: bfloat16`: LoRA weights (and their AdamW state) in bf16 like the base LLM;
      peft otherwise keeps them in float32, with a cast around every adapted projection.
    - `compile_layers`: `torch.compile` each decoder layer (one graph, reused by all of them).
    - `gradient_checkpointing`: recompute each decoder layer's activations in the backward pass;
      saves memory at the cost of extra compute.
    """

    regime: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    max_new_tokens: int = 96
    tiny: TinyLLMSettings = Field(default_factory=TinyLLMSettings)
    loss_logits_only: bool = False
    lora_dtype: Literal["float32", "bfloat16"] = "float32"
    compile_layers: bool = False
    gradient_checkpointing: bool = False


class TrainingSettings(StrictModel):
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    # Trainings per fold (`run --seeds K`): the k-th uses seed + k, so seeds=1 is the run of `seed`.
    seeds: int = Field(1, ge=1)

    def seed_values(self) -> list[int]:
        """The seed of each training of a fold, the system's own first."""
        return [self.seed + k for k in range(self.seeds)]


class SSLSettings(StrictModel):
    """The SSL baselines' heads (`kind: ssl`): one training run instead of LLM stages.

    Batch size, seed, weight decay and clipping come from `training`, as for the LLM systems.
    """

    epochs: int = Field(30, ge=0)
    lr: float = Field(1e-3, gt=0)
    hidden_dim: int = Field(256, ge=1)
    # The encoder's top transformer layers that train with the heads: 0 keeps it frozen and its
    # hidden states cached (the SUPERB convention), "all" fine-tunes every transformer layer.
    finetune_layers: Annotated[int, Field(ge=0)] | Literal["all"] = 0
    # Peak learning rate of the fine-tuned encoder layers (the heads use `lr`).
    encoder_lr: float = Field(5e-5, gt=0)


class PaperRow(StrictModel):
    """Where the system appears in the paper (None: not in that table)."""

    table1: str | None = None
    table2: str | None = None
    table3: str | None = None


class SystemConfig(StrictModel):
    """A system variant: architecture, targets, schedule and its stages.

    `kind: llm` is the paper's architecture (encoder -> bottleneck(s) -> adapter(s) -> LLM);
    `kind: ssl` the fine-tuned SSL baselines (weighted sum + classifier head for SER, CTC head
    for ASR). `disentangle: false` drops the IB-VAE and uses one adapter on the weighted layer
    sum (Table 2 Sys. 4). Files may name a parent with `inherits:` (resolved by the registry
    before validation); fields given here override the parent's, mappings merge key by key and
    `stages` by stage name (`benchmark.registry.merge_stages`).
    """

    name: str
    title: str
    description: str = ""
    paper: PaperRow = Field(default_factory=PaperRow)
    kind: Literal["llm", "ssl"] = "llm"
    encoder_family: Literal["hubert", "wavlm", "wav2vec2"] = "hubert"
    disentangle: bool = True
    beta: float = Field(1e-4, ge=0)
    targets: list[Literal["transcript", "descriptor", "emotion"]]
    schedule: Literal["alternating", "two-stage", "one-stage", "joint", "ssl"]
    stages: list[StageConfig] = Field(default_factory=list)
    bottleneck: BottleneckConfig = Field(default_factory=BottleneckConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    decoder: DecoderSettings = Field(default_factory=DecoderSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    ssl: SSLSettings = Field(default_factory=SSLSettings)

    @model_validator(mode="after")
    def _check(self) -> SystemConfig:
        if self.kind == "llm" and not self.stages:
            raise ValueError("an llm system needs at least one stage")
        for stage in self.stages:
            if "descriptor" in stage.train and not self.disentangle:
                raise ValueError(f"stage '{stage.name}' trains 'descriptor' but the system has one branch")
            needs = {"asr": {"transcript"}, "ser": {"emotion"}, "ser_sed": {"descriptor", "emotion"}}
            needs["full"] = {"transcript", "descriptor", "emotion"}
            for task in stage.tasks:
                if missing := needs[task] - set(self.targets):
                    raise ValueError(f"stage '{stage.name}' task '{task}' needs targets {sorted(missing)}")
        return self


# ---------------------------------------------------------------------------------------------
# Studies (studies/*.yaml): Optuna searches over system fields, each trial a `benchmark run`.
# ---------------------------------------------------------------------------------------------

ParamValue = str | int | float | bool
SYSTEM_PARAM = "system"  # the one parameter that is not a config field: it picks the variant


class SearchParam(StrictModel):
    """One searched parameter: a float or int range (`log` for a log-uniform one) or choices.

    Its name in `StudySpec.params` is the system field it sets, dotted for a nested one (`beta`,
    `decoder.lora_r`, `stages` cannot be searched: a list is set whole), or `system`, which picks
    the system variant itself (Table 3 rows differ in their system).
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[ParamValue] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical parameter takes 'choices' only")
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter takes 'low' and 'high', not 'choices'")
        if not self.low < self.high:
            raise ValueError("'low' must be below 'high'")
        if self.log and self.low <= 0:
            raise ValueError("a log-uniform parameter needs 'low' > 0")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("an int parameter needs integer 'low' and 'high'")
        return self

    def admits(self, value: object) -> bool:
        if self.type == "categorical":
            return value in (self.choices or [])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.type == "float" or float(value).is_integer())


def _validation_metric(metric: str) -> str:
    if not metric.startswith("val."):
        raise ValueError(
            f"'{metric}' is not a validation metric: a study is decided on val.* metrics only "
            "(the test part is touched once, by the refit of the best trial)"
        )
    return metric


class ObjectiveSpec(StrictModel):
    """What a trial returns: a validation metric of its run (the mean over its folds)."""

    metric: str
    direction: Literal["maximize", "minimize"]

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        _validation_metric(self.metric)
        return self


class SamplerSpec(StrictModel):
    """`tpe` (with `startup_trials` random ones first) or `random`; `queue` runs the `fixed` trials only."""

    kind: Literal["tpe", "random", "queue"] = "tpe"
    seed: int = 0
    startup_trials: int = Field(4, ge=0)


class PrunerSpec(StrictModel):
    """Stop a trial early on a per-epoch validation metric (`val.ce`: the teacher-forced loss that
    `benchmark.train.loop` logs every epoch, cheap and independent of beta's KL weight)."""

    kind: Literal["none", "median"] = "none"
    metric: str = "val.ce"
    direction: Literal["maximize", "minimize"] = "minimize"
    startup_trials: int = Field(2, ge=0)  # trials that always run to the end first
    warmup_steps: int = Field(0, ge=0)  # epochs of every trial that are never pruned

    @model_validator(mode="after")
    def _check(self) -> PrunerSpec:
        _validation_metric(self.metric)
        return self


class StudySpec(StrictModel):
    """An Optuna study over one dataset and backbone: its search space, sampler, pruner, trials.

    Every trial is `benchmark run` with `--validation` and no test evaluation, on the given
    `fold` (None: the card's default); `overrides` (like `--set`) and `epochs` apply to every trial
    and to the refit. `fixed` trials (Table 3's rows) are queued in order before any is sampled;
    with the `queue` sampler they are the whole study. `refit: best` trains the best trial's
    parameters again on the full training part and scores the test part; `every` refits each
    complete trial (a table of rows, not a search).
    """

    name: str
    title: str
    description: str = ""
    paper: str = ""  # where the paper reports what the study reproduces
    system: str
    dataset: str = "demo"
    backbone: str = "demo"  # a backbone of the registry, one without random weights
    fold: str | None = None
    objective: ObjectiveSpec
    params: dict[str, SearchParam]
    fixed: list[dict[str, ParamValue]] = Field(default_factory=list)
    trials: int | None = Field(None, ge=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    overrides: dict[str, Any] = Field(default_factory=dict)
    epochs: int | None = Field(None, ge=1)
    refit: Literal["best", "every"] = "best"
    max_retries: int = Field(3, ge=0)  # re-runs of a trial whose worker died or was stopped

    @field_validator("params")
    @classmethod
    def _some_params(cls, params: dict[str, SearchParam]) -> dict[str, SearchParam]:
        if not params:
            raise ValueError("names no parameter to search")
        return params

    @field_validator("fixed")
    @classmethod
    def _fixed_in_space(cls, fixed: list[dict[str, ParamValue]], info: ValidationInfo) -> list:
        params: dict[str, SearchParam] = info.data.get("params") or {}
        for index, row in enumerate(fixed):
            if set(row) != set(params):
                raise ValueError(f"trial {index + 1} must give just the params {sorted(params)}")
            for name, value in row.items():
                if not params[name].admits(value):
                    raise ValueError(f"trial {index + 1}: {name}={value!r} is outside its search space")
        return fixed

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if self.sampler.kind == "queue" and not self.fixed:
            raise ValueError("the 'queue' sampler runs the 'fixed' trials, and there are none")
        if self.sampler.kind == "queue" and self.trials not in (None, len(self.fixed)):
            raise ValueError(f"a 'queue' study runs its {len(self.fixed)} fixed trials; drop 'trials'")
        if self.sampler.kind != "queue" and self.trials is None:
            raise ValueError("'trials' is needed unless the sampler is 'queue'")
        if self.trials is not None and self.trials < len(self.fixed):
            raise ValueError(f"'trials' ({self.trials}) is fewer than the {len(self.fixed)} fixed trials")
        return self

    @property
    def n_trials(self) -> int:
        return self.trials if self.trials is not None else len(self.fixed)


def dotted_override(key: str, value: Any) -> dict[str, Any]:
    """`("decoder.lora_r", 4)` -> `{"decoder": {"lora_r": 4}}`: a dotted key as nested mappings."""
    *parents, leaf = key.split(".")
    node: dict[str, Any] = {leaf: value}
    for part in reversed(parents):
        node = {part: node}
    return node


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set training.batch_size=4 --set decoder.regime=lora` -> a nested mapping (YAML values).

    A dotted key names nested mappings only; a list field such as `stages` is given whole, as a
    YAML flow list (`--set 'stages=[{...}]'`).
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchmarkError(f"--set {pair!r}: expected KEY=VALUE, e.g. training.batch_size=4")
        overrides = merge_configs(overrides, dotted_override(key, yaml.safe_load(value)))
    return overrides


def override_system(system: SystemConfig, overrides: dict[str, Any]) -> SystemConfig:
    """`system` with `overrides` deep-merged over its fields (`merge_configs`) and validated again.

    The error of a bad value names the overrides it came from, not the system's file, which was
    valid on its own. `name` and `inherits` cannot change: the name is the run's identity.
    """
    if not overrides:
        return system
    if "name" in overrides or "inherits" in overrides:
        raise BenchmarkError(f"overrides of system '{system.name}' cannot change 'name' or 'inherits'")
    merged = merge_configs(system.model_dump(), overrides)
    return validate(SystemConfig, merged, f"system '{system.name}' with overrides {overrides}")


def merge_configs(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Child fields override the parent's; nested mappings merge key by key, lists are replaced."""
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = value
    return merged
