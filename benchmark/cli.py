"""`python -m benchmark VERB ...`: argument parsing only; the work happens in the modules.

Each verb has an `add_VERB` function that adds its sub-parser and options, next to its `cmd_VERB`
handler; `build_parser` only assembles them. The choices of `--backbone` come from the backbone
registry (`benchmark.nn.backbones`); system, dataset and study names from `benchmark.registry`.
`main` adds the `--registry` folders before it builds the parser, so a user's own entries are
accepted and listed in `--help` like the shipped ones.

A `BenchmarkError` (any user mistake) is printed as one line plus a hint and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import __version__
from benchmark.errors import BenchmarkError
from benchmark.signals import Stopped, killed_runs, stop_on_signals

if TYPE_CHECKING:
    from benchmark.registry import Kind

Verbs = Any  # what `add_subparsers` returns (argparse's private _SubParsersAction)


# Arguments shared by several verbs.


def _registry_name(kind: Kind) -> Callable[[str], str]:
    """An argparse `type` that accepts the name of an entry of one registry.

    The registry checks it (`benchmark.registry.find`): an unknown name raises its `BenchmarkError`,
    which lists the known names and which `main` prints as one line and a hint (exit status 2).
    """

    def registry_name(name: str) -> str:
        from benchmark.registry import find

        find(kind, name)
        return name

    return registry_name


def _add_name(parser: argparse.ArgumentParser, *flags: str, kind: Kind, help: str, **kwargs: Any) -> None:
    """An argument naming an entry of `kind`; its help lists the entries known now (`main` builds the
    parser after adding the `--registry` folders, so theirs are listed too)."""
    from benchmark.registry import entries

    known = ", ".join(sorted(entries(kind))).replace("%", "%%") or "none"
    parser.add_argument(*flags, type=_registry_name(kind), help=f"{help}; known: {known}", **kwargs)


def _backbone_names(scored: bool = False) -> list[str]:
    """The `--backbone` choices; `scored`: only backbones whose runs are scored (a study's trials are
    compared by their scores, so backbones with random weights are left out)."""
    from benchmark.nn.backbones import backbones

    return [name for name, backbone in backbones().items() if not (scored and backbone.random_weights)]


def _add_set(parser: argparse.ArgumentParser, help: str = "override a config field") -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def _corpus_list(text: str) -> tuple[str, ...]:
    """`speechcraft`, `a,b` or `none` (no corpus)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("name one or more corpora, or 'none'")
    return () if names == ("none",) else names


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


# The verbs, in the order of `--help`.


def cmd_data_list(args: argparse.Namespace) -> int:
    from benchmark.console import console, datasets_table
    from benchmark.registry import dataset_cards, entries

    console.print(datasets_table(dataset_cards(), entries("datasets")))
    return 0


def add_data_list(actions: Verbs) -> None:
    data_list = actions.add_parser("list", help="the dataset cards and whether each is prepared")
    data_list.set_defaults(func=cmd_data_list)


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from benchmark.console import print_prepare_report
    from benchmark.data.prepare import prepare_corpus
    from benchmark.registry import load_dataset_card

    card = load_dataset_card(args.name)
    if card.reader == "demo":
        raise BenchmarkError(
            f"'{args.name}' is synthesised, not read from disk", hint="run `python -m benchmark data demo`"
        )
    report = prepare_corpus(
        card, Path(args.root).expanduser(), Path(args.out) if args.out else None, args.strict
    )
    print_prepare_report(report)
    return 0


def add_data_prepare(actions: Verbs) -> None:
    prepare = actions.add_parser("prepare", help="read a corpus release and write its manifests")
    _add_name(prepare, "name", kind="datasets", help="dataset card name (see `data list`)")
    prepare.add_argument("--root", required=True, help="the corpus folder (layout: see the dataset card)")
    prepare.add_argument(
        "--out", help="where to write the manifests (default: $BENCHMARK_HOME/datasets/NAME)"
    )
    prepare.add_argument(
        "--strict", action="store_true", help="fail on the first bad rows instead of skipping them"
    )
    prepare.set_defaults(func=cmd_data_prepare)


