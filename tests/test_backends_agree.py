"""The Cython core and its pure-Python twin expose the same interface: the
one their ``.pyi`` stubs in ``vgic/_core/`` declare (issue #7: "a test that
the core and the twin expose the same names and signatures").

For every kernel module of :data:`vgic._backend.KERNELS`, each public name of
its stub must exist in ``vgic._core.<module>`` and ``vgic._pure.<module>``;
each function and method must take the parameters the stub names, in the
stub's order, in both; and each class, property and attribute the stub
declares must be there in both.  And each compiled module defines nothing
public that its stub leaves out, so the stubs stay complete.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pathlib

import pytest

import vgic
from vgic._backend import KERNELS

pytest.importorskip("vgic._core.mmio")
STUBS = pathlib.Path(vgic.__file__).parent / "_core"


def stub_api(name: str) -> dict[str, object]:
    """{public name: None (a constant), [params] (a function) or
    {member: [params] or None} (a class)} from the module's stub."""
    tree = ast.parse((STUBS / f"{name}.pyi").read_text())

    def params(fn: ast.FunctionDef) -> list[str]:
        a = fn.args
        return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]

    api: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            api[node.name] = params(node)
        elif isinstance(node, ast.ClassDef):
            members: dict[str, object] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and (not item.name.startswith("_") or item.name == "__init__"):
                    decorated = {getattr(d, "id", None) for d in item.decorator_list}
                    members[item.name] = None if "property" in decorated else params(item)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members[item.target.id] = None
            api[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            api[node.target.id] = None
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    api[t.id] = None
    return api


def signature_params(fn: object) -> list[str] | None:
    """The parameter names of a function, or None where Python cannot see
    them (an extension type's __init__ slot wrapper)."""
    try:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    names = [p.name for p in sig.parameters.values()]
    if names[-2:] == ["args", "kwargs"] and len(names) <= 3:
        return None
    return names


def modules(name: str):
    return importlib.import_module(f"vgic._core.{name}"), importlib.import_module(f"vgic._pure.{name}")


@pytest.mark.parametrize("name", KERNELS)
def test_every_stub_name_exists_in_both(name):
    core, pure = modules(name)
    for public, decl in stub_api(name).items():
        for mod in (core, pure):
            assert hasattr(mod, public), f"{mod.__name__} lacks {public}"
            if isinstance(decl, dict):
                cls = getattr(mod, public)
                for member in decl:
                    assert hasattr(cls, member) or member in getattr(cls, "__annotations__", {}) \
                        or member in _instance_attrs(cls), f"{mod.__name__}.{public} lacks {member}"


def _instance_attrs(cls: type) -> set[str]:
    # Attributes a twin sets on its instances (in __init__), found by name in the source.
    try:
        src = inspect.getsource(cls)
    except (TypeError, OSError):
        return set()
    return {node.attr for node in ast.walk(ast.parse(_dedent(src)))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"}


def _dedent(src: str) -> str:
    import textwrap
    return textwrap.dedent(src)


@pytest.mark.parametrize("name", KERNELS)
def test_signatures_match_the_stub(name):
    core, pure = modules(name)
    for public, decl in stub_api(name).items():
        if isinstance(decl, list):
            pairs = [(f"{public}()", decl, getattr(core, public), getattr(pure, public))]
        elif isinstance(decl, dict):
            pairs = [(f"{public}.{m}()", p, getattr(getattr(core, public), m, None),
                      getattr(getattr(pure, public), m, None))
                     for m, p in decl.items() if isinstance(p, list)]
        else:
            continue
        for where, want, c, p in pairs:
            for impl, fn in (("core", c), ("twin", p)):
                got = signature_params(fn)
                if got is None and impl == "core" and where.endswith("__init__()"):
                    continue        # an extension type's __init__ hides its signature
                assert got == want, f"{impl} {name}.{where}: parameters {got}, the stub says {want}"


@pytest.mark.parametrize("name", KERNELS)
def test_the_stub_covers_every_public_core_name(name):
    core, _ = modules(name)
    declared = set(stub_api(name))
    defined = {n for n, obj in vars(core).items()
               if not n.startswith("_") and getattr(obj, "__module__", None) == core.__name__}
    assert defined <= declared, f"vgic._core.{name} defines {sorted(defined - declared)} that its stub omits"
