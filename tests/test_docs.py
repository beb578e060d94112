"""The documentation's code stays true to the package: every Python block in ``README.md`` and ``docs/`` parses,
and every name it takes from vbayes (``import vbayes.x``, ``from vbayes.x import y``, ``vbayes.a.b``, and
attributes of names imported from vbayes) exists. The site itself is built by ``mkdocs build --strict`` in CI."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import vbayes

REPO = Path(vbayes.__file__).resolve().parent.parent.parent
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    return [(f"{p.relative_to(REPO)}#{i}", b) for p in PAGES for i, b in enumerate(BLOCK.findall(p.read_text()))]


def _resolve(dotted: str):
    """The object at ``dotted`` (``vbayes.a.b``): import the longest module prefix, then take attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _references(tree: ast.AST) -> set[str]:
    """Dotted vbayes names a block uses: its imports, and attribute chains on names bound to vbayes objects."""
    bound, out = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "vbayes":
                    out.add(a.name)
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else "vbayes"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vbayes" and not node.level:
            for a in node.names:
                out.add(f"{node.module}.{a.name}")
                bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in bound and len(chain) <= 3:
                # stop at the first lower-case name after a class (an instance attribute needs an instance)
                out.add(".".join([bound[inner.id], *reversed(chain)]))
    return out


BLOCKS = _blocks()


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) > 20


@pytest.mark.parametrize("where, code", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_a_python_block_parses_and_its_vbayes_names_exist(where, code):
    tree = ast.parse(code)
    missing = []
    for dotted in sorted(_references(tree)):
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            parent = dotted.rpartition(".")[0]
            try:  # an attribute of an instance or a NamedTuple field cannot be checked on the class: skip those
                owner = _resolve(parent)
            except (ImportError, AttributeError):
                missing.append(dotted)
                continue
            if isinstance(owner, type) or callable(owner):
                continue
            missing.append(dotted)
    assert missing == [], f"{where}: {missing}"


def test_the_checker_sees_a_missing_name():
    tree = ast.parse("import vbayes\nfrom vbayes.families import kl\nvbayes.no_such_function()")
    refs = _references(tree)
    assert {"vbayes.families.kl", "vbayes.no_such_function"} <= refs
    with pytest.raises(AttributeError):
        _resolve("vbayes.no_such_function")
