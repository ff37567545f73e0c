"""Layering rules: the library never imports Streamlit; pages are routed, not auto-discovered."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
