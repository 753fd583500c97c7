"""The transformers range, declared once in `muomni.version`: the installed transformers is inside it,
setup.py installs with it, and an older transformers is refused on import with a message that says
what to install."""

import importlib.metadata
import os
import re
import subprocess
import sys
import warnings

import pytest
import transformers
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from muomni.version import (
    TRANSFORMERS_REQUIREMENT,
    __version__,
    check_transformers_version,
    minimum_transformers_version,
)


def test_the_installed_transformers_is_inside_the_declared_range():
    # CI runs the suite on the newest transformers and on the floor; any other version fails here
    installed = Version(transformers.__version__)
    assert SpecifierSet(TRANSFORMERS_REQUIREMENT).contains(installed, prereleases=True), (
        f"transformers {installed} is installed, outside muomni's declared range {TRANSFORMERS_REQUIREMENT!r} "
        f"(modeling_muomni/version.py)"
    )


def test_setup_py_installs_with_the_declared_range():
    requirements = [Requirement(line) for line in importlib.metadata.requires("muomni")]
    (declared,) = [req for req in requirements if req.name == "transformers"]
    assert declared.specifier == SpecifierSet(TRANSFORMERS_REQUIREMENT), (
        f"the installed muomni metadata requires {declared}, version.py declares {TRANSFORMERS_REQUIREMENT!r}; "
        "reinstall (pip install -e .) after changing it"
    )


def test_the_floor_is_the_release_that_renamed_the_cache_argument():
    assert minimum_transformers_version() == "5.24"


@pytest.mark.parametrize("installed", ["5.24.0", "5.25.0", "5.99.1", "5.30.0.dev0"])
def test_a_version_inside_the_range_passes_silently(installed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_transformers_version(installed)


@pytest.mark.parametrize("installed", ["5.23.0", "5.0.0", "4.57.1", "5.24.0.dev0"])
def test_an_older_transformers_is_refused(installed):
    expected = (
        f"muomni {__version__} needs transformers{TRANSFORMERS_REQUIREMENT}, but transformers {installed} is "
        f'installed; pip install "transformers{TRANSFORMERS_REQUIREMENT}"'
    )
    with pytest.raises(ImportError, match=re.escape(expected)):
        check_transformers_version(installed)


@pytest.mark.parametrize("installed", ["6.0.0", "6.0.0.dev0", "7.1.0"])
def test_a_newer_major_release_warns_that_it_is_untested(installed):
    expected = f"tested with transformers{TRANSFORMERS_REQUIREMENT}, but transformers {installed} is installed"
    with pytest.warns(UserWarning, match=re.escape(expected)):
        check_transformers_version(installed)


def test_import_muomni_fails_loudly_on_an_older_transformers():
    script = "import transformers\ntransformers.__version__ = '5.23.0'\nimport muomni\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ImportError: muomni" in result.stderr
    assert f"needs transformers{TRANSFORMERS_REQUIREMENT}, but transformers 5.23.0 is installed" in result.stderr


def test_the_readme_states_the_declared_range():
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(readme, encoding="utf-8") as handle:
        text = handle.read()
    assert f"MuOmni needs `transformers{TRANSFORMERS_REQUIREMENT}`" in text
    assert f"on its floor ({minimum_transformers_version()})" in text
