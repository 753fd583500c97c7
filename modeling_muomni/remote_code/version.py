# GENERATED FILE - DO NOT EDIT.
# Flat copy of `muomni.version` for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
__version__ = "0.1.0"
