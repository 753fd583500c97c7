"""Flat "remote code" for checkpoints that load with `trust_remote_code=True` without the package.

transformers loads custom code from the files of a checkpoint directory (or Hub repo): one flat
folder, modules referring to each other with `from .x import y` (it follows those imports
recursively and copies every file into its module cache). The package is not flat: its modules use
absolute `muomni.…` imports across three folders. This module generates the flat files FROM the
package sources, so the two never diverge:

    * the entry modules are those of the classes registered with the Auto classes for the
      `muomni` model type (config, models, processor, tokenizer, feature extractor, image processor),
      plus everything they import from `muomni`, transitively;
    * each module becomes `<basename>.py` (`muomni.processing.tokenization_muomni` ->
      `tokenization_muomni.py`); two modules with one basename would both be renamed
      `<parent package>_<basename>.py`, deterministically;
    * every import of a `muomni` module (absolute, or relative inside the package) is rewritten to
      the flat relative form. A name imported from a package `__init__` is resolved to the submodule
      that defines it (`from muomni.configuration import MuOmniConfig` ->
      `from .configuration_muomni import MuOmniConfig`);
    * each file starts with a header saying it is generated and must not be edited;
    * one more generated module, `auto_muomni.py`, imports every registered class, and every
      `auto_map` entry points to it. transformers caches the code of a local directory once per
      entry module (a folder named after the hash of the module and its imports); with several entry
      modules a config and its model would come from two copies of `configuration_muomni` and
      `isinstance` checks between them would fail. One entry module means one copy of everything.

Nothing generated is committed: `muomni.hub.save_for_hub` renders the files from the installed
package sources (`render_remote_code`) and writes them next to the weights, so a checkpoint always
carries the code of the muomni that saved it.
"""

import ast
import importlib
import importlib.util
import os
from dataclasses import dataclass

from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

from .version import __version__

ROOT_PACKAGE = "muomni"
MODEL_TYPE = "muomni"
ENTRY_MODULE = "auto_muomni"  # the generated module every auto_map entry points to
HEADER = (
    "# GENERATED FILE - DO NOT EDIT.\n"
    "# Flat copy of `{module}` for loading with `trust_remote_code=True`,\n"
    f"# written by muomni {__version__}'s `muomni.hub.save_for_hub` from the package sources.\n"
)
PROCESSING_AUTO_CLASSES = ("AutoProcessor", "AutoTokenizer", "AutoFeatureExtractor", "AutoImageProcessor")


@dataclass(frozen=True)
class _InternalImport:
    """One `from <muomni module> import ...` statement of a source file, resolved."""

    node: ast.ImportFrom
    targets: list[tuple[str, str, str | None]]  # (defining module, name, alias) in source order


def registered_classes() -> dict[str, type]:
    """The class each Auto class resolves for `model_type="muomni"` (`import muomni` registers them).

    Returns {"AutoConfig": MuOmniConfig, "AutoModel": MuOmniForConditionalGeneration, ...}: every Auto
    class that knows the `muomni` config, and nothing else.
    """
    importlib.import_module(ROOT_PACKAGE)  # registration happens on import
    config_class = CONFIG_MAPPING[MODEL_TYPE]
    found = {AutoConfig.__name__: config_class}
    for name, auto_class in sorted(vars(modeling_auto).items()):
        # every AutoModel* class: the ones MuOmni registers with are found, whichever they are
        mapping = getattr(auto_class, "_model_mapping", None) if name.startswith("AutoModel") else None
        model_class = mapping._extra_content.get(config_class) if mapping is not None else None
        if model_class is not None:
            found[name] = model_class
    for auto_class, mapping in (
        (AutoProcessor, PROCESSOR_MAPPING),
        (AutoTokenizer, TOKENIZER_MAPPING),
        (AutoFeatureExtractor, FEATURE_EXTRACTOR_MAPPING),
        (AutoImageProcessor, IMAGE_PROCESSOR_MAPPING),
    ):
        registered = mapping._extra_content.get(config_class)
        if isinstance(registered, dict):  # image processors: {backend: class}
            registered = registered.get("pil") or next(iter(registered.values()))
        elif isinstance(registered, (tuple, list)):  # tokenizers of older transformers: (slow, fast)
            registered = next(c for c in registered if c is not None)
        if registered is not None:
            found[auto_class.__name__] = registered
    return found


