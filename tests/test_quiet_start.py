"""Commands that do not train under DeepSpeed never import it.

Importing DeepSpeed takes seconds and, on a machine without a GPU, logs "Setting accelerator to
CPU ..." to standard output; only a run with `--deepspeed zero2|zero3` should pay for that. Each
check runs in a fresh interpreter, since this test process may have imported DeepSpeed already.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def python(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("verb", ["doctor", "systems"])
def test_commands_start_without_deepspeeds_notice(verb: str):
    proc = python("-m", "benchmark", verb)
    assert "Setting accelerator" not in proc.stdout + proc.stderr
    if verb == "doctor" and importlib.util.find_spec("deepspeed") is not None:
        assert "accelerator=" in proc.stdout  # still asked of DeepSpeed, in a child process


def test_the_workflows_and_the_environment_report_do_not_import_deepspeed():
    code = """
import sys
import benchmark.cli, benchmark.environment, benchmark.study.search, benchmark.train.engine
import benchmark.workflows.evaluate, benchmark.workflows.explain, benchmark.workflows.run
imported = "deepspeed" in sys.modules
from benchmark.environment import deepspeed_check
check = deepspeed_check()
print(imported, "deepspeed" in sys.modules, check.ok, check.detail)
"""
    proc = python("-c", code)
    imported, after_check, ok, detail = proc.stdout.strip().splitlines()[-1].split(" ", 3)
    assert (imported, after_check) == ("False", "False")
    assert "Setting accelerator" not in proc.stdout + proc.stderr
    if importlib.util.find_spec("deepspeed") is not None:
        from importlib import metadata

        assert ok == "True" and detail.startswith(f"{metadata.version('deepspeed')}, accelerator=")