def cmd_data_demo(args: argparse.Namespace) -> int:
    from benchmark.console import console, summary_table
    from benchmark.data.demo import DEFAULT_SIZE, build_demo_corpus
    from benchmark.data.manifest import read_manifest
    from benchmark.data.prepare import summarise
    from benchmark.registry import load_dataset_card

    card = load_dataset_card("demo")
    manifest = build_demo_corpus(
        size=args.size or DEFAULT_SIZE,
        seed=args.seed,
        out_dir=Path(args.out) if args.out else None,
        rebuild=args.rebuild,
    )
    rows = read_manifest(manifest)
    console.print(summary_table(f"{card.title}: {manifest}", card.labels, summarise(card, {"all": rows})))
    return 0


def add_data_demo(actions: Verbs) -> None:
    demo = actions.add_parser("demo", help="synthesise the demo corpus (cached)")
    demo.add_argument(
        "--size", type=_positive_int, default=None, help="number of utterances (default: about 420)"
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="random seed (the corpus is deterministic per seed)"
    )
    demo.add_argument("--out", help="output folder (default: $BENCHMARK_HOME/datasets/demo)")
    demo.add_argument(
        "--rebuild", action="store_true", help="synthesise again from scratch, replacing the cached corpus"
    )
    demo.set_defaults(func=cmd_data_demo)


def cmd_data_audit(args: argparse.Namespace) -> int:
    from benchmark.console import print_audit
    from benchmark.data.audit import audit_corpora, write_audit
    from benchmark.data.prepare import is_prepared
    from benchmark.registry import dataset_cards, load_dataset_card

    if args.names:
        cards = [load_dataset_card(name) for name in dict.fromkeys(args.names)]
    else:
        cards = [card for card in dataset_cards().values() if is_prepared(card)]
    out = Path(args.out) if args.out else Path("audit.tsv")
    report = audit_corpora(cards, progress=not args.no_progress)
    write_audit(out, report.findings)
    print_audit(report, out)
    return 0


def add_data_audit(actions: Verbs) -> None:
    audit = actions.add_parser(
        "audit",
        help="training-test overlap: the same audio, transcript or speaker on both sides of a protocol",
    )
    audit.add_argument(
        "names", nargs="*", metavar="NAME", type=_registry_name("datasets"),
        help="the corpora to audit together (default: every prepared corpus)",
    )  # fmt: skip
    audit.add_argument("--out", metavar="PATH", help="where to write the findings (default: ./audit.tsv)")
    audit.add_argument("--no-progress", action="store_true", help="no progress bar")
    audit.set_defaults(func=cmd_data_audit)


def add_data(verbs: Verbs) -> None:
    data = verbs.add_parser("data", help="list, prepare, synthesise or audit corpora")
    actions = data.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    add_data_list(actions)
    add_data_prepare(actions)
    add_data_demo(actions)
    add_data_audit(actions)


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.config import parse_overrides
    from benchmark.console import console, print_run_link, results_table
    from benchmark.nn.backbones import get_backbone
    from benchmark.workflows.run import RunRequest, run_experiment

    request = RunRequest(
        system=args.system,
        beta=args.beta,
        dataset=args.dataset,
        backbone=args.backbone,
        fold=args.fold,
        train_with=args.train_with,
        validation=args.validation,
        epochs=args.epochs,
        seeds=args.seeds,
        engine=args.deepspeed or "plain",
        resume=args.resume,
        features=args.features,
        loader_workers=args.loader_workers,
        overrides=parse_overrides(args.set),
        allow_overlap=args.allow_overlap,
    )
    summary = run_experiment(request)
    from benchmark.ranks import is_lead

    if not is_lead():  # under a launcher rank 0 reports for the whole run
        return 0
    if get_backbone(args.backbone).random_weights:
        console.print(
            f"note: {args.backbone} has random weights: this run measured training speed and memory "
            "(train.tokens_per_s, train.gpu_peak_gib) and scored nothing"
        )
    else:
        console.print(results_table(summary))
    for note in summary.notes:
        console.print(f"note: {note}", soft_wrap=True)
    print_run_link(summary.run_id)
    return 0


