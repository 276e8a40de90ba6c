"""What this machine has: packages, Java, GPUs, DeepSpeed, backbones, corpora, metrics.

`python -m benchmark doctor` prints it; runs log it as their `environment` artifact, so a number
in MLflow can always be traced to the software and hardware that produced it.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

from benchmark.config import benchmark_home
from benchmark.data.prepare import is_prepared, manifest_path, prepared_dir
from benchmark.errors import BenchmarkError
from benchmark.eval.captioning import CAPTION_METRICS, available_caption_metrics
from benchmark.nn.backbones import Backbone, backbones
from benchmark.nn.hub import local_checkpoint
from benchmark.registry import dataset_cards

PACKAGES = [
    "torch", "transformers", "peft", "deepspeed", "mlflow", "optuna", "optuna-integration",
    "pycocoevalcap", "jiwer", "statsmodels", "scipy", "numpy", "soundfile", "soxr", "av",
    "opensmile", "espeakng-loader", "pydantic", "captum",
]  # fmt: skip


@dataclass(frozen=True)
class Check:
    """One line of the report: `ok` is True (usable), False (missing) or None (not applicable)."""

    section: str
    name: str
    ok: bool | None
    detail: str


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def java_version() -> str | None:
    """The `java -version` line, or None without Java (METEOR and SPICE need it)."""
    if shutil.which("java") is None:
        return None
    proc = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[0] if lines else "java (version unknown)"


def gpu_checks() -> list[Check]:
    import torch

    if not torch.cuda.is_available():
        return [Check("hardware", "GPU", None, f"none (CPU only; {os.cpu_count()} cores)")]
    checks = [
        Check("hardware", "CUDA", True, f"CUDA {torch.version.cuda}, bf16={torch.cuda.is_bf16_supported()}")
    ]
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        checks.append(
            Check("hardware", f"GPU {index}", True, f"{props.name}, {props.total_memory / 2**30:.0f} GiB")
        )
    return checks


# Run in a child process by `deepspeed_check`: the last line of its standard output is the result.
_DEEPSPEED_PROBE = """
import json
from deepspeed.accelerator import get_accelerator
print(json.dumps(get_accelerator().device_name()))
"""


def deepspeed_check() -> Check:
    """DeepSpeed's version and the accelerator it picks (CPU when DS_ACCELERATOR=cpu or no GPU).

    The version comes from the package metadata. Whether DeepSpeed imports, and which accelerator it
    picks, is asked of a child process (`_deepspeed_accelerator`) unless DeepSpeed is already
    imported here (a run under `--deepspeed`): importing it takes seconds and logs "Setting
    accelerator to CPU ..." to standard output on a machine without a GPU, so only runs that train
    under DeepSpeed import it (docs/architecture.md, "Layers").
    """
    try:
        version = metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        return Check("software", "deepspeed", False, "not installed")
    if "deepspeed" in sys.modules:
        from deepspeed.accelerator import get_accelerator

        accelerator, error = get_accelerator().device_name(), None
    else:
        accelerator, error = _deepspeed_accelerator(os.environ.get("DS_ACCELERATOR"))
    if error is not None:
        return Check("software", "deepspeed", False, f"{version}, cannot import: {error}")
    return Check("software", "deepspeed", True, f"{version}, accelerator={accelerator}")


@functools.cache  # once per process (and DS_ACCELERATOR): every run of a study logs the environment
def _deepspeed_accelerator(ds_accelerator: str | None) -> tuple[str | None, str | None]:
    """(accelerator name, None), or (None, why DeepSpeed cannot be imported), from a child process
    whose output is read, not shown. An import of DeepSpeed can fail in many ways (ops, CUDA
    mismatch), even crash the interpreter; the child keeps all of it out of this process."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _DEEPSPEED_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return None, "the import took more than 300 s"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return str(json.loads(lines[-1])), None
        except json.JSONDecodeError:
            pass
    errors = proc.stderr.strip().splitlines()
    return None, errors[-1] if errors else f"exit status {proc.returncode}"


def checkpoint_check(backbone: Backbone, part: str, checkpoint: str) -> Check:
    """Whether the weights of one checkpoint of `backbone` are on this machine, and where."""
    name = f"{backbone.name}: {part}"
    if checkpoint == "tiny":
        return Check("backbones", name, True, "random small config, nothing to load")
    if checkpoint == "demo":
        from benchmark.train.demo_backbone import demo_backbone_dir  # torch: not at `--help`

        built = (demo_backbone_dir() / "config.json").is_file()
        detail = str(demo_backbone_dir()) if built else "not built yet (built on first use, offline)"
        return Check("backbones", name, built or None, detail)
    if backbone.random_weights:
        return Check(
            "backbones", name, True, f"RANDOM weights in {checkpoint}'s architecture: speed and memory only"
        )
    path = local_checkpoint(checkpoint)
    where = "BENCHMARK_WEIGHTS_DIR nor the HuggingFace cache"
    return Check("backbones", name, path is not None, str(path) if path else f"{checkpoint}: not in {where}")


def backbone_checks() -> list[Check]:
    """One line per checkpoint of every backbone of the registry: its encoders, then its LLM."""
    checks = []
    for backbone in backbones().values():
        parts = {f"encoder {family}": checkpoint for family, checkpoint in backbone.encoder.items()}
        for part, checkpoint in {**parts, "llm": backbone.llm}.items():
            checks.append(checkpoint_check(backbone, part, checkpoint))
    return checks


def corpus_checks() -> list[Check]:
    checks = []
    for name, card in dataset_cards().items():
        if not is_prepared(card):
            how = "`data demo`" if card.reader == "demo" else f"`data prepare {name} --root PATH`"
            checks.append(Check("corpora", name, False, f"not prepared ({how})"))
            continue
        counts = []
        for split in card.splits:
            with manifest_path(card, split).open(encoding="utf-8") as handle:
                counts.append(f"{split}={sum(1 for line in handle if line.strip())}")
        checks.append(Check("corpora", name, True, f"{prepared_dir(name)} ({', '.join(counts)})"))
    return checks


def captioning_checks() -> list[Check]:
    """Which SED captioning metrics can score English captions here (`benchmark.eval.captioning`)."""
    return [
        Check("metrics", CAPTION_METRICS[metric], reason is None, reason or "usable")
        for metric, reason in available_caption_metrics().items()
    ]


def collect_checks() -> list[Check]:
    """Every check of `doctor`, in display order."""
    java = java_version()
    checks = [
        Check("software", "python", True, f"{sys.version.split()[0]} ({platform.platform()})"),
        Check("software", "java", java is not None, java or "not found (needed by METEOR and SPICE)"),
    ]
    for name, version in package_versions().items():
        if name != "deepspeed":
            checks.append(Check("software", name, version is not None, version or "not installed"))
    checks.append(deepspeed_check())
    checks += gpu_checks()
    checks += backbone_checks()
    try:
        checks += corpus_checks()
    except BenchmarkError as err:
        checks.append(Check("corpora", "registry", False, str(err)))
    checks += captioning_checks()
    checks.append(Check("paths", "BENCHMARK_HOME", None, str(benchmark_home())))
    return checks


def environment_record() -> dict:
    """The checks as plain data, for logging as a run artifact."""
    import torch

    return {"checks": [asdict(c) for c in collect_checks()], "torch_threads": torch.get_num_threads()}
