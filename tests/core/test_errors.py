"""Every public exception lives in one errors module per package, and is importable where docs say.

The packages' sources are read with `ast`, not imported, so the check covers the providers whose
runtimes (torch, llama.cpp) this env does not have.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path

import pytest

import provender
import provender.errors

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("packages/*/src/*"), *ROOT.glob("examples/*/src/*")])
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("packages/*/README.md")])
BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
}


def _exception_classes() -> list[tuple[str, str, Path]]:
    """(package, class name, file) for every class in the sources deriving from an exception."""
    classes: list[tuple[str, str, Path, list[str]]] = []
    for package in SOURCES:
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
                    classes.append((package.name, node.name, path, bases))
    known = set(BUILTIN_EXCEPTIONS)
    found: dict[tuple[str, str], Path] = {}
    changed = True
    while changed:  # a class is an exception if a base is one, found to any depth
        changed = False
        for package, name, path, bases in classes:
            if (package, name) not in found and any(base in known for base in bases):
                found[(package, name)] = path
                known.add(name)
                changed = True
    return [(package, name, path) for (package, name), path in sorted(found.items())]


EXCEPTIONS = _exception_classes()


def test_the_scan_finds_the_exceptions_it_should() -> None:
    names = {name for _, name, _ in EXCEPTIONS}
    assert {"ProvenderError", "CacheError", "NotACacheError", "CollectionError", "ToolError"} <= names


@pytest.mark.parametrize(("package", "name", "path"), EXCEPTIONS, ids=[f"{p}.{n}" for p, n, _ in EXCEPTIONS])
def test_every_public_exception_is_defined_in_its_package_errors_module(package: str, name: str, path: Path) -> None:
    if name.startswith("_"):
        return  # private control flow inside one module (never raised to a caller)
    assert path.name == "errors.py", f"{package}.{name} is defined in {path.relative_to(ROOT)}, not {package}.errors"


def test_every_core_exception_is_importable_from_provender_and_listed_in_all() -> None:
    for _, name, path in EXCEPTIONS:
        if path.parent.name == "provender" and path.name == "errors.py" and not name.startswith("_"):
            assert getattr(provender, name) is getattr(provender.errors, name)
            assert name in provender.__all__, f"provender.{name} missing from provender.__all__"


def test_every_package_errors_module_lists_its_exceptions_in_all_and_its_docstring_tree() -> None:
    by_module: dict[str, list[str]] = {}
    for package, name, path in EXCEPTIONS:
        if path.name == "errors.py" and not name.startswith("_"):
            by_module.setdefault(f"{package}.errors", []).append(name)
    assert "provender.errors" in by_module
    for module_name, names in by_module.items():
        module = importlib.import_module(module_name)
        assert set(names) <= set(module.__all__), f"{module_name}.__all__ lacks {set(names) - set(module.__all__)}"
        tree = module.__doc__ or ""
        missing = [name for name in names if not re.search(rf"\b{name}\b", tree)]
        assert not missing, f"{module_name}'s docstring tree lacks {missing}"


def test_exceptions_the_docs_name_as_provender_attributes_exist() -> None:
    documented: set[str] = set()
    for doc in DOCS:
        documented |= set(re.findall(r"provender\.([A-Z]\w*Error)\b", doc.read_text()))
    # and the bare names in the docs' error tables, such as `NotACacheError` in docs/cache.md
    core = {name for _, name, path in EXCEPTIONS if path.parent.name == "provender"}
    for doc in DOCS:
        documented |= {name for name in re.findall(r"`([A-Z]\w*Error)`", doc.read_text()) if name in core}
    assert "NotACacheError" in documented
    missing = sorted(name for name in documented if not hasattr(provender, name))
    assert not missing, f"the docs name provender.{missing}, which do not exist"
