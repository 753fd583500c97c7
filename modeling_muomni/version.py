"""The muomni version and the transformers releases it works with, each written once.

`TRANSFORMERS_REQUIREMENT` is read by setup.py (`install_requires`), by `.ci/run` (which also runs
the suite on its floor), by the model card, and by `check_transformers_version`, which runs when this
module is imported: by `import muomni` and by the flat remote code of a checkpoint alike.
"""

import warnings

__version__ = "0.1.0"
# 5.24 renamed the KV-cache argument `past_key_values` to `cache` (model forwards, `create_causal_mask`,
# model outputs, `generate`), and the models use the new name; 6 is a major release nobody has tested.
TRANSFORMERS_REQUIREMENT = ">=5.24,<6"


def minimum_transformers_version() -> str:
    """The floor of `TRANSFORMERS_REQUIREMENT` ("5.24"), the oldest release CI tests."""
    from packaging.specifiers import SpecifierSet

    floors = [spec.version for spec in SpecifierSet(TRANSFORMERS_REQUIREMENT) if spec.operator == ">="]
    if len(floors) != 1:
        raise ValueError(f"TRANSFORMERS_REQUIREMENT {TRANSFORMERS_REQUIREMENT!r} must have exactly one '>=' floor")
    return floors[0]


def check_transformers_version(installed: str | None = None) -> None:
    """Refuse a transformers older than `TRANSFORMERS_REQUIREMENT` (ImportError: the models would pass
    the KV cache under a name it does not know); warn on one newer than the range (untested)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    if installed is None:
        import transformers

        installed = transformers.__version__
    version = Version(installed)
    if SpecifierSet(TRANSFORMERS_REQUIREMENT).contains(version, prereleases=True):
        return
    fix = f'pip install "transformers{TRANSFORMERS_REQUIREMENT}"'
    if version < Version(minimum_transformers_version()):
        raise ImportError(
            f"muomni {__version__} needs transformers{TRANSFORMERS_REQUIREMENT}, but transformers {installed} "
            f"is installed; {fix}"
        )
    warnings.warn(
        f"muomni {__version__} is tested with transformers{TRANSFORMERS_REQUIREMENT}, but transformers "
        f"{installed} is installed; if something breaks, {fix}",
        UserWarning,
        stacklevel=2,
    )


check_transformers_version()