def add_run(verbs: Verbs) -> None:
    run = verbs.add_parser("run", help="train and evaluate a system on folds of a corpus, tracked in MLflow")
    _add_name(run, "--system", kind="models", required=True, help="system name (see `systems`)")
    run.add_argument("--beta", type=float, help="IB weight of the KL terms (default: the system's)")
    _add_name(
        run,
        "--dataset",
        kind="datasets",
        default="demo",
        help="dataset card (default: the synthesised demo corpus)",
    )
    run.add_argument(
        "--backbone",
        default="demo",
        choices=_backbone_names(),
        help="default: demo; paper-shape: the paper's architectures with random weights, GPU speed only",
    )
    run.add_argument(
        "--fold", help="one fold (group or test split) or 'all' (default: the dataset card's default_fold)"
    )
    run.add_argument(
        "--train-with",
        type=_corpus_list,
        metavar="NAME[,NAME]|none",
        help="corpora whose training part joins each fold's (default: the dataset card's train_with)",
    )
    run.add_argument(
        "--validation",
        action="store_true",
        help="hold the card's validation set out of training; log its loss per epoch and val.* metrics",
    )
    run.add_argument("--epochs", type=_positive_int, help="epochs of every stage (default: the system's)")
    run.add_argument(
        "--seeds", type=_positive_int, metavar="K",
        help="train each fold K times, with seeds seed..seed+K-1 (default: the system's training.seeds)",
    )  # fmt: skip
    run.add_argument("--deepspeed", choices=["zero2", "zero3"], help="train under DeepSpeed ZeRO-2 or ZeRO-3")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this config")
    run.add_argument(
        "--features",
        choices=["cache", "online"],
        help="the encoder's outputs cached on disk, or the encoder run in the step (default: the backbone's)",
    )
    run.add_argument(
        "--loader-workers",
        type=int,
        help="processes loading batches ahead of the step (default: 4 on a GPU, else 0)",
    )
    run.add_argument(
        "--allow-overlap", action="store_true",
        help="train a fold even when its test audio is in its training mixture (`data audit`); "
        "the run is tagged overlap=N and its leaderboard cells are marked",
    )  # fmt: skip
    _add_set(run)
    run.set_defaults(func=cmd_run)


def cmd_study(args: argparse.Namespace) -> int:
    from benchmark.config import parse_overrides
    from benchmark.console import print_run_link, print_study
    from benchmark.study.coordinator import report_study, run_study
    from benchmark.study.search import StudyRequest

    request = StudyRequest(
        name=args.name,
        trials=args.trials,
        workers=args.workers,
        storage=args.storage,
        dataset=args.dataset,
        backbone=args.backbone,
        epochs=args.epochs,
        overrides=parse_overrides(args.set),
        resume=args.resume,
        refit=not args.no_refit,
        worker=args.worker,
        progress=not args.no_progress,
    )
    summary = report_study(request) if args.report else run_study(request)
    if summary is not None:  # a --worker prints nothing: its coordinator reports the study
        print_study(summary)
        print_run_link(summary.run_id, "study")
    return 0


