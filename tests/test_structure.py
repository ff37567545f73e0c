"""Layering rules: the library never imports Streamlit; pages are routed, not auto-discovered."""

import ast
import subprocess
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def routed_pages() -> list[tuple[str, str]]:
    """(path, title) of every ``st.Page`` app.py registers, read from its source."""
    pages = []
    for node in ast.walk(ast.parse((ROOT / "app.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page":
            path = ast.literal_eval(node.args[0])
            title = next(ast.literal_eval(k.value) for k in node.keywords if k.arg == "title")
            pages.append((path, title))
    return pages


def test_analysis_never_imports_streamlit():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "analysis").rglob("*.py")
                     if p.stem not in ("__main__", "__init__"))
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_page_is_routed_and_no_pages_folder():
    app = (ROOT / "app.py").read_text()
    pages = sorted(p.name for p in (ROOT / "app_pages").glob("*.py"))
    assert pages and all(f'"app_pages/{p}"' in app for p in pages)
    assert not (ROOT / "pages").exists()  # would switch Streamlit into legacy multipage mode


def test_router_visits_every_page():
    """Run app.py's router, then switch to each page it registers: every page renders without an
    exception and shows its own title (the router's title, the training page adds a subtitle)."""
    pages = routed_pages()
    assert len(pages) == len(list((ROOT / "app_pages").glob("*.py"))), pages
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == pages[0][1]  # the default page
    seen = []
    for path, title in pages:
        at.switch_page(path).run()
        assert not at.exception, (path, [e.value for e in at.exception])
        assert at.title, f"{path} shows no title"
        shown = at.title[0].value
        assert shown == title or shown.startswith(f"{title}: "), (path, shown, title)
        seen.append(shown)
    assert len(set(seen)) == len(pages), seen  # each switch really changed the page


# The library's packages, lowest floor first (analysis/__init__.py's docstring says what each holds).
FLOORS = ("core", "arch", "data", "store", "experiments", "run", "studies", "cli")


def _library_imports(path: Path) -> set[str]:
    """'package.module' of every library module ``path`` imports, function-level imports included
    (they are arrows too); TYPE_CHECKING blocks aside, since they never run."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if len(parts) >= 3 and parts[0] == "analysis" and parts[1] in FLOORS:
                out.add(f"{parts[1]}.{parts[2]}")
    return out


def _library_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for p in (ROOT / "analysis").rglob("*.py"):
        rel = p.relative_to(ROOT / "analysis")
        if len(rel.parts) == 2 and rel.name != "__init__.py":
            graph[f"{rel.parts[0]}.{p.stem}"] = _library_imports(p) - {f"{rel.parts[0]}.{p.stem}"}
    return graph


def test_the_library_is_built_in_floors_with_no_arrow_up_and_no_cycle():
    """Every library module sits in one of the floor packages; each imports only its own floor and
    the floors below (inside functions too), and no chain of imports comes back to where it started."""
    import networkx as nx

    loose = sorted(p.name for p in (ROOT / "analysis").glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside the floor packages: {loose}"
    graph = _library_graph()
    assert {m.split(".")[0] for m in graph} == set(FLOORS)
    up = [(a, b) for a, deps in graph.items() for b in deps
          if FLOORS.index(b.split(".")[0]) > FLOORS.index(a.split(".")[0])]
    assert not up, f"imports that go up a floor: {up}"
    cycles = list(nx.simple_cycles(nx.DiGraph([(a, b) for a, deps in graph.items() for b in deps])))
    assert not cycles, f"import cycles: {cycles}"
