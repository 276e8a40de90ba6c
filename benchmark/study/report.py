"""`study NAME --report`: the trials of a study as rows, and its plots logged to the study run.

The plots are Optuna's own (`optuna.visualization.matplotlib`), saved as PNG artifacts of the
study's MLflow run under `plots/`: the optimisation history, each parameter against the objective
(`slice_<param>.png`, a log axis for a log-uniform parameter such as beta), the intermediate values
(the validation loss of every epoch; negated in a maximising study, see
`benchmark.study.search.TrialObserver`), and parameter importances when more than one parameter
varies (with one, its importance is 1 by definition).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from benchmark.config import StudySpec
from benchmark.tracking.lifecycle import tracking_write

PLOTS = "plots"


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    params: dict[str, object]
    value: float | None
    seconds: float | None
    run_id: str
    retry_of: int | None


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append(
            TrialRow(
                trial.number, trial.state.name, dict(trial.params),
                trial.value if trial.state == TrialState.COMPLETE else None, seconds,  # pruned: an epoch's
                str(trial.user_attrs.get("mlflow_run_id", "")), trial.system_attrs.get("failed_trial"),
            )
        )  # fmt: skip
    return rows


def _figures(study: optuna.Study, spec: StudySpec) -> dict[str, plt.Figure]:
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures: dict[str, plt.Figure] = {}
    if not complete:
        return figures
    target = spec.objective.metric
    figures["optimization_history.png"] = ovm.plot_optimization_history(study, target_name=target).figure
    for name in spec.params:
        axes = ovm.plot_slice(study, params=[name], target_name=target)
        figures[f"slice_{name}.png"] = (axes if not hasattr(axes, "__len__") else axes[0]).figure
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        figures["intermediate_values.png"] = ovm.plot_intermediate_values(study).figure
    varying = [name for name in spec.params if len({str(t.params.get(name)) for t in complete}) > 1]
    if len(varying) > 1 and len(complete) > 2:
        figures["param_importances.png"] = ovm.plot_param_importances(study, target_name=target).figure
    return figures


def log_study_plots(study: optuna.Study, spec: StudySpec, run_id: str) -> list[str]:
    """Draw the plots of the module docstring and log them to the study run; returns their names."""
    client = MlflowClient()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures = _figures(study, spec)
    with tempfile.TemporaryDirectory(prefix="study-plots-") as tmp:
        for name, figure in figures.items():
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            path = Path(tmp) / name
            figure.savefig(path, dpi=110)
            plt.close(figure)
            tracking_write(client.log_artifact, run_id, str(path), PLOTS)
    return sorted(figures)


def dashboard_command(storage_display: str, journal_path: Path | None) -> str:
    """How to open the same storage in optuna-dashboard (the `studies` extra)."""
    target = str(journal_path) if journal_path is not None else storage_display
    return f"pip install -e '.[studies]' && optuna-dashboard {target}"
