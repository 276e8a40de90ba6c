from __future__ import annotations

import subprocess
import sys

import pytest

from benchmark.cli import main


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    verbs = "data doctor run study predict evaluate compare leaderboard explain ui"
    for verb in verbs.split():
        assert verb in out


def test_user_mistakes_are_one_line_and_a_hint(capsys: pytest.CaptureFixture[str], tmp_path):
    assert main(["data", "prepare", "nosuch", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nosuch'" in err and "hint: known datasets:" in err
    assert main(["data", "prepare", "iemocap", "--root", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "corpus folder not found" in err and "Session1" in err
    assert main(["data", "prepare", "demo", "--root", str(tmp_path)]) == 2
    assert "data demo" in capsys.readouterr().err
    assert main(["--registry", str(tmp_path / "nope"), "data", "list"]) == 2


def test_data_list_shows_every_card(capsys: pytest.CaptureFixture[str]):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "iemocap", "meld", "speechcraft", "emosec"):
        assert name in out


def test_doctor_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "doctor"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    for item in ("torch", "deepspeed", "java", "hubert-large", "paper-shape", "METEOR", "SPICE", "iemocap"):
        assert item in proc.stdout


VERBS = [
    ["data"], ["data", "list"], ["data", "prepare"], ["data", "demo"], ["data", "audit"], ["run"], ["study"],
    ["predict"], ["explain"], ["evaluate"], ["compare"], ["leaderboard"], ["ui"], ["systems"], ["doctor"],
]  # fmt: skip


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_help_of_every_verb(verb: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m benchmark {' '.join(verb)}")


def test_help_lists_the_registry_names(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "200")  # no name broken at a hyphen
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "known: fd-ser-asr, fd-ser-sed, full," in out and "ssl-wavlm, two-stage" in out
    assert "known: demo, emosec, iemocap, meld, speechcraft" in out
    assert "{demo,llama-3.2-3b,paper,paper-shape,tiny}" in out
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "known: beta, table3" in out and "{demo,llama-3.2-3b,paper,tiny}" in out


def test_help_imports_no_torch():
    code = (
        "import sys\nfrom benchmark.cli import main\n"
        "for verb in ('run', 'study', 'explain', 'doctor'):\n"
        "    try:\n        main([verb, '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'mlflow', 'optuna') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("argv", "kind", "known"),
    [
        (["run", "--system", "nosuch"], "system", "known models: fd-ser-asr, fd-ser-sed, full"),
        (["run", "--system", "full", "--dataset", "nosuch"], "dataset", "known datasets: demo, emosec"),
        (["study", "nosuch"], "study", "known studies: beta, table3"),
        (["study", "beta", "--dataset", "nosuch"], "dataset", "known datasets: demo, emosec"),
        (["evaluate", "RUN_ID", "--dataset", "nosuch"], "dataset", "known datasets: demo, emosec"),
        (["leaderboard", "--table", "ser", "--dataset", "nosuch"], "dataset", "known datasets: demo"),
    ],
)
def test_an_unknown_registry_name_is_one_line_naming_the_known_ones(
    argv: list[str], kind: str, known: str, capsys: pytest.CaptureFixture[str]
):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: unknown {kind} 'nosuch'", lines[1]] and known in lines[1]


@pytest.mark.parametrize(
    ("argv", "known"),
    [
        (["run", "--system", "full", "--backbone", "x"], "'llama-3.2-3b', 'paper', 'paper-shape', 'tiny'"),
        (["study", "beta", "--backbone", "paper-shape"], "'paper', 'tiny')"),  # no random weights
    ],
)
def test_an_unknown_backbone_is_one_line_naming_the_known_ones(
    argv: list[str], known: str, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument --backbone: invalid choice" in error and known in error


@pytest.fixture
def own_registry(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A --registry folder with a system, a dataset card and a study of its own (names only: the
    handlers are replaced, so the files are never read) and a backbone (a copy of `tiny`, read for
    the choices of --backbone); the roots it adds go with the test."""
    from benchmark import cli, registry

    for kind, name in [("models", "mine"), ("datasets", "mycorpus"), ("studies", "mystudy")]:
        (tmp_path / kind).mkdir()
        (tmp_path / kind / f"{name}.yaml").write_text(f"name: {name}\n")
    (tmp_path / "models" / "backbones").mkdir()
    tiny = registry.find("backbones", "tiny").read_text().replace("name: tiny", "name: mybackbone")
    (tmp_path / "models" / "backbones" / "mybackbone.yaml").write_text(tiny)
    monkeypatch.setattr(registry, "_extra_roots", [])
    calls = []
    for handler in ("cmd_run", "cmd_study", "cmd_data_prepare", "cmd_evaluate"):
        monkeypatch.setattr(cli, handler, lambda args: calls.append(args) or 0)
    return tmp_path, calls


def test_names_from_a_registry_folder_are_accepted(
    own_registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COLUMNS", "200")  # no name broken at a hyphen
    folder, calls = own_registry
    for argv in (
        ["run", "--system", "mine", "--dataset", "mycorpus", "--backbone", "mybackbone"],
        ["study", "mystudy", "--dataset", "mycorpus"],
        ["data", "prepare", "mycorpus", "--root", str(folder)],
        ["evaluate", "RUN_ID", "--dataset", "mycorpus"],
    ):
        assert main(["--registry", str(folder), *argv]) == 0, capsys.readouterr().err
    assert [args.verb for args in calls] == ["run", "study", "data", "evaluate"]
    assert (calls[0].system, calls[0].dataset, calls[1].name) == ("mine", "mycorpus", "mystudy")
    assert calls[0].backbone == "mybackbone"
    with pytest.raises(SystemExit):
        main(["--registry", str(folder), "run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "joint, mine, no-fd" in out and "meld, mycorpus, speechcraft" in out


def test_names_from_benchmark_registry_are_accepted(own_registry, monkeypatch: pytest.MonkeyPatch):
    folder, calls = own_registry
    assert main(["run", "--system", "mine"]) == 2  # not without the folder
    monkeypatch.setenv("BENCHMARK_REGISTRY", str(folder))
    assert main(["run", "--system", "mine"]) == 0 and calls[0].system == "mine"
