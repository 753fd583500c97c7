"""The distribution installs exactly one top-level package, `muomni`, assembled from the repository
folders by `package_dir` (modeling_muomni/, configuration/, processing/, training/)."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), REPO],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stdout}\n{result.stderr}")
    (name,) = [f for f in os.listdir(out) if f.endswith(".whl")]
    return str(out / name)


@pytest.fixture(scope="module")
def wheel_names(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_only_muomni_is_installed_at_top_level(wheel_names):
    top_level = {name.split("/")[0] for name in wheel_names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"muomni"}


def test_every_repository_folder_is_mapped_into_muomni(wheel_names):
    for module in (
        "muomni/__init__.py",
        "muomni/modeling_text.py",
        "muomni/configuration/configuration_muomni.py",
        "muomni/processing/processing_muomni.py",
        "muomni/training/trainer.py",
        "muomni/training/data/builtin.py",
    ):
        assert module in wheel_names, f"{module} missing from the wheel"


def test_import_outside_the_repository_works(tmp_path):
    # the installed package (editable or not) imports from any working directory
    result = subprocess.run(
        [sys.executable, "-c", "import muomni, muomni.training, muomni.processing; print(muomni.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == muomni_version()


def muomni_version() -> str:
    import muomni

    return muomni.__version__


def test_the_wheel_ships_no_generated_remote_code(wheel_names):
    # save_for_hub renders the flat files from the package sources; no copy of them is packaged
    assert not [name for name in wheel_names if name.startswith("muomni/remote_code")]


RENDER_SCRIPT = """
import json, sys
import muomni
from muomni.export_remote_code import render_remote_code
json.dump({"package": muomni.__file__, "files": render_remote_code()}, open(sys.argv[1], "w"))
"""


def test_an_installed_wheel_renders_the_same_remote_code(wheel, tmp_path):
    from muomni.export_remote_code import render_remote_code

    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable install of this checkout
    result = subprocess.run(
        [sys.executable, "-c", RENDER_SCRIPT, str(tmp_path / "rendered.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rendered = json.loads((tmp_path / "rendered.json").read_text())
    assert rendered["package"].startswith(str(target)), rendered["package"]
    assert rendered["files"] == render_remote_code()
