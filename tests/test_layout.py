"""The layout of ``src/vbayes``: imports go one way (no cycle, counting imports inside functions), no module takes
another's private names, no function hides the module of the same name, and no module is over 400 lines without
saying why at its top."""

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import vbayes

SRC = Path(vbayes.__file__).resolve().parent
MAX_LINES = 400
REASON = "Longer than 400 lines because"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("vbayes",) + path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[tuple[str, str]]:
    """(imported module, imported name) pairs of every import in the module, outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {(a.name, "") for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add((full, "") if full in modules else (base, a.name))
    return {(m, n) for m, n in out if m in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = {m for m, _ in _imports(name, path, modules) if m != name}
        if path.name == "__init__.py":  # a package importing its own submodules is its public face, not a cycle
            deps = {d for d in deps if not d.startswith(name + ".")}
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert len(graph) > 40  # it saw the package
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    private = []
    for name, path in modules.items():
        for module, imported in _imports(name, path, modules):
            if imported.startswith("_") and module != name:
                private.append(f"{name} imports {module}.{imported}")
    assert private == []


def test_no_function_hides_the_module_of_the_same_name():
    hidden = []
    for info in pkgutil.walk_packages(vbayes.__path__, "vbayes."):
        parent, _, child = info.name.rpartition(".")
        if child.startswith("_"):
            continue
        module = importlib.import_module(info.name)
        if getattr(importlib.import_module(parent), child) is not module:
            hidden.append(info.name)
    assert hidden == []


def test_long_modules_say_why():
    silent = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            silent.append(f"{name} ({text.count(chr(10))} lines)")
    assert silent == []


REPO = SRC.parent.parent
README_MAX_LINES = 220


def test_the_developers_page_lists_every_module_and_no_other():
    """``docs/developers.md`` lists each module as ``vbayes/<path>.py`` (package ``__init__``/``__main__`` aside)."""
    page = (REPO / "docs" / "developers.md").read_text(encoding="utf-8")
    tree = {
        path.relative_to(SRC.parent).as_posix()
        for path in SRC.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    listed = set(re.findall(r"`(vbayes/[\w/]+\.py)`", page))
    assert sorted(tree - listed) == [], "modules missing from docs/developers.md"
    assert sorted(listed - tree) == [], "docs/developers.md lists modules that are not in the tree"


def test_the_readme_is_short_and_links_the_site():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count("\n") <= README_MAX_LINES
    for page in ("docs/index.md", "docs/getting-started.md", "docs/developers.md", "docs/questions.md"):
        assert page in readme, page
        assert (REPO / page).is_file(), page
