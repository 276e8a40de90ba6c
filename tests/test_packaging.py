"""The registries ship inside the wheel, so an installed copy works outside the clone."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_the_registries(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    for folder in ("datasets", "models/backbones"):
        shipped = {p.name for p in (site / "benchmark" / "registry_data" / folder).glob("*.yaml")}
        assert shipped == {p.name for p in (ROOT / folder).glob("*.yaml")}
    configs = {p.name for p in (site / "benchmark" / "nn").glob("*.json")}
    assert configs == {"hubert-large-ls960-ft.json", "llama-3.1-8b-instruct.json"}  # --backbone paper-shape
    code = (
        "from benchmark.registry import dataset_cards, registry_roots;"
        "from benchmark.nn.backbones import backbones;"
        "print(registry_roots()); print(sorted(dataset_cards())); print(sorted(backbones()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert "registry_data" in out and str(ROOT) not in out
    assert "iemocap" in out and "'paper-shape'" in out
