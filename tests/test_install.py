"""Packaging: the wheel holds one import name, `zoo`, and works from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = out.glob("zoo-*.whl")
    return whl


def test_wheel_has_only_the_zoo_import_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"zoo"}
    for must in ("zoo/models/rlfn.py", "zoo/models/layers/__init__.py", "zoo/tasks/__init__.py",
                 "zoo/weights/publish.py", "zoo/configs/sr/rlfn_x4.yaml"):
        assert must in names, must


def test_wheel_has_every_package_of_the_checkout(wheel):
    """pyproject lists packages explicitly (the sibling folders are mapped under zoo): a new
    package folder that is not listed would be missing from the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    mapping = {"zoo": "zoo", "models": "zoo/models", "tasks": "zoo/tasks", "weights": "zoo/weights", "configs": "zoo/configs"}
    for src, dst in mapping.items():
        for init in (ROOT / src).rglob("__init__.py"):
            rel = init.relative_to(ROOT / src).as_posix()
            assert f"{dst}/{rel}" in names, f"{src}/{rel} is not in the wheel: add its package to pyproject.toml"


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv_and_runs_outside_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # Dependencies come from this environment's site-packages (no network, no 7 GB reinstall);
    # the zoo package itself comes only from the wheel.
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    code = (
        "import zoo, torch; m = zoo.create('rlfn_x4').eval(); "
        "y = m(torch.rand(1, 3, 16, 16)); assert y.shape == (1, 3, 64, 64); "
        "import zoo.tasks, zoo.weights, zoo.models.layers; print(zoo.__file__)"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith(purelib)  # the installed copy, not the checkout
    r = subprocess.run([str(venv / "bin" / "zoo"), "list", "rlfn_x4"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0 and "rlfn_x4" in r.stdout