def _module_source_path(module_name: str) -> str:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ValueError(f"Cannot find the source of module {module_name!r}")
    return spec.origin


def _is_package(module_name: str) -> bool:
    return os.path.basename(_module_source_path(module_name)) == "__init__.py"


def _package_exports(package: str) -> dict[str, str]:
    """{name: defining submodule} for the `from .sub import name` statements of a package `__init__`."""
    tree = ast.parse(open(_module_source_path(package), encoding="utf-8").read())
    exports = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _absolute_module(node, package, is_package=True)
            if module is None:
                continue
            for alias in node.names:
                exports[alias.asname or alias.name] = module
    return exports


def _absolute_module(node: ast.ImportFrom, module_name: str, is_package: bool) -> str | None:
    """The absolute dotted module of an import, or None when it is not a muomni module."""
    if node.level == 0:
        name = node.module or ""
        return name if name == ROOT_PACKAGE or name.startswith(ROOT_PACKAGE + ".") else None
    package = module_name if is_package else module_name.rpartition(".")[0]
    return importlib.util.resolve_name("." * node.level + (node.module or ""), package)


def _resolve_import(node: ast.ImportFrom, module_name: str) -> _InternalImport | None:
    """Resolve each imported name of a muomni import to the module that defines it."""
    imported = _absolute_module(node, module_name, is_package=False)
    if imported is None:
        return None
    if not node.module:
        raise ValueError(f"{module_name}: `from . import ...` is not supported by the remote-code export")
    targets = []
    exports = _package_exports(imported) if _is_package(imported) else {}
    for alias in node.names:
        if alias.name == "*":
            raise ValueError(f"{module_name}: `from {imported} import *` is not supported by the remote-code export")
        defining = exports.get(alias.name, imported)
        if _is_package(defining):
            # a name re-exported by a package that does not come from one of its submodules
            raise ValueError(
                f"{module_name}: cannot tell which module of package {defining!r} defines {alias.name!r}; "
                "import it from its module"
            )
        targets.append((defining, alias.name, alias.asname))
    return _InternalImport(node=node, targets=targets)


def _internal_imports(module_name: str) -> tuple[str, list[_InternalImport]]:
    source = open(_module_source_path(module_name), encoding="utf-8").read()
    tree = ast.parse(source)
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT_PACKAGE or alias.name.startswith(ROOT_PACKAGE + "."):
                    raise ValueError(
                        f"{module_name}: `import {alias.name}` is not supported by the remote-code export; "
                        "use `from ... import ...`"
                    )
        elif isinstance(node, ast.ImportFrom):
            resolved = _resolve_import(node, module_name)
            if resolved is not None:
                imports.append(resolved)
    return source, sorted(imports, key=lambda item: item.node.lineno)


def remote_code_modules() -> list[str]:
    """Every package module the remote code needs: the Auto classes' modules and their muomni imports."""
    pending = sorted({cls.__module__ for cls in registered_classes().values()})
    seen: set[str] = set()
    while pending:
        module_name = pending.pop()
        if module_name in seen:
            continue
        seen.add(module_name)
        _, imports = _internal_imports(module_name)
        pending.extend(defining for item in imports for defining, _, _ in item.targets if defining not in seen)
    return sorted(seen)


def flat_module_names(modules: list[str]) -> dict[str, str]:
    """{dotted module: flat module name}. Basenames are kept; modules sharing one are all renamed
    `<parent package>_<basename>` (and an error is raised if that still clashes)."""
    by_basename: dict[str, list[str]] = {}
    for module in sorted(modules):
        by_basename.setdefault(module.rpartition(".")[2], []).append(module)
    flat = {}
    for basename, group in by_basename.items():
        for module in group:
            if len(group) == 1:
                flat[module] = basename
            else:
                parent = module.rpartition(".")[0].rpartition(".")[2]
                flat[module] = f"{parent}_{basename}"
    names = list(flat.values()) + [ENTRY_MODULE]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"Remote-code module names still clash after renaming: {clashes}")
    return flat


