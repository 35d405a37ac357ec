"""The import-linter contracts in pyproject.toml hold on the tree, and break when a layer is crossed.

The second half copies the packages, adds one forbidden import, and expects `lint-imports` to
name the broken contract: a contract that cannot fail would guard nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "adapters", "local_engine", "media")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def copy_of_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("tree")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


@pytest.mark.parametrize(
    ("module", "forbidden_import", "contract"),
    [
        ("gateway/traits/camera.py", "from gateway.jobs.store import JobStore", "gateway: api > jobs"),
        ("gateway/traits/faces.py", "import sqlalchemy", "traits are pure"),
        ("gateway/routing/planner.py", "from gateway.api.services import Services", "gateway: api > jobs"),
        ("gateway/storage/blobs.py", "from gateway.traits import Traits", "gateway: api > jobs"),
        ("adapters/wan.py", "from gateway.jobs.runner import JobRunner", "packages: gateway > adapters"),
        ("adapters/kling.py", "from adapters.wan import WanAdapter", "adapters: registry > families"),
        ("adapters/emulators/wan.py", "from adapters.base import ProviderError", "import only the media leaf"),
        ("local_engine/engine.py", "from gateway.settings import Settings", "import only the media leaf"),
        ("media/video.py", "from adapters.base import InputImage", "packages: gateway > adapters"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    copy_of_tree: Path, module: str, forbidden_import: str, contract: str
) -> None:
    path = copy_of_tree / module
    original = path.read_text()
    path.write_text(original + f"\n{forbidden_import}  # noqa\n")
    try:
        result = lint(copy_of_tree)
    finally:
        path.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