def add_study(verbs: Verbs) -> None:
    study = verbs.add_parser(
        "study", help="an Optuna study (studies/*.yaml: the beta search, Table 3), every trial an MLflow run"
    )
    _add_name(study, "name", kind="studies", help="study name (studies/NAME.yaml)")
    study.add_argument("--trials", type=_positive_int, help="trials in all (default: the spec's)")
    study.add_argument("--workers", type=_positive_int, default=1, help="worker processes here (default 1)")
    study.add_argument(
        "--storage",
        metavar="URL",
        help="journal:PATH or postgresql://... (default: a journal file beside the MLflow store)",
    )
    _add_name(study, "--dataset", kind="datasets", help="dataset card (default: the spec's)")
    study.add_argument(
        "--backbone",
        choices=_backbone_names(scored=True),
        help="default: the spec's (backbones with random weights score nothing, so none here)",
    )
    study.add_argument("--epochs", type=_positive_int, help="epochs of every stage of every trial")
    _add_set(study, help="override a config field of every trial")
    study.add_argument("--resume", action="store_true", help="a re-run trial continues from its checkpoints")
    study.add_argument(
        "--report", action="store_true", help="print the trials and log the plots; run nothing"
    )
    study.add_argument("--no-refit", action="store_true", help="search only: do not refit the best trial")
    study.add_argument(
        "--worker",
        action="store_true",
        help="only take trials of a study started elsewhere (another machine)",
    )
    study.add_argument("--no-progress", action="store_true", help="no progress bars")
    study.set_defaults(func=cmd_study)


def cmd_predict(args: argparse.Namespace) -> int:
    from benchmark.console import print_failures, print_predictions
    from benchmark.data.jsonl import write_jsonl
    from benchmark.workflows.predict import predict_files

    # With --json, standard output holds the JSON lines alone (as for `explain --json`).
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        predictions, failures = predict_files(args.run_id, args.paths, args.fold, progress=not args.json)
    if args.json:
        for prediction in predictions:
            print(prediction.model_dump_json())
    else:
        print_predictions(predictions)
    if args.out is not None:
        write_jsonl(args.out, predictions)
    print_failures(failures, len(predictions))
    return 1 if failures else 0


def add_predict(verbs: Verbs) -> None:
    predict = verbs.add_parser(
        "predict", help="a trained system on your own recordings: transcript, descriptor, emotion"
    )
    predict.add_argument("run_id", help="a run of `benchmark run` (or one of its fold runs)")
    predict.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="audio files, or folders searched for audio"
    )
    predict.add_argument("--fold", help="which fold's model of a cross-validated run (needed if several)")
    predict.add_argument("--json", action="store_true", help="one JSON object per file instead of a table")
    predict.add_argument("--out", type=Path, metavar="FILE.jsonl", help="also write the predictions there")
    predict.set_defaults(func=cmd_predict)


def cmd_explain(args: argparse.Namespace) -> int:
    from benchmark.console import print_explanation, print_run_explanations
    from benchmark.explain.explanation import ExplainSettings
    from benchmark.workflows.explain import explain_file, explain_run, explain_utterance

    if args.all == (args.utterance is not None):
        raise BenchmarkError(
            "name one utterance or audio file, or --all of the run's test utterances", hint="not both"
        )
    is_file = args.utterance is not None and Path(args.utterance).is_file()
    if args.baseline is not None and not is_file:
        raise BenchmarkError(
            "--baseline FOLDER is for an audio file", hint="a test utterance's is its speaker's"
        )
    settings = ExplainSettings(method=args.method, k=args.k, window_s=args.window, baseline=args.occlude_with)
    if args.all:
        result = explain_run(
            args.run_id, settings, limit=args.limit, progress=not args.json, html_dir=args.html
        )
        if args.json:
            print(json.dumps(result.summary, ensure_ascii=False))
        else:
            print_run_explanations(result, args.html)
        return 0
    # With --json, standard output holds the JSON object alone: what libraries print while the
    # model is rebuilt goes to standard error.
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        if is_file:
            explained = explain_file(
                args.run_id,
                Path(args.utterance),
                settings,
                args.fold,
                args.baseline,
                args.html,
                not args.no_figure,
            )
        else:
            explained = explain_utterance(
                args.run_id, args.utterance, settings, not args.no_figure, args.html
            )
    if args.json:
        probabilities = explained.prediction.probabilities if explained.prediction else None
        extra = {"run_id": args.run_id, "figure": explained.figure, "page": explained.page}
        print(
            json.dumps(
                {**explained.explanation.to_json(), "probabilities": probabilities, **extra},
                ensure_ascii=False,
            )
        )
    else:
        print_explanation(explained, args.run_id)
    return 0


