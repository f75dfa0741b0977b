"""The house rules, checked on the source: engines never import gradio, the UI never imports torch, the server
package never imports the UI, and the project's modules import each other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engines", "ui", "server")
MODULES = ("app", "settings", "conversations")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    found = {m: ROOT / f"{m}.py" for m in MODULES}
    for package in PACKAGES:
        found |= {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return found


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules a file imports (``from a import b`` counts as ``a`` and ``a.b``, since ``b`` may be a module)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also what sits under if/try at module level, but not inside functions
        nodes = [n for top in tree.body for n in ast.walk(top) if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def offenders(package: str, forbidden: str) -> list[str]:
    return sorted(
        f"{name} imports {hit}"
        for name, path in sources().items()
        if name == package or name.startswith(f"{package}.")
        for hit in imports(path)
        if hit == forbidden or hit.startswith(f"{forbidden}.")
    )


def test_engines_never_import_gradio_or_the_ui():
    assert offenders("engines", "gradio") == [] and offenders("engines", "ui") == []


def test_the_ui_never_imports_torch():
    assert offenders("ui", "torch") == []


def test_the_server_package_never_imports_the_ui():
    assert offenders("server", "ui") == []


def test_no_import_cycles_between_the_projects_modules():
    known = sources()
    graph = {
        name: {hit for hit in imports(path, top_level_only=True) if hit in known and hit != name}
        for name, path in known.items()
    }
    cycles, done, path = [], set(), []

    def visit(node: str) -> None:
        if node in path:
            cycles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert cycles == []


def test_engines_are_grouped_by_panel():
    """Past ~25 modules engines/ is grouped: one folder per panel, only shared pieces at the top."""
    top = sorted(p.stem for p in (ROOT / "engines").glob("*.py") if p.stem != "__init__")
    assert len(top) <= 10, top
    assert {p.name for p in (ROOT / "engines").iterdir() if (p / "__init__.py").exists()} == {"chat", "image", "speech", "docs"}
