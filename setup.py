"""MuOmni: a tiny Thinker-Talker omni model that lives inside the Hugging Face ecosystem.

One distribution, one import root. The folders of this repository are assembled with
`package_dir` (works for `pip install .` and `pip install -e .`, setuptools >= 64):

    modeling_muomni/ -> muomni
    configuration/   -> muomni.configuration
    processing/      -> muomni.processing
    training/        -> muomni.training
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

FOLDERS = {
    "muomni": "modeling_muomni",
    "muomni.configuration": "configuration",
    "muomni.processing": "processing",
    "muomni.training": "training",
}


def find_packages_in(root_package: str, folder: str) -> dict[str, str]:
    """Every folder with an `__init__.py` below `folder`, as {dotted package name: folder}."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(os.path.join(HERE, folder)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        if "__init__.py" not in filenames:
            continue
        relative = os.path.relpath(dirpath, os.path.join(HERE, folder))
        name = root_package if relative == "." else root_package + "." + relative.replace(os.sep, ".")
        found[name] = os.path.relpath(dirpath, HERE)
    return found


def read_version_constant(name: str) -> str:
    """A string constant of modeling_muomni/version.py (read, not imported: it imports transformers)."""
    with open(os.path.join(HERE, "modeling_muomni", "version.py"), encoding="utf-8") as handle:
        return re.search(rf'^{name} = "([^"]+)"', handle.read(), re.MULTILINE).group(1)


package_dir = {}
for package, folder in FOLDERS.items():
    package_dir.update(find_packages_in(package, folder))

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as handle:
    long_description = handle.read()

setup(
    name="muomni",
    version=read_version_constant("__version__"),
    description="A tiny Thinker-Talker omni model (text, image, speech in; text, speech out) for transformers",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=sorted(package_dir),
    package_dir=package_dir,
    package_data={"muomni": ["py.typed"]},
    entry_points={
        "console_scripts": [
            "muomni=muomni.training.cli:muomni_main",
            "muomni-train=muomni.training.cli:main",
            "muomni-publish=muomni.hub:publish_main",
        ]
    },
    install_requires=[
        "transformers" + read_version_constant("TRANSFORMERS_REQUIREMENT"),  # the range is declared there
        # torch, accelerate, tokenizers, safetensors, huggingface_hub: the floors of transformers 5.24 itself
        # (it disables torch < 2.6, its Trainer needs accelerate >= 1.1, the others are its requirements)
        "torch>=2.6",
        "accelerate>=1.1",
        "datasets>=3.0",
        "tokenizers>=0.23.1",
        "safetensors>=0.8",
        "peft>=0.15",  # tests/test_peft.py passes with 0.15.0
        "huggingface_hub>=1.31",
        "numpy",
        "soundfile",
        "pillow",
        "pyyaml",
        "chatterbot-corpus>=1.3.3",  # BSD-3-Clause dialog corpus for the built-in text data
    ],
    extras_require={
        # eSpeak NG (GPL-3.0-or-later library + voices, loaded at run time through ctypes) synthesises the
        # built-in speech data; only the dataset generator and the demo need it
        "demo": ["espeakng-loader>=0.2.4"],
        "test": ["pytest>=8", "pytest-timeout", "espeakng-loader>=0.2.4"],
    },
)