def add_explain(verbs: Verbs) -> None:
    explain = verbs.add_parser(
        "explain",
        help="why a run predicted what it did for a test utterance or a recording: salient windows, cues",
    )
    explain.add_argument("run_id", help="a run of `benchmark run` (or one of its fold runs)")
    explain.add_argument(
        "utterance", nargs="?", metavar="UTTERANCE|PATH",
        help="the id of one of its test utterances, or an audio file of your own",
    )  # fmt: skip
    explain.add_argument(
        "--all", action="store_true", help="every test utterance: log the quality metrics to the run"
    )
    explain.add_argument("--limit", type=_positive_int, help="with --all: only the first N utterances")
    explain.add_argument("--fold", help="an audio file: which fold's model of a cross-validated run")
    explain.add_argument(
        "--baseline", type=Path, metavar="FOLDER",
        help="an audio file: other recordings of the same speaker as the cue baseline "
        "(default: the recording itself)",
    )  # fmt: skip
    explain.add_argument(
        "--html", type=Path, metavar="PAGE|DIR",
        help="write a page to look at and listen to (with --all: a folder of pages and an index); "
        "also logged to the run",
    )  # fmt: skip
    explain.add_argument(
        "--method",
        choices=["occlusion", "input_x_gradient", "integrated_gradients"],
        default="occlusion",
        help="saliency method (default: occlusion of windows of the audio)",
    )
    explain.add_argument("--k", type=_positive_int, default=5, help="salient windows kept (default 5)")
    explain.add_argument("--window", type=float, default=0.15, help="window length in seconds (default 0.15)")
    explain.add_argument(
        "--occlude-with",
        choices=["silence", "mean"],
        default="silence",
        help="what occlusion puts in a window",
    )
    explain.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    explain.add_argument(
        "--no-figure", action="store_true", help="one decision: do not log its PNG to the run"
    )
    explain.set_defaults(func=cmd_explain)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from benchmark.console import console, evaluation_table, print_run_link
    from benchmark.workflows.evaluate import evaluate_run

    summary = evaluate_run(args.run_id, args.dataset, args.fold, allow_overlap=args.allow_overlap)
    console.print(evaluation_table(summary, args.dataset))
    for note in summary.notes:
        console.print(f"note: {note}", soft_wrap=True)
    print_run_link(summary.run_id)
    return 0


def add_evaluate(verbs: Verbs) -> None:
    evaluate = verbs.add_parser(
        "evaluate", help="score a trained run on another corpus's test split, zero-shot (no training)"
    )
    evaluate.add_argument("run_id", help="an MLflow run of `run` (the parent run or one fold run)")
    _add_name(
        evaluate,
        "--dataset",
        kind="datasets",
        required=True,
        help="dataset card with a test split (e.g. emosec)",
    )
    evaluate.add_argument("--fold", help="which fold's model of a cross-validated run (needed if several)")
    evaluate.add_argument(
        "--allow-overlap", action="store_true",
        help="score even when test audio is in the source fold's training mixture (`data audit`); "
        "the run is tagged overlap=N and its leaderboard cells are marked",
    )  # fmt: skip
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmark.console import console, print_compare_notes
    from benchmark.workflows.compare import DEFAULT_METRICS, comparison_table, run_compare

    report = run_compare(
        args.runs,
        args.baseline,
        metrics=args.metric or DEFAULT_METRICS,
        dataset=args.dataset,
        backbone=args.backbone,
        alpha=args.alpha,
        n_resamples=args.bootstrap,
        seed=args.seed,
        protocol=args.protocol,
    )
    console.print(comparison_table(report))
    print_compare_notes(report)
    return 0