def _format_import(indent: str, module: str, names: list[str]) -> list[str]:
    line = f"{indent}from .{module} import {', '.join(names)}"
    if len(line) <= 119:
        return [line]
    return [f"{indent}from .{module} import ("] + [f"{indent}    {name}," for name in names] + [f"{indent})"]


def _rewrite_imports(source: str, imports: list[_InternalImport], flat: dict[str, str], module_name: str) -> str:
    lines = source.splitlines()
    # bottom-up, so the line numbers of the statements above stay valid
    for item in sorted(imports, key=lambda item: item.node.lineno, reverse=True):
        node = item.node
        start, end = node.lineno - 1, node.end_lineno
        statement_lines = lines[start:end]
        indent = statement_lines[0][: node.col_offset]
        if statement_lines[0][: node.col_offset].strip() or statement_lines[-1][node.end_col_offset :].strip():
            raise ValueError(f"{module_name}:{node.lineno}: an import must be the only statement on its lines")
        grouped: dict[str, list[str]] = {}
        for defining, name, alias in item.targets:
            grouped.setdefault(flat[defining], []).append(name if alias is None else f"{name} as {alias}")
        replacement = []
        for target, names in grouped.items():
            replacement.extend(_format_import(indent, target, names))
        lines[start:end] = replacement
    return "\n".join(lines) + "\n"


def render_remote_code() -> dict[str, str]:
    """{file name: text} of every flat remote-code file, generated from the installed package sources."""
    modules = remote_code_modules()
    flat = flat_module_names(modules)
    files = {}
    for module_name in modules:
        source, imports = _internal_imports(module_name)
        text = HEADER.format(module=module_name) + _rewrite_imports(source, imports, flat, module_name)
        _check_flat(text, module_name)
        files[flat[module_name] + ".py"] = text
    files[ENTRY_MODULE + ".py"] = _render_entry_module(flat)
    return files


def _render_entry_module(flat: dict[str, str]) -> str:
    by_module: dict[str, list[str]] = {}
    for cls in registered_classes().values():
        names = by_module.setdefault(flat[cls.__module__], [])
        if cls.__name__ not in names:
            names.append(cls.__name__)
    imports = []
    for module in sorted(by_module):
        imports.extend(_format_import("", module, sorted(by_module[module])))
    exported = sorted(name for names in by_module.values() for name in names)
    return (
        HEADER.format(module=ENTRY_MODULE).replace(
            f"Flat copy of `{ENTRY_MODULE}`", "Entry module of the MuOmni remote code"
        )
        + '"""Every class that `auto_map` names, imported from its module.\n\n'
        + "All `auto_map` entries point here, so transformers loads (and caches) the remote code once and the\n"
        + 'config, model and processor classes come from the same modules.\n"""\n\n'
        + "\n".join(imports)
        + "\n\n__all__ = [\n"
        + "".join(f'    "{name}",\n' for name in exported)
        + "]\n"
    )


def _check_flat(text: str, module_name: str) -> None:
    tree = ast.parse(text)  # the rewritten file must still be valid Python
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(name == ROOT_PACKAGE or name.startswith(ROOT_PACKAGE + ".") for name in names):
            raise ValueError(f"Generated remote code for {module_name} still imports {names}")


def remote_code_auto_map() -> dict[str, str | list[str | None]]:
    """The `auto_map` of an exported checkpoint: every registered Auto class -> `auto_muomni.ClassName`.

    `AutoTokenizer` takes the transformers form `[slow, fast]`; MuOmni's tokenizer is a single
    tokenizers-backed class, saved in the first slot as `custom_object_save` would.
    """
    auto_map = {}
    for auto_name, cls in registered_classes().items():
        reference = f"{ENTRY_MODULE}.{cls.__name__}"
        auto_map[auto_name] = [reference, None] if auto_name == "AutoTokenizer" else reference
    return auto_map
