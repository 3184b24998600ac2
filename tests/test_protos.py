"""The protos are the source of truth: generated code is fresh, buf lints and builds them,
and no change breaks callers of the recorded compatibility baseline."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "protos" / "BASELINE"


def buf() -> str:
    path = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    assert Path(path).exists(), "buf is missing: pip install buf-bin (make venv installs it)"
    return path


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_generated_code_is_fresh() -> None:
    result = run(sys.executable, "protos/generate.py", "--check")
    assert result.returncode == 0, result.stderr


def test_buf_lint_and_build() -> None:
    run(sys.executable, "protos/generate.py", "--check")  # also lays out build/googleapis
    lint = run(buf(), "lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    build = run(buf(), "build", "-o", "/dev/null")
    assert build.returncode == 0, build.stdout + build.stderr


def _baseline_protos(commit: str, into: Path) -> None:
    """protos/ as it was at `commit`, taken from git history."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "protos"], cwd=REPO, capture_output=True, check=False
    )
    assert archive.returncode == 0, (
        f"cannot read protos/ at baseline {commit} from git history: {archive.stderr.decode()}"
        " (a shallow clone lacks it; fetch the full history)"
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")


def test_no_breaking_change_since_baseline(tmp_path: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.fail("the breaking-change check needs the git history of the repository")
    commit = BASELINE.read_text().split()[0]
    _baseline_protos(commit, tmp_path)
    run(sys.executable, "protos/generate.py", "--check")
    shutil.copytree(REPO / "build" / "googleapis", tmp_path / "build" / "googleapis")
    shutil.copy(REPO / "buf.yaml", tmp_path / "buf.yaml")
    image = tmp_path / "baseline.binpb"
    built = run(buf(), "build", "-o", str(image), cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    breaking = run(buf(), "breaking", "protos", "--against", str(image))
    assert breaking.returncode == 0, f"breaking changes since {commit}:\n{breaking.stdout}{breaking.stderr}"