def add_compare(verbs: Verbs) -> None:
    compare = verbs.add_parser(
        "compare", help="paired one-sided tests of runs against a baseline, logged to MLflow"
    )
    compare.add_argument(
        "runs",
        nargs="*",
        metavar="RUN_OR_SYSTEM",
        help="MLflow run ids or system names (latest finished registry-recipe run in the baseline's setup; "
        "default: every system in that setup)",
    )
    compare.add_argument("--baseline", required=True, help="run id or system name to test against")
    compare.add_argument(
        "--metric",
        action="append",
        help="ser.ua, ser.wa, asr.wer, sed.* (repeatable; default: ser.ua, asr.wer)",
    )
    # Runs are found by their tags, so --dataset and --backbone are not checked against the registries:
    # a run of an entry from a --registry folder stays comparable without that folder.
    compare.add_argument("--dataset", help="dataset of the runs named by system (default: the baseline's)")
    compare.add_argument("--backbone", help="only runs with this backbone, for names (default: any)")
    compare.add_argument(
        "--protocol",
        metavar="DIGEST",
        help="setup or protocol digest (or a unique prefix) the names resolve in; a protocol's runs count "
        "even when custom (--epochs, --set) (default: the setup of the baseline's latest run)",
    )
    compare.add_argument(
        "--alpha", type=float, default=0.05, help="significance level after Holm (default 0.05)"
    )
    compare.add_argument(
        "--bootstrap", type=_positive_int, default=2000, help="bootstrap resamples (default 2000)"
    )
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    compare.set_defaults(func=cmd_compare)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.data.builds import atomic_file
    from benchmark.leaderboard.board import build_boards
    from benchmark.leaderboard.render import render

    datasets, runs, protocol = args.dataset, args.runs, args.protocol
    if args.study:  # the study's refit runs in their cells, in the table of their setup
        from benchmark.tracking.lookup import study_runs
        from benchmark.tracking.store import load_mlflow_config, tracking_setup

        tracking_setup(load_mlflow_config())
        found = study_runs(args.study)
        datasets, runs, protocol = (
            datasets or [found.dataset],
            [*runs, *found.run_ids],
            protocol or found.setup,
        )
    # --out is opened before the boards are built, so an unwritable path fails before the slow part.
    with atomic_file(Path(args.out)) if args.out else nullcontext(sys.stdout) as handle:
        boards = build_boards(args.table, datasets, runs, args.backbone, protocol, args.explain)
        handle.write(render(boards, args.format))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def add_leaderboard(verbs: Verbs) -> None:
    board = verbs.add_parser("leaderboard", help="the paper's Tables 1-3 with published and measured rows")
    board.add_argument(
        "--table", required=True, choices=["sed", "ser", "ablation"], help="Table 1, 2 or 3 of the paper"
    )
    board.add_argument("--format", default="md", choices=["md", "csv", "latex", "html"], help="default: md")
    board.add_argument(
        "--runs",
        nargs="+",
        default=[],
        metavar="RUN_ID",
        help="use these runs for their rows, custom-recipe runs included, in the table of their setup",
    )
    _add_name(
        board,
        "--dataset",
        kind="datasets",
        action="append",
        default=[],
        help="show this corpus instead of the paper's (repeatable)",
    )
    board.add_argument("--backbone", help="only runs with this backbone (default: any)")
    board.add_argument(
        "--protocol",
        metavar="DIGEST",
        help="only the table of this setup, or of this protocol's setup with its runs (custom included) "
        "in their cells; a digest or a unique prefix (default: one table per setup, registry runs)",
    )
    board.add_argument(
        "--study", metavar="NAME", help="fill the cells with the refit runs of this study (e.g. table3)"
    )
    board.add_argument(
        "--explain",
        action="store_true",
        help="add the explanation-quality columns (deletion, cue plausibility, descriptor agreement) "
        "from `explain RUN_ID --all`",
    )
    board.add_argument("--out", help="write to this file instead of standard output")
    board.set_defaults(func=cmd_leaderboard)


