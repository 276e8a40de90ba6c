"""Re-checks the demo recipe on validation data only: learning rate, epoch scale, IB-VAE init.

The demo backbone trains every stage of a system at one learning rate for a multiple of the
paper's epochs (`benchmark.nn.backbones`), and the IB-VAE starts from a scale-preserving init
(`benchmark.nn.bottleneck`). This script trains `full` on fold 1 of the demo corpus with
`--validation` (speaker group 2 held out of training, group 1 the untouched test group) for the
recipe and its neighbours, and prints the validation metrics side by side. Test metrics are
logged by each run as usual but not shown: nothing here may be chosen on them.

    python measurements/demo_recipe.py [--variants current,lr2e-3,scale4,pytorch-init] [--fold 1]

Each variant is an MLflow run of its own (backbone `demo-<variant>`, a registry entry written to a
temporary folder), so the table can be rebuilt from the tracking store; one variant takes about as
long as the README's main command.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from benchmark.console import console, metrics_table
from benchmark.nn.backbones import get_backbone
from benchmark.registry import add_registry
from benchmark.workflows.run import RunRequest, run_experiment

VARIANTS: dict[str, tuple[dict, dict]] = {
    # name: (changes to the demo backbone, --set overrides of the system)
    "current": ({}, {}),
    "lr5e-4": ({"stage_lr": 5e-4}, {}),
    "lr2e-3": ({"stage_lr": 2e-3}, {}),
    "lr3e-3": ({"stage_lr": 3e-3}, {}),
    "scale4": ({"epoch_scale": 4}, {}),
    "pytorch-init": ({}, {"bottleneck": {"init": "pytorch"}}),
}
SHOWN = ("val.ser.ua", "val.asr.wer", "val.sed.bleu4", "val.sed.cider", "val.sed.faithfulness")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS)
    )
    parser.add_argument("--fold", default="1", help="the demo fold (its validation group is the next one)")
    parser.add_argument("--system", default="full")
    args = parser.parse_args()
    registry = Path(tempfile.mkdtemp(prefix="demo-recipe-"))
    add_registry(registry)
    columns = {}
    for name in args.variants.split(","):
        changes, overrides = VARIANTS[name]
        # A named variant of the demo backbone, so each run's setup says which.
        backbone = get_backbone("demo").model_copy(update={"name": f"demo-{name}", **changes})
        folder = registry / "models" / "backbones"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{backbone.name}.yaml").write_text(yaml.safe_dump(backbone.model_dump()))
        summary = run_experiment(
            RunRequest(
                system=args.system,
                backbone=backbone.name,
                fold=args.fold,
                validation=True,
                overrides=overrides,
            )
        )
        metrics = summary.fold_metrics[args.fold]
        columns[f"{name} ({summary.run_id[:8]})"] = {key: metrics[key] for key in SHOWN if key in metrics}
        console.print(metrics_table(f"{args.system}, demo fold {args.fold}: validation only", columns))


if __name__ == "__main__":
    main()
