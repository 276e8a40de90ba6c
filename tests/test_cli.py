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
    for verb in ["data", "doctor", "run", "study", "evaluate", "compare", "leaderboard", "explain", "ui"]:
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