def cmd_ui(args: argparse.Namespace) -> int:
    from functools import partial

    from benchmark.console import error_console, print_ui_ready
    from benchmark.tracking.store import load_mlflow_config
    from benchmark.workflows.ui import serve_ui

    config = load_mlflow_config()
    try:
        serve_ui(config, args.host, args.port, on_ready=partial(print_ui_ready, config))
    except Stopped as stop:  # the way `ui` is meant to end
        error_console.print(f"stopped by {stop.name}; the MLflow UI server has ended", soft_wrap=True)
        return stop.exit_code


def add_ui(verbs: Verbs) -> None:
    ui = verbs.add_parser("ui", help="serve the MLflow UI of the configured store on 127.0.0.1")
    ui.add_argument(
        "--host",
        help="interface to bind (default: mlflow.yaml's ui.host, 127.0.0.1); another lets other machines "
        "in, and the UI has no login",
    )
    ui.add_argument("--port", type=int, help="port, 1..65535 (default: mlflow.yaml's ui.port)")
    ui.set_defaults(func=cmd_ui)


def cmd_systems(args: argparse.Namespace) -> int:
    from benchmark.console import console, systems_table
    from benchmark.registry import entries, system_configs

    console.print(systems_table(system_configs(), entries("models")))
    return 0


def add_systems(verbs: Verbs) -> None:
    systems = verbs.add_parser("systems", help="the system variants and the paper rows they reproduce")
    systems.set_defaults(func=cmd_systems)


def cmd_doctor(args: argparse.Namespace) -> int:
    from benchmark.console import checks_table, console
    from benchmark.environment import collect_checks

    console.print(checks_table(collect_checks()))
    return 0


def add_doctor(verbs: Verbs) -> None:
    verbs.add_parser("doctor", help="what is installed and usable here").set_defaults(func=cmd_doctor)


VERBS = (
    add_data, add_run, add_study, add_predict, add_explain, add_evaluate, add_compare, add_leaderboard,
    add_ui, add_systems, add_doctor,
)  # fmt: skip


def _add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", action="append", default=[], metavar="DIR",
        help="extra folder holding models/ (and models/backbones/), datasets/ or studies/ "
        "(searched first; repeatable)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The whole parser; system, dataset and study names are those of the registries as they are
    now (`main` adds the `--registry` folders first)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="Benchmark suite for LLM-based explainable speech emotion recognition.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_registry_option(parser)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for add_verb in VERBS:
        add_verb(verbs)
    return parser


def registry_folders(argv: Sequence[str]) -> list[str]:
    """The `--registry` folders of a command line: the first of two passes, so that the whole
    parser (its help, its checks of names) sees the entries of those folders. A malformed option
    is left for the whole parser to report."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    _add_registry_option(parser)
    try:
        return parser.parse_known_args(argv)[0].registry
    except argparse.ArgumentError:
        return []


def main(argv: Sequence[str] | None = None) -> int:
    from benchmark.allocator import hold_mmap_threshold
    from benchmark.console import print_error, print_stopped
    from benchmark.registry import add_registry

    hold_mmap_threshold()  # host memory that does not creep batch by batch (benchmark.allocator)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with stop_on_signals():
            for folder in registry_folders(argv):
                add_registry(Path(folder))
            args = build_parser().parse_args(argv)  # checks registry names: may raise BenchmarkError
            return args.func(args)
    except BenchmarkError as err:
        print_error(err)
        return 2
    except Stopped as err:  # SIGINT or SIGTERM; the open runs have already ended KILLED
        why, code = f"stopped by {err.name}", err.exit_code
    except KeyboardInterrupt:  # raised by hand, or a handler other than ours
        why, code = "interrupted", 130
    # Out of the handler the unwound frames are released; collecting them closes the progress bars
    # they held, so the message below starts on a line of its own.
    gc.collect()
    print_stopped(why, killed_runs)
    return code


if __name__ == "__main__":
    sys.exit(main())
