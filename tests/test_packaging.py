"""hotfolder installs as a user would install it, beside tools that share a machine with it.

The import name is ``hotfolder``: python-daemon owns the top-level name ``daemon``, and pip
neither warns about nor survives two distributions writing the same package. This builds the
wheel, installs it into a fresh virtual environment next to python-daemon (from the package index,
as on any machine) and runs both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(
    argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=cwd, env=env)
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy of what a release holds: setuptools reuses a build/ folder beside the sources, so
    # a build in the checkout could ship modules that no longer exist.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "daemon", source / "daemon", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)])
    (built,) = out.glob("hotfolder-*.whl")
    return built


def test_the_wheel_holds_the_hotfolder_package_and_nothing_named_daemon(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"hotfolder"}
    assert "hotfolder/__main__.py" in names and "hotfolder/sandbox/__init__.py" in names


def test_installed_beside_python_daemon_both_work(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Only what is installed in the venv: a PYTHONPATH naming a checkout (its sources, its egg-info)
    # would make pip skip the wheel as already installed, and the commands run the checkout.
    env = {**os.environ, "PYTHONPATH": ""}
    # python-daemon first: a hotfolder that shipped a top-level "daemon" would overwrite its files.
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "python-daemon"], env=env)
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)], env=env)

    version = _run([str(env_dir / "bin" / "hotfolder"), "--version"], cwd=tmp_path, env=env).stdout
    assert version.strip().startswith("hotfolder ")
    module = _run([str(python), "-m", "hotfolder", "--version"], cwd=tmp_path, env=env).stdout
    assert module == version
    # python-daemon's own package is intact: its DaemonContext imports, and every file its
    # distribution installed is still there.
    probe = (
        "import importlib.metadata as m, daemon\n"
        "files = m.files('python-daemon')\n"
        "missing = [str(f) for f in files if not f.locate().exists()]\n"
        "print(daemon.DaemonContext.__name__, len(files), missing)"
    )
    shown = _run([str(python), "-c", probe], cwd=tmp_path, env=env).stdout.split(" ", 2)
    assert shown[0] == "DaemonContext" and int(shown[1]) > 0 and shown[2].strip() == "[]"
    # And uninstalling hotfolder leaves python-daemon whole (no file of it belonged to both).
    _run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "hotfolder"], env=env)
    assert _run([str(python), "-c", probe], cwd=tmp_path, env=env).stdout.split(" ", 2)[2].strip() == "[]"
