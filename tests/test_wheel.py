"""The product runs from its wheel: built from the repository's tracked files alone,
installed into a fresh virtual environment, run from another folder with no file of the
checkout anywhere on its path -- `params`, `extract` on a real frame, and a `replay`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REAL, ROOT
from sexstream import synthetic

pytestmark = pytest.mark.spark


def tracked_copy(dest: Path) -> Path:
    """The repository's tracked files (a clean clone of the working state) in `dest`."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel installed; its dependencies come from this test run's
    environment (a path entry, not a site dir: the checkout's editable install stays out)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tracked_copy(tmp / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    str(source), "-w", str(tmp / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("sexstream-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    shutil.rmtree(source)  # nothing of the checkout is left beside the wheel
    return venv


def run(venv: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return subprocess.run([str(venv / "bin" / "sexstream"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_installed_wheel_imports_nothing_from_the_checkout(installed, tmp_path):
    out = subprocess.run([installed / "bin" / "python", "-c",
                          "import sexstream, streaming, sexstream.conf, sexstream.settings as s; "
                          "print(sexstream.__file__); print(streaming.__file__); print(s.conf_file('default.sex'))"],
                         cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout.split()
    for path in out:
        assert str(installed) in path and str(ROOT) not in path, path


def test_params_extract_and_replay_run_from_the_wheel_in_another_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = run(installed, elsewhere, "params", "FLUX_AUTO")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("FLUX_AUTO")
    frame = REAL / "sewpy" / "euler_ngc2024.fits"
    if not frame.is_file():
        frame = synthetic.make_exposure(tmp_path / "frame.fits", seed=2, nx=256, ny=256)
    p = run(installed, elsewhere, "extract", str(frame), "--keys", "NUMBER,FLUX_AUTO", "-o", "out.csv")
    assert p.returncode == 0, p.stderr
    header, *lines = (elsewhere / "out.csv").read_text().splitlines()
    assert header.startswith('"NUMBER","FLUX_AUTO",') and len(lines) > 0
    backlog = synthetic.make_night(tmp_path / "backlog", 2, seed=3, nx=192, ny=192)
    p = run(installed, elsewhere, "replay", str(backlog[0].parent), "--sink", "sink", "--keys", "NUMBER,FLUX_ISO",
            "--progress-every", "0")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 ok, 0 failed" in p.stdout, p.stdout
    p = run(installed, elsewhere, "status", "--sink", "sink", "--json")
    assert p.returncode == 0 and '"ok": 2' in p.stdout, p.stdout + p.stderr
