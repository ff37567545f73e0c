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
    modules = sorted(p.stem for p in (ROOT / "analysis").glob("*.py") if p.stem != "__main__")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module('analysis.' + m)\n"
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
